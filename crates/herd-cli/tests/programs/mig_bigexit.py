# 512 MiB that the process never reads again: it waits for a line on stdin and
# exits with status 7 at once (moved by post-copy, it ends while most of its
# memory is still on its way).
import os
import sys

print(f"mig-pid: {os.getpid()}", file=sys.stderr, flush=True)
data = bytearray(b"\x5a") * (512 << 20)
print("ready", flush=True)
sys.stdin.readline()
print("bye", flush=True)
os._exit(7)
