# An eventfd, a timerfd and inotify made and used while away: made at home, where the
# process's descriptors are; the process stays where it runs.
#
#   mig_eventfds.py DIR   says "ready" and waits for a line; then counts with an
#                         eventfd (two writes, one read, one read that would wait:
#                         EAGAIN); arms a 50 ms timer (timerfd_settime, gettime), waits
#                         for it with select and reads its expirations; watches DIR
#                         with inotify, makes a file there and reads the event; says
#                         what it got at each step, "done", waits for a line and ends.
import ctypes, os, select, struct, sys

libc = ctypes.CDLL(None, use_errno=True)


class Timespec(ctypes.Structure):
    _fields_ = [("s", ctypes.c_long), ("ns", ctypes.c_long)]


class Itimerspec(ctypes.Structure):
    _fields_ = [("interval", Timespec), ("value", Timespec)]


d = sys.argv[1]
print(f"mig-pid: {os.getpid()}", file=sys.stderr, flush=True)
print("ready", flush=True)
sys.stdin.readline()

e = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
os.eventfd_write(e, 5)
os.eventfd_write(e, 7)
print("eventfd read", os.eventfd_read(e))
try:
    os.eventfd_read(e)
except BlockingIOError:
    print("eventfd empty: EAGAIN")

t = libc.timerfd_create(1, 0)  # CLOCK_MONOTONIC
old = Itimerspec()
r = libc.timerfd_settime(t, 0, ctypes.byref(Itimerspec(Timespec(0, 0), Timespec(0, 50_000_000))), ctypes.byref(old))
print("timer set", r, "it was disarmed:", (old.value.s, old.value.ns) == (0, 0))
cur = Itimerspec()
libc.timerfd_gettime(t, ctypes.byref(cur))
print("timer armed, under 50 ms to go:", cur.value.s == 0 and 0 < cur.value.ns <= 50_000_000)
ready, _, _ = select.select([t], [], [], 10)
print("timer fired:", ready == [t], "expirations", struct.unpack("Q", os.read(t, 8))[0])

i = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
wd = libc.inotify_add_watch(i, d.encode(), 0x100)  # IN_CREATE
name = f"made-{os.getpid()}"
open(os.path.join(d, name), "w").close()
ev = os.read(i, 4096)
w, mask, cookie, n = struct.unpack("iIII", ev[:16])
print("inotify: its watch", w == wd, "mask", hex(mask), "the file made:", ev[16 : 16 + n].rstrip(b"\0").decode() == name)
print("rm_watch", libc.inotify_rm_watch(i, wd))
os.unlink(os.path.join(d, name))
print("done", flush=True)
sys.stdin.readline()
