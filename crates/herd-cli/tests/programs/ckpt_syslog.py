# A program that logs through python's logging.handlers.SysLogHandler, which
# connects an unnamed unix datagram socket to the logger's socket outside the
# checkpointed tree (as syslog(3) to /dev/log).
#
#   ckpt_syslog.py server PATH OUT   the logger: binds a datagram socket at PATH
#                                    and writes each message it receives to OUT,
#                                    a line each
#   ckpt_syslog.py client PATH N     the program under test: N ticks, each logs
#                                    "tick I", prints it, sleeps 0.1 s
#
# Restored unconnected (or connected elsewhere), its logging fails or is lost:
# the logger's file then lacks the ticks after the restart.
import logging, logging.handlers, socket, sys, time

mode = sys.argv[1]
if mode == "server":
    path, out = sys.argv[2], sys.argv[3]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)  # PATH appears once it can be sent to
    with open(out, "a", buffering=1) as f:
        while True:
            f.write(s.recv(4096).rstrip(b"\0").decode() + "\n")
elif mode == "client":
    log = logging.getLogger("ckpt")
    log.setLevel(logging.INFO)
    log.addHandler(logging.handlers.SysLogHandler(address=sys.argv[2]))
    for i in range(int(sys.argv[3])):
        log.info("tick %d", i)
        print("logged tick", i, flush=True)
        time.sleep(0.1)
