/* A process herd must refuse (or, in modes "plain", "threads" and "lease", accept)
 * to checkpoint.
 * Modes: "plain", "threads" (a second thread, both looping), "socket" (holds
 * an established TCP connection to itself), "threads+socket", "lease" (a read lease on DIR/lease),
 * "gone-cwd" (its working directory DIR/gone is removed; accepted), "epoll-reused" (an
 * epoll watches fd N, whose file now lives at another fd while N holds
 * another file), "thread-seccomp" (a second thread, and only it, under a seccomp
 * filter that allows everything), "io_uring-wait" (an io_uring whose rings are
 * mapped, a read of an empty pipe submitted to it with IOSQE_ASYNC, which one of
 * the kernel's io_uring workers (a thread "iou-wrk-N" of the process) waits in,
 * and a second thread waiting in io_uring_enter for its completion, which never
 * comes), "clone-vm" (a child made by clone with CLONE_VM and not CLONE_THREAD:
 * the two share their memory), "shared-fork" (shared anonymous memory mapped, then a
 * child forked: the two map it both). Prints "ready", then "tick N" every 100 ms so the test can
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
#include <linux/io_uring.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
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

static int ring_fd = -1;
static volatile int waiting;

/* Waits for one completion of an io_uring nothing was submitted to: forever. */
static void *ring_waiter(void *arg)
{
    (void)arg;
    waiting = 1;
    for (;;)
        syscall(SYS_io_uring_enter, ring_fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0);
    return NULL;
}

static char vm_child_stack[64 * 1024] __attribute__((aligned(16)));

/* Runs in the parent's memory; ends with it. */
static int vm_child(void *arg)
{
    (void)arg;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (int i = 0; i < 6000; i++)
        nap();
    _exit(0);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "plain";
    setvbuf(stdout, NULL, _IOLBF, 0);
    fprintf(stderr, "mig-pid: %d\n", (int)getpid()); /* for the migration tests */
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
    if (strcmp(mode, "io_uring-wait") == 0) {
        struct io_uring_params params;
        memset(&params, 0, sizeof params);
        ring_fd = (int)syscall(SYS_io_uring_setup, 4, &params);
        if (ring_fd < 0) {
            perror("io_uring_setup");
            return 3; /* the test says why it skips */
        }
        size_t len = params.sq_off.array + params.sq_entries * sizeof(unsigned);
        char *sq = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_fd, IORING_OFF_SQ_RING);
        struct io_uring_sqe *sqes = mmap(NULL, params.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                                         MAP_SHARED | MAP_POPULATE, ring_fd, IORING_OFF_SQES);
        int p[2];
        if (sq == MAP_FAILED || sqes == MAP_FAILED || pipe(p)) {
            perror("mmap of the ring");
            return 2;
        }
        static char buf[16];
        memset(&sqes[0], 0, sizeof sqes[0]);
        sqes[0].opcode = IORING_OP_READ;
        sqes[0].fd = p[0];
        sqes[0].addr = (unsigned long)buf;
        sqes[0].len = sizeof buf;
        sqes[0].flags = IOSQE_ASYNC;
        unsigned *tail = (unsigned *)(sq + params.sq_off.tail);
        unsigned mask = *(unsigned *)(sq + params.sq_off.ring_mask);
        ((unsigned *)(sq + params.sq_off.array))[*tail & mask] = 0;
        __atomic_store_n(tail, *tail + 1, __ATOMIC_RELEASE);
        if (syscall(SYS_io_uring_enter, ring_fd, 1, 0, 0, NULL, 0) != 1) {
            perror("io_uring_enter");
            return 2;
        }
        pthread_t t;
        if (pthread_create(&t, NULL, ring_waiter, NULL) != 0)
            return 2;
        while (!waiting)
            nap();
        nap(); /* it is in the wait by now */
    }
    if (strcmp(mode, "clone-vm") == 0 && clone(vm_child, vm_child_stack + sizeof vm_child_stack, CLONE_VM | SIGCHLD, NULL) < 0) {
        perror("clone");
        return 2;
    }
    if (strcmp(mode, "shared-fork") == 0) {
        volatile int *shm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (shm == MAP_FAILED) {
            perror("mmap");
            return 2;
        }
        *shm = 1;
        pid_t kid = fork();
        if (kid < 0) {
            perror("fork");
            return 2;
        }
        if (kid == 0)
            vm_child(NULL);
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
