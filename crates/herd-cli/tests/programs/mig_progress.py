"""Computes in four phases with progress lines; deterministic output.

Each phase: 8 steps of a sha256 chain (~40 ms) and a 50 ms sleep, each step
printing the chain so far and a running total that also depends on a table
of 200,000 entries built at the start (heap state that must survive moves).
After each phase it prints "gate N" and reads a line from stdin before going
on, so that a test can move it at known points: it sends the line, then
migrates while the next phase computes. End of file at a gate: exit 100.
About 3 s in all (under 1 s of it CPU).
"""

import hashlib
import os
import sys
import time

PHASES = 4
STEPS = 8
CHAIN = 100000


def main():
    print(f"mig-pid: {os.getpid()}", file=sys.stderr, flush=True)
    table = {i: (i * 2654435761) % 4294967291 for i in range(200_000)}
    h = hashlib.sha256(b"herd").digest()
    total = 0
    for phase in range(PHASES):
        for step in range(STEPS):
            for _ in range(CHAIN):
                h = hashlib.sha256(h).digest()
            k = int.from_bytes(h[:8], "big")
            total = (total * 31 + table[k % len(table)] * (phase * STEPS + step + 1)) % (2**61 - 1)
            print(f"phase {phase} step {step} sha {h.hex()[:16]} total {total}", flush=True)
            time.sleep(0.05)
        print(f"gate {phase}", flush=True)
        if not sys.stdin.readline():
            print(f"end of file on stdin at gate {phase}", file=sys.stderr, flush=True)
            sys.exit(100)
    print(f"done total {total} table {sum(table.values()) % (2**61 - 1)}", flush=True)


main()
