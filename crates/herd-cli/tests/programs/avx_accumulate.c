/* Keeps floating-point state in registers across long call-free loops:
 * four AVX ymm accumulators (four lanes each) and one x87 long double, with
 * the rounding mode set to round-toward-zero (MXCSR and the x87 control word
 * must survive too). Prints every lane in hex after each round, so the output
 * is compared bit for bit.
 *
 * usage: avx_accumulate [rounds=16] [inner=25000000]    build: -mavx2
 */
#include <fenv.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void lanes(const char *name, __m256d v)
{
    double d[4];
    uint64_t u[4];
    _mm256_storeu_pd(d, v);
    memcpy(u, d, sizeof u);
    printf(" %s=%016llx:%016llx:%016llx:%016llx", name, (unsigned long long)u[0],
           (unsigned long long)u[1], (unsigned long long)u[2], (unsigned long long)u[3]);
}

/* No calls inside: the accumulators live in ymm registers and x in st(0)
 * for the whole inner loop, which is where a checkpoint almost always lands. */
__attribute__((noinline)) static void run(__m256d acc[4], const __m256d c[4], __m256d m,
                                          long double *xp, long inner)
{
    __m256d a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    __m256d c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
    long double x = *xp;
    for (long i = 0; i < inner; i++) {
        a0 = _mm256_add_pd(_mm256_mul_pd(a0, m), c0);
        a1 = _mm256_add_pd(_mm256_mul_pd(a1, m), c1);
        a2 = _mm256_add_pd(_mm256_mul_pd(a2, m), c2);
        a3 = _mm256_add_pd(_mm256_mul_pd(a3, m), c3);
        x = x * 1.0000000001L + 1e-9L;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
    *xp = x;
}

int main(int argc, char **argv)
{
    long rounds = argc > 1 ? atol(argv[1]) : 16;
    long inner = argc > 2 ? atol(argv[2]) : 25000000;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (fesetround(FE_TOWARDZERO) != 0)
        return 2;

    volatile double seed = 1.0; /* volatile: the compiler cannot fold the loops */
    double s = seed;
    __m256d m = _mm256_set_pd(0.99999991, 0.99999993, 0.99999997, 0.99999999);
    __m256d c[4] = {
        _mm256_set_pd(s * 1e-3, s * 2e-3, s * 3e-3, s * 4e-3),
        _mm256_set_pd(s * 5e-3, s * 6e-3, s * 7e-3, s * 8e-3),
        _mm256_set_pd(s / 3, s / 7, s / 11, s / 13),
        _mm256_set_pd(s / 17, s / 19, s / 23, s / 29),
    };
    __m256d acc[4] = { _mm256_set1_pd(s), _mm256_set1_pd(-s), _mm256_set1_pd(s / 9), _mm256_set1_pd(s * 1e9) };
    long double x = s / 3;

    for (long r = 0; r < rounds; r++) {
        run(acc, c, m, &x, inner);
        printf("round %ld", r);
        lanes("a0", acc[0]);
        lanes("a1", acc[1]);
        lanes("a2", acc[2]);
        lanes("a3", acc[3]);
        printf(" x=%La\n", x);
    }
    printf("rounding %s\n", fegetround() == FE_TOWARDZERO ? "toward-zero" : "CHANGED");
    return 0;
}
