"""A job for the survival tests: deterministic work on a few MiB of its own memory,
numbered output lines that carry a checksum of that memory, slow enough to be moved,
checkpointed and have its node killed under it.

  surv_job.py lines N [FILE]   N lines to stdout (and the same to FILE, opened at start)
  surv_job.py echo             one line per line of stdin, then the count
  surv_job.py clock N          N lines, each with the time it read (diverges on replay)

Its pid (the home pid, wherever it runs) goes to stderr first: "mig-pid: N".
"""
import os
import sys
import time
import zlib

sys.stderr.write(f"mig-pid: {os.getpid()}\n")
sys.stderr.flush()

mem = bytearray(4 << 20)


def step(i):
    # Touch memory all over, so that what a checkpoint holds matters.
    for j in range(0, len(mem), 4096 * 7):
        mem[j] = (mem[j] + i + j) & 0xFF
    return zlib.crc32(mem)


mode = sys.argv[1]
if mode == "lines":
    n = int(sys.argv[2])
    f = open(sys.argv[3], "w") if len(sys.argv) > 3 else None
    for i in range(n):
        line = f"{i} {step(i):08x}\n"
        sys.stdout.write(line)
        sys.stdout.flush()
        if f:
            f.write(line)
            f.flush()
        time.sleep(0.02)
elif mode == "echo":
    n = 0
    for line in sys.stdin:
        n += 1
        sys.stdout.write(f"{n} {line.strip()} {step(n):08x}\n")
        sys.stdout.flush()
        time.sleep(0.02)
    print("count", n, flush=True)
elif mode == "clock":
    for i in range(int(sys.argv[2])):
        step(i)
        print(i, time.time(), flush=True)
        time.sleep(0.02)
print("done", flush=True)
