/* A filter: each line of stdin comes out numbered, with a running FNV-1a
 * hash of everything read so far (state that must survive the move) and the
 * line reversed and upper-cased. At end of file a summary line; exit 0.
 * Read with stdio (fgets): a migration taken while lines sit in its buffer
 * must carry them. A read error (EINTR included: there is no handler) is
 * reported and exits 1.
 */
#include "mig_common.h"
#include <ctype.h>
#include <stdint.h>

int main(void)
{
    char line[4096], out[4096];
    uint64_t h = 1469598103934665603ULL;
    unsigned long n = 0, bytes = 0;

    mig_start();
    while (fgets(line, sizeof line, stdin)) {
        size_t len = strlen(line);
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        for (size_t i = 0; i <= len; i++) {
            h ^= i < len ? (unsigned char)line[i] : '\n';
            h *= 1099511628211ULL;
        }
        for (size_t i = 0; i < len; i++)
            out[i] = (char)toupper((unsigned char)line[len - 1 - i]);
        out[len] = '\0';
        n++;
        bytes += len;
        say("%05lu %016llx %s", n, (unsigned long long)h, out);
    }
    if (ferror(stdin)) {
        fprintf(stderr, "mig_filter: reading stdin: %s\n", errname(errno));
        say("read error after %lu lines", n);
        return 1;
    }
    say("end lines=%lu bytes=%lu hash=%016llx", n, bytes, (unsigned long long)h);
    return 0;
}
