#!/bin/bash
# A FIFO between two processes of the tree, full of lines the reader takes
# slowly (bash reads a byte at a time: the rest waits in the FIFO).
# Usage: ckpt_fifo.sh DIR
f="$1/fifo"
rm -f "$f"
mkfifo "$f"
( while read -r l; do echo "got $l"; sleep 0.1; done < "$f" ) &
exec 3> "$f"
for i in $(seq 1 30); do echo "item $i" >&3; done
exec 3>&-
wait
echo "fifo done"
