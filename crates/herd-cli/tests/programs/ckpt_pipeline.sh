#!/bin/bash
# A shell pipeline checkpointed as a tree: bash, a subshell running a loop
# (which starts `sleep` each round), sort and uniq, with lines waiting in the
# pipes. Usage: ckpt_pipeline.sh N
seq 1 "$1" | while read -r i; do echo $(( i * i % 11 )); sleep 0.05; done | sort -n | uniq -c
echo "pipeline done"
