/* Signal state that must survive a checkpoint:
 *  - a SIGUSR1 handler (SA_SIGINFO|SA_RESTART, sa_mask {SIGUSR2});
 *  - SIGHUP ignored;
 *  - SIGUSR2 blocked, with one SIGUSR2 pending (sent by raise(), so its
 *    siginfo has si_code SI_TKILL).
 * It prints "ready" and waits in pause() until SIGUSR1 arrives; the test
 * sends SIGHUP (must be ignored) then SIGUSR1. Then it reports what it sees,
 * unblocks SIGUSR2 (its handler must run with the original siginfo) and exits
 * with status 42.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t usr1_count, usr1_code = 99, usr2_count, usr2_code = 99;

static void on_usr1(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    usr1_count++;
    usr1_code = si->si_code;
}

static void on_usr2(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    usr2_count++;
    usr2_code = si->si_code;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    sigaction(SIGUSR1, &sa, NULL);

    sa.sa_sigaction = on_usr2;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, NULL);

    signal(SIGHUP, SIG_IGN);

    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    sigprocmask(SIG_BLOCK, &usr2, NULL);
    raise(SIGUSR2); /* stays pending while blocked */

    printf("ready\n");
    while (!usr1_count)
        pause();

    printf("got SIGUSR1 count=%d si_code=%d\n", (int)usr1_count, (int)usr1_code);

    struct sigaction now;
    sigaction(SIGUSR1, NULL, &now);
    printf("usr1 handler same=%d siginfo=%d restart=%d mask_has_usr2=%d\n",
           now.sa_sigaction == on_usr1, !!(now.sa_flags & SA_SIGINFO),
           !!(now.sa_flags & SA_RESTART), sigismember(&now.sa_mask, SIGUSR2));
    sigaction(SIGHUP, NULL, &now);
    printf("sighup ignored=%d\n", now.sa_handler == SIG_IGN);

    sigset_t blocked, pending;
    sigprocmask(SIG_BLOCK, NULL, &blocked);
    sigpending(&pending);
    printf("usr2 blocked=%d pending=%d usr1 blocked=%d\n", sigismember(&blocked, SIGUSR2),
           sigismember(&pending, SIGUSR2), sigismember(&blocked, SIGUSR1));

    sigprocmask(SIG_UNBLOCK, &usr2, NULL); /* the pending SIGUSR2 is delivered here */
    printf("got SIGUSR2 count=%d si_code=%d\n", (int)usr2_count, (int)usr2_code);
    return 42;
}
