/* A CPU-bound job for the balancing tests: argv[1] million rounds of integer work, then
 * one line with the result. The same argument gives the same line wherever it ran. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: bal_spin MILLION_ROUNDS\n");
        return 2;
    }
    long rounds = atol(argv[1]);
    unsigned long long x = 0x9e3779b97f4a7c15ULL;
    for (long m = 0; m < rounds; m++) {
        for (int i = 0; i < 1000000; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x *= 0x2545f4914f6cdd1dULL;
        }
    }
    printf("spin %ld %016llx\n", rounds, x);
    return 0;
}
