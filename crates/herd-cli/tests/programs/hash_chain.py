"""A sha256 hash chain with progress lines; keeps 4 bytes of every digest in a
growing bytearray, so the heap keeps growing after a restore. Deterministic;
exits with status 3.

usage: hash_chain.py [iterations=2000000]
"""
import hashlib
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000000
every = max(1, n // 20)
h = b"herd"
chain = bytearray()
for i in range(n):
    h = hashlib.sha256(h + i.to_bytes(8, "little")).digest()
    chain += h[:4]
    if i % every == 0:
        print(f"{i} {h.hex()[:16]} {len(chain) // 4}", flush=True)
whole = hashlib.sha256(chain).hexdigest()
print(f"done {h.hex()} {whole} {sum(chain[::4096])}", flush=True)
sys.exit(3)
