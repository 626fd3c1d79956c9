/* A parent that waits for two children, as families.rs moves all three apart.
 *
 * It forks child a (exits 7 once it reads a byte from its pipe) and child b
 * (dies by SIGTERM once it reads a byte from its own), prints
 * "fam-children: A B" on stderr and "ready 1", and waits for a trigger. The
 * test moves a, b and the parent to different nodes meanwhile. Then the
 * parent wakes both children through their pipes, waits for each with
 * waitpid, and prints how each ended and whether its SIGCHLD handler ran.
 * Exit 0.
 */
#include "mig_common.h"
#include <signal.h>
#include <sys/wait.h>

static volatile sig_atomic_t chld;

static void on_chld(int sig)
{
    (void)sig;
    chld++;
}

static void report(const char *name, pid_t p)
{
    int status;
    pid_t w;
    do
        w = waitpid(p, &status, 0);
    while (w < 0 && errno == EINTR);
    if (w != p)
        say("%s: waitpid: %s", name, errname(errno));
    else if (WIFEXITED(status))
        say("%s: exited %d", name, WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        say("%s: killed by signal %d", name, WTERMSIG(status));
    else
        say("%s: status %#x", name, status);
}

int main(void)
{
    mig_start();
    struct sigaction sa = {0};
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    int pa[2], pb[2];
    if (pipe(pa) || pipe(pb)) {
        say("pipe: %s", errname(errno));
        return 1;
    }
    pid_t a = mig_child(pa, 7, 0);
    pid_t b = mig_child(pb, -SIGTERM, 0);
    fprintf(stderr, "fam-children: %d %d\n", (int)a, (int)b);
    say("ready 1");
    mig_wait_trigger("wake the children");
    if (write(pa[1], "x", 1) != 1 || write(pb[1], "x", 1) != 1) {
        say("write: %s", errname(errno));
        return 1;
    }
    report("a", a);
    report("b", b);
    /* Both have ended and been waited for: any SIGCHLD is in by now. */
    say("sigchld handled: %s", chld > 0 ? "yes" : "no");
    return 0;
}
