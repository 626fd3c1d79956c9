/* Prints "start", sleeps in one nanosleep call, prints how the call ended.
 * A faithful restore resumes the sleep (the kernel restarts an interrupted
 * nanosleep transparently), so the program never sees EINTR.
 *
 * usage: sleeper [seconds=2]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct timespec req = { (time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9) };
    struct timespec rem = { 0, 0 };
    printf("start\n");
    int rc = nanosleep(&req, &rem);
    if (rc != 0)
        printf("end rc=%d errno=%s rem=%ld.%09ld\n", rc, strerror(errno), (long)rem.tv_sec, rem.tv_nsec);
    else
        printf("end rc=0\n");
    return 0;
}
