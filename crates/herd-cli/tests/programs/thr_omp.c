/* An OpenMP numeric kernel: four threads (OMP_NUM_THREADS is set by the
 * caller; 4 here by default) share each round's loop, with a reduction and a
 * per-thread private accumulator kept across rounds in threadprivate
 * storage (TLS). The main thread prints one line per round; the exit status
 * is 4. Integer arithmetic only, so the result does not depend on the order
 * in which partial sums are combined.
 *
 * usage: thr_omp [ROUNDS]      build: -fopenmp
 */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static uint64_t carry;
#pragma omp threadprivate(carry)

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x9e3779b97f4a7c15ULL;
    x ^= x >> 29;
    return x;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 40;
    setvbuf(stdout, NULL, _IOLBF, 0);
    fprintf(stderr, "mig-pid: %d\n", (int)getpid()); /* for the migration tests */
    omp_set_dynamic(0);
    #pragma omp parallel num_threads(4)
    carry = mix(omp_get_thread_num() + 1);
    for (int r = 0; r < rounds; r++) {
        uint64_t sum = 0;
        #pragma omp parallel for num_threads(4) schedule(static) reduction(+ : sum)
        for (int i = 0; i < 400000; i++) {
            carry = mix(carry + i);
            sum += mix((uint64_t)r * 1000003u + i) ^ (carry & 0xff);
        }
        uint64_t carries = 0;
        #pragma omp parallel num_threads(4) reduction(^ : carries)
        carries ^= carry * (omp_get_thread_num() + 1);
        printf("round %d: %016llx %016llx\n", r, (unsigned long long)sum, (unsigned long long)carries);
        struct timespec t = { 0, 20 * 1000 * 1000 };
        nanosleep(&t, NULL);
    }
    return 4;
}
