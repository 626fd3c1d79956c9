#!/bin/bash
# A shell moved to n2 at "ready 1" (families.rs) starts two subshells that compute in
# bash itself, without exec: they are forked on n2 and run there. Each prints
# "NAME: X"; the shell prints their pids on stderr ("fam-children: A B"), "ready 2",
# and how each ended (a: exit 3, b: exit 0). Its pid first, on stderr ("mig-pid: N").
spin() {
    local i=0 x=7
    while [ "$i" -lt "$1" ]; do x=$(( (x * 31 + i) % 1000003 )); i=$((i + 1)); done
    echo "$2: $x"
}
echo "mig-pid: $$" >&2
echo "ready 1"
read -r _
( spin 300000 a; exit 3 ) &
a=$!
( spin 250000 b ) &
b=$!
echo "fam-children: $a $b" >&2
echo "ready 2"
wait "$a"
echo "a exited $?"
wait "$b"
echo "b exited $?"
