/* Waits that let a signal in for their duration only, as GNU make waits for
 * its jobs: families.rs moves this parent away from its children.
 *
 * SIGCHLD is blocked all along except during pselect6, ppoll and epoll_pwait,
 * whose own mask lets it in; its handler (no SA_RESTART) counts. Each wait
 * watches a pipe nobody writes, for at most 20 s. Three children each exit
 * once they read a byte from their own pipe. After the trigger:
 *  1. child a is woken and waited for (waitpid with SIGCHLD blocked); 300 ms
 *     later its SIGCHLD has come and waits, blocked: pselect6 must end at
 *     once (EINTR, the handler ran);
 *  2. child b is woken and ppoll waits at once: the signal comes during it;
 *  3. likewise child c and epoll_pwait.
 * After each: the wait's result, how many times the handler ran, whether
 * SIGCHLD is blocked again (the wait's mask lasts only the wait), and the
 * child's status. Then
 *  4. child d is woken (it exits 200 ms later) while the parent waits in a
 *     plain poll of 1 s (SIGCHLD stays blocked): the poll times out, and the
 *     signal that came meanwhile must be pending, not lost: unblocked, the
 *     handler runs a fourth time.
 * Exit 0.
 */
#include "mig_common.h"
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

static volatile sig_atomic_t chld;

static void on_chld(int sig)
{
    (void)sig;
    chld++;
}

static void wake(int fd)
{
    if (write(fd, "x", 1) != 1) {
        say("write: %s", errname(errno));
        exit(1);
    }
}

static void report(const char *call, int r, int err, pid_t p)
{
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    say("%s: %d %s, handler ran %d, SIGCHLD blocked after: %s", call, r, r < 0 ? errname(err) : "-", (int)chld,
        sigismember(&now, SIGCHLD) ? "yes" : "no");
    int status;
    pid_t w;
    do
        w = waitpid(p, &status, 0);
    while (w < 0 && errno == EINTR);
    if (w != p)
        say("waitpid: %s", errname(errno));
    else
        say("child: exited %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

int main(void)
{
    mig_start();
    struct sigaction sa = {0};
    sa.sa_handler = on_chld;
    sigaction(SIGCHLD, &sa, NULL);
    sigset_t blocked, during;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGCHLD);
    sigprocmask(SIG_BLOCK, &blocked, &during);
    sigdelset(&during, SIGCHLD);
    int pa[2], pb[2], pc[2], never[2];
    if (pipe(pa) || pipe(pb) || pipe(pc) || pipe(never)) {
        say("pipe: %s", errname(errno));
        return 1;
    }
    pid_t a = mig_child(pa, 3, 0);
    pid_t b = mig_child(pb, 4, 0);
    pid_t c = mig_child(pc, 5, 0);
    int pd[2];
    if (pipe(pd)) {
        say("pipe: %s", errname(errno));
        return 1;
    }
    pid_t d = mig_child(pd, 6, 200);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, never[0], &ev)) {
        say("epoll: %s", errname(errno));
        return 1;
    }
    say("ready 1");
    mig_wait_trigger("wake the children");

    /* 1: the signal is in (pending, blocked) before the wait starts. */
    wake(pa[1]);
    struct timespec pause = {0, 300 * 1000 * 1000}, limit = {20, 0};
    nanosleep(&pause, NULL);
    fd_set set;
    FD_ZERO(&set);
    FD_SET(never[0], &set);
    int r = pselect(never[0] + 1, &set, NULL, NULL, &limit, &during);
    report("pselect", r, errno, a);

    /* 2: the signal comes during the wait. */
    wake(pb[1]);
    struct pollfd pfd = {.fd = never[0], .events = POLLIN};
    r = ppoll(&pfd, 1, &limit, &during);
    report("ppoll", r, errno, b);

    /* 3: likewise, epoll. */
    wake(pc[1]);
    struct epoll_event out;
    r = epoll_pwait(ep, &out, 1, 20000, &during);
    report("epoll_pwait", r, errno, c);

    /* 4: the signal comes during a wait that does not let it in. */
    wake(pd[1]);
    r = poll(&pfd, 1, 1000);
    sigset_t pending;
    sigpending(&pending);
    say("poll: %d, SIGCHLD pending after: %s", r, sigismember(&pending, SIGCHLD) ? "yes" : "no");
    sigprocmask(SIG_UNBLOCK, &blocked, NULL);
    report("unblocked", 0, 0, d);
    return 0;
}
