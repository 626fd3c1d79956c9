# python3 with socketpairs to a child: a stream pair the parent fills with
# numbered lines the child reads slowly (so lines wait in the socket at the
# checkpoint), the child answering each with a checksum on the same socket,
# and a datagram pair inside the parent with three datagrams waiting.
# Prints the same lines uninterrupted and checkpointed/restarted as a tree.
# usage: ckpt_sockpair.py N
import hashlib, os, socket, sys, time

n = int(sys.argv[1])
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
d1, d2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
for m in (b"one", b"two!", b"three"):
    d1.send(m)
kid = os.fork()
if kid == 0:
    a.close()
    def readline():
        # A byte at a time: what is not read yet stays in the socket.
        out = b""
        while not out.endswith(b"\n"):
            out += b.recv(1)
        return out
    for i in range(n):
        line = readline()
        time.sleep(0.05)
        b.sendall(hashlib.sha256(line).hexdigest()[:12].encode() + b"\n")
    os._exit(0)
b.close()
for i in range(n):
    a.sendall(f"line {i} {'x' * (i % 50)}\n".encode())
print("ready", flush=True)
f = a.makefile("rb")
for i in range(n):
    print(i, f.readline().decode().strip(), flush=True)
_, st = os.waitpid(kid, 0)
print("child", os.waitstatus_to_exitcode(st))
print("datagrams", [d2.recv(100) for _ in range(3)])
