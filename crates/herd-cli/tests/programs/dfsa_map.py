# Private mappings of files the process has open, and C extension modules (ld.so maps
# them), made wherever the process runs.
#
#   dfsa_map.py FILE OTHER   says "ready" and waits for a line; maps FILE privately
#                            (mmap ACCESS_COPY): its sha256, a write to the private copy
#                            that the file does not see; imports _json, _decimal and
#                            _lzma (not loaded before) and uses them; says "mapped" and
#                            waits for a line; maps OTHER privately and prints what it
#                            holds; says "done", waits for a line and ends.
import hashlib, mmap, os, sys

path, other = sys.argv[1], sys.argv[2]
print(f"mig-pid: {os.getpid()}", file=sys.stderr, flush=True)
print("ready", flush=True)
sys.stdin.readline()
with open(path, "rb") as f:
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    print("sha256", hashlib.sha256(m).hexdigest())
    m[0:5] = b"XXXXX"
    print("private write:", bytes(m[0:5]))
    m.close()
with open(path, "rb") as f:
    print("the file starts with", f.read(5))
import json, decimal, lzma

print("json", json.dumps({"a": [1, 2.5, None]}, sort_keys=True), "C scanner:", json.decoder.c_scanstring is not None)
decimal.getcontext().prec = 40
print("decimal", decimal.Decimal(1) / decimal.Decimal(7))
print("lzma", len(lzma.decompress(lzma.compress(b"herd" * 10000))))
print("mapped", flush=True)
sys.stdin.readline()
with open(other, "rb") as f:
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    print("other:", bytes(m[:]).decode().strip())
print("done", flush=True)
sys.stdin.readline()
