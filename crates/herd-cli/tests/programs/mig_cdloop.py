# A shell loop away that runs a child and then changes directory, 300 times: each `cd`
# comes right after a child ended, so the child's SIGCHLD (dash catches it, without
# SA_RESTART) crosses the forwarded chdir. At home a chdir never fails for a signal.
#
#   mig_cdloop.py DIR   says "ready" and waits for a line; then execs sh with the loop,
#                       which says how many of its `cd DIR` failed, "done", waits for a
#                       line and ends.
import os, sys

d = sys.argv[1]
print(f"mig-pid: {os.getpid()}", file=sys.stderr, flush=True)
print("ready", flush=True)
sys.stdin.readline()
loop = ('i=0; fails=0; while [ $i -lt 300 ]; do x=$(echo a); cd "$1" || fails=$((fails+1)); i=$((i+1)); done; '
        'echo "cd after a child, 300 times: $fails failed"; echo done; read line')
os.execv("/bin/sh", ["sh", "-c", loop, "sh", d])
