/* fork + exec after a trigger: the child execs /bin/echo child-ran (on the
 * same stdout), the parent waits and prints how the child ended. Then
 * "ready 2", a second trigger, "done", exit 0. A migrated process forks where
 * it runs and its child goes home to exec; the test looks at where the parent
 * is while it waits the second time.
 */
#include "mig_common.h"
#include <sys/wait.h>

int main(void)
{
    mig_start();
    say("ready 1");
    mig_wait_trigger("fork");
    say("parent: forking");
    pid_t child = fork();
    if (child < 0) {
        say("fork: %s", errname(errno));
        return 1;
    }
    if (child == 0) {
        execl("/bin/echo", "echo", "child-ran", (char *)NULL);
        fprintf(stderr, "exec /bin/echo: %s\n", strerror(errno));
        _exit(127);
    }
    int status;
    pid_t w;
    do
        w = waitpid(child, &status, 0);
    while (w < 0 && errno == EINTR);
    if (w != child) {
        say("waitpid: %s", errname(errno));
        return 1;
    }
    if (WIFEXITED(status))
        say("parent: child exited %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        say("parent: child killed by signal %d", WTERMSIG(status));
    else
        say("parent: child status %#x", status);
    say("ready 2");
    mig_wait_trigger("finish");
    say("done");
    return 0;
}
