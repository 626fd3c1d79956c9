#!/bin/bash
# `tail -f` (which waits with inotify and poll) on a log that grows after the
# checkpoint; bash then ends it by its pid. Usage: ckpt_tailf.sh LOG
f=$1
for i in 1 2 3; do echo "line $i" >> "$f"; done
tail -n +1 -f "$f" &
t=$!
sleep 3
for i in 4 5 6; do echo "line $i" >> "$f"; sleep 0.2; done
sleep 0.5
kill "$t"
wait "$t"
echo "tail ended: $?"
