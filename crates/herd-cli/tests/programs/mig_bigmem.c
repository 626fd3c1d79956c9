/* A large resident process: mallocs MiB (argument) and writes two
 * words derived from its index into every page, prints "ready ...", waits
 * for a trigger, then checks every page and prints a checksum; exit 0 when
 * every page holds what was written, 1 otherwise.
 */
#include "mig_common.h"
#include <stdint.h>

#define PAGE 4096

static uint64_t word0(size_t page) { return (uint64_t)page * 0x9E3779B97F4A7C15ULL + 1; }
static uint64_t word1(size_t page) { return ~((uint64_t)page * 0xC2B2AE3D27D4EB4FULL); }

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 0;
    if (mib == 0) {
        fprintf(stderr, "usage: mig_bigmem MiB\n");
        return 64;
    }
    mig_start();
    size_t size = mib << 20, pages = size / PAGE;
    unsigned char *mem = malloc(size);
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
    mig_wait_trigger("check");
    size_t bad = 0;
    uint64_t sum = 0;
    for (size_t p = 0; p < pages; p++) {
        uint64_t *w = (uint64_t *)(mem + p * PAGE);
        if (w[0] != word0(p) || w[PAGE / 16] != word1(p) || w[1] != 0)
            bad++;
        sum = (sum << 7 | sum >> 57) ^ w[0] ^ (w[PAGE / 16] >> 3);
    }
    say("checked pages=%zu bad=%zu sum=%016llx", pages, bad, (unsigned long long)sum);
    free(mem);
    return bad ? 1 : 0;
}
