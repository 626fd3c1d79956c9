#!/bin/bash
# N CPU-bound jobs started with & and waited for (families.rs): each prints
# "job K: SUM". Usage: fam_jobs.sh N ROUNDS
spin() {
    local i=0 s=0
    while [ $i -lt "$1" ]; do
        s=$(( (s + i * i) % 1000003 ))
        i=$((i + 1))
    done
    echo "job $2: $s"
}
for k in $(seq 1 "$1"); do
    spin "$2" "$k" &
done
wait
echo "all $1 done"
