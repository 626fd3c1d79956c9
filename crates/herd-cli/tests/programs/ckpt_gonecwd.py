# A program whose working directory is deleted while it is in it (as a build's
# scratch directory removed under a running job).
#
#   ckpt_gonecwd.py DIR N   makes DIR/gone, enters it, removes it, ticks N times
#                           (0.1 s each; the checkpoint lands there), then says
#                           what its working directory is: getcwd fails, it is
#                           an empty directory with no links, nothing can be
#                           made in it, and its parent is DIR
#
# Restored into another directory (or refused), the last lines differ.
import errno, os, sys, time

base, n = sys.argv[1], int(sys.argv[2])
os.mkdir(os.path.join(base, "gone"))
os.chdir(os.path.join(base, "gone"))
os.rmdir(os.path.join(base, "gone"))
for i in range(n):
    print("tick", i, flush=True)
    time.sleep(0.1)
try:
    print("getcwd:", os.getcwd())
except OSError as e:
    print("getcwd:", errno.errorcode[e.errno])
st = os.stat(".")
print("links:", st.st_nlink, "entries:", os.listdir("."))
try:
    open("new-file", "w")
    print("made a file in it")
except OSError as e:
    print("making a file:", errno.errorcode[e.errno])
print("parent is DIR:", os.stat("..").st_ino == os.stat(base).st_ino, flush=True)
