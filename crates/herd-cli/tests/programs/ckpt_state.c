// Sets up process state a checkpoint must carry (its own pid, an eventfd,
// a timerfd, a signalfd, an epoll watching them, a directory fd, an O_PATH
// fd, flock / POSIX / OFD locks, a read lease, an interval timer, child-subreaper,
// THP-disable, no_new_privs, oom_score_adj), prints "ready", ticks for a
// while (the checkpoint lands here), then checks every piece of it and
// prints PASS or FAIL with what differs. Output is the same for an
// uninterrupted run and a checkpointed-and-restarted one when all is
// restored.
//
// usage: ckpt_state DIR TICKS   (DIR: a directory for its lock files)
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <grp.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures;

static void check(int ok, const char *what, const char *detail) {
    if (ok) {
        printf("PASS %s\n", what);
    } else {
        printf("FAIL %s: %s\n", what, detail);
        failures++;
    }
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static int open_in(const char *dir, const char *name, int flags) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, flags, 0600);
    if (fd < 0) die(path);
    return fd;
}

static void on_alarm(int sig) { (void)sig; }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: ckpt_state DIR TICKS\n");
        return 2;
    }
    const char *dir = argv[1];
    int ticks = atoi(argv[2]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    char detail[256];

    pid_t pid = getpid();
    int efd = eventfd(5, EFD_SEMAPHORE | EFD_NONBLOCK);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    struct itimerspec its = {.it_interval = {7, 250}, .it_value = {60, 0}};
    if (efd < 0 || tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) != 0) die("eventfd/timerfd");
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    sigprocmask(SIG_BLOCK, &usr2, NULL);
    int sfd = signalfd(-1, &usr2, SFD_NONBLOCK);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0xabc};
    struct epoll_event tev = {.events = EPOLLIN | EPOLLET, .data.u64 = 0xdef};
    if (sfd < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) || epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev)) die("signalfd/epoll");

    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    int a = open_in(dir, "flock.lock", O_RDWR | O_CREAT);
    int b = open_in(dir, "posix.lock", O_RDWR | O_CREAT);
    int c = open_in(dir, "ofd.lock", O_RDWR | O_CREAT);
    int pfd = open_in(dir, "posix.lock", O_PATH);
    struct stat dir_st, pfd_st;
    if (dfd < 0 || fstat(dfd, &dir_st) || fstat(pfd, &pfd_st)) die("dir/O_PATH");
    if (flock(a, LOCK_EX | LOCK_NB)) die("flock");
    struct flock pl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 5};
    if (fcntl(b, F_SETLK, &pl)) die("F_SETLK");
    struct flock ol = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(c, F_OFD_SETLK, &ol)) die("F_OFD_SETLK");
    // A read lease (on a file nobody has open for writing), whose break would send SIGRTMIN+2.
    close(open_in(dir, "lease.file", O_WRONLY | O_CREAT));
    int lfd = open_in(dir, "lease.file", O_RDONLY);
    if (fcntl(lfd, F_SETSIG, SIGRTMIN + 2) || fcntl(lfd, F_SETLEASE, F_RDLCK)) die("F_SETLEASE");

    // Two POSIX timers: one signalling the process, armed; one to the main
    // thread, disarmed (created after a gap in ids: the ids must come back).
    timer_t pt1, pt2, gap;
    struct sigevent sev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1, .sigev_value.sival_ptr = (void *)0x5151};
    struct sigevent tsev = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGUSR1};
    tsev._sigev_un._tid = gettid();
    if (timer_create(CLOCK_MONOTONIC, &sev, &pt1) || timer_create(CLOCK_REALTIME, &sev, &gap) || timer_delete(gap) ||
        timer_create(CLOCK_REALTIME, &tsev, &pt2))
        die("timer_create");
    struct itimerspec pts = {.it_interval = {30, 0}, .it_value = {100, 0}};
    if (timer_settime(pt1, 0, &pts, NULL)) die("timer_settime");

    // Memory advice, a locked page and a guard page in a region of 8 pages.
    char *reg = mmap(NULL, 8 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (reg == MAP_FAILED) die("mmap");
    memset(reg, 0x5a, 8 * 4096);
    if (madvise(reg, 4 * 4096, MADV_DONTDUMP) || madvise(reg, 4 * 4096, MADV_WIPEONFORK) || mlock(reg + 4 * 4096, 4096) ||
        madvise(reg + 6 * 4096, 4096, 102 /* MADV_GUARD_INSTALL */))
        die("madvise/mlock");
    gid_t want_groups[3] = {0, 44, 4321};
    int root = getuid() == 0;
    if (root && setgroups(3, want_groups)) die("setgroups");

    // A file deleted while open, read from the middle, and a sealed memfd.
    char gpath[4096];
    snprintf(gpath, sizeof gpath, "%s/ghost", dir);
    int ghost = open(gpath, O_RDWR | O_CREAT | O_TRUNC, 0640);
    char pat[5000];
    for (int i = 0; i < 5000; i++) pat[i] = 'a' + i % 23;
    if (ghost < 0 || write(ghost, pat, 5000) != 5000 || unlink(gpath) || lseek(ghost, 100, SEEK_SET) != 100) die("ghost file");
    int mfd = memfd_create("herdtest", MFD_ALLOW_SEALING);
    if (mfd < 0 || write(mfd, pat, 3000) != 3000 || fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) || lseek(mfd, 7, SEEK_SET) != 7)
        die("memfd");

    // As root: a smaller bounding set, a capability given up, one inheritable
    // and ambient; and a membarrier registration.
    char caps_before[512] = "";
    if (root) {
        struct { uint32_t version; int pid; } hdr = {0x20080522, 0};
        struct { uint32_t eff, prm, inh; } data[2];
        if (prctl(PR_CAPBSET_DROP, 22 /* CAP_SYS_BOOT */, 0, 0, 0) || syscall(SYS_capget, &hdr, data)) die("caps");
        data[0].eff &= ~(1u << 13); /* CAP_NET_RAW */
        data[0].prm &= ~(1u << 13);
        data[0].inh |= 1u << 0; /* CAP_CHOWN */
        if (syscall(SYS_capset, &hdr, data) || prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, 0, 0, 0)) die("capset");
    }
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0)) die("membarrier");
    FILE *cs = fopen("/proc/self/status", "r");
    char cl[256];
    while (cs && fgets(cl, sizeof cl, cs))
        if (strncmp(cl, "Cap", 3) == 0) strncat(caps_before, cl, sizeof caps_before - strlen(caps_before) - 1);
    if (cs) fclose(cs);

    signal(SIGALRM, on_alarm);
    struct itimerval itv = {.it_interval = {50, 0}, .it_value = {100, 0}};
    if (setitimer(ITIMER_REAL, &itv, NULL)) die("setitimer");
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) || prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        die("prctl");
    FILE *oom = fopen("/proc/self/oom_score_adj", "w");
    if (!oom || fprintf(oom, "500\n") < 0 || fclose(oom)) die("oom_score_adj");

    printf("ready\n");
    for (int i = 0; i < ticks; i++) {
        struct timespec t = {0, 100 * 1000 * 1000};
        while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
        printf("tick %d\n", i);
    }

    snprintf(detail, sizeof detail, "getpid() is %d, was %d", getpid(), pid);
    check(getpid() == pid && gettid() == pid, "pid", detail);

    struct epoll_event got[4];
    int n = epoll_wait(ep, got, 4, 0);
    snprintf(detail, sizeof detail, "%d ready, first data %#llx", n, n > 0 ? (unsigned long long)got[0].data.u64 : 0ULL);
    check(n == 1 && got[0].data.u64 == 0xabc && (got[0].events & EPOLLIN), "epoll", detail);

    uint64_t v = 0;
    int reads = 0;
    while (read(efd, &v, 8) == 8 && v == 1) reads++;
    snprintf(detail, sizeof detail, "%d semaphore reads (errno %d)", reads, errno);
    check(reads == 5 && errno == EAGAIN, "eventfd", detail);

    struct itimerspec now;
    timerfd_gettime(tfd, &now);
    snprintf(detail, sizeof detail, "interval %ld.%09ld, value %ld.%09ld", (long)now.it_interval.tv_sec, now.it_interval.tv_nsec,
             (long)now.it_value.tv_sec, now.it_value.tv_nsec);
    check(now.it_interval.tv_sec == 7 && now.it_interval.tv_nsec == 250 && now.it_value.tv_sec > 0 && now.it_value.tv_sec < 60 &&
              (fcntl(tfd, F_GETFD) & FD_CLOEXEC) && (fcntl(tfd, F_GETFL) & O_NONBLOCK),
          "timerfd", detail);

    raise(SIGUSR2);
    struct signalfd_siginfo si;
    ssize_t r = read(sfd, &si, sizeof si);
    snprintf(detail, sizeof detail, "read %zd, signal %u", r, r == sizeof si ? si.ssi_signo : 0);
    check(r == sizeof si && si.ssi_signo == SIGUSR2, "signalfd", detail);

    struct stat st;
    int seen = 0;
    DIR *d = fdopendir(dup(dfd));
    for (struct dirent *e; d && (e = readdir(d));) seen += strcmp(e->d_name, "flock.lock") == 0;
    if (d) closedir(d);
    snprintf(detail, sizeof detail, "fstat ok %d, flock.lock listed %d", fstat(dfd, &st) == 0 && st.st_ino == dir_st.st_ino, seen);
    check(fstat(dfd, &st) == 0 && st.st_ino == dir_st.st_ino && S_ISDIR(st.st_mode) && seen == 1, "directory fd", detail);

    snprintf(detail, sizeof detail, "flags %#o", fcntl(pfd, F_GETFL));
    check((fcntl(pfd, F_GETFL) & O_PATH) && fstat(pfd, &st) == 0 && st.st_ino == pfd_st.st_ino, "O_PATH fd", detail);

    int a2 = open_in(dir, "flock.lock", O_RDWR);
    int fl = flock(a2, LOCK_SH | LOCK_NB);
    snprintf(detail, sizeof detail, "a second open file got the lock (%d, errno %d)", fl, errno);
    check(fl != 0 && errno == EWOULDBLOCK, "flock", detail);
    close(a2);

    // A POSIX lock is invisible to its owner: a child asks.
    pid_t kid = fork();
    if (kid == 0) {
        struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
        int ok = fcntl(b, F_GETLK, &q) == 0 && q.l_type == F_WRLCK && q.l_start == 10 && q.l_len == 5 && q.l_pid == getppid();
        _exit(ok ? 0 : 1);
    }
    int ks = 0;
    waitpid(kid, &ks, 0);
    check(WIFEXITED(ks) && WEXITSTATUS(ks) == 0, "POSIX lock", "the child does not see the write lock on bytes 10-14");

    int c2 = open_in(dir, "ofd.lock", O_RDWR);
    struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    fcntl(c2, F_OFD_GETLK, &q);
    snprintf(detail, sizeof detail, "conflicting lock type %d", q.l_type);
    check(q.l_type == F_RDLCK, "OFD lock", detail);
    close(c2);

    int lease = fcntl(lfd, F_GETLEASE), lsig = fcntl(lfd, F_GETSIG);
    snprintf(detail, sizeof detail, "lease %d, break signal %d", lease, lsig);
    check(lease == F_RDLCK && lsig == SIGRTMIN + 2, "lease", detail);

    struct itimerval it;
    getitimer(ITIMER_REAL, &it);
    snprintf(detail, sizeof detail, "interval %ld s, value %ld s", (long)it.it_interval.tv_sec, (long)it.it_value.tv_sec);
    check(it.it_interval.tv_sec == 50 && it.it_value.tv_sec > 0 && it.it_value.tv_sec < 100, "itimer", detail);

    struct itimerspec pnow;
    int g1 = timer_gettime(pt1, &pnow);
    snprintf(detail, sizeof detail, "timer_gettime %d, interval %ld s, value %ld s", g1, (long)pnow.it_interval.tv_sec, (long)pnow.it_value.tv_sec);
    check(g1 == 0 && pnow.it_interval.tv_sec == 30 && pnow.it_value.tv_sec > 0 && pnow.it_value.tv_sec < 100, "POSIX timer", detail);
    int g2 = timer_gettime(pt2, &pnow);
    snprintf(detail, sizeof detail, "timer_gettime %d, value %ld s", g2, (long)pnow.it_value.tv_sec);
    check(g2 == 0 && pnow.it_value.tv_sec == 0 && pnow.it_value.tv_nsec == 0, "POSIX timer to a thread", detail);
    // The thread as /proc names it (in a new pid namespace /proc may be the outer one's).
    int proc_tid = gettid();
    FILE *ts = fopen("/proc/thread-self/status", "r");
    char sl[256];
    while (ts && fgets(sl, sizeof sl, ts))
        if (sscanf(sl, "Pid: %d", &proc_tid) == 1) break;
    if (ts) fclose(ts);
    char tl[256] = "";
    FILE *tf = fopen("/proc/self/timers", "r");
    int sig_ok = 0, tid_ok = 0;
    while (tf && fgets(tl, sizeof tl, tf)) {
        sig_ok += strstr(tl, "signal: 10/0000000000005151") != NULL;
        char want[64];
        snprintf(want, sizeof want, "notify: signal/tid.%d", proc_tid);
        tid_ok += strstr(tl, want) != NULL;
    }
    if (tf) fclose(tf);
    check(sig_ok == 1 && tid_ok == 1, "POSIX timer notification", "/proc/self/timers differs");

    // Each part of the region keeps its flags (smaps VmFlags) and its bytes.
    char line[512];
    unsigned long lo = 0, hi = 0;
    int dd = 0, wf = 0, lk = 0, gu = 0;
    FILE *sm = fopen("/proc/self/smaps", "r");
    while (sm && fgets(line, sizeof line, sm)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2) {
            lo = a;
            hi = b;
            continue;
        }
        if (strncmp(line, "VmFlags:", 8) == 0 && lo >= (unsigned long)reg && hi <= (unsigned long)reg + 8 * 4096) {
            if (lo == (unsigned long)reg) {
                dd = strstr(line, " dd") != NULL;
                wf = strstr(line, " wf") != NULL;
            }
            if (lo <= (unsigned long)reg + 4 * 4096 && hi > (unsigned long)reg + 4 * 4096) lk = strstr(line, " lo") != NULL;
        }
    }
    if (sm) fclose(sm);
    // A guard page: pagemap bit 58 (PM_GUARD_REGION).
    int pm = open("/proc/self/pagemap", O_RDONLY);
    uint64_t ent = 0;
    if (pm >= 0 && pread(pm, &ent, 8, ((uintptr_t)reg / 4096 + 6) * 8) == 8) gu = (ent >> 58) & 1;
    if (pm >= 0) close(pm);
    int bytes_ok = 1;
    for (int i = 0; i < 8 * 4096; i++)
        if (i / 4096 != 6 && reg[i] != 0x5a) bytes_ok = 0;
    snprintf(detail, sizeof detail, "dontdump %d, wipeonfork %d, locked %d, guard %d, bytes %d", dd, wf, lk, gu, bytes_ok);
    check(dd && wf && lk && gu && bytes_ok, "memory advice, lock, guard page", detail);
    gid_t groups[16];
    int ng = getgroups(16, groups);
    snprintf(detail, sizeof detail, "%d groups", ng);
    check(!root || (ng == 3 && groups[0] == 0 && groups[1] == 44 && groups[2] == 4321), "supplementary groups", detail);

    char rd[64];
    struct stat gst;
    int gr = read(ghost, rd, 10);
    snprintf(detail, sizeof detail, "read %d, nlink %ld", gr, fstat(ghost, &gst) == 0 ? (long)gst.st_nlink : -1L);
    check(gr == 10 && memcmp(rd, pat + 100, 10) == 0 && gst.st_nlink == 0 && gst.st_size == 5000 && (gst.st_mode & 0777) == 0640, "deleted file", detail);
    int mr = read(mfd, rd, 10);
    char mlink[128] = "";
    char mp[64];
    snprintf(mp, sizeof mp, "/proc/self/fd/%d", mfd);
    ssize_t ml = readlink(mp, mlink, sizeof mlink - 1);
    if (ml > 0) mlink[ml] = 0;
    snprintf(detail, sizeof detail, "read %d, seals %#x, link %s", mr, fcntl(mfd, F_GET_SEALS), mlink);
    check(mr == 10 && memcmp(rd, pat + 7, 10) == 0 && fcntl(mfd, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW) && strcmp(mlink, "/memfd:herdtest (deleted)") == 0 &&
              ftruncate(mfd, 10) != 0,
          "memfd", detail);

    char caps_after[512] = "";
    cs = fopen("/proc/self/status", "r");
    while (cs && fgets(cl, sizeof cl, cs))
        if (strncmp(cl, "Cap", 3) == 0) strncat(caps_after, cl, sizeof caps_after - strlen(caps_after) - 1);
    if (cs) fclose(cs);
    check(strcmp(caps_before, caps_after) == 0, "capabilities", caps_after);
    long mreg = syscall(SYS_membarrier, 1 << 9 /* MEMBARRIER_CMD_GET_REGISTRATIONS */, 0, 0);
    snprintf(detail, sizeof detail, "registrations %#lx", mreg);
    check(mreg >= 0 && (mreg & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED), "membarrier registration", detail);

    int reaper = 0;
    prctl(PR_GET_CHILD_SUBREAPER, &reaper);
    check(reaper == 1, "child subreaper", "not set");
    check(prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1, "THP disable", "not set");
    check(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "no_new_privs", "not set");
    check(prctl(PR_GET_DUMPABLE) == 1, "dumpable", "not 1");
    char buf[32] = "";
    FILE *o = fopen("/proc/self/oom_score_adj", "r");
    if (o) {
        if (!fgets(buf, sizeof buf, o)) buf[0] = 0;
        fclose(o);
    }
    snprintf(detail, sizeof detail, "is %s", buf);
    check(atoi(buf) == 500, "oom_score_adj", detail);
    return failures ? 1 : 0;
}
