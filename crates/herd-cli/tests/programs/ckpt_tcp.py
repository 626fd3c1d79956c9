# An established TCP connection checkpointed with `--tcp-established`.
#
#   ckpt_tcp.py peer PORTFILE [K]   an echo server outside the checkpointed tree:
#                                   writes its port to PORTFILE, takes one
#                                   connection, answers each line "echo LINE";
#                                   with K, answers "tick K" only once the file
#                                   PORTFILE.go exists (the test makes it while
#                                   the client is checkpointed and gone)
#   ckpt_tcp.py client PORTFILE N   the program under test: N ticks, each sends
#                                   "tick I", sleeps 0.1 s (the checkpoint lands
#                                   there, the answer waiting unread in its
#                                   socket), then reads and prints the answer
#   ckpt_tcp.py pair N              the same with its own echo server, a forked
#                                   child: both ends of the connection (and the
#                                   child's listener) are in the tree
#
# A connection made again wrongly loses, repeats or garbles an answer, or is reset.
import os, socket, sys, time


def serve(conn, held=None, go=None):
    f = conn.makefile("rb")
    for line in f:
        if line == held:
            while not os.path.exists(go):
                time.sleep(0.01)
        conn.sendall(b"echo " + line)


def client(conn, n):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = conn.makefile("rb")
    for i in range(n):
        conn.sendall(b"tick %d\n" % i)
        time.sleep(0.1)
        print(f.readline().decode().rstrip("\n"), flush=True)
    conn.shutdown(socket.SHUT_WR)
    print("end of stream" if f.readline() == b"" else "more data?", flush=True)


mode = sys.argv[1]
if mode == "peer":
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(ls.getsockname()[1]))
    os.rename(tmp, sys.argv[2])
    conn, _ = ls.accept()
    if len(sys.argv) > 3:
        serve(conn, b"tick %d\n" % int(sys.argv[3]), sys.argv[2] + ".go")
    else:
        serve(conn)
elif mode == "client":
    port = int(open(sys.argv[2]).read())
    client(socket.create_connection(("127.0.0.1", port)), int(sys.argv[3]))
elif mode == "pair":
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port = ls.getsockname()[1]
    kid = os.fork()
    if kid == 0:
        conn, _ = ls.accept()
        serve(conn)
        os._exit(0)
    ls.close()
    client(socket.create_connection(("127.0.0.1", port)), int(sys.argv[2]))
    _, st = os.waitpid(kid, 0)
    print("server", os.waitstatus_to_exitcode(st), flush=True)
