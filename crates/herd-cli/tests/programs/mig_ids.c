/* Identity before and after a trigger: pid (the raw system call, not a
 * cached value), tid, parent, real and effective ids. A migrated process
 * must print the same line twice, "before" and then "after"; exit 0.
 */
#include "mig_common.h"
#include <sys/syscall.h>

static void ids(const char *when)
{
    say("%s pid=%ld tid=%ld ppid=%ld uid=%d euid=%d gid=%d egid=%d", when,
        (long)syscall(SYS_getpid), (long)syscall(SYS_gettid), (long)getppid(),
        (int)getuid(), (int)geteuid(), (int)getgid(), (int)getegid());
}

int main(void)
{
    mig_start();
    ids("before");
    mig_wait_trigger("go");
    ids("after");
    return 0;
}
