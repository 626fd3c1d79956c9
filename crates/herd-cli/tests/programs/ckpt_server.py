# A TCP server, a UDP socket and a unix listener checkpointed while idle:
# after the ticks (the checkpoint lands there) it starts a client child that
# connects to each, and serves it. The ports are chosen by the kernel at the
# start and must be the same after a restart (the client looks them up from
# the server's own sockets). Same output uninterrupted and restarted.
# usage: ckpt_server.py DIR TICKS
import os, socket, sys, time

d, ticks = sys.argv[1], int(sys.argv[2])
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("127.0.0.1", 0))
tcp.listen(5)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
path = os.path.join(d, "srv.sock")
if os.path.exists(path):
    os.unlink(path)
ux = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ux.bind(path)
ux.listen(2)
tport, uport = tcp.getsockname()[1], udp.getsockname()[1]
print("ready", flush=True)
for i in range(ticks):
    time.sleep(0.1)
    print("tick", i, flush=True)
same = tcp.getsockname()[1] == tport and udp.getsockname()[1] == uport
print("ports kept", same, flush=True)
kid = os.fork()
if kid == 0:
    c = socket.create_connection(("127.0.0.1", tport))
    c.sendall(b"hello tcp\n")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"hello udp", ("127.0.0.1", uport))
    x = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    x.connect(path)
    x.sendall(b"hello unix\n")
    os._exit(0)
conn, _ = tcp.accept()
print("tcp got", conn.makefile("rb").readline().decode().strip(), flush=True)
print("udp got", udp.recv(100).decode(), flush=True)
xc, _ = ux.accept()
print("unix got", xc.makefile("rb").readline().decode().strip(), flush=True)
_, st = os.waitpid(kid, 0)
print("client", os.waitstatus_to_exitcode(st), flush=True)
