# Three python threads hand a token round a ring of queues (each hop a
# condition-variable wait in the interpreter, a futex wait with a timeout
# under the GIL's own timed waits), each folding it into a hash chain kept in
# thread-local state; a fourth thread sleeps in time.sleep. The main thread
# prints one line per round. Output depends on every thread resuming exactly.
#
# usage: thr_py.py ROUNDS
import hashlib
import queue
import sys
import threading
import time

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 40
local = threading.local()
ring = [queue.Queue() for _ in range(3)]
report = queue.Queue()


def hop(i):
    local.h = hashlib.sha256(f"thread {i}".encode()).digest()
    while True:
        token = ring[i].get()
        if token is None:
            report.put((f"hop{i}", local.h.hex()[:16]))
            return
        for _ in range(2000):
            local.h = hashlib.sha256(local.h + token).digest()
        time.sleep(0.005)
        nxt = (i + 1) % 3
        if i == 2:
            report.put(("round", local.h[:8]))
        else:
            ring[nxt].put(local.h[:8])


slept = []


def sleeper():
    n = 0
    while n < rounds:
        time.sleep(0.02)
        n += 1
    slept.append(n)


threads = [threading.Thread(target=hop, args=(i,)) for i in range(3)]
threads.append(threading.Thread(target=sleeper))
for t in threads:
    t.start()
token = b"start"
for r in range(rounds):
    ring[0].put(token)
    kind, value = report.get()
    assert kind == "round", kind
    token = value
    print(f"round {r}: {value.hex()}", flush=True)
for q in ring:
    q.put(None)
finals = sorted(report.get() for _ in range(3))
for kind, value in finals:
    print(f"final {kind} {value}", flush=True)
for t in threads:
    t.join()
print(f"sleeper slept {slept[0]} times", flush=True)
print(f"threads left: {threading.active_count()}", flush=True)
sys.exit(5)
