// A fanotify group (notification class) marking FILE for FAN_MODIFY and
// FAN_CLOSE_WRITE. It ticks (the checkpoint lands meanwhile); then it appends to
// FILE, closes it and
// reads what the group saw: one event (the kernel merges the two), on the file it
// marked — only if the group came back with its marks. Same output when
// uninterrupted. With "early", it appends to FILE once before the ticks too, so that
// an event waits in the group meanwhile (a checkpoint must refuse it), and reads it
// with the other. Needs CAP_SYS_ADMIN (fanotify_init).
//
// usage: ckpt_fanotify TICKS FILE [early]
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void nap(void) {
    struct timespec t = {0, 100 * 1000 * 1000};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int ticks = atoi(argv[1]);
    const char *file = argv[2];
    setvbuf(stdout, NULL, _IOLBF, 0);
    int fan = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC, O_RDONLY | O_LARGEFILE);
    if (fan < 0 || fanotify_mark(fan, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, file)) {
        perror("fanotify");
        return 2;
    }
    struct stat want;
    if (stat(file, &want)) {
        perror("stat");
        return 2;
    }
    int early = argc > 3 && strcmp(argv[3], "early") == 0;
    if (early) {
        int e = open(file, O_WRONLY | O_APPEND);
        if (e < 0 || write(e, "early\n", 6) != 6 || close(e)) {
            perror("appending early");
            return 2;
        }
    }
    for (int i = 1; i <= ticks; i++) {
        printf("tick %d\n", i);
        nap();
    }
    int f = open(file, O_WRONLY | O_APPEND);
    if (f < 0 || write(f, "more\n", 5) != 5 || close(f)) {
        perror("appending");
        return 2;
    }
    char buf[4096] __attribute__((aligned(8)));
    struct pollfd p = {fan, POLLIN, 0};
    if (poll(&p, 1, 5000) != 1) {
        printf("no event within 5 s\n");
        return 3;
    }
    ssize_t n = read(fan, buf, sizeof buf);
    if (n <= 0) {
        perror("reading events");
        return 3;
    }
    int events = 0;
    for (struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
        struct stat got;
        int same = m->fd >= 0 && fstat(m->fd, &got) == 0 && got.st_ino == want.st_ino && got.st_dev == want.st_dev;
        printf("event%s%s on %s\n", m->mask & FAN_MODIFY ? " MODIFY" : "", m->mask & FAN_CLOSE_WRITE ? " CLOSE_WRITE" : "", same ? "the marked file" : "another file");
        if (m->fd >= 0) close(m->fd);
        events++;
    }
    printf("%d event(s)\n", events);
    return 0;
}
