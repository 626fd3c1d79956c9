// A small process tree for checkpoint/restart: the parent fills a pipe to
// child A (which leads its own process group) and leaves it unread, child Z
// ends at once and stays a zombie, child S leads a session of its own. After
// the checkpoint (it lands while the parent ticks) each checks what it must
// find: A reads every byte and checks its ids, S its session; the parent
// reaps them all and prints how each ended. Same output when uninterrupted.
//
// usage: ckpt_tree TICKS
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BYTES 50000

static void nap(void) {
    struct timespec t = {0, 100 * 1000 * 1000};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
}

static void wait_for_parent_ticks(int ticks) {
    for (int i = 0; i < ticks + 5; i++) nap();
}

int main(int argc, char **argv) {
    int ticks = argc > 1 ? atoi(argv[1]) : 20;
    setvbuf(stdout, NULL, _IOLBF, 0);
    int p[2];
    if (pipe(p)) return 2;
    pid_t parent = getpid();
    pid_t a = fork();
    if (a == 0) {
        close(p[1]);
        setpgid(0, 0);
        pid_t me = getpid();
        wait_for_parent_ticks(ticks);
        long got = 0, sum = 0;
        unsigned char buf[4096];
        ssize_t n;
        while ((n = read(p[0], buf, sizeof buf)) > 0) {
            for (ssize_t i = 0; i < n; i++) sum += buf[i] ^ ((got + i) & 0xff);
            got += n;
        }
        int ok = got == BYTES && sum == 0 && getpid() == me && getppid() == parent && getpgid(0) == me;
        _exit(ok ? 7 : 1);
    }
    setpgid(a, a);
    pid_t z = fork();
    if (z == 0) _exit(3);
    pid_t s = fork();
    if (s == 0) {
        close(p[0]);
        close(p[1]);
        if (setsid() < 0) _exit(2);
        wait_for_parent_ticks(ticks);
        _exit(getsid(0) == getpid() && getppid() == parent ? 0 : 1);
    }
    close(p[0]);
    // A pidfd of S: after the restart it must still be S's.
    int spid = syscall(SYS_pidfd_open, s, 0);
    if (spid < 0) return 2;
    unsigned char buf[BYTES];
    for (int i = 0; i < BYTES; i++) buf[i] = i & 0xff;
    // The pipe holds 64 KiB: all of it waits there, unread, until A reads.
    if (write(p[1], buf, BYTES) != BYTES) return 2;
    close(p[1]);
    printf("ready\n");
    for (int i = 0; i < ticks; i++) {
        nap();
        printf("tick %d\n", i);
    }
    int st;
    waitpid(z, &st, 0);
    printf("zombie: %s %d\n", WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    waitpid(a, &st, 0);
    printf("A (pipe, own group): %s %d\n", WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    siginfo_t si = {0};
    int w = syscall(SYS_waitid, P_PIDFD, spid, &si, WEXITED, NULL);
    printf("S (own session, waited through its pidfd): %s %d %s\n", w == 0 ? "exit" : "waitid failed", si.si_status, si.si_pid == s ? "same pid" : "other pid");
    return 0;
}
