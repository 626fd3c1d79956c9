# A process home refuses to move: it holds a shared writable mapping of a
# file (its writes would have to reach the file at home).
# Prints "ready", waits for a line on stdin, prints "done".
import mmap
import os
import sys
import tempfile

print(f"mig-pid: {os.getpid()}", file=sys.stderr, flush=True)

with tempfile.NamedTemporaryFile() as f:
    f.truncate(4096)
    m = mmap.mmap(f.fileno(), 4096)
    m[0:5] = b"herd!"
    print("ready", flush=True)
    sys.stdin.readline()
    print("done", flush=True)
