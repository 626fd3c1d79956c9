/* Signals from outside to a process with threads (tests/migrate.rs): which thread
 * handles them must not depend on where the process runs.
 *
 * Three workers. The main thread and workers 0 and 2 block SIGUSR1; worker 1 does
 * not, so a SIGUSR1 sent to the process (kill) can only be handled by worker 1.
 * Every thread but the main one leaves SIGUSR2 unblocked, so a SIGUSR2 sent to the
 * process could be handled by any of them: one sent to a thread (tgkill) must be
 * handled by that thread. The handlers note the id (gettid) of the thread that ran
 * them; the main thread reports by worker number.
 *
 *   prints "worker N: tid=T" for each worker, "ready", waits for its trigger (the
 *   test moves it), says "waiting", then reports each of two SIGUSR1 and one SIGUSR2
 *   (the test sends them from outside, one after the other) as it is handled, and
 *   exits with status 0.
 *
 * usage: thr_sig      build: -pthread
 */
#define _GNU_SOURCE
#include "mig_common.h"
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>

#define WORKERS 3

static atomic_int tids[WORKERS];
static atomic_int usr1_by[2], usr2_by;
static atomic_int usr1_count;
static atomic_int stop;

static void on_usr1(int sig)
{
    (void)sig;
    /* One at a time: SIGUSR1 is blocked while its handler runs, and only worker 1
     * takes it. The thread first, then the count the main thread watches. */
    int n = atomic_load(&usr1_count);
    if (n < 2)
        atomic_store(&usr1_by[n], (int)syscall(SYS_gettid));
    atomic_store(&usr1_count, n + 1);
}

static void on_usr2(int sig)
{
    (void)sig;
    atomic_store(&usr2_by, (int)syscall(SYS_gettid));
}

static void *worker(void *arg)
{
    int i = (int)(long)arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    /* Inherited from main: both blocked. Worker 1 takes SIGUSR1; all take SIGUSR2. */
    sigset_t open;
    sigemptyset(&open);
    sigaddset(&open, SIGUSR2);
    if (i == 1)
        sigaddset(&open, SIGUSR1);
    pthread_sigmask(SIG_UNBLOCK, &open, NULL);
    atomic_store(&tids[i], (int)syscall(SYS_gettid));
    while (!atomic_load(&stop))
        usleep(10000);
    return NULL;
}

static int which(int tid)
{
    for (int i = 0; i < WORKERS; i++)
        if (atomic_load(&tids[i]) == tid)
            return i;
    return -1;
}

int main(void)
{
    mig_start();
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    sigset_t both;
    sigemptyset(&both);
    sigaddset(&both, SIGUSR1);
    sigaddset(&both, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &both, NULL);
    pthread_t t[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(long)i);
    for (int i = 0; i < WORKERS; i++) {
        while (!atomic_load(&tids[i]))
            usleep(1000);
        say("worker %d: tid=%d", i, atomic_load(&tids[i]));
    }
    say("ready");
    mig_wait_trigger("moved");
    say("waiting");
    int reported = 0, usr2 = 0;
    while (reported < 2 || !usr2) {
        while (reported < atomic_load(&usr1_count) && reported < 2) {
            say("SIGUSR1 %d handled by worker %d", reported + 1, which(atomic_load(&usr1_by[reported])));
            reported++;
        }
        if (!usr2 && atomic_load(&usr2_by)) {
            say("SIGUSR2 handled by worker %d", which(atomic_load(&usr2_by)));
            usr2 = 1;
        }
        usleep(10000);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(t[i], NULL);
    say("done");
    return 0;
}
