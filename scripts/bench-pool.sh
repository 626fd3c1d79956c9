#!/bin/bash
# python multiprocessing.Pool(4) of N CPU-bound tasks: confined to n1 of a 2-node x
# 1-CPU local cluster, and under `herd run` from n1 (its workers spread), interleaved.
# Prints each rep's wall-clock seconds and whether the outputs are the same; then the
# moves out and homecomings of the last run. As root, after
# `cargo build --release -p herd-cli -p herd-daemon`. docs/benchmarks.md, "python
# multiprocessing.Pool". Usage: scripts/bench-pool.sh [TASKS] [ROUNDS] [REPS]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
herd=$root/target/release/herd
tasks=${1:-8} rounds=${2:-30000000} reps=${3:-3}
work=$(mktemp -d "$root/target/bench-pool.XXXXXX")   # under the repository: every node sees it
cluster=$work/cluster
cp "$root/crates/herd-cli/tests/programs/fam_pool.py" "$work/"
chmod -R a+rX "$work"
nobody=(setpriv --reuid 65534 --regid 65534 --clear-groups)
cleanup() { "$herd" cluster --cluster "$cluster" down > /dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
"$herd" cluster --cluster "$cluster" up --nodes 2 --cpus-per-node 1 > /dev/null
# secs OUT CMD...: runs CMD with its output (stdout and stderr) to OUT; prints its seconds.
secs() { local out=$1 t0 t1; shift; t0=$(date +%s.%N); "$@" > "$out" 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
for rep in $(seq 1 "$reps"); do
    alone=$(secs "$work/alone.out" "$herd" cluster --cluster "$cluster" exec n1 -- "${nobody[@]}" /usr/bin/python3 "$work/fam_pool.py" "$tasks" "$rounds")
    spread=$(secs "$work/herd.out" "$herd" cluster --cluster "$cluster" exec n1 -- "${nobody[@]}" "$herd" run /usr/bin/python3 "$work/fam_pool.py" "$tasks" "$rounds")
    cmp -s "$work/alone.out" "$work/herd.out" && same=same || same=DIFFERENT
    echo "rep $rep: n1 alone ${alone} s, herd run ${spread} s, output $same"
done
echo "moves to n2: $(grep -c 'moved to n2' "$cluster/n1/herdd.log" || true), homecomings for memory kept at home: $(grep -c 'goes home for touching memory kept at home' "$cluster/n2/herdd.log" || true)"
