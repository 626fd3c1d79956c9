/* Files in a directory shared by the nodes, used before, during and after a move
 * (tests/dfsa.rs).
 *
 *   dfsa_io io DIR     before the move: opens DIR/input (fd A, kept open) and reads
 *                      its first 1000 bytes; "ready", trigger (the test moves it).
 *                      Then: reads 1000 more of A; reads DIR/input whole by a new
 *                      descriptor in 32 KiB reads; writes DIR/out (4 MiB in 32 KiB
 *                      writes; its 100th block mapped privately just after it is
 *                      written, by the descriptor written through), fsync, reads it back; fstat; pread;
 *                      maps DIR/input (MAP_PRIVATE) and sums it; "io done", trigger (the test
 *                      moves it on); reads 1000 more of A, "again", trigger (the
 *                      test moves it home); reads 1000 more of A.
 *   dfsa_io check FILE "ready", trigger, then prints a checksum of FILE.
 *   dfsa_io fill FILE MIB  "ready", trigger, then writes up to MIB MiB to FILE in
 *                      32 KiB writes, fsync, close; says which call failed first.
 *   dfsa_io names DIR  makes DIR/victim, "ready", trigger; then 200 times mkdir,
 *                      rename and rmdir of a directory in DIR; mkdir with umask 027
 *                      (the mode made), the failures of mkdir, rmdir, unlink, rename
 *                      (EEXIST, ENOTEMPTY, EISDIR, ENOENT) by name; cleans up, "names
 *                      done", trigger.
 *
 * Every step prints a checksum (FNV-1a) or a number: the same in a direct run.
 */
#include "mig_common.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

static uint64_t fnv(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

#define FNV0 14695981039346656037ULL

static int must_open(const char *path, int flags)
{
    int fd = open(path, flags, 0644);
    if (fd < 0) {
        fprintf(stderr, "open %s: %s\n", path, strerror(errno));
        exit(2);
    }
    return fd;
}

/* Reads exactly n bytes of fd (less at end of file) and says their checksum. */
static void read_part(int fd, size_t n, const char *what)
{
    unsigned char buf[1000];
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    say("%s: %zu bytes %016llx, now at %lld", what, got, (unsigned long long)fnv(FNV0, buf, got),
        (long long)lseek(fd, 0, SEEK_CUR));
}

static uint64_t sum_file(const char *path, size_t *total)
{
    static unsigned char buf[32768];
    int fd = must_open(path, O_RDONLY);
    uint64_t h = FNV0;
    *total = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0) {
            fprintf(stderr, "read %s: %s\n", path, strerror(errno));
            exit(2);
        }
        if (r == 0)
            break;
        h = fnv(h, buf, (size_t)r);
        *total += (size_t)r;
    }
    close(fd);
    return h;
}

/* What a call that returns 0 or -1 with errno gave: "ok" or the errno's name. */
static const char *res(int r)
{
    return r == 0 ? "ok" : strerrorname_np(errno);
}

static int names(const char *dir)
{
    char a[4096], b[4096], victim[4096], kept[4096], kept2[4096], inner[4096];
    snprintf(victim, sizeof victim, "%s/victim", dir);
    snprintf(kept, sizeof kept, "%s/kept", dir);
    snprintf(kept2, sizeof kept2, "%s/kept2", dir);
    snprintf(inner, sizeof inner, "%s/kept/inner", dir);
    close(must_open(victim, O_WRONLY | O_CREAT | O_TRUNC));
    say("ready");
    mig_wait_trigger("names");

    int ok = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(a, sizeof a, "%s/d%d", dir, i);
        snprintf(b, sizeof b, "%s/e%d", dir, i);
        if (mkdir(a, 0777) == 0 && rename(a, b) == 0 && rmdir(b) == 0)
            ok++;
    }
    say("mkdir, rename, rmdir: %d of 200", ok);
    umask(027);
    say("mkdir kept: %s", res(mkdir(kept, 0777)));
    struct stat st;
    const char *got = res(stat(kept, &st));
    say("kept: %s, mode %o", got, (unsigned)st.st_mode & 07777);
    say("mkdir kept again: %s", res(mkdir(kept, 0777)));
    say("mkdir inner: %s", res(mkdir(inner, 0700)));
    say("rmdir kept (not empty): %s", res(rmdir(kept)));
    say("unlink kept (a directory): %s", res(unlink(kept)));
    say("mkdir kept2: %s", res(mkdir(kept2, 0755)));
    say("rename kept2 over kept (not empty): %s", res(rename(kept2, kept)));
    say("rename kept2 to victim (a file): %s", res(rename(kept2, victim)));
    say("unlink victim: %s", res(unlink(victim)));
    say("unlink victim again: %s", res(unlink(victim)));
    say("rename kept2 to victim: %s", res(rename(kept2, victim)));
    say("rmdir victim: %s", res(rmdir(victim)));
    say("rmdir inner: %s", res(rmdir(inner)));
    say("rmdir kept: %s", res(rmdir(kept)));
    say("names done");
    mig_wait_trigger("end");
    return 0;
}

int main(int argc, char **argv)
{
    mig_start();
    if (argc == 3 && strcmp(argv[1], "check") == 0) {
        say("ready");
        mig_wait_trigger("check");
        size_t total;
        uint64_t h = sum_file(argv[2], &total);
        say("%s: %zu bytes %016llx", argv[2], total, (unsigned long long)h);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "fill") == 0) {
        say("ready");
        mig_wait_trigger("fill");
        int fd = must_open(argv[2], O_WRONLY | O_CREAT | O_TRUNC);
        static unsigned char block[32768];
        memset(block, 'x', sizeof block);
        long long total = 0, want = atoll(argv[3]) << 20;
        while (total < want) {
            ssize_t w = write(fd, block, sizeof block);
            if (w < 0) {
                say("write failed after %lld bytes: %s", total, strerror(errno));
                break;
            }
            total += w;
        }
        if (fsync(fd) != 0)
            say("fsync failed: %s", strerror(errno));
        if (close(fd) != 0)
            say("close failed: %s", strerror(errno));
        say("filled");
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "names") == 0)
        return names(argv[2]);
    if (argc != 3 || strcmp(argv[1], "io") != 0) {
        fprintf(stderr, "usage: dfsa_io io DIR | dfsa_io check FILE | dfsa_io fill FILE MIB | dfsa_io names DIR\n");
        return 2;
    }
    char input[4096], out[4096], link[4096], missing[4096];
    snprintf(input, sizeof input, "%s/input", argv[2]);
    snprintf(out, sizeof out, "%s/out", argv[2]);
    snprintf(link, sizeof link, "%s/link", argv[2]);
    snprintf(missing, sizeof missing, "%s/missing", argv[2]);
    unlink(link);
    if (symlink("input", link) != 0) {
        fprintf(stderr, "symlink %s: %s\n", link, strerror(errno));
        return 2;
    }

    int a = must_open(input, O_RDONLY);
    read_part(a, 1000, "A at home");
    say("ready");
    mig_wait_trigger("moved");

    read_part(a, 1000, "A away");
    size_t total;
    uint64_t h = sum_file(input, &total);
    say("input whole: %zu bytes %016llx", total, (unsigned long long)h);

    static unsigned char block[32768];
    int w = must_open(out, O_RDWR | O_CREAT | O_TRUNC);
    uint64_t wh = FNV0;
    for (int i = 0; i < 128; i++) {
        for (size_t j = 0; j < sizeof block; j++)
            block[j] = (unsigned char)(i * 7 + j * 13);
        if (write(w, block, sizeof block) != (ssize_t)sizeof block) {
            fprintf(stderr, "write %s: %s\n", out, strerror(errno));
            return 2;
        }
        wh = fnv(wh, block, sizeof block);
        if (i == 99) {
            /* Mapped before any other call names the file: the mapping holds what was
             * just written (away: written behind, not sent home yet). */
            unsigned char *last = mmap(NULL, sizeof block, PROT_READ, MAP_PRIVATE, w, 99 * (off_t)sizeof block);
            if (last == MAP_FAILED) {
                fprintf(stderr, "mmap %s: %s\n", out, strerror(errno));
                return 2;
            }
            say("block 99 mapped: %016llx, written: %016llx", (unsigned long long)fnv(FNV0, last, sizeof block),
                (unsigned long long)fnv(FNV0, block, sizeof block));
            munmap(last, sizeof block);
        }
    }
    if (fsync(w) != 0)
        say("fsync: %s", strerror(errno));
    struct stat st;
    fstat(w, &st);
    say("out written: %lld bytes %016llx, at %lld", (long long)st.st_size, (unsigned long long)wh,
        (long long)lseek(w, 0, SEEK_CUR));
    lseek(w, 0, SEEK_SET);
    uint64_t rh = FNV0;
    for (;;) {
        ssize_t r = read(w, block, sizeof block);
        if (r <= 0)
            break;
        rh = fnv(rh, block, (size_t)r);
    }
    say("out read back: %016llx", (unsigned long long)rh);
    unsigned char p[16];
    ssize_t pr = pread(w, p, sizeof p, 65536 + 5);
    say("pread: %zd %016llx", pr, (unsigned long long)fnv(FNV0, p, pr > 0 ? (size_t)pr : 0));
    close(w);

    int m = must_open(input, O_RDONLY);
    fstat(m, &st);
    unsigned char *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, m, 0);
    if (map == MAP_FAILED) {
        fprintf(stderr, "mmap: %s\n", strerror(errno));
        return 2;
    }
    close(m);
    say("input mapped: %016llx", (unsigned long long)fnv(FNV0, map, (size_t)st.st_size));
    struct stat ls;
    int r1 = stat(input, &st), r2 = lstat(link, &ls);
    say("stat input: %d, %lld bytes, mode %o, uid %d", r1, (long long)st.st_size, (int)st.st_mode, (int)st.st_uid);
    say("lstat link: %d, %s; stat through it: %d", r2, S_ISLNK(ls.st_mode) ? "a symlink" : "not a symlink", stat(link, &st) == 0 && st.st_size == 3000000);
    errno = 0;
    say("stat missing: %d %s", stat(missing, &st), strerror(errno));
    char target[64] = {0};
    ssize_t tl = readlink(link, target, sizeof target - 1);
    say("readlink link: %zd %s; access input r: %d, x: %d", tl, target, access(input, R_OK), access(input, X_OK));
    unlink(link);
    say("io done");
    mig_wait_trigger("on");

    read_part(a, 1000, "A later");
    say("still mapped: %016llx", (unsigned long long)fnv(FNV0, map, 4096));
    say("again");
    mig_wait_trigger("home");

    read_part(a, 1000, "A at the end");
    return 0;
}
