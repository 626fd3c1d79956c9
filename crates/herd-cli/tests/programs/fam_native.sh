#!/bin/bash
# A job with a native part (families.rs); both parts live until stdin ends.
# Usage: fam_native.sh HERD FAM_TICK
"$1" run --native "$2" native 0<&0 &
"$2" migratable 0<&0 &
wait
