/* Prints "waiting", then one read(2) of stdin (no retry: with no signal
 * handler a read must never fail with EINTR, migrated or not), and writes
 * what it got upper-cased; exit 0. End of file or an error: a message and
 * exit 1.
 */
#include "mig_common.h"
#include <ctype.h>

int main(void)
{
    char buf[4096];
    mig_start();
    say("waiting");
    ssize_t n = read(0, buf, sizeof buf);
    if (n <= 0) {
        say("read returned %zd (%s)", n, n < 0 ? errname(errno) : "end of file");
        return 1;
    }
    for (ssize_t i = 0; i < n; i++)
        buf[i] = (char)toupper((unsigned char)buf[i]);
    if (write(1, buf, (size_t)n) != n)
        return 1;
    return 0;
}
