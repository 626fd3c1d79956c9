#!/bin/bash
# gen | sort | uniq -c (families.rs moves the stages apart mid-stream).
# Usage: fam_pipe.sh FAM_GEN N
"$1" "$2" | sort -n | uniq -c
