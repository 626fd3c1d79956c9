/* A process herd must refuse (or, in mode "plain", accept) to checkpoint.
 * Modes: "plain", "threads" (a second thread, both looping), "socket" (holds
 * a TCP socket on fd 3), "threads+socket". Prints "ready", then "tick N"
 * every 100 ms so the test can see it is still running; gives up by itself
 * after about 60 s in case nobody kills it.
 *
 * usage: refuse MODE     build: -pthread
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static void nap(void)
{
    struct timespec t = { 0, 10 * 1000 * 1000 };
    nanosleep(&t, NULL);
}

static void *other_thread(void *arg)
{
    (void)arg;
    for (;;)
        nap();
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "plain";
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strstr(mode, "threads")) {
        pthread_t t;
        if (pthread_create(&t, NULL, other_thread, NULL) != 0)
            return 2;
    }
    if (strstr(mode, "socket")) {
        if (socket(AF_INET, SOCK_STREAM, 0) < 0) {
            perror("socket");
            return 2;
        }
    }
    printf("ready\n");
    for (int i = 1; i <= 6000; i++) {
        nap();
        if (i % 10 == 0)
            printf("tick %d\n", i / 10);
    }
    return 0;
}
