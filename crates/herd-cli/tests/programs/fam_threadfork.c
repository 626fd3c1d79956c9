/* A thread other than the main one forks (families.rs moves the process to n2
 * first): the child, made on n2 with one thread (the forking one's copy),
 * reports through a pipe whether getppid() is the process and exits 9; the
 * forking thread waits for it. The main thread meanwhile makes forwarded calls
 * of its own. Prints what each saw. Exit 0.
 */
#include "mig_common.h"
#include <pthread.h>
#include <sys/wait.h>

static pid_t parent;
static char seen[128];

static void *forker(void *arg)
{
    (void)arg;
    int fd[2];
    if (pipe(fd)) {
        snprintf(seen, sizeof seen, "pipe: %s", errname(errno));
        return NULL;
    }
    pid_t p = fork();
    if (p == 0) {
        char c = getppid() == parent ? 'y' : 'n';
        if (write(fd[1], &c, 1) != 1)
            _exit(90);
        _exit(9);
    }
    if (p < 0) {
        snprintf(seen, sizeof seen, "fork: %s", errname(errno));
        return NULL;
    }
    close(fd[1]);
    char c = '?';
    if (read(fd[0], &c, 1) != 1)
        c = '!';
    int st;
    pid_t w;
    do
        w = waitpid(p, &st, 0);
    while (w < 0 && errno == EINTR);
    snprintf(seen, sizeof seen, "thread's child: parent %s, %s %d", c == 'y' ? "matches" : "differs",
             w == p && WIFEXITED(st) ? "exited" : "?", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return NULL;
}

int main(void)
{
    mig_start();
    parent = getpid();
    say("ready 1");
    mig_wait_trigger("fork from a thread");
    pthread_t t;
    if (pthread_create(&t, NULL, forker, NULL)) {
        say("pthread_create failed");
        return 1;
    }
    int calls = 0;
    for (int i = 0; i < 200; i++)
        calls += getppid() >= 0;
    pthread_join(t, NULL);
    say("%s", seen);
    say("main thread: %d calls", calls);
    return 0;
}
