#!/usr/bin/env bash
# Shows what herd does as of today: a local cluster of three nodes (each herdd in
# its own network, pid and mount namespaces) forms; a python3 job started on n1
# with `herd run` moves n1 -> n2 -> n3 -> home while it runs, and its output is
# the same as that of an uninterrupted run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p herd-cli -p herd-daemon
herd=$PWD/target/release/herd
dir=$(mktemp -d -p "$PWD/target" demo.XXXXXX)   # visible inside the nodes (/tmp is private to each)
chmod 755 "$dir"
cluster=$dir/cluster
trap '"$herd" cluster down --dir "$cluster" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

echo "== herd cluster up --nodes 3"
"$herd" cluster up --nodes 3 --dir "$cluster"
sleep 1
echo
echo "== herd --node n1 nodes: what node n1 knows of the cluster"
"$herd" --cluster "$cluster" --node n1 nodes

cat > "$dir/job.py" <<'PY'
import hashlib, os, time
h = b"herd"
print(f"job: pid {os.getpid()}, parent {os.getppid()}", flush=True)
for i in range(16):
    for _ in range(40000):
        h = hashlib.sha256(h).digest()
    print(f"step {i:2d}  {h.hex()[:24]}  pid {os.getpid()}", flush=True)
    time.sleep(0.2)
print("job done", flush=True)
PY
chmod 644 "$dir/job.py"
py=python3; [ -x /usr/bin/python3 ] && py=/usr/bin/python3   # the system's, readable by every user
# Processes of root do not migrate unless the nodes allow it: run the job as nobody.
as_user=()
[ "$(id -u)" = 0 ] && as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups --)
run_in_n1() { "$herd" cluster exec n1 --dir "$cluster" -- "${as_user[@]}" "$@"; }

echo
echo "== the job run directly in n1, for comparison"
run_in_n1 "$py" "$dir/job.py" > "$dir/direct.txt"
echo "== the same job under herd run in n1; it will move n1 -> n2 -> n3 -> n1"
run_in_n1 "$herd" run -- "$py" "$dir/job.py" > "$dir/moved.txt" &
run=$!
while ! grep -q '^job: pid' "$dir/moved.txt" 2>/dev/null; do sleep 0.05; done
pid=$(awk 'NR==1 {print $3}' "$dir/moved.txt" | tr -d ,)
for target in n2 n3 home; do
  sleep 0.8
  echo "-- herd migrate $pid $target"
  "$herd" --cluster "$cluster" --node n1 migrate "$pid" "$target"
  "$herd" --cluster "$cluster" --node n1 ps
done
wait "$run" && echo "herd run exited 0"
echo
echo "== its output:"
cat "$dir/moved.txt"
# The results, without the pids (the two runs are different processes).
results() { grep -v '^job: pid' "$1" | sed 's/  pid [0-9]*$//'; }
if cmp -s <(results "$dir/direct.txt") <(results "$dir/moved.txt"); then
  echo "== the same results as the uninterrupted run"
else
  echo "== DIFFERENT from the uninterrupted run:"; diff <(results "$dir/direct.txt") <(results "$dir/moved.txt") || true; exit 1
fi
if [ "$(grep -c "  pid $pid\$" "$dir/moved.txt")" = 16 ]; then
  echo "== and getpid() said $pid on every node"
else
  echo "== getpid() changed on the way"; exit 1
fi
