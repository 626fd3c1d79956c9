/* A process that shares memory with a child at home (tests/migrate.rs): a POSIX
 * semaphore in a deleted /dev/shm file (as sem_open + sem_unlink leave it, and as
 * python's multiprocessing does), a counter in shared anonymous memory mapped before
 * the fork, and a page of a shared writable file. The parent may be moved while it
 * waits for a trigger: its shared memory stays at home, and its first touch of it
 * afterwards brings it back, where the child sees what it wrote.
 *
 * Parent: prints "ready", waits for a line, computes (touching none of the shared
 * memory: it may stay away meanwhile), prints the result, then posts the semaphore,
 * sets the counter and writes the file's page; the child (which waits on the
 * semaphore all along, at home) checks the counter and the page, answers through the
 * counter, and exits 7; the parent waits for the answer and for it, prints what it
 * saw and exits 0.
 *
 * usage: mig_athome DIR
 */
#include "mig_common.h"

#include <fcntl.h>
#include <semaphore.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    mig_start();
    if (argc < 2) {
        fprintf(stderr, "usage: mig_athome DIR\n");
        return 2;
    }
    char name[64];
    snprintf(name, sizeof name, "/mig_athome.%d", (int)getpid());
    int sfd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (sfd < 0 || ftruncate(sfd, 4096) != 0) {
        perror("shm_open");
        return 2;
    }
    sem_t *sem = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
    shm_unlink(name);
    close(sfd);
    volatile uint64_t *counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    char path[4096];
    snprintf(path, sizeof path, "%s/mig_athome.%d", argv[1], (int)getpid());
    int ffd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (ffd < 0 || ftruncate(ffd, 4096) != 0) {
        perror(path);
        return 2;
    }
    volatile char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ffd, 0);
    if (sem == MAP_FAILED || counter == MAP_FAILED || page == MAP_FAILED || sem_init(sem, 1, 0) != 0) {
        perror("mmap");
        return 2;
    }
    *counter = 0;
    pid_t kid = fork();
    if (kid < 0) {
        perror("fork");
        return 2;
    }
    if (kid == 0) {
        while (sem_wait(sem) != 0 && errno == EINTR)
            ;
        int ok = *counter == 1 && memcmp((const char *)page, "from the parent", 15) == 0;
        *counter = ok ? 2 : 3;
        _exit(7);
    }
    say("ready");
    mig_wait_trigger("go");
    /* Work that touches no shared memory. */
    uint64_t x = 88172645463325252ull;
    for (long i = 0; i < 300000000L; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    say("computed %016llx", (unsigned long long)x);
    memcpy((char *)page, "from the parent", 15);
    *counter = 1;
    sem_post(sem);
    while (*counter == 1)
        usleep(1000);
    int status = 0;
    if (waitpid(kid, &status, 0) != kid) {
        perror("waitpid");
        return 2;
    }
    char back[16] = {0};
    if (pread(ffd, back, 15, 0) != 15) {
        perror("pread");
        return 2;
    }
    say("child answered %llu, exited %d; the file says \"%s\"", (unsigned long long)*counter, WIFEXITED(status) ? WEXITSTATUS(status) : -1, back);
    unlink(path);
    return 0;
}
