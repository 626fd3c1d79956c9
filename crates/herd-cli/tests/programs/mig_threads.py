"""Five threads: three workers each folding jobs into a sha256 chain of their
own (thread-local state), a reader thread blocked reading stdin, and the main
thread, which hands out jobs, prints one line per round and, after each
phase of five rounds, prints "gate N" and waits for the reader to bring a
"go" line. A test moves it while the reader is blocked in read(0) and the
main thread waits: after "go", the main thread and the workers must compute
and print while the reader is blocked in read(0) again (its forwarded read
pending at home), so forwarded calls of different threads must not wait for
each other. Deterministic output; end of file at a gate: exit 100.
"""

import hashlib
import os
import queue
import sys
import threading

print(f"mig-pid: {os.getpid()}", file=sys.stderr, flush=True)

PHASES = 4
ROUNDS = 5
lines = queue.Queue()


def reader():
    while True:
        line = sys.stdin.readline()
        lines.put(line)
        if not line:
            return


jobs = [queue.Queue() for _ in range(3)]
results = queue.Queue()
local = threading.local()


def worker(i):
    local.h = hashlib.sha256(f"worker {i}".encode()).digest()
    while True:
        job = jobs[i].get()
        if job is None:
            return
        for _ in range(3000):
            local.h = hashlib.sha256(local.h + job).digest()
        results.put((i, local.h[:6].hex()))


threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
threads.append(threading.Thread(target=reader, daemon=True))
for t in threads:
    t.start()
for phase in range(PHASES):
    for r in range(ROUNDS):
        for q in jobs:
            q.put(f"{phase}.{r}".encode())
        got = sorted(results.get() for _ in range(3))
        print(f"round {phase}.{r}: " + " ".join(h for _, h in got), flush=True)
    print(f"gate {phase}", flush=True)
    if lines.get() == "":
        sys.exit(100)
for q in jobs:
    q.put(None)
for t in threads[:3]:
    t.join()
print("done", flush=True)
