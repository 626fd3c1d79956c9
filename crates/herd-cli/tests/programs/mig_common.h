/* Shared by the mig_*.c programs of tests/migrate.rs.
 *
 * Conventions: stdout carries only deterministic output (the test compares
 * it with an uninterrupted run); each line is flushed at once so that the
 * test can follow the program. stderr gets "mig-pid: N" first: the pid in
 * the program's own (home) pid namespace, which `herd migrate` takes.
 * Triggers are lines on stdin, read with read(2) one byte at a time so that
 * no stdio buffer holds input that a child or a later read should see.
 */
#ifndef MIG_COMMON_H
#define MIG_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

/* No core files (a program that dies by SIGSEGV must not leave one in a
 * node's cwd), then the home pid on stderr. */
static inline void mig_start(void)
{
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
    fprintf(stderr, "mig-pid: %d\n", (int)getpid());
}

/* One line on stdout, flushed. */
static inline void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* Blocks until a whole line arrives on stdin. End of file or an error
 * (EINTR included: these programs have no handler that could cause one,
 * unless they say so) ends the program with status 100. */
static inline void mig_wait_trigger(const char *what)
{
    char c;
    fflush(stdout);
    for (;;) {
        ssize_t n = read(0, &c, 1);
        if (n == 1) {
            if (c == '\n')
                return;
            continue;
        }
        fprintf(stderr, "mig: waiting for trigger \"%s\": %s\n", what,
                n == 0 ? "end of file on stdin" : strerror(errno));
        exit(100);
    }
}

/* errno as its name, for deterministic messages. */
static inline const char *errname(int e)
{
    static char other[32];
    switch (e) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EEXIST: return "EEXIST";
    case EPERM: return "EPERM";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINTR: return "EINTR";
    case EAGAIN: return "EAGAIN";
    case EBADF: return "EBADF";
    case EFAULT: return "EFAULT";
    case EINVAL: return "EINVAL";
    case ENOSYS: return "ENOSYS";
    case EIO: return "EIO";
    default:
        snprintf(other, sizeof other, "errno %d", e);
        return other;
    }
}

/* A child that waits for a byte on its pipe `fd` (the parent keeps the write
 * end), then after `delay_ms` exits with `code`, or, negative, dies by signal
 * -code. Returns its pid in the parent. */
static inline pid_t mig_child(int fd[2], int code, long delay_ms)
{
    pid_t p = fork();
    if (p < 0) {
        say("fork: %s", errname(errno));
        exit(1);
    }
    if (p > 0) {
        close(fd[0]);
        return p;
    }
    close(fd[1]);
    char c;
    ssize_t n;
    do
        n = read(fd[0], &c, 1);
    while (n < 0 && errno == EINTR);
    struct timespec delay = {delay_ms / 1000, (delay_ms % 1000) * 1000 * 1000};
    nanosleep(&delay, NULL);
    if (code < 0) {
        signal(-code, SIG_DFL);
        raise(-code);
    }
    _exit(code);
}

#endif
