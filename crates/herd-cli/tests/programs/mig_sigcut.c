/* Writes N numbered lines on stdout, one write(2) each, while a timer (every
 * 500 us, ITIMER_REAL) interrupts it; the handler makes a call of its own that
 * a moved process forwards home (getppid). Moved away, its writes run at home
 * and the timer fires here, so that signals cut forwarded writes short: each
 * line must still be written once. argv[1]: "restart" (SA_RESTART) or "eintr"
 * (no SA_RESTART: a write that fails with EINTR is made again, as programs do).
 * argv[2]: N. Prints "ready 1" and waits for a line first (the test moves it),
 * then the lines and "done N"; how many signals came goes to stderr.
 */
#include "mig_common.h"
#include <sys/time.h>

static volatile sig_atomic_t ticks;
static volatile pid_t parent;

static void on_alarm(int sig)
{
    (void)sig;
    ticks++;
    parent = getppid();
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "restart") != 0 && strcmp(argv[1], "eintr") != 0)) {
        fprintf(stderr, "usage: mig_sigcut restart|eintr N\n");
        return 2;
    }
    int n = atoi(argv[2]);
    mig_start();
    say("ready 1");
    mig_wait_trigger("go");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = strcmp(argv[1], "restart") == 0 ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGALRM, &sa, NULL) != 0) {
        perror("sigaction");
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct itimerval every = {{0, 500}, {0, 500}};
    setitimer(ITIMER_REAL, &every, NULL);
    int eintr = 0;
    for (int i = 0; i < n; i++) {
        char line[64];
        int len = snprintf(line, sizeof line, "line %d of %d\n", i, n);
        for (;;) {
            ssize_t w = write(1, line, (size_t)len);
            if (w == len)
                break;
            if (w < 0 && errno == EINTR) {
                eintr++;
                continue;
            }
            fprintf(stderr, "write: %zd (%s)\n", w, w < 0 ? strerror(errno) : "short");
            return 1;
        }
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    say("done %d", n);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    fprintf(stderr, "signals: %d, writes failed with EINTR: %d, %.0f ms\n", (int)ticks, eintr, ms);
    return 0;
}
