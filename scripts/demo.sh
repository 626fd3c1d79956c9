#!/usr/bin/env bash
# Shows herd's main job as of today: a running program is checkpointed,
# ended, and continued from its image by `herd restart`, with the same
# output as if it had never stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p herd-cli
herd=$PWD/target/release/herd
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
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
