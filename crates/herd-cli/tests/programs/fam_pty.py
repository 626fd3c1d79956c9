"""Runs a command on a terminal of its own, as a user's shell would (families.rs:
Ctrl-C through a pty).

The command leads a new session whose controlling terminal is a new pty; the pty is
its stdin and stdout (stderr stays this script's, for what the test reads there), and
echo is off. A line "intr" on this script's stdin types the terminal's interrupt
character (Ctrl-C: the line discipline sends SIGINT to the terminal's foreground
process group); any other line is typed as it is. What the command writes is copied to
stdout (without the terminal's carriage returns). When the terminal has no writer left
and the command has ended: a last line "[exit N]" or "[ended by signal N]", exit 0.

Usage: python3 fam_pty.py CMD [ARG...]
"""
import os
import pty
import select
import sys
import termios

err = os.dup(2)
pid, master = pty.fork()
if pid == 0:
    os.dup2(err, 2)
    os.close(err)
    attrs = termios.tcgetattr(0)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(0, termios.TCSANOW, attrs)
    os.execvp(sys.argv[1], sys.argv[1:])
os.close(err)

intr = termios.tcgetattr(master)[6][termios.VINTR]
watch = [master, 0]
line = b""
while master in watch:
    ready, _, _ = select.select(watch, [], [])
    if master in ready:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: no writer is left on the terminal
            data = b""
        if not data:
            watch.remove(master)
        else:
            sys.stdout.buffer.write(data.replace(b"\r", b""))
            sys.stdout.flush()
    if 0 in ready:
        data = os.read(0, 4096)
        if not data:
            watch.remove(0)
        line += data
        while b"\n" in line:
            one, line = line.split(b"\n", 1)
            os.write(master, intr if one == b"intr" else one + b"\n")

_, status = os.waitpid(pid, 0)
if os.WIFSIGNALED(status):
    print(f"[ended by signal {os.WTERMSIG(status)}]")
else:
    print(f"[exit {os.WEXITSTATUS(status)}]")
