# A pseudo-terminal inside the checkpointed tree: python3 forks a child on a
# new pty (pty.fork: the child leads a session whose controlling terminal is
# the slave, on its fds 0-2), sets the window size from the master, and talks
# to it N times through the master, sleeping 0.1 s between (the checkpoint
# lands there). The child reports, each time, what a program sees of its
# terminal: echo off as it set it, the window size, that it leads the session
# and is its foreground group. Then Ctrl-C is typed (SIGINT through the
# terminal's line discipline, to the foreground group) and EOF.
# With "stuck", the child reads nothing and a line waits in the terminal.
# usage: ckpt_pty.py N [stuck]
import fcntl, os, pty, signal, struct, sys, termios, time

n = int(sys.argv[1])
stuck = sys.argv[2:] == ["stuck"]
pid, fd = pty.fork()
if pid == 0 and stuck:
    time.sleep(60)
    os._exit(0)
if pid == 0:
    attrs = termios.tcgetattr(0)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(0, termios.TCSANOW, attrs)
    signal.signal(signal.SIGINT, lambda s, f: print("child: interrupted", flush=True))
    print("ready", flush=True)
    for line in sys.stdin:
        rows, cols = struct.unpack("hh", fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 4))
        echo = bool(termios.tcgetattr(0)[3] & termios.ECHO)
        fg = os.tcgetpgrp(0) == os.getpgrp()
        print("got %s echo=%s size=%dx%d leader=%s fg=%s" % (line.strip(), echo, cols, rows, os.getsid(0) == os.getpid(), fg), flush=True)
    print("child: end of input", flush=True)
    os._exit(3)

fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
if stuck:
    os.write(fd, b"unread\n")
    print("stuck", flush=True)
    for i in range(300):
        time.sleep(0.2)
        print("still", i, flush=True)
    sys.exit(0)
pending = b""


def line():
    global pending
    while b"\n" not in pending:
        pending += os.read(fd, 1024)
    l, pending = pending.split(b"\n", 1)
    return l.decode().rstrip("\r")


print("child says", line(), flush=True)
for i in range(n):
    os.write(fd, b"tick %d\n" % i)
    print("child says", line(), flush=True)
    time.sleep(0.1)
os.write(fd, b"\x03")
print("child says", line(), flush=True)
os.write(fd, b"\x04")
print("child says", line(), flush=True)
_, st = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(st), flush=True)
