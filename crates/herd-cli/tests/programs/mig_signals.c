/* Counts SIGUSR1 in a handler; the main loop (10 ms sleeps) prints
 * "got SIGUSR1 N" for each one. Prints "ready" once the handler is in
 * place. Ends only by a signal, or after 60 s with "timeout" and status 2
 * so that a lost test cannot leave it running for ever.
 */
#include "mig_common.h"
#include <signal.h>
#include <time.h>

static volatile sig_atomic_t got;

static void on_usr1(int sig)
{
    (void)sig;
    got++;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    mig_start();
    if (sigaction(SIGUSR1, &sa, NULL) != 0) {
        perror("sigaction");
        return 1;
    }
    say("ready");
    int seen = 0;
    for (int tick = 0; tick < 6000; tick++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
        int now = got;
        while (seen < now)
            say("got SIGUSR1 %d", ++seen);
    }
    say("timeout");
    return 2;
}
