#!/usr/bin/env bash
# Shows what herd does as of today:
# 1. a local cluster of three nodes (each herdd in its own namespaces) forms,
#    notices a node leaving and coming back;
# 2. a running program is checkpointed, ended, and continued from its image by
#    `herd restart`, with the same output as if it had never stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p herd-cli -p herd-daemon
herd=$PWD/target/release/herd
dir=$(mktemp -d)
cluster=$dir/cluster
trap '"$herd" cluster down --dir "$cluster" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

echo "== herd cluster up --nodes 3: three herdd, each in its own network, pid and mount namespaces"
if "$herd" cluster up --nodes 3 --dir "$cluster"; then
  sleep 1
  echo
  echo "== herd --node n1 nodes: what node n1 knows of the cluster"
  "$herd" --cluster "$cluster" --node n1 nodes
  echo
  echo "== herd cluster stop n2, then what n3 sees"
  "$herd" cluster stop n2 --dir "$cluster"
  sleep 1
  "$herd" --cluster "$cluster" --node n3 nodes
  echo
  echo "== herd cluster start n2: it is back"
  "$herd" cluster start n2 --dir "$cluster"
  sleep 2
  "$herd" --cluster "$cluster" --node n3 nodes
  echo
  "$herd" --cluster "$cluster" --node n2 status
  "$herd" cluster down --dir "$cluster"
else
  echo "(no local cluster on this machine: see the message above)"
fi
echo
cat > "$dir/job.py" <<'PY'
import hashlib, time
h = b"herd"
for i in range(12):
    for _ in range(40000):
        h = hashlib.sha256(h).digest()
    print(f"step {i:2d}  {h.hex()[:24]}", flush=True)
    time.sleep(0.15)
print("job done", flush=True)
PY
echo "== a python3 job starts, writing to $dir/out.txt"
# The job gets fds 0-2 only, as from an interactive shell (fds a caller
# leaked to us, such as an open pipe, would rightly make it non-checkpointable).
# It is started from a subshell, so it is not one of this script's jobs.
(
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done
    exec python3 "$dir/job.py" > "$dir/out.txt" 2>/dev/null </dev/null
  ) &
  echo $! > "$dir/pid"
)
pid=$(cat "$dir/pid")
sleep 1.2
cat "$dir/out.txt"
echo
echo "== herd checkpoint $pid --output job.img --kill"
"$herd" checkpoint "$pid" --output "$dir/job.img" --kill
echo
echo "== herd inspect job.img (first lines)"
"$herd" inspect "$dir/job.img" | sed -n 1,8p
echo
echo "== herd restart job.img: the job continues where it stopped"
"$herd" restart "$dir/job.img" </dev/null
echo "exit status: $?"
echo
echo "== the whole output file, as if the job had never stopped"
cat "$dir/out.txt"
echo
echo "== the same job run without interruption gives:"
python3 "$dir/job.py" | diff - "$dir/out.txt" && echo "identical"
