/* A multi-threaded program whose output depends on every thread's state
 * being exact: registers, TLS, thread-specific data, signal masks and
 * handlers, mutexes, condition variables, a barrier, and threads made and
 * joined on the way.
 *
 * Four workers, each with a __thread accumulator and a pthread_key value,
 * meet the main thread at a barrier every round, then compute (a hash chain
 * seeded by their TLS state) and sleep a little; the main thread prints one
 * line per round with every worker's value, under a mutex. A fifth thread
 * waits on a condition variable the whole time (a futex wait without a
 * timeout) and one worker sleeps in pthread_cond_timedwait each round (a futex
 * wait with an absolute timeout). Worker 1 blocks SIGUSR1, the others do not;
 * at round ROUNDS*3/4 the main thread sends SIGUSR1 to worker 2 with pthread_kill and
 * the handler counts in TLS. At round ROUNDS/2 two short-lived threads are
 * made and joined. At the end every thread is joined, and the program exits
 * with status 3 (so that a restart that ends with 0 is noticed), after printing
 * how many CPUs each thread may run on (a restore must give them back the CPUs
 * they had, though it builds the process pinned to one).
 *
 * pthread_kill addresses a thread by the id glibc keeps for it (in the
 * thread's memory), so after a restart it reaches the right thread only if
 * the thread kept its id: its result is printed.
 *
 * usage: thr_work [ROUNDS]      build: -pthread -O1
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 4

static pthread_barrier_t start_round, end_round;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;
static pthread_cond_t ticks = PTHREAD_COND_INITIALIZER;
static int done_waiting;
static pthread_key_t key;
static int rounds = 60;
static volatile int stop;

static __thread uint64_t acc;
static __thread int usr1_seen;
static uint64_t results[WORKERS];
static int usr1_counts[WORKERS];

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static void nap_ms(long ms)
{
    struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&t, &t) != 0)
        ;
}

static void on_usr1(int sig)
{
    (void)sig;
    usr1_seen++;
}

static int cpu_counts[WORKERS];

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t *mine = malloc(sizeof *mine);
    *mine = 1000 + id;
    pthread_setspecific(key, mine);
    acc = mix(id + 1);
    if (id == 1) {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &s, NULL);
    }
    char name[16];
    snprintf(name, sizeof name, "thr-worker-%d", id);
    pthread_setname_np(pthread_self(), name);
    for (int r = 0; r < rounds; r++) {
        pthread_barrier_wait(&start_round);
        for (int i = 0; i < 200000; i++)
            acc = mix(acc + i + *(uint64_t *)pthread_getspecific(key));
        if (id == 3) {
            /* A futex wait with an absolute timeout. */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 30 * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_mutex_lock(&lock);
            pthread_cond_timedwait(&ticks, &lock, &until);
            pthread_mutex_unlock(&lock);
        } else {
            nap_ms(30);
        }
        pthread_mutex_lock(&lock);
        results[id] = acc;
        usr1_counts[id] = usr1_seen;
        pthread_mutex_unlock(&lock);
        pthread_barrier_wait(&end_round);
    }
    cpu_set_t cpus;
    cpu_counts[id] = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : -1;
    return (void *)(uintptr_t)(*mine + acc % 7);
}

static void *waiter(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    while (!done_waiting)
        pthread_cond_wait(&never, &lock);
    pthread_mutex_unlock(&lock);
    return (void *)(uintptr_t)77;
}

static void *short_lived(void *arg)
{
    uint64_t x = (uint64_t)(uintptr_t)arg;
    for (int i = 0; i < 100000; i++)
        x = mix(x + i);
    return (void *)(uintptr_t)(x % 1000);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        rounds = atoi(argv[1]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    fprintf(stderr, "mig-pid: %d\n", (int)getpid()); /* for the migration tests */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    pthread_key_create(&key, free);
    pthread_barrier_init(&start_round, NULL, WORKERS + 1);
    pthread_barrier_init(&end_round, NULL, WORKERS + 1);
    pthread_t w[WORKERS], wt;
    for (int i = 0; i < WORKERS; i++)
        pthread_create(&w[i], NULL, worker, (void *)(intptr_t)i);
    pthread_create(&wt, NULL, waiter, NULL);
    for (int r = 0; r < rounds; r++) {
        pthread_barrier_wait(&start_round);
        pthread_barrier_wait(&end_round);
        pthread_mutex_lock(&lock);
        printf("round %d:", r);
        for (int i = 0; i < WORKERS; i++)
            printf(" %016llx/%d", (unsigned long long)results[i], usr1_counts[i]);
        printf("\n");
        pthread_mutex_unlock(&lock);
        if (r == rounds * 3 / 4) {
            int k2 = pthread_kill(w[2], SIGUSR1);
            int k1 = pthread_kill(w[1], SIGUSR1); /* blocked there: stays pending */
            printf("pthread_kill: %s, %s\n", strerror(k2), strerror(k1));
        }
        if (r == rounds / 2) {
            pthread_t s[2];
            void *v0, *v1;
            pthread_create(&s[0], NULL, short_lived, (void *)(uintptr_t)r);
            pthread_create(&s[1], NULL, short_lived, (void *)(uintptr_t)(r + 1));
            pthread_join(s[0], &v0);
            pthread_join(s[1], &v1);
            printf("short-lived threads: %lu %lu\n", (unsigned long)(uintptr_t)v0, (unsigned long)(uintptr_t)v1);
        }
    }
    for (int i = 0; i < WORKERS; i++) {
        void *v;
        pthread_join(w[i], &v);
        printf("worker %d returned %lu\n", i, (unsigned long)(uintptr_t)v);
    }
    pthread_mutex_lock(&lock);
    done_waiting = 1;
    pthread_cond_signal(&never);
    pthread_mutex_unlock(&lock);
    void *v;
    pthread_join(wt, &v);
    printf("waiter returned %lu\n", (unsigned long)(uintptr_t)v);
    cpu_set_t cpus;
    printf("cpus: main %d, workers", sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : -1);
    for (int i = 0; i < WORKERS; i++)
        printf(" %d", cpu_counts[i]);
    printf("\n");
    return 3;
}
