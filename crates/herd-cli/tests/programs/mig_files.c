/* File access after a trigger, to show which node's files a (migrated)
 * process sees. Prints "ready", waits for a line on stdin, then runs each
 * argument as an operation and prints what happened:
 *   cat:PATH          open + read; the content with newlines as \n
 *   stat:PATH         size, mode and owner, or the errno name
 *   create:PATH:TEXT  O_CREAT|O_EXCL, mode 0644, TEXT and a newline
 * then "done"; exit 0.
 */
#include "mig_common.h"
#include <fcntl.h>
#include <sys/stat.h>

static void do_cat(const char *path)
{
    char buf[4096], shown[2 * 4096 + 1];
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        say("cat %s: %s", path, errname(errno));
        return;
    }
    ssize_t n = read(fd, buf, sizeof buf);
    int e = errno;
    close(fd);
    if (n < 0) {
        say("cat %s: read: %s", path, errname(e));
        return;
    }
    size_t k = 0;
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            shown[k++] = '\\';
            shown[k++] = 'n';
        } else {
            shown[k++] = buf[i];
        }
    }
    shown[k] = '\0';
    say("cat %s: %zd bytes: %s", path, n, shown);
}

static void do_stat(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        say("stat %s: %s", path, errname(errno));
        return;
    }
    say("stat %s: size %lld mode %o uid %u", path, (long long)st.st_size,
        (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);
}

static void do_create(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) {
        say("create %s: %s", path, errname(errno));
        return;
    }
    size_t len = strlen(text);
    char buf[4096];
    snprintf(buf, sizeof buf, "%s\n", text);
    ssize_t n = write(fd, buf, len + 1);
    int e = errno;
    if (close(fd) != 0 && n >= 0) {
        say("create %s: close: %s", path, errname(errno));
        return;
    }
    if (n != (ssize_t)(len + 1))
        say("create %s: write returned %zd (%s)", path, n, n < 0 ? errname(e) : "short");
    else
        say("create %s: ok", path);
}

int main(int argc, char **argv)
{
    mig_start();
    say("ready");
    mig_wait_trigger("go");
    for (int i = 1; i < argc; i++) {
        char op[4096];
        snprintf(op, sizeof op, "%s", argv[i]);
        char *path = strchr(op, ':');
        if (!path) {
            say("bad operation %s", argv[i]);
            return 2;
        }
        *path++ = '\0';
        if (strcmp(op, "cat") == 0) {
            do_cat(path);
        } else if (strcmp(op, "stat") == 0) {
            do_stat(path);
        } else if (strcmp(op, "create") == 0) {
            char *text = strchr(path, ':');
            if (!text) {
                say("bad operation %s", argv[i]);
                return 2;
            }
            *text++ = '\0';
            do_create(path, text);
        } else {
            say("bad operation %s", argv[i]);
            return 2;
        }
    }
    say("done");
    return 0;
}
