#!/bin/bash
# One CPU-bound job (families.rs, under xargs -P): prints "job K: SUM".
# Usage: fam_spin.sh ROUNDS K
i=0 s=0
while [ $i -lt "$1" ]; do
    s=$(( (s + i * i) % 1000003 ))
    i=$((i + 1))
done
echo "job $2: $s"
