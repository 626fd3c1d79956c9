/* Memory layout changed while the memory is still arriving (post-copy): three
 * 64 MiB regions A, B, C, every page holding words derived from its index.
 * Prints "ready", waits for a trigger, then at once: moves A elsewhere
 * (mremap MAYMOVE|FIXED), empties the second half of B (madvise DONTNEED),
 * unmaps the last quarter of C; then checks every page: A's at its new place,
 * B's first half (second half must read zero), C's first three quarters.
 * Prints the number of bad pages and a digest; exit 1 if any page is bad.
 */
#include "mig_common.h"
#include <stdint.h>
#include <sys/mman.h>

#define PAGE 4096
#define REGION (64UL << 20)

static uint64_t word(unsigned region, size_t page, unsigned k)
{
    uint64_t x = ((uint64_t)region << 40) ^ ((uint64_t)page << 8) ^ k;
    x ^= x >> 31;
    x *= 0x9E3779B97F4A7C15ULL;
    return x ^ (x >> 29);
}

static unsigned char *region(unsigned r)
{
    unsigned char *m = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        say("mmap failed");
        exit(1);
    }
    for (size_t p = 0; p < REGION / PAGE; p++)
        for (unsigned k = 0; k < 4; k++)
            ((uint64_t *)(m + p * PAGE))[k * 128] = word(r, p, k);
    return m;
}

static size_t check(const unsigned char *m, unsigned r, size_t from, size_t to, int zero, uint64_t *digest)
{
    size_t bad = 0;
    for (size_t p = from; p < to; p++) {
        const uint64_t *w = (const uint64_t *)(m + p * PAGE);
        for (unsigned k = 0; k < 4; k++) {
            uint64_t want = zero ? 0 : word(r, p, k);
            if (w[k * 128] != want) {
                bad++;
                break;
            }
            *digest = (*digest ^ w[k * 128]) * 0x100000001B3ULL;
        }
    }
    return bad;
}

int main(void)
{
    mig_start();
    unsigned char *a = region(1), *b = region(2), *c = region(3);
    /* Where A goes: reserved now, so that the address is free and known. */
    unsigned char *to = mmap(NULL, REGION, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (to == MAP_FAILED) {
        say("mmap failed");
        return 1;
    }
    say("ready");
    mig_wait_trigger("go");
    unsigned char *moved = mremap(a, REGION, REGION, MREMAP_MAYMOVE | MREMAP_FIXED, to);
    if (moved != to) {
        say("mremap failed: %s", errname(errno));
        return 1;
    }
    if (madvise(b + REGION / 2, REGION / 2, MADV_DONTNEED) != 0 || munmap(c + REGION / 4 * 3, REGION / 4) != 0) {
        say("madvise/munmap failed: %s", errname(errno));
        return 1;
    }
    uint64_t digest = 0xcbf29ce484222325ULL;
    size_t pages = REGION / PAGE, bad = 0;
    bad += check(moved, 1, 0, pages, 0, &digest);
    bad += check(b, 2, 0, pages / 2, 0, &digest);
    bad += check(b, 2, pages / 2, pages, 1, &digest);
    bad += check(c, 3, 0, pages / 4 * 3, 0, &digest);
    say("bad=%zu digest=%016llx", bad, (unsigned long long)digest);
    return bad ? 1 : 0;
}
