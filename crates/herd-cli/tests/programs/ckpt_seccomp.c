// Runs under two seccomp filters of its own, on both its threads (TSYNC), as a
// sandboxed program does: the first makes getpgid fail with errno 42 and getsid
// with errno 41, the second (installed with SECCOMP_FILTER_FLAG_LOG) makes getsid
// fail with errno 43 (of two answers of one kind the newer filter's wins: 43 says
// the order is kept) and kills the process on `acct` (a call neither the program
// nor a correct restore makes). It prints "ready", ticks (the checkpoint lands there), then checks in
// both threads that each filter still holds, and prints PASS or what differs.
//
// usage: ckpt_seccomp TICKS
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NR (offsetof(struct seccomp_data, nr))

static int install(struct sock_filter *f, unsigned short n, unsigned flags) {
    struct sock_fprog prog = {.len = n, .filter = f};
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t go = PTHREAD_COND_INITIALIZER;
static int checking;

// "pgid E sid E" as the calling thread sees them.
static void probe(char *out, size_t len) {
    errno = 0;
    long a = syscall(SYS_getpgid, 0);
    int ea = errno;
    errno = 0;
    long b = syscall(SYS_getsid, 0);
    int eb = errno;
    snprintf(out, len, "getpgid %ld errno %d, getsid %ld errno %d", a, ea, b, eb);
}

static void *thread(void *arg) {
    pthread_mutex_lock(&lock);
    while (!checking) pthread_cond_wait(&go, &lock);
    pthread_mutex_unlock(&lock);
    probe(arg, 128);
    return NULL;
}

int main(int argc, char **argv) {
    int ticks = argc > 1 ? atoi(argv[1]) : 20;
    static char seen[128];
    pthread_t t;
    if (pthread_create(&t, NULL, thread, seen)) return 1;
    struct sock_filter first[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NR),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getpgid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 42),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getsid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 41),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_filter second[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NR),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getsid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 43),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_acct, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || install(first, 6, SECCOMP_FILTER_FLAG_TSYNC) ||
        install(second, 6, SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_LOG)) {
        perror("seccomp");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (int i = 0; i < ticks; i++) {
        printf("tick %d\n", i);
        fflush(stdout);
        usleep(100000);
    }
    char mine[128];
    probe(mine, sizeof mine);
    pthread_mutex_lock(&lock);
    checking = 1;
    pthread_cond_broadcast(&go);
    pthread_mutex_unlock(&lock);
    pthread_join(t, NULL);
    const char *want = "getpgid -1 errno 42, getsid -1 errno 43";
    printf("%s main thread: %s\n", strcmp(mine, want) ? "FAIL" : "PASS", mine);
    printf("%s other thread: %s\n", strcmp(seen, want) ? "FAIL" : "PASS", seen);
    FILE *st = fopen("/proc/self/status", "r");
    char line[256];
    while (st && fgets(line, sizeof line, st))
        if (!strncmp(line, "Seccomp", 7)) fputs(line, stdout);
    if (st) fclose(st);
    return 0;
}
