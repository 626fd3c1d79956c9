# Children made with vfork and posix_spawn while away (the child shares the parent's
# memory until it execs): made where the process runs, each exec made there too when
# the node has the same program; the parent waits as at home and sees the exec's error.
#
#   dfsa_spawn.py OTHER   says "ready" and waits for a line; then runs /usr/bin/printf by
#                         os.posix_spawn (glibc: clone3 with CLONE_VM|CLONE_VFORK), printf
#                         by os.posix_spawnp with a PATH whose first directory has none,
#                         a program that does not exist by posix_spawnp (ENOENT, reported
#                         through the memory the child shares), /bin/echo and OTHER (a
#                         script whose contents differ per node: its exec goes home) by
#                         subprocess (vfork); says what each did, "done", waits for a
#                         line and ends.
import os, subprocess, sys

other = sys.argv[1]
print(f"mig-pid: {os.getpid()}", file=sys.stderr, flush=True)
print("ready", flush=True)
sys.stdin.readline()

env = dict(os.environ, PATH="/nonexistent/bin:/usr/bin:/bin")
pid = os.posix_spawn("/usr/bin/printf", ["printf", "spawned: %s\n", "posix_spawn"], env)
print("posix_spawn status", os.waitpid(pid, 0)[1], flush=True)
pid = os.posix_spawnp("printf", ["printf", "spawned: %s\n", "posix_spawnp"], env)
print("posix_spawnp status", os.waitpid(pid, 0)[1], flush=True)
try:
    os.posix_spawnp("no-such-program-herd", ["x"], env)
    print("posix_spawnp of nothing: no error")
except FileNotFoundError:
    print("posix_spawnp of nothing: FileNotFoundError", flush=True)
r = subprocess.run(["/bin/echo", "subprocess:", "vfork"], capture_output=True, text=True)
print("subprocess said", repr(r.stdout), r.returncode, flush=True)
r = subprocess.run([other], capture_output=True, text=True)
print("subprocess of the look-alike said", repr(r.stdout), r.returncode, flush=True)
r = subprocess.run(["sh", "-c", "exit 7"], env=env)
print("sh status", r.returncode, flush=True)
print("done", flush=True)
sys.stdin.readline()
