/* A process herd must refuse (or, in mode "plain", accept) to checkpoint.
 * Modes: "plain", "threads" (a second thread, both looping), "socket" (holds
 * an established TCP connection to itself), "threads+socket", "lease" (a read lease on DIR/lease),
 * "gone-cwd" (its working directory DIR/gone is removed), "epoll-reused" (an
 * epoll watches fd N, whose file now lives at another fd while N holds
 * another file), "thread-seccomp" (a second thread, and only it, under a seccomp
 * filter that allows everything). Prints "ready", then "tick N" every 100 ms so the test can
 * see it is still running; gives up by itself after about 60 s in case
 * nobody kills it.
 *
 * usage: refuse MODE [DIR]     build: -pthread
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static void nap(void)
{
    struct timespec t = { 0, 10 * 1000 * 1000 };
    nanosleep(&t, NULL);
}

static void *other_thread(void *arg)
{
    (void)arg;
    for (;;)
        nap();
    return NULL;
}

static volatile int filtered;

/* This thread alone under a filter that allows every call. */
static void *filtered_thread(void *arg)
{
    (void)arg;
    struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog prog = { .len = 1, .filter = &allow };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
        perror("seccomp");
        exit(2);
    }
    filtered = 1;
    for (;;)
        nap();
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "plain";
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strstr(mode, "threads")) {
        pthread_t t;
        if (pthread_create(&t, NULL, other_thread, NULL) != 0)
            return 2;
    }
    if (strcmp(mode, "thread-seccomp") == 0) {
        pthread_t t;
        if (pthread_create(&t, NULL, filtered_thread, NULL) != 0)
            return 2;
        while (!filtered)
            nap();
    }
    if (strstr(mode, "socket")) {
        /* An established TCP connection to itself over loopback: fds 3 (the
         * listener), 4 (the client end) and 5 (the accepted end). */
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof a;
        int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0);
        if (l < 0 || c < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &len) ||
            connect(c, (struct sockaddr *)&a, sizeof a) || accept(l, NULL, NULL) < 0) {
            perror("socket");
            return 2;
        }
    }
    const char *dir = argc > 2 ? argv[2] : "/tmp";
    char path[4096];
    if (strcmp(mode, "lease") == 0) {
        snprintf(path, sizeof path, "%s/lease", dir);
        close(open(path, O_WRONLY | O_CREAT, 0600));
        int fd = open(path, O_RDONLY);
        if (fd < 0 || fcntl(fd, F_SETLEASE, F_RDLCK) != 0) {
            perror("F_SETLEASE");
            return 2;
        }
    }
    if (strcmp(mode, "gone-cwd") == 0) {
        snprintf(path, sizeof path, "%s/gone", dir);
        if (mkdir(path, 0700) || chdir(path) || rmdir(path)) {
            perror("gone-cwd");
            return 2;
        }
    }
    if (strcmp(mode, "epoll-reused") == 0) {
        int ep = epoll_create1(0);
        int e = eventfd(0, 0);
        struct epoll_event ev = { .events = EPOLLIN };
        if (ep < 0 || e < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, e, &ev)) {
            perror("epoll");
            return 2;
        }
        dup2(e, 40);
        close(e);
        if (open("/dev/null", O_RDONLY) != e) {
            perror("reusing the fd");
            return 2;
        }
    }
    printf("ready\n");
    for (int i = 1; i <= 6000; i++) {
        nap();
        if (i % 10 == 0)
            printf("tick %d\n", i / 10);
    }
    return 0;
}
