/* Fills a large heap with pseudo-random data, then checksums all of it
 * repeatedly, changing a few words per round so that every round depends on
 * the previous ones. A single wrong page after restore changes every later
 * line of output.
 *
 * usage: heap_checksum [MiB=512] [rounds=12]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 512;
    int rounds = argc > 2 ? atoi(argv[2]) : 12;
    setvbuf(stdout, NULL, _IOLBF, 0);

    size_t n = mib * 1024 * 1024 / sizeof(uint64_t);
    uint64_t *a = malloc(n * sizeof *a);
    if (!a) {
        perror("malloc");
        return 2;
    }
    /* xorshift64: incompressible, no zero pages, fully deterministic */
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        a[i] = x;
    }
    printf("filled %zu MiB\n", mib);

    uint64_t total = 0;
    for (int r = 0; r < rounds; r++) {
        uint64_t s = 0xcbf29ce484222325ull ^ (uint64_t)r;
        for (size_t i = 0; i < n; i++)
            s = (s ^ a[i]) * 0x100000001B3ull; /* FNV-1a over words */
        /* touch one word in every third page: memory written after restore */
        for (size_t i = (size_t)r; i < n; i += 3 * 4096 / sizeof(uint64_t))
            a[i] += s;
        total ^= s;
        printf("round %d sum %016llx\n", r, (unsigned long long)s);
    }
    printf("final %016llx\n", (unsigned long long)total);
    free(a);
    return 0;
}
