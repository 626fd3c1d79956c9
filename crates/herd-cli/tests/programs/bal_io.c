/* An I/O-bound job: for argv[2] seconds it reads the first 64 bytes of file argv[1] again
 * and again (away from home every read is a call forwarded home), checking each read;
 * then prints one line. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: bal_io FILE SECONDS\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    char first[64], buf[64];
    if (pread(fd, first, sizeof first, 0) != (ssize_t)sizeof first) {
        fprintf(stderr, "%s: shorter than 64 bytes\n", argv[1]);
        return 1;
    }
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long reads = 0;
    do {
        for (int i = 0; i < 100; i++, reads++) {
            if (pread(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf || memcmp(buf, first, sizeof buf) != 0) {
                printf("read %ld differs\n", reads);
                return 1;
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (now.tv_sec - start.tv_sec < atol(argv[2]));
    fprintf(stderr, "%ld reads\n", reads);
    printf("io ok\n");
    return 0;
}
