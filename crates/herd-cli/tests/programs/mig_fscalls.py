# File calls that once brought a process home, made while away: extended attributes,
# mkfifo, sync; the process stays where it runs.
#
#   mig_fscalls.py DIR   says "ready" and waits for a line; then sets, reads, lists and
#                        removes user extended attributes of a file in DIR (by path, by
#                        descriptor, without following a symlink), makes a FIFO there
#                        (mknodat), syncs, and syncs the file's file system; says what
#                        it got at each step,
#                        "done", waits for a line and ends.
import ctypes, errno, os, stat, sys

d = sys.argv[1]
print(f"mig-pid: {os.getpid()}", file=sys.stderr, flush=True)
print("ready", flush=True)
sys.stdin.readline()

f = os.path.join(d, f"attrs-{os.getpid()}")
with open(f, "w") as out:
    out.write("x\n")
os.setxattr(f, "user.herd", b"first value")
fd = os.open(f, os.O_RDONLY)
os.setxattr(fd, "user.second", b"2")
print("getxattr", os.getxattr(f, "user.herd"), os.getxattr(fd, "user.second"))
print("listxattr", sorted(os.listxattr(f)), sorted(os.listxattr(fd)))
link = f + ".link"
os.symlink(os.path.basename(f), link)
print("through the link", os.getxattr(link, "user.herd"), "of the link itself", sorted(os.listxattr(link, follow_symlinks=False)))
os.removexattr(f, "user.herd")
os.removexattr(fd, "user.second")
try:
    os.getxattr(f, "user.herd")
except OSError as e:
    print("removed:", errno.errorcode[e.errno])
fifo = f + ".fifo"
os.mkfifo(fifo, 0o600)
print("mkfifo: a FIFO", stat.S_ISFIFO(os.stat(fifo).st_mode), "mode", oct(os.stat(fifo).st_mode & 0o777))
os.sync()
libc = ctypes.CDLL(None, use_errno=True)
print("syncfs", libc.syncfs(fd))
os.close(fd)
for p in (f, link, fifo):
    os.unlink(p)
print("done", flush=True)
sys.stdin.readline()
