# Programs exec'd while away: by a PATH search (its first directory has no such
# program), by a shell, a #! script, and in children the script forks; each where the
# process runs when that node has the same program, home otherwise.
#
#   dfsa_exec.py DIR OTHER   says "ready" and waits for a line; then opens DIR/out-PID
#                            twice (one descriptor close-on-exec, one inherited) and
#                            execs "sh" with PATH=/nonexistent/bin:/usr/bin:/bin. sh
#                            says whether each descriptor is open, writes to the
#                            inherited one and execs DIR/job.sh (a bash script it wrote),
#                            which says its arguments, runs /usr/bin/printf (a child
#                            made and exec'd where it runs) and OTHER (a script whose
#                            contents differ per node: the child goes home for it), says
#                            "done", waits for a line, shows DIR/out-PID and ends.
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
            '"$OTHER"\n'
            'echo done\n'
            'read line\n'
            'cat "$OUT"\n')
os.chmod(script, 0o755)
env = dict(os.environ, PATH="/nonexistent/bin:/usr/bin:/bin", CLOSED=str(closed), KEPT=str(kept), OUT=out, OTHER=other)
shell = ('{ echo >&$CLOSED; } 2>/dev/null && echo "sh: the close-on-exec descriptor is open" || echo "sh: the close-on-exec descriptor is closed"; '
         '{ echo "sh, after the exec" >&$KEPT; } && echo "sh: the inherited descriptor is open"; '
         'exec "$(dirname "$OUT")/job.sh" one two')
os.execvpe("sh", ["sh", "-c", shell], env)
