# A python3 process moved to n2 at "ready 1" (families.rs) forks two children with
# os.fork: they are made on n2 and hash there. Each prints its digest and whether
# getppid() is its parent; the parent prints their pids on stderr ("fam-children: A B"),
# "ready 2", and their exit statuses (20, 21). Its pid first, on stderr ("mig-pid: N").
import hashlib
import os
import sys

print(f"mig-pid: {os.getpid()}", file=sys.stderr, flush=True)
print("ready 1", flush=True)
sys.stdin.readline()
me = os.getpid()
kids = []
for i in range(2):
    pid = os.fork()
    if pid == 0:
        h = hashlib.sha256()
        for k in range(10_000_000 + 2_000_000 * i):
            h.update(b"%d" % k)
        print(f"child {i}: {h.hexdigest()[:16]} parent {'matches' if os.getppid() == me else 'differs'}", flush=True)
        os._exit(20 + i)
    kids.append(pid)
print("fam-children: " + " ".join(map(str, kids)), file=sys.stderr, flush=True)
print("ready 2", flush=True)
for i, pid in enumerate(kids):
    _, status = os.waitpid(pid, 0)
    print(f"child {i}: exited {os.waitstatus_to_exitcode(status)}", flush=True)
