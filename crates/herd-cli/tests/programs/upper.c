/* Reads lines from stdin until EOF and echoes each one upper-cased with its
 * line number (state that must survive a checkpoint taken while blocked in
 * read). Exits with status 3.
 */
#include <ctype.h>
#include <stdio.h>

int main(void)
{
    char line[4096];
    int n = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        n++;
        for (char *p = line; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        printf("%d: %s", n, line);
    }
    printf("eof after %d lines\n", n);
    return 3;
}
