/* A job of a family (families.rs) that lives until its input ends: prints
 * "NAME started", then reads stdin to its end and prints "NAME done".
 * Usage: fam_tick NAME
 */
#include "mig_common.h"

int main(int argc, char **argv)
{
    const char *name = argc > 1 ? argv[1] : "tick";
    say("%s started", name);
    char buf[256];
    ssize_t n;
    while ((n = read(0, buf, sizeof buf)) != 0) {
        if (n < 0 && errno != EINTR) {
            say("%s: read: %s", name, errname(errno));
            return 1;
        }
    }
    say("%s done", name);
    return 0;
}
