/* Forks made away (families.rs moves the process to n2 at "ready 1"): the
 * children are made where the parent runs, their deputies at home.
 *
 * It forks three children. Each sends its parent, through a pipe, its pid as
 * getpid() sees it and whether getppid() is its parent; child 0 first forks a
 * grandchild that exits 5 and waits for it. Then each waits for a byte on a
 * pipe, works a moment, and ends: 10, 11, killed by SIGTERM. The parent prints
 * whether each pid is the one fork returned, "fam-children: A B C" on stderr,
 * and "ready 2"; on a trigger it wakes the children, waits for each (exact
 * statuses), and says whether its SIGCHLD handler ran. Exit 0.
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

static void report(int i, pid_t p)
{
    int status;
    pid_t w;
    do
        w = waitpid(p, &status, 0);
    while (w < 0 && errno == EINTR);
    if (w != p)
        say("child %d: waitpid: %s", i, errname(errno));
    else if (WIFEXITED(status))
        say("child %d: exited %d", i, WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        say("child %d: killed by signal %d", i, WTERMSIG(status));
    else
        say("child %d: status %#x", i, status);
}

static void child(int i, pid_t parent, int up, int down)
{
    int ok = getppid() == parent;
    int grandchild = 0;
    if (i == 0) {
        pid_t g = fork();
        if (g == 0)
            _exit(5);
        int st;
        pid_t w;
        do
            w = waitpid(g, &st, 0);
        while (w < 0 && errno == EINTR);
        grandchild = g > 0 && w == g && WIFEXITED(st) && WEXITSTATUS(st) == 5;
    }
    char msg[64];
    int n = snprintf(msg, sizeof msg, "%d %d %d\n", (int)getpid(), ok, grandchild);
    if (write(up, msg, (size_t)n) != n)
        _exit(90);
    char c;
    ssize_t r;
    do
        r = read(down, &c, 1);
    while (r < 0 && errno == EINTR);
    volatile unsigned long x = 0;
    for (unsigned long k = 0; k < 30000000UL; k++)
        x += k;
    if (i == 2) {
        signal(SIGTERM, SIG_DFL);
        raise(SIGTERM);
    }
    _exit(10 + i);
}

int main(void)
{
    mig_start();
    struct sigaction sa = {0};
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    say("ready 1");
    mig_wait_trigger("fork");
    pid_t me = getpid();
    int up[3][2], down[3][2];
    pid_t kid[3];
    for (int i = 0; i < 3; i++) {
        if (pipe(up[i]) || pipe(down[i])) {
            say("pipe: %s", errname(errno));
            return 1;
        }
        kid[i] = fork();
        if (kid[i] < 0) {
            say("fork: %s", errname(errno));
            return 1;
        }
        if (kid[i] == 0) {
            close(up[i][0]);
            close(down[i][1]);
            child(i, me, up[i][1], down[i][0]);
        }
        close(up[i][1]);
        close(down[i][0]);
    }
    for (int i = 0; i < 3; i++) {
        char buf[64] = {0};
        ssize_t n = 0, r;
        while (n < (ssize_t)sizeof buf - 1 && (r = read(up[i][0], buf + n, sizeof buf - 1 - (size_t)n)) > 0) {
            n += r;
            if (buf[n - 1] == '\n')
                break;
        }
        int pid = 0, ok = 0, grandchild = 0;
        if (sscanf(buf, "%d %d %d", &pid, &ok, &grandchild) != 3)
            say("child %d: said \"%s\"", i, buf);
        say("child %d: pid %s, parent %s%s", i, pid == kid[i] ? "matches" : "differs", ok ? "matches" : "differs",
            i == 0 ? (grandchild ? ", its child exited 5" : ", its child ?") : "");
    }
    fprintf(stderr, "fam-children: %d %d %d\n", (int)kid[0], (int)kid[1], (int)kid[2]);
    say("ready 2");
    mig_wait_trigger("end the children");
    for (int i = 0; i < 3; i++)
        if (write(down[i][1], "x", 1) != 1)
            say("write: %s", errname(errno));
    for (int i = 0; i < 3; i++)
        report(i, kid[i]);
    say("sigchld handled: %s", chld > 0 ? "yes" : "no");
    return 0;
}
