/* Memory that changes while it moves: mallocs MiB (argument 1) and
 * gives every page three words derived from its index and a generation.
 * Then, for each of GATES (argument 2) phases: prints "gate G", waits for a
 * trigger, and makes PASSES (argument 3) passes over all of its memory, as
 * fast as it can; each pass checks that every page holds the words of the
 * previous generation and writes the next. At the end: a digest of all of
 * its memory and the number of bad pages (exit 1 if any). The output depends
 * only on the arguments, however the process was moved meanwhile.
 */
#include "mig_common.h"
#include <stdint.h>

#define PAGE 4096

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x9E3779B97F4A7C15ULL;
    x ^= x >> 29;
    return x;
}

static uint64_t word(size_t page, unsigned gen, unsigned k) { return mix(((uint64_t)page << 20) ^ ((uint64_t)gen << 4) ^ k); }

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 0;
    unsigned gates = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 3;
    unsigned passes = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 4;
    if (mib == 0) {
        fprintf(stderr, "usage: mig_churn MiB [GATES] [PASSES]\n");
        return 64;
    }
    mig_start();
    size_t pages = (mib << 20) / PAGE;
    unsigned char *mem = malloc(mib << 20);
    if (!mem) {
        say("malloc %zu MiB failed", mib);
        return 1;
    }
    const size_t at[3] = {0, PAGE / 16, PAGE / 8 - 1};
    for (size_t p = 0; p < pages; p++) {
        uint64_t *w = (uint64_t *)(mem + p * PAGE);
        for (unsigned k = 0; k < 3; k++)
            w[at[k]] = word(p, 0, k);
    }
    unsigned gen = 0;
    size_t bad = 0;
    for (unsigned g = 0; g < gates; g++) {
        say("gate %u", g);
        mig_wait_trigger("gate");
        for (unsigned i = 0; i < passes; i++, gen++) {
            for (size_t p = 0; p < pages; p++) {
                uint64_t *w = (uint64_t *)(mem + p * PAGE);
                for (unsigned k = 0; k < 3; k++) {
                    if (w[at[k]] != word(p, gen, k))
                        bad++;
                    w[at[k]] = word(p, gen + 1, k);
                }
            }
        }
        say("phase %u done: generation %u, bad pages so far %zu", g, gen, bad);
    }
    uint64_t digest = 0;
    for (size_t p = 0; p < pages; p++) {
        const uint64_t *w = (const uint64_t *)(mem + p * PAGE);
        for (size_t i = 0; i < PAGE / 8; i++)
            digest = mix(digest ^ w[i]) + i;
    }
    say("pages=%zu generation=%u bad=%zu digest=%016llx", pages, gen, bad, (unsigned long long)digest);
    free(mem);
    return bad ? 1 : 0;
}
