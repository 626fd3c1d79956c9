/* A process that starts children from wherever it runs, as families.rs moves it
 * away first (issue 12's list: vfork + exec, a child that outlives its parent, a
 * fork that the `ulimit -u` limit refuses).
 *
 * Before each step it prints "ready N" and waits for a trigger; the test moves
 * it to n2 first (each step is made there). The steps:
 *  1. vfork + exec of `/bin/sh -c 'echo vforked; exit 3'`: the parent resumes
 *     only once the child has exec'd; it prints the child's status and what the
 *     child wrote in their shared memory before its exec;
 *  2. its soft RLIMIT_NPROC set to 1 (its user has at least this process):
 *     fork fails with EAGAIN, and nothing is left behind; the limit back;
 *  3. a child that prints "orphan: parent gone" once its parent has ended
 *     (it polls getppid), the parent ends first with status 0.
 */
#include "mig_common.h"
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

int main(void)
{
    mig_start();
    say("ready 1");
    mig_wait_trigger("start the children");

    /* 1: vfork + exec; the child writes in the memory it shares with the parent before
     * its exec (what posix_spawn does to report an error), and the parent sees it. */
    static volatile int written_by_child;
    pid_t p = vfork();
    if (p == 0) {
        written_by_child = 42;
        execl("/bin/sh", "sh", "-c", "echo vforked; exit 3", (char *)NULL);
        _exit(127);
    }
    if (p < 0) {
        say("vfork: %s", errname(errno));
        return 1;
    }
    int status;
    pid_t w;
    do
        w = waitpid(p, &status, 0);
    while (w < 0 && errno == EINTR);
    say("vfork child: %s %d, wrote %d before its exec", w == p && WIFEXITED(status) ? "exited" : "?", WIFEXITED(status) ? WEXITSTATUS(status) : -1, written_by_child);

    say("ready 2");
    mig_wait_trigger("the limit");

    /* 2: a fork the limit refuses. */
    struct rlimit old;
    getrlimit(RLIMIT_NPROC, &old);
    /* The soft limit only: an unprivileged process can raise it back. */
    struct rlimit one = {1, old.rlim_max};
    if (setrlimit(RLIMIT_NPROC, &one) != 0) {
        say("setrlimit: %s", errname(errno));
        return 1;
    }
    pid_t refused = fork();
    if (refused == 0)
        _exit(9);
    say("fork at the limit: %s", refused < 0 ? errname(errno) : "made a child");
    if (refused > 0)
        waitpid(refused, &status, 0);
    if (setrlimit(RLIMIT_NPROC, &old) != 0) {
        say("setrlimit back: %s", errname(errno));
        return 1;
    }

    say("ready 3");
    mig_wait_trigger("the orphan");

    /* 3: a child that outlives its parent. */
    pid_t parent = getpid();
    pid_t o = fork();
    if (o < 0) {
        say("fork: %s", errname(errno));
        return 1;
    }
    if (o == 0) {
        struct timespec tick = {0, 20 * 1000 * 1000};
        for (int i = 0; i < 1500 && getppid() == parent; i++)
            nanosleep(&tick, NULL);
        say("orphan: parent %s", getppid() == parent ? "still there" : "gone");
        _exit(0);
    }
    say("parent: ends first");
    return 0;
}
