// Memory without a name, shared by a parent and its child, for checkpoint tests.
//
// Before fork the parent maps:
//   A  1 MiB of shared anonymous memory: the two take turns through a counter in it
//      (a round is the parent's odd turn, then the child's even one), and the child
//      adds to a sum there;
//   B  a memfd of 3 pages mapped shared over 4 pages, its fd closed: the child writes
//      a message in it each round, the parent reads it; the 4th page is beyond the
//      file's end (touching it raises SIGBUS);
//   C  a memfd whose descriptor stays open, mapped shared: the parent writes through
//      the descriptor and reads through the mapping;
//   D  a file written, mapped private, one page changed, then unlinked and closed.
// It prints one line per round ("round I: sum S, B says M, C says N"), then what D
// and the page beyond B hold, and exits 0 once the child has exited 3. A child that
// stops answering (memory no longer shared) ends the run with exit 1.
// Usage: ckpt_shm ROUNDS
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

struct shared {
    _Atomic long turn;
    long sum;
};

static sigjmp_buf env;

static void on_bus(int sig) {
    (void)sig;
    siglongjmp(env, 1);
}

static long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

// Waits until A's turn is `want`; 0 when it came, -1 after 20 s.
static int wait_turn(struct shared *a, long want) {
    long until = now_ms() + 20000;
    while (atomic_load(&a->turn) != want) {
        if (now_ms() > until)
            return -1;
        usleep(500);
    }
    return 0;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    struct shared *a = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int bfd = memfd_create("ckpt-b", 0);
    int cfd = memfd_create("ckpt-c", MFD_ALLOW_SEALING);
    if (a == MAP_FAILED || bfd < 0 || cfd < 0 || ftruncate(bfd, 3 * PAGE) || ftruncate(cfd, PAGE)) {
        perror("setup");
        return 2;
    }
    char *b = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, bfd, 0);
    char *c = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, cfd, 0);
    close(bfd);
    if (fcntl(cfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW)) {
        perror("seals");
        return 2;
    }
    char dpath[] = "ckpt-shm-d-XXXXXX";
    int dfd = mkstemp(dpath);
    char block[4 * PAGE];
    for (int i = 0; i < (int)sizeof block; i++)
        block[i] = 'a' + i % 26;
    if (b == MAP_FAILED || c == MAP_FAILED || dfd < 0 || write(dfd, block, sizeof block) != (ssize_t)sizeof block) {
        perror("setup");
        return 2;
    }
    char *d = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, dfd, 0);
    if (d == MAP_FAILED) {
        perror("mmap d");
        return 2;
    }
    memcpy(d + PAGE, "changed here", 12);
    unlink(dpath);
    close(dfd);
    memcpy(b + 2 * PAGE, "tail", 5);
    fflush(stdout);

    pid_t kid = fork();
    if (kid < 0) {
        perror("fork");
        return 2;
    }
    if (kid == 0) {
        for (long i = 0; i < rounds; i++) {
            if (wait_turn(a, 2 * i + 1))
                _exit(1);
            a->sum += i * i + 1;
            snprintf(b, 64, "child's word %ld", i);
            atomic_store(&a->turn, 2 * i + 2);
        }
        _exit(3);
    }
    for (long i = 0; i < rounds; i++) {
        char word[32];
        int n = snprintf(word, sizeof word, "parent's %ld", i * 7);
        if (pwrite(cfd, word, n + 1, 0) != n + 1) {
            perror("pwrite");
            return 2;
        }
        atomic_store(&a->turn, 2 * i + 1);
        if (wait_turn(a, 2 * i + 2)) {
            printf("round %ld: the child did not answer (memory not shared)\n", i);
            return 1;
        }
        printf("round %ld: sum %ld, B says %s, C says %s\n", i, a->sum, b, c);
        fflush(stdout);
        usleep(100000);
    }
    int st;
    waitpid(kid, &st, 0);
    printf("child ended: exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    printf("D: %.12s %.5s %.5s; B's tail %s\n", d + PAGE, d, d + 3 * PAGE, b + 2 * PAGE);
    signal(SIGBUS, on_bus);
    if (sigsetjmp(env, 1) == 0) {
        volatile char x = b[3 * PAGE];
        printf("beyond B's end: %d (no fault)\n", x);
    } else {
        printf("beyond B's end: SIGBUS\n");
    }
    printf("C's seals: %#x\n", fcntl(cfd, F_GET_SEALS));
    // B has no descriptor left: its mapping opens it (as root).
    char mf[64];
    snprintf(mf, sizeof mf, "/proc/self/map_files/%lx-%lx", (unsigned long)b, (unsigned long)(b + 4 * PAGE));
    int bf = open(mf, O_RDONLY);
    printf("B's seals: %#x\n", bf < 0 ? -1 : fcntl(bf, F_GET_SEALS));
    return 0;
}
