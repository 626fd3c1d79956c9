// A shared writable mapping of a file: each tick adds to a counter and appends a
// line in the mapped page and prints them; at the end, what read(2) of the file
// says beside what the mapping says. Restored as a private copy (or not at all),
// the file and the mapping part ways and the last lines differ.
//
//   ckpt_mapfile FILE TICKS
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: ckpt_mapfile FILE TICKS\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 4096) != 0) {
        perror(argv[1]);
        return 1;
    }
    char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (page == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    close(fd);
    unsigned *counter = (unsigned *)page;
    char *text = page + 64;
    int ticks = atoi(argv[2]);
    for (int i = 0; i < ticks; i++) {
        *counter += i + 1;
        snprintf(text + strlen(text), 4096 - 64 - strlen(text), "t%d ", i);
        printf("tick %d counter %u\n", i, *counter);
        fflush(stdout);
        usleep(100000);
    }
    char buf[4096];
    fd = open(argv[1], O_RDONLY);
    if (fd < 0 || pread(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf) {
        perror("reading the file back");
        return 1;
    }
    printf("file: counter %u, %s\n", *(unsigned *)buf, buf + 64);
    printf("map:  counter %u, %s\n", *counter, text);
    return memcmp(buf, page, 4096) == 0 ? 0 : 3;
}
