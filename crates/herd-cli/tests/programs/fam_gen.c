/* The first stage of a pipeline (families.rs): N lines of numbers that take
 * some computing, through stdio's buffer (a few large writes). After half
 * of them it flushes, says "fam-gen: half" on stderr and waits for a
 * trigger line on stdin, so that the test moves the stages mid-stream.
 * Usage: fam_gen N
 */
#include "mig_common.h"

static unsigned long work(unsigned long i)
{
    unsigned long x = i * 2654435761UL;
    for (int k = 0; k < 200; k++)
        x = x * 6364136223846793005UL + 1442695040888963407UL;
    return (x >> 33) % 5003;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    for (long i = 0; i < n; i++) {
        printf("%lu\n", work((unsigned long)i));
        if (i == n / 2) {
            fflush(stdout);
            fprintf(stderr, "fam-gen: half\n");
            mig_wait_trigger("the second half");
        }
    }
    return 0;
}
