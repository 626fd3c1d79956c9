#!/bin/bash
# Three jobs that live until stdin ends (families.rs: kill -9 of this shell,
# a signal to the process group). Their stdin is the script's (0<&0: without
# it a background job of a script reads /dev/null). Usage: fam_tree.sh FAM_TICK
"$1" a 0<&0 &
"$1" b 0<&0 &
"$1" c 0<&0 &
echo "started 3"
wait
echo "all done"
