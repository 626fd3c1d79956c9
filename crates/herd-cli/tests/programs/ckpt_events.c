// An eventfd (count 5, and a dup of it), a timerfd (armed for an hour) and a
// signalfd (SIGUSR1, blocked) made by the parent and shared with its child.
// After the checkpoint (it lands while the parent ticks) the parent adds 2 to
// the eventfd through its dup, re-arms the timer to fire in 50 ms, sends the
// child SIGUSR1 and tells it to go: the child reads 7 from the eventfd, one
// expiration from the timerfd and SIGUSR1 from the signalfd — only if each is
// still one object shared by both. With DIR, an inotify instance too, watching
// DIR (its watch 2: watch 1, on DIR/gone, was given up), shared the same way:
// the parent makes DIR/new after the ticks, the child reads that event.
// And an epoll watching the eventfd (data 0xe1) and a pipe (0x77), shared too: the
// child holds the pipe's read end, the parent only its write end (so only the child
// holds every file the epoll watches at its number). After the ticks the parent
// takes the eventfd out of the epoll and writes to the pipe: the child's epoll_wait
// sees the pipe alone — only if the epoll is still one object of both, with its
// interest list.
// Same output when uninterrupted.
//
// usage: ckpt_events TICKS [DIR]
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void nap(void) {
    struct timespec t = {0, 100 * 1000 * 1000};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
}

int main(int argc, char **argv) {
    int ticks = argc > 1 ? atoi(argv[1]) : 20;
    setvbuf(stdout, NULL, _IOLBF, 0);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    int efd = eventfd(0, 0);
    uint64_t five = 5;
    int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec hour = {{3600, 0}, {3600, 0}};
    int sfd = signalfd(-1, &usr1, 0);
    int go[2];
    if (efd < 0 || write(efd, &five, 8) != 8 || tfd < 0 || timerfd_settime(tfd, 0, &hour, NULL) || sfd < 0 || pipe(go)) {
        perror("setting up");
        return 2;
    }
    int edup = dup(efd);
    int pp[2];
    int ep = epoll_create1(0);
    struct epoll_event ee = {EPOLLIN, {.u64 = 0xe1}}, pe = {EPOLLIN, {.u64 = 0x77}};
    if (pipe(pp) || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ee) || epoll_ctl(ep, EPOLL_CTL_ADD, pp[0], &pe)) {
        perror("epoll");
        return 2;
    }
    const char *dir = argc > 2 ? argv[2] : NULL;
    int ifd = -1;
    char path[4096];
    if (dir) {
        snprintf(path, sizeof path, "%s/gone", dir);
        ifd = inotify_init1(0);
        if (ifd < 0 || mkdir(path, 0700) || inotify_add_watch(ifd, path, IN_CREATE) != 1 || inotify_rm_watch(ifd, 1) || inotify_add_watch(ifd, dir, IN_CREATE) != 2) {
            perror("inotify");
            return 2;
        }
        // The IN_IGNORED of watch 1, read now: only DIR/new is left to come.
        char ev[4096];
        if (read(ifd, ev, sizeof ev) <= 0) {
            perror("inotify read");
            return 2;
        }
    }
    pid_t child = fork();
    if (child == 0) {
        close(go[1]);
        close(pp[1]);
        char c;
        if (read(go[0], &c, 1) != 1) return 3;
        struct epoll_event evs[4];
        int got = epoll_wait(ep, evs, 4, 5000);
        printf("child: epoll sees");
        for (int k = 0; k < got; k++) printf(" %#llx", (unsigned long long)evs[k].data.u64);
        printf("%s\n", got > 0 ? "" : " nothing");
        uint64_t n = 0;
        if (read(efd, &n, 8) != 8) return 3;
        printf("child: eventfd holds %llu\n", (unsigned long long)n);
        struct pollfd p = {tfd, POLLIN, 0};
        uint64_t exp = 0;
        if (poll(&p, 1, 5000) == 1 && read(tfd, &exp, 8) == 8)
            printf("child: timerfd fired %llu time(s)\n", (unsigned long long)exp);
        else
            printf("child: timerfd did not fire\n");
        struct signalfd_siginfo si;
        if (read(sfd, &si, sizeof si) == sizeof si)
            printf("child: signalfd read signal %s\n", si.ssi_signo == SIGUSR1 ? "SIGUSR1" : "another");
        if (ifd >= 0) {
            char ev[4096] __attribute__((aligned(8)));
            struct pollfd q = {ifd, POLLIN, 0};
            if (poll(&q, 1, 5000) == 1 && read(ifd, ev, sizeof ev) > 0) {
                struct inotify_event *e = (struct inotify_event *)ev;
                printf("child: inotify watch %d saw %s\n", e->wd, e->len ? e->name : "?");
            } else {
                printf("child: inotify saw nothing\n");
            }
        }
        return 4;
    }
    close(go[0]);
    close(pp[0]);
    for (int i = 1; i <= ticks; i++) {
        printf("tick %d\n", i);
        nap();
    }
    uint64_t two = 2;
    struct itimerspec soon = {{0, 0}, {0, 50 * 1000 * 1000}};
    if (dir) {
        snprintf(path, sizeof path, "%s/new", dir);
        if (mkdir(path, 0700)) {
            perror("mkdir new");
            return 2;
        }
    }
    if (epoll_ctl(ep, EPOLL_CTL_DEL, efd, NULL) || write(pp[1], "p", 1) != 1) {
        perror("epoll after the ticks");
        return 2;
    }
    if (write(edup, &two, 8) != 8 || timerfd_settime(tfd, 0, &soon, NULL) || kill(child, SIGUSR1) || write(go[1], "g", 1) != 1) {
        perror("after the ticks");
        return 2;
    }
    int status;
    waitpid(child, &status, 0);
    printf("child ended: exit %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
