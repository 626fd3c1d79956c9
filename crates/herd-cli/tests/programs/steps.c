/* A deterministic computation in steps, printing one line per step. Each
 * step allocates a new block (alternating brk-heap sized and mmap sized, so
 * the address space keeps growing after a restore) and folds older blocks
 * into the state. Exits with status 7.
 *
 * usage: steps [steps=30] [work=30000000]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 30;
    long work = argc > 2 ? atol(argv[2]) : 30000000;
    setvbuf(stdout, NULL, _IOLBF, 0);

    uint64_t **blocks = calloc((size_t)steps, sizeof *blocks);
    size_t *words = calloc((size_t)steps, sizeof *words);
    uint64_t x = 1;
    for (int i = 0; i < steps; i++) {
        for (long j = 0; j < work; j++)
            x = (x * 6364136223846793005ull + 1442695040888963407ull) ^ (x >> 29);
        words[i] = (i % 2 ? 256 * 1024 : 8 * 1024) / sizeof(uint64_t); /* 256 KiB: mmap; 8 KiB: brk */
        blocks[i] = malloc(words[i] * sizeof(uint64_t));
        if (!blocks[i])
            return 2;
        for (size_t k = 0; k < words[i]; k++)
            blocks[i][k] = x + k * 0x9E3779B97F4A7C15ull;
        uint64_t fold = 0;
        for (int b = 0; b <= i; b++)
            for (size_t k = 0; k < words[b]; k += 97)
                fold = (fold ^ blocks[b][k]) * 0x100000001B3ull;
        x ^= fold;
        printf("step %d x %016llx fold %016llx\n", i, (unsigned long long)x, (unsigned long long)fold);
    }
    printf("done %016llx\n", (unsigned long long)x);
    return 7;
}
