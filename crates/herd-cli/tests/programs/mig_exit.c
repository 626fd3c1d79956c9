/* Ends in a chosen way after a trigger: "exit3" exits with status 3,
 * "segv" writes through a NULL pointer (SIGSEGV; no core file). Before
 * that it computes a little and prints the result.
 */
#include "mig_common.h"

int main(int argc, char **argv)
{
    if (argc != 2 || (strcmp(argv[1], "exit3") != 0 && strcmp(argv[1], "segv") != 0)) {
        fprintf(stderr, "usage: mig_exit exit3|segv\n");
        return 64;
    }
    mig_start();
    say("ready");
    mig_wait_trigger("go");
    unsigned long long sum = 0;
    for (unsigned long long i = 1; i <= 3000000; i++)
        sum = (sum + i * i) % 1000000007ULL;
    say("result %llu", sum);
    if (strcmp(argv[1], "exit3") == 0) {
        say("exiting with 3");
        exit(3);
    }
    say("writing through NULL");
    /* From a string, so that the compiler cannot see the NULL (and turn the
     * store into a trap instruction, SIGILL). */
    volatile int *p = (volatile int *)strtoul("0", NULL, 10);
    *p = 1;
    say("still alive");
    return 1;
}
