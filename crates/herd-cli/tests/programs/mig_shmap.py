# A process home refuses to move: it holds a private mapping of a deleted file
# (its pages that were never written are the file's, which exists nowhere else).
# Prints "ready", waits for a line on stdin, prints "done".
import mmap
import os
import sys
import tempfile

print(f"mig-pid: {os.getpid()}", file=sys.stderr, flush=True)

with tempfile.TemporaryFile() as f:
    f.truncate(8192)
    m = mmap.mmap(f.fileno(), 8192, access=mmap.ACCESS_COPY)
    m[0:5] = b"herd!"
    print("ready", flush=True)
    sys.stdin.readline()
    print("done", flush=True)
