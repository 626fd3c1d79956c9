/* Forks while its memory may still be arriving: mallocs MiB (argument) and writes two
 * words derived from its index into every page, prints "ready ...", waits for a trigger,
 * then at once forks child A (which forks grandchild G at once); each of A and G checks
 * every page. The parent checks every page, marks every page, forks child B, which checks
 * the words and the mark. Each child exits 0 when every page held what it should; the
 * parent prints what each ended with and a checksum; exit 0 when all were right.
 */
#include "mig_common.h"
#include <stdint.h>
#include <sys/wait.h>

#define PAGE 4096

static uint64_t word0(size_t page) { return (uint64_t)page * 0x9E3779B97F4A7C15ULL + 1; }
static uint64_t word1(size_t page) { return ~((uint64_t)page * 0xC2B2AE3D27D4EB4FULL); }

static unsigned char *mem;
static size_t pages;

/* Pages that do not hold the two words (and, with `mark`, the mark in word 2). */
static size_t check(int mark, uint64_t *sum)
{
    size_t bad = 0;
    for (size_t p = 0; p < pages; p++) {
        uint64_t *w = (uint64_t *)(mem + p * PAGE);
        if (w[0] != word0(p) || w[PAGE / 16] != word1(p) || w[1] != 0 || w[2] != (mark ? 7 : 0))
            bad++;
        if (sum)
            *sum = (*sum << 7 | *sum >> 57) ^ w[0] ^ (w[PAGE / 16] >> 3);
    }
    return bad;
}

/* Waits for `pid`; its exit status, or 100 + signal. */
static int ended(pid_t pid)
{
    int st;
    if (waitpid(pid, &st, 0) != pid)
        return 99;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 0;
    if (mib == 0) {
        fprintf(stderr, "usage: mig_forkheap MiB\n");
        return 64;
    }
    mig_start();
    pages = (mib << 20) / PAGE;
    mem = malloc(mib << 20);
    if (!mem) {
        say("malloc %zu MiB failed", mib);
        return 1;
    }
    for (size_t p = 0; p < pages; p++) {
        uint64_t *w = (uint64_t *)(mem + p * PAGE);
        w[0] = word0(p);
        w[PAGE / 16] = word1(p);
    }
    say("ready pages=%zu", pages);
    mig_wait_trigger("fork");
    pid_t a = fork();
    if (a < 0)
        return 2;
    if (a == 0) {
        pid_t g = fork();
        if (g < 0)
            _exit(2);
        if (g == 0)
            _exit(check(0, NULL) ? 1 : 0);
        int bad = check(0, NULL) ? 1 : 0;
        int gs = ended(g);
        _exit(bad ? 1 : gs ? 10 + gs : 0);
    }
    uint64_t sum = 0;
    size_t bad = check(0, &sum);
    for (size_t p = 0; p < pages; p++)
        ((uint64_t *)(mem + p * PAGE))[2] = 7;
    pid_t b = fork();
    if (b < 0)
        return 2;
    if (b == 0)
        _exit(check(1, NULL) ? 1 : 0);
    int as = ended(a), bs = ended(b);
    say("child A (and its child) ended %d, child B ended %d", as, bs);
    say("checked pages=%zu bad=%zu sum=%016llx", pages, bad, (unsigned long long)sum);
    return bad || as || bs ? 1 : 0;
}
