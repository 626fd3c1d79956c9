#!/bin/bash
# N CPU-bound jobs through xargs -P 4 (families.rs). Usage: fam_xargs.sh N ROUNDS
seq 1 "$1" | xargs -P 4 -n 1 /bin/bash "$(dirname "$0")/fam_spin.sh" "$2"
echo "xargs: $?"
