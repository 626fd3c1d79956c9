# Programs exec'd while away: by a PATH search (its first directory has no such
# program), by a shell, a #! script, and in children the script forks; each where the
# process runs when that node has the same program, home otherwise.
#
#   dfsa_exec.py DIR OTHER   says "ready" and waits for a line; then opens DIR/out-PID
#                            twice (one descriptor close-on-exec, one inherited) and
#                            execs "sh" with PATH=/nonexistent/bin:/usr/bin:/bin. sh
#                            says whether each descriptor is open, writes to the
#                            inherited one, goes to DIR and execs ./bash-copy (a copy
#                            of bash there: a relative path) with ./job.sh (a script
#                            it wrote), which says its arguments, runs /usr/bin/printf
#                            (a child made and exec'd where it runs) and OTHER (a
#                            script whose contents differ per node: the child goes home
#                            for it) and execs DIR/tail.sh (a #!/bin/sh script), which
#                            says "done", waits for a line, shows DIR/out-PID and ends.
import os, sys

d, other = sys.argv[1], sys.argv[2]
print(f"mig-pid: {os.getpid()}", file=sys.stderr, flush=True)
print("ready", flush=True)
sys.stdin.readline()

out = os.path.join(d, f"out-{os.getpid()}")
closed = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
kept = os.dup(closed)
os.set_inheritable(kept, True)
os.write(closed, b"python, before its exec\n")
script = os.path.join(d, "job.sh")
with open(script, "w") as f:
    f.write('#!/bin/bash\n'
            'echo "job.sh: $# arguments: $1 $2"\n'
            '/usr/bin/printf "printf: %s\\n" "a child of the script"\n'
            'echo "job.sh: run by $BASH as $0"\n'
            '"$OTHER"\n'
            'exec "$PWD/tail.sh"\n')
os.chmod(script, 0o755)
with open(os.path.join(d, "tail.sh"), "w") as f:
    f.write('#!/bin/sh\n'
            'echo "tail.sh: $0"\n'
            'echo done\n'
            'read line\n'
            'cat "$OUT"\n')
os.chmod(os.path.join(d, "tail.sh"), 0o755)
copy = os.path.join(d, "bash-copy")
if not os.path.exists(copy):
    with open("/bin/bash", "rb") as src, open(copy + ".part", "wb") as dst:
        dst.write(src.read())
    os.chmod(copy + ".part", 0o755)
    os.rename(copy + ".part", copy)
env = dict(os.environ, PATH="/nonexistent/bin:/usr/bin:/bin", CLOSED=str(closed), KEPT=str(kept), OUT=out, OTHER=other)
shell = ('{ echo >&$CLOSED; } 2>/dev/null && echo "sh: the close-on-exec descriptor is open" || echo "sh: the close-on-exec descriptor is closed"; '
         '{ echo "sh, after the exec" >&$KEPT; } && echo "sh: the inherited descriptor is open"; '
         'cd "$(dirname "$OUT")" && exec ./bash-copy ./job.sh one two')
os.execvpe("sh", ["sh", "-c", shell], env)
