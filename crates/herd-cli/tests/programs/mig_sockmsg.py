# Socket messages (sendmsg, recvmsg) made while away: forwarded to home, where the
# process's sockets are; the process stays where it runs.
#
#   mig_sockmsg.py DIR   says "ready" and waits for a line; then sends a message of three
#                        buffers with sendmsg from a unix datagram socket bound in DIR to
#                        another, and receives it with recvmsg (the sender's address); on
#                        a unix stream pair passes an open file's descriptor (SCM_RIGHTS)
#                        and reads the file through the one received; again with a
#                        control buffer too small (MSG_CTRUNC, nothing received); fills
#                        three buffers with recvmsg_into; sends three datagrams with one
#                        sendmmsg and receives them with one recvmmsg (libc, by ctypes);
#                        says what it got at each step, "done", waits for a line and ends.
import array, ctypes, os, socket, sys

libc = ctypes.CDLL(None, use_errno=True)


class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(Iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t), ("flags", ctypes.c_int)]


class Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", Msghdr), ("len", ctypes.c_uint)]


def mmsgs(bufs):
    msgs = (Mmsghdr * len(bufs))()
    iovs = [Iovec(ctypes.cast(b, ctypes.c_void_p), len(b)) for b in bufs]
    for m, iov in zip(msgs, iovs):
        m.hdr.iov = ctypes.pointer(iov)
        m.hdr.iovlen = 1
        m.len = 0xDEAD
    return msgs, iovs

d = sys.argv[1]
print(f"mig-pid: {os.getpid()}", file=sys.stderr, flush=True)
print("ready", flush=True)
sys.stdin.readline()

srv_path, cli_path = os.path.join(d, f"srv-{os.getpid()}"), os.path.join(d, f"cli-{os.getpid()}")
srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
srv.bind(srv_path)
cli = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
cli.bind(cli_path)
print("sent", cli.sendmsg([b"three ", b"buffers ", b"in one"], [], 0, srv_path))
data, anc, flags, addr = srv.recvmsg(64)
print("got", data, "from the client:", addr == cli_path, "flags", flags, "control", anc)

passed = os.path.join(d, f"passed-{os.getpid()}")
with open(passed, "w") as f:
    f.write("passed along\n")
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
with open(passed) as g:
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [g.fileno()]))]
    a.sendmsg([b"fd"], rights)
    data, anc, flags, addr = b.recvmsg(16, socket.CMSG_SPACE(4))
    fds = array.array("i")
    for level, kind, cdata in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(cdata[: len(cdata) - len(cdata) % fds.itemsize])
    print("got", data, "with", len(fds), "descriptor(s), a new one:", fds[0] != g.fileno())
    with os.fdopen(fds[0]) as r:
        print("it reads:", r.read().strip())
    a.sendmsg([b"again"], rights)
    data, anc, flags, addr = b.recvmsg(16, 1)
    print("got", data, "control cut:", bool(flags & socket.MSG_CTRUNC), "control", anc)

a.sendall(b"0123456789")
bufs = [bytearray(4), bytearray(3), bytearray(8)]
nbytes, anc, flags, addr = b.recvmsg_into(bufs)
print("into", nbytes, [bytes(x) for x in bufs])
x, y = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
out = [ctypes.create_string_buffer(t, len(t)) for t in (b"first", b"second", b"3rd")]
msgs, keep = mmsgs(out)
print("sendmmsg", libc.sendmmsg(x.fileno(), msgs, 3, 0), [m.len for m in msgs])
into = [ctypes.create_string_buffer(8) for _ in range(4)]
msgs, keep = mmsgs(into)
n = libc.recvmmsg(y.fileno(), msgs, 4, socket.MSG_DONTWAIT, None)
print("recvmmsg", n, [(m.len, into[k].raw[: m.len]) for k, m in enumerate(msgs[:n])], "the fourth untouched:", hex(msgs[3].len))
for p in (srv_path, cli_path, passed):
    os.unlink(p)
print("done", flush=True)
sys.stdin.readline()
