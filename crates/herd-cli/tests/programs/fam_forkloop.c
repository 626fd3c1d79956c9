/* Forks in a loop while families.rs moves the process between nodes: each of
 * N children exits with (its index * 7) % 256 after a few milliseconds of
 * work; the parent waits for each and checks its status and that waitpid
 * named it. At the end: "forks: N, statuses right: N, pids right: N". Moves
 * meet forks on their way (a fork asked for during a move is made again after
 * it; a capture gives up the fork it meets). Exit 0.
 */
#include "mig_common.h"
#include <sys/wait.h>

int main(int argc, char **argv)
{
    mig_start();
    int n = argc > 1 ? atoi(argv[1]) : 300;
    say("ready 1");
    mig_wait_trigger("fork");
    int right = 0, named = 0;
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p < 0) {
            say("fork %d: %s", i, errname(errno));
            return 1;
        }
        if (p == 0) {
            volatile unsigned x = 0;
            for (unsigned k = 0; k < 2000000; k++)
                x += k;
            _exit((i * 7) % 256);
        }
        int st;
        pid_t w;
        do
            w = waitpid(p, &st, 0);
        while (w < 0 && errno == EINTR);
        named += w == p;
        right += w == p && WIFEXITED(st) && WEXITSTATUS(st) == (i * 7) % 256;
    }
    say("forks: %d, statuses right: %d, pids right: %d", n, right, named);
    return 0;
}
