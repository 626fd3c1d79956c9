# A process with a second thread: it cannot move (threads do not migrate yet).
# Prints "ready", waits for a line on stdin, prints "done".
import os
import sys
import threading
import time

print(f"mig-pid: {os.getpid()}", file=sys.stderr, flush=True)

threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
print("done", flush=True)
