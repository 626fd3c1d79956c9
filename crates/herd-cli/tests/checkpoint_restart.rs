//! End-to-end tests of `herd checkpoint` / `herd restart` on real programs.
//!
//! Method (the project standard): every test runs the same program twice,
//! once uninterrupted and once checkpointed mid-run with `--kill` and then
//! restarted from the image, and asserts the same output and the same exit
//! status. The programs live in `tests/programs/` (C, python, bash) and the C
//! ones are built here with the system compiler. Nothing is mocked: real
//! processes, the real kernel, the real `herd` binary.
//!
//! Each test first checks that this process may ptrace (what `herd
//! checkpoint` needs) and that the tools it uses exist; when not, it prints
//! `SKIP <test>: <reason>` on stderr and returns.
//!
//! Every process a test starts is owned by a guard that kills (by pid) and
//! reaps it on drop, so a failing assertion leaves nothing running.

#[path = "common/collector.rs"]
mod collector;
#[path = "common/gobuild.rs"]
mod gobuild;
use collector::Collector;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const HERD: &str = env!("CARGO_BIN_EXE_herd");
const PROGRAMS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/programs");

/// The longest any program run or herd command may take before the test
/// gives up. Generous: the 512 MiB image is written and read under load.
const TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(5);
const SIGKILL: i32 = 9;

// ---------------------------------------------------------------------------
// Prerequisites
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Need {
    Cc,
    Python,
    Avx2,
    /// Restoring thread ids (clone3 set_tid), which pthread_kill relies on.
    Root,
    /// A JDK (java running a source file needs its compiler).
    Java,
    /// A Go toolchain (golang-go).
    Go,
    /// tmux.
    Tmux,
    /// nft (Debian nftables): `--tcp-established` holds the connections still with it.
    Nft,
}

/// True when the test can run; otherwise prints `SKIP <test>: <reasons>`.
fn ready(test: &str, needs: &[Need]) -> bool {
    let mut why = Vec::new();
    if let Err(e) = ptrace_allowed() {
        why.push(e);
    }
    // Every test program is started through bash (see CLOSE_FDS_AND_EXEC).
    if !tool_works("bash", &["-c", "exit 0"]) {
        why.push("no bash (needed to start test programs with only fds 0-2)".to_string());
    }
    for need in needs {
        match need {
            Need::Cc if !tool_works("cc", &["--version"]) => why.push("no working C compiler `cc`".to_string()),
            Need::Python if python3().is_none() => why.push("no python3".to_string()),
            Need::Avx2 if !cpu_has_flag("avx2") => why.push("the CPU has no avx2 (see /proc/cpuinfo)".to_string()),
            Need::Java if !tool_works("javac", &["-version"]) => why.push("no JDK (`javac`)".to_string()),
            Need::Go if gobuild::go_version().is_none() => why.push("no Go toolchain (`go`, Debian's golang-go)".to_string()),
            Need::Tmux if !tool_works("tmux", &["-V"]) => why.push("no tmux".to_string()),
            Need::Nft if !tool_works("nft", &["--version"]) => why.push("nft is not installed (Debian package nftables): --tcp-established needs it".to_string()),
            Need::Root if !nix::unistd::geteuid().is_root() => {
                why.push("not root: a restore gives threads their old ids (clone3 set_tid) only as root".to_string())
            }
            _ => {}
        }
    }
    if why.is_empty() {
        true
    } else {
        eprintln!("SKIP {test}: {}", why.join("; "));
        false
    }
}

/// `herd checkpoint` attaches with ptrace to a process that is not its
/// descendant (it is ours). Yama allows that at ptrace_scope 0 (or without
/// Yama); at 1 and 2 only with CAP_SYS_PTRACE; at 3 never.
fn ptrace_allowed() -> Result<(), String> {
    let scope = fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let cap_sys_ptrace = status_field(std::process::id(), "CapEff")
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .map(|caps| caps & (1 << 19) != 0)
        .unwrap_or(false);
    match scope {
        None | Some(0) => Ok(()),
        Some(3) => Err("kernel.yama.ptrace_scope is 3: ptrace is disabled".to_string()),
        Some(_) if cap_sys_ptrace => Ok(()),
        Some(n) => Err(format!(
            "kernel.yama.ptrace_scope is {n} and we lack CAP_SYS_PTRACE, so herd cannot attach to our children"
        )),
    }
}

fn tool_works(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn cpu_has_flag(flag: &str) -> bool {
    fs::read_to_string("/proc/cpuinfo")
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|w| w == flag))
        })
        .unwrap_or(false)
}

/// The real python3 binary. `python3` on PATH may be a shim script (pyenv);
/// running the interpreter directly keeps startup short and the process
/// tree simple.
fn python3() -> Option<&'static Path> {
    static PY: OnceLock<Option<PathBuf>> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        (out.status.success() && path.is_file()).then_some(path)
    })
    .as_deref()
}

// ---------------------------------------------------------------------------
// Building programs
// ---------------------------------------------------------------------------

fn tmp() -> TempDir {
    tempfile::Builder::new().prefix("herd-e2e-").tempdir().expect("creating a temp dir")
}

/// Builds `tests/programs/<name>.c` into `<dir>/<name>`, dynamically linked
/// against glibc. `flags` go after the source so libraries resolve.
fn build_c(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let src = Path::new(PROGRAMS).join(format!("{name}.c"));
    let exe = dir.join(name);
    let out = Command::new("cc")
        .args(["-O1", "-Wall", "-o"])
        .arg(&exe)
        .arg(&src)
        .args(flags)
        .stdin(Stdio::null())
        .output()
        .expect("running cc");
    assert!(
        out.status.success(),
        "building {}: {}\n{}",
        src.display(),
        describe(&out.status),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn program_source(file: &str) -> OsString {
    Path::new(PROGRAMS).join(file).into_os_string()
}

/// Builds an argv (an array of OsString) from anything that converts to an OsStr.
macro_rules! argv {
    ($($a:expr),* $(,)?) => { [$(OsString::from(AsRef::<OsStr>::as_ref(&$a))),*] };
}

// ---------------------------------------------------------------------------
// Pipes and waiting
// ---------------------------------------------------------------------------


fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            return Some(status);
        }
        if start.elapsed() > limit {
            return None;
        }
        thread::sleep(POLL);
    }
}

/// Polls `cond` until it holds; panics with `what` (and `context()`) after
/// `limit`.
fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool, context: impl Fn() -> String) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting until {what}\n{}", context());
        thread::sleep(POLL);
    }
}

fn count_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{status:?}"),
    }
}

// ---------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------

fn status_field(pid: u32, key: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(|v| v.trim().to_string()))
}

/// The one-letter state (R, S, T, t, Z, ...).
fn proc_state(pid: u32) -> Option<char> {
    status_field(pid, "State")?.chars().next()
}

fn tracer_of(pid: u32) -> Option<u32> {
    status_field(pid, "TracerPid")?.parse().ok()
}

fn comm_of(pid: u32) -> Option<String> {
    Some(fs::read_to_string(format!("/proc/{pid}/comm")).ok()?.trim_end().to_string())
}

/// The syscall `pid` is blocked in, from /proc/PID/syscall (None while it
/// runs in user space).
fn blocked_syscall(pid: u32) -> Option<i64> {
    fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?.split_whitespace().next()?.parse().ok()
}

/// Start time (field 22 of /proc/PID/stat): tells a pid from a reused one.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// The children of `pid`, all threads included.
fn children_of(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = fs::read_to_string(task.path().join("children")) {
                kids.extend(list.split_whitespace().filter_map(|w| w.parse::<u32>().ok()));
            }
        }
    }
    kids
}

/// The open fds of `pid` and what they point to; pipes as just "pipe"
/// (a restored process gets a new pipe, with another inode).
fn fd_table(pid: u32) -> Vec<(u32, String)> {
    let mut fds: Vec<(u32, String)> = fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(e.path()).ok()?.to_string_lossy().into_owned();
            Some((fd, if target.starts_with("pipe:") { "pipe".to_string() } else { target }))
        })
        .collect();
    fds.sort();
    fds
}

/// Every process that has `path` open.
fn holders_of(path: &Path) -> Vec<u32> {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let fds = fs::read_dir(entry.path().join("fd")).into_iter().flatten().flatten();
        if fds.into_iter().any(|fd| fs::read_link(fd.path()).map(|l| l == path).unwrap_or(false)) {
            pids.push(pid);
        }
    }
    pids
}

/// Sends `sig` (a name such as "USR1") to `pid` with kill(1).
fn send_signal(pid: u32, sig: &str) {
    let st = Command::new("kill").args(["-s", sig, &pid.to_string()]).status().expect("running kill");
    assert!(st.success(), "kill -s {sig} {pid} failed: {}", describe(&st));
}

/// Kills `pid` only if it is still the process that started at `started`.
fn kill_exact(pid: u32, started: u64) {
    if start_time(pid) == Some(started) {
        let _ = Command::new("kill").args(["-s", "KILL", &pid.to_string()]).stderr(Stdio::null()).status();
    }
}

// ---------------------------------------------------------------------------
// Test programs
// ---------------------------------------------------------------------------

/// Where a test program's stdout goes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Out {
    /// A regular file the test creates (O_TRUNC, no O_APPEND).
    File,
    /// A regular file opened with O_APPEND.
    AppendFile,
    /// A pipe the test reads.
    Pipe,
}

enum ProgOut {
    File(PathBuf),
    Pipe(Collector),
}

/// A test program, child of the test. Killed and reaped on drop.
struct Prog {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: ProgOut,
    err_path: PathBuf,
}

/// Closes every fd above 2, then execs "$@" (builtins only, so no fork).
/// The test process may have inherited fds without close-on-exec from
/// whatever started it (a CI jobserver, a shell's job pipe); a test program
/// must start with exactly fds 0-2, or herd would rightly refuse it for fds
/// that are not the program's. `herd` itself is started without this, so a
/// `herd restart` that leaked its own fds into the restored process would
/// show up (e.g. in the second checkpoint of checkpoint_restart_checkpoint_restart).
const CLOSE_FDS_AND_EXEC: &str =
    r#"for fd in /proc/self/fd/*; do fd=${fd##*/}; if (( fd > 2 )); then eval "exec $fd<&-"; fi; done; exec "$@""#;

/// Starts `cmd` with stdout as `out` (files go to `<dir>/<label>.out`),
/// stderr to `<dir>/<label>.err`, stdin a pipe (`stdin_pipe`) or /dev/null.
/// Never the test's own stdin: it could be anything, and herd only accepts a
/// terminal, pipe, regular file or /dev/null there.
fn spawn_prog(dir: &Path, label: &str, cmd: &[OsString], out: Out, stdin_pipe: bool) -> Prog {
    let err_path = dir.join(format!("{label}.err"));
    let mut c = Command::new("bash");
    c.args(["-c", CLOSE_FDS_AND_EXEC, "herd-test-exec"])
        .args(cmd)
        .env("LC_ALL", "C")
        .env_remove("BASH_ENV")
        .stdin(if stdin_pipe { Stdio::piped() } else { Stdio::null() })
        .stderr(File::create(&err_path).unwrap());
    let out_path = dir.join(format!("{label}.out"));
    match out {
        Out::File => {
            c.stdout(File::create(&out_path).unwrap());
        }
        Out::AppendFile => {
            c.stdout(OpenOptions::new().create(true).append(true).open(&out_path).unwrap());
        }
        Out::Pipe => {
            c.stdout(Stdio::piped());
        }
    }
    let mut child = c.spawn().unwrap_or_else(|e| panic!("starting {:?}: {e}", cmd[0]));
    let out = match out {
        Out::Pipe => ProgOut::Pipe(Collector::start(child.stdout.take().unwrap())),
        _ => ProgOut::File(out_path),
    };
    Prog { label: label.to_string(), stdin: child.stdin.take(), child, out, err_path }
}

impl Prog {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn out_path(&self) -> &Path {
        match &self.out {
            ProgOut::File(p) => p,
            ProgOut::Pipe(_) => panic!("{}: stdout is a pipe, not a file", self.label),
        }
    }

    /// What it has written to stdout so far.
    fn output(&self) -> Vec<u8> {
        match &self.out {
            ProgOut::File(p) => fs::read(p).unwrap_or_default(),
            ProgOut::Pipe(c) => c.snapshot(),
        }
    }

    /// All it wrote, once it is gone.
    fn final_output(&mut self) -> Vec<u8> {
        let label = self.label.clone();
        match &mut self.out {
            ProgOut::File(p) => fs::read(p).unwrap(),
            ProgOut::Pipe(c) => c.collect(&label, TIMEOUT),
        }
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.err_path).unwrap_or_default()
    }

    fn context(&self) -> String {
        format!("{} stdout so far:\n{}\n{} stderr:\n{}", self.label, text(&self.output()), self.label, self.stderr_text())
    }

    /// Waits until it has printed `n` lines; it must still be running then.
    fn wait_for_lines(&mut self, n: usize) {
        let start = Instant::now();
        while count_lines(&self.output()) < n {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("{} ended ({}) before printing {n} lines\n{}", self.label, describe(&st), self.context());
            }
            assert!(start.elapsed() < TIMEOUT, "{} printed fewer than {n} lines in {TIMEOUT:?}\n{}", self.label, self.context());
            thread::sleep(POLL);
        }
    }

    /// Waits until it is blocked in one of `syscalls` (x86_64 numbers).
    fn wait_in_syscall(&self, what: &str, syscalls: &[i64]) {
        let pid = self.pid();
        wait_until(
            &format!("{} is blocked in {what}", self.label),
            TIMEOUT,
            || blocked_syscall(pid).is_some_and(|nr| syscalls.contains(&nr)),
            || self.context(),
        );
    }

    fn wait(&mut self) -> ExitStatus {
        match wait_timeout(&mut self.child, TIMEOUT) {
            Some(st) => st,
            None => panic!("{} did not end within {TIMEOUT:?}\n{}", self.label, self.context()),
        }
    }

    /// Reaps it after `herd checkpoint --kill`: it must have died by SIGKILL.
    fn reap_killed(&mut self) {
        let st = self.wait();
        assert_eq!(
            st.signal(),
            Some(SIGKILL),
            "{} should have been killed by `herd checkpoint --kill`, but: {}\n{}",
            self.label,
            describe(&st),
            self.context()
        );
    }

    /// A refused checkpoint must leave it exactly as it was: alive, not
    /// stopped, not traced, and still making progress.
    fn assert_still_running(&mut self, after: &str) {
        let pid = self.pid();
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!("{} died after {after}: {}\n{}", self.label, describe(&st), self.context());
        }
        let tracer = tracer_of(pid);
        assert_eq!(tracer, Some(0), "{} is still traced (TracerPid {tracer:?}) after {after}", self.label);
        let lines = count_lines(&self.output());
        // Prints a tick every 100 ms: two more ticks prove it is not stopped.
        wait_until(
            &format!("{} makes progress after {after} (state {:?})", self.label, proc_state(pid)),
            Duration::from_secs(10),
            || count_lines(&self.output()) >= lines + 2,
            || self.context(),
        );
    }
}

impl Drop for Prog {
    fn drop(&mut self) {
        // std does not signal a child it has already reaped, so this is safe
        // after wait() too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// herd
// ---------------------------------------------------------------------------

/// The result of a herd command that ran to its end.
struct HerdRun {
    cmd: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl HerdRun {
    fn report(&self) -> String {
        format!("`{}`: {}\n--- stdout:\n{}--- stderr:\n{}", self.cmd, describe(&self.status), self.stdout, self.stderr)
    }

    fn assert_ok(&self) {
        assert!(self.status.success(), "herd failed: {}", self.report());
        self.assert_no_panic();
    }

    fn assert_no_panic(&self) {
        assert!(!self.stderr.contains("panicked"), "herd panicked: {}", self.report());
    }

    /// Fails cleanly: non-zero exit, something on stderr, no panic.
    fn assert_clean_failure(&self) {
        assert!(!self.status.success(), "herd should have failed: {}", self.report());
        assert!(self.status.code().is_some(), "herd should exit, not die by a signal: {}", self.report());
        assert!(!self.stderr.trim().is_empty(), "herd failed without saying why on stderr: {}", self.report());
        self.assert_no_panic();
    }
}

/// Runs `herd ARGS` to completion (stdin /dev/null, or `input`).
fn herd(args: &[OsString], input: Option<&[u8]>) -> HerdRun {
    run_tool(HERD, args, input)
}

fn run_tool(exe: impl AsRef<OsStr>, args: &[OsString], input: Option<&[u8]>) -> HerdRun {
    let exe = exe.as_ref();
    let cmd = std::iter::once(exe).chain(args.iter().map(|a| a.as_os_str())).map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
    let mut child = Command::new(exe)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting `{cmd}`: {e}"));
    let mut out = Collector::start(child.stdout.take().unwrap());
    let mut err = Collector::start(child.stderr.take().unwrap());
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(input); // dropping stdin closes it
    }
    let Some(status) = wait_timeout(&mut child, TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("`{cmd}` did not finish within {TIMEOUT:?}; stderr so far:\n{}", text(&err.snapshot()));
    };
    HerdRun { cmd, status, stdout: text(&out.collect("stdout", TIMEOUT)), stderr: text(&err.collect("stderr", TIMEOUT)) }
}

/// `herd checkpoint PID --output IMG [--kill]`
fn checkpoint(pid: u32, img: &Path, kill: bool) -> HerdRun {
    checkpoint_with(pid, img, kill, &[])
}

/// [`checkpoint`] with more options for `herd checkpoint`.
fn checkpoint_with(pid: u32, img: &Path, kill: bool, options: &[&str]) -> HerdRun {
    let mut args = argv!["checkpoint", pid.to_string(), "--output", img].to_vec();
    if kill {
        args.push("--kill".into());
    }
    args.extend(options.iter().map(OsString::from));
    herd(&args, None)
}

/// A checkpoint that must succeed and leave a non-empty image.
fn checkpoint_ok(pid: u32, img: &Path, kill: bool, context: &str) {
    checkpoint_ok_with(pid, img, kill, &[], context)
}

/// [`checkpoint_ok`] with more options for `herd checkpoint`.
fn checkpoint_ok_with(pid: u32, img: &Path, kill: bool, options: &[&str], context: &str) {
    let run = checkpoint_with(pid, img, kill, options);
    assert!(run.status.success(), "checkpoint failed: {}\n{context}", run.report());
    run.assert_no_panic();
    let len = fs::metadata(img).map(|m| m.len()).unwrap_or(0);
    assert!(len > 0, "checkpoint succeeded but {} is missing or empty: {}", img.display(), run.report());
}

/// A running `herd restart IMG`; the restored process is its child. On drop
/// kills the restored process (by pid) and herd, and reaps herd.
struct Restart {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Collector,
    stderr: Collector,
    /// Restored processes seen, with their start times.
    restored: Vec<(u32, u64)>,
}

/// Starts `herd restart IMG` with stdout and stderr piped to the test and
/// stdin a pipe (`stdin_pipe`) or /dev/null.
fn restart(img: &Path, stdin_pipe: bool) -> Restart {
    // A restore with the process's own pid needs root; elsewhere the tests that
    // do not check the pid accept another.
    let any = if nix::unistd::geteuid().is_root() { None } else { Some("--any-pid") };
    restart_with(img, stdin_pipe, any.as_slice())
}

/// [`restart`] with more options for `herd restart`.
fn restart_with(img: &Path, stdin_pipe: bool, options: &[&str]) -> Restart {
    let mut child = Command::new(HERD)
        .arg("restart")
        .args(options)
        .arg(img)
        .stdin(if stdin_pipe { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting herd restart");
    Restart {
        stdin: child.stdin.take(),
        stdout: Collector::start(child.stdout.take().unwrap()),
        stderr: Collector::start(child.stderr.take().unwrap()),
        child,
        restored: Vec::new(),
    }
}

impl Restart {
    fn context(&self) -> String {
        format!(
            "herd restart stdout so far:\n{}\nherd restart stderr so far:\n{}",
            text(&self.stdout.snapshot()),
            text(&self.stderr.snapshot())
        )
    }

    /// The restored process: the child of `herd restart` named `comm`, once
    /// herd has let go of it (no longer traced), so it runs program code.
    fn restored_pid(&mut self, comm: &str) -> u32 {
        let herd_pid = self.child.id();
        let mut found = None;
        wait_until(
            &format!("herd restart (pid {herd_pid}) has an untraced child named {comm:?}"),
            TIMEOUT,
            || {
                found = children_of(herd_pid)
                    .into_iter()
                    .find(|&kid| comm_of(kid).as_deref() == Some(comm) && tracer_of(kid) == Some(0));
                found.is_some()
            },
            || {
                let kids: Vec<_> = children_of(herd_pid).into_iter().map(|k| (k, comm_of(k), tracer_of(k))).collect();
                format!("children (pid, comm, tracer): {kids:?}\n{}", self.context())
            },
        );
        let pid = found.unwrap();
        if let Some(t) = start_time(pid) {
            self.restored.push((pid, t));
        }
        pid
    }

    /// Waits for herd restart to end: its status, stdout and stderr.
    fn wait(&mut self) -> (ExitStatus, Vec<u8>, String) {
        let Some(status) = wait_timeout(&mut self.child, TIMEOUT) else {
            panic!("herd restart did not end within {TIMEOUT:?}\n{}", self.context());
        };
        let out = self.stdout.collect("herd restart stdout", TIMEOUT);
        let err = text(&self.stderr.collect("herd restart stderr", TIMEOUT));
        (status, out, err)
    }
}

impl Drop for Restart {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Still running: its children are the restored process (or a
            // half-restored one); they would outlive herd.
            for kid in children_of(self.child.id()) {
                if let Some(t) = start_time(kid) {
                    kill_exact(kid, t);
                }
            }
        }
        for &(pid, t) in &self.restored {
            kill_exact(pid, t);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The standard comparison
// ---------------------------------------------------------------------------

/// How a run ended and all it wrote to stdout.
struct Run {
    out: Vec<u8>,
    status: ExitStatus,
    /// Lines printed before the checkpoint (checkpointed runs only).
    lines_before: Option<usize>,
    /// stderr of herd restart and of the program, for failure messages.
    notes: String,
}

fn run_uninterrupted(dir: &Path, label: &str, cmd: &[OsString], out: Out) -> Run {
    let mut p = spawn_prog(dir, label, cmd, out, false);
    let status = p.wait();
    let notes = p.context();
    Run { out: p.final_output(), status, lines_before: None, notes }
}

/// Runs `cmd`, checkpoints it with `--kill` once it has printed `lines`
/// lines, restarts the image and lets it finish. The output is the file
/// (the restored process reopens it at its saved offset) or, for a pipe,
/// what came before the checkpoint followed by herd restart's stdout.
fn run_checkpointed(dir: &Path, label: &str, cmd: &[OsString], out: Out, lines: usize) -> Run {
    run_checkpointed_with(dir, label, cmd, out, lines, None, &[])
}

/// [`run_checkpointed`], restarting with `options` for `herd restart` when
/// given, and checkpointing with `checkpoint_options`.
fn run_checkpointed_with(dir: &Path, label: &str, cmd: &[OsString], out: Out, lines: usize, options: Option<&[&str]>, checkpoint_options: &[&str]) -> Run {
    run_checkpointed_then(dir, label, cmd, out, lines, options, checkpoint_options, || {})
}

/// [`run_checkpointed_with`], calling `meanwhile` between the checkpoint and the restart.
#[allow(clippy::too_many_arguments)]
fn run_checkpointed_then(dir: &Path, label: &str, cmd: &[OsString], out: Out, lines: usize, options: Option<&[&str]>, checkpoint_options: &[&str], meanwhile: impl FnOnce()) -> Run {
    let mut p = spawn_prog(dir, label, cmd, out, false);
    p.wait_for_lines(lines);
    let img = dir.join(format!("{label}.img"));
    checkpoint_ok_with(p.pid(), &img, true, checkpoint_options, &p.context());
    p.reap_killed();
    let before = p.final_output();
    meanwhile();

    let mut r = match options {
        Some(o) => restart_with(&img, false, o),
        None => restart(&img, false),
    };
    let (status, restart_out, restart_err) = r.wait();
    let all = match out {
        Out::Pipe => [before.as_slice(), &restart_out].concat(),
        Out::File | Out::AppendFile => fs::read(p.out_path()).unwrap(),
    };
    let notes = format!(
        "herd restart stderr:\n{restart_err}\nherd restart stdout:\n{}\nprogram stderr:\n{}",
        if out == Out::Pipe { "(the program's output)".to_string() } else { text(&restart_out) },
        p.stderr_text()
    );
    Run { out: all, status, lines_before: Some(count_lines(&before)), notes }
}

/// Same output, same exit status; and the checkpoint did land mid-run.
fn assert_same_run(expected: &Run, got: &Run) {
    assert_eq!(
        text(&got.out),
        text(&expected.out),
        "output after checkpoint/restart (left) differs from the uninterrupted run (right)\n{}",
        got.notes
    );
    assert_eq!(
        describe(&got.status),
        describe(&expected.status),
        "exit status after checkpoint/restart differs from the uninterrupted run\n{}",
        got.notes
    );
    if let Some(before) = got.lines_before {
        assert!(
            before < count_lines(&expected.out),
            "the checkpoint landed after the program had printed everything ({before} lines): make it run longer"
        );
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// 512 MiB of pseudo-random heap, checksummed round after round: every page
/// must come back exactly.
#[test]
fn c_program_with_512mib_heap_resumes_checksum_loop() {
    if !ready("c_program_with_512mib_heap_resumes_checksum_loop", &[Need::Cc]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "heap_checksum", &[]);
    let cmd = argv![exe, "512", "12"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert_eq!(expected.status.code(), Some(0), "{}", expected.notes);
    // "filled" plus two rounds: the checkpoint lands inside the round loop.
    let got = run_checkpointed(dir.path(), "ckpt", &cmd, Out::File, 3);
    assert_same_run(&expected, &got);
}

/// A python interpreter (many shared libraries, a growing heap) writing to
/// a regular file: the final file must be identical.
#[test]
fn python_hash_chain_to_regular_file() {
    if !ready("python_hash_chain_to_regular_file", &[Need::Python]) {
        return;
    }
    let dir = tmp();
    let cmd = argv![python3().unwrap(), "-I", program_source("hash_chain.py"), "2000000"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert_eq!(expected.status.code(), Some(3), "{}", expected.notes);
    let got = run_checkpointed(dir.path(), "ckpt", &cmd, Out::File, 4);
    assert_same_run(&expected, &got);
}

/// `herd inspect IMG` succeeds and its text says each of `whats`.
fn assert_inspect_shows(img: impl AsRef<OsStr>, whats: &[&str]) {
    let shown = herd(&argv!["inspect", img], None);
    shown.assert_ok();
    for what in whats {
        assert!(shown.stdout.contains(what), "herd inspect does not show {what:?}:\n{}", shown.stdout);
    }
}

/// How many threads the image at `img` holds (herd inspect --json).
fn image_threads(img: &Path) -> u64 {
    let run = herd(&argv!["inspect", "--json", img], None);
    run.assert_ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("herd inspect --json prints JSON");
    // A job image (pipes or more than one process) lists its processes' images.
    let images = v["images"].as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
    images
        .iter()
        .map(|image| {
            let list = image["thread_list"].as_array().map_or(0, |l| l.len()) as u64;
            assert_eq!(image["threads"].as_u64(), Some(list), "threads and thread_list disagree: {}", run.stdout);
            list
        })
        .sum()
}

/// A C program with six threads (four workers meeting at barriers, one in a
/// condition wait, one in a timed condition wait; TLS, thread-specific data,
/// per-thread signal masks and names), checkpointed mid-run: after restart
/// every thread goes on exactly, pthread_kill reaches the right thread, new
/// threads are made and joined, the exit status is the same.
#[test]
fn threads_c_pthreads_every_thread_resumes() {
    if !ready("threads_c_pthreads_every_thread_resumes", &[Need::Cc, Need::Root]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "thr_work", &["-pthread"]);
    let cmd = argv![exe, "60"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert_eq!(expected.status.code(), Some(3), "{}", expected.notes);
    assert!(text(&expected.out).contains("pthread_kill: Success, Success"), "{}", text(&expected.out));
    let got = run_checkpointed(dir.path(), "ckpt", &cmd, Out::File, 5);
    assert_eq!(image_threads(&dir.path().join("ckpt.img")), 6, "the checkpoint should hold all six threads");
    assert_same_run(&expected, &got);
}

/// A checkpoint that leaves the process running gives every thread back the CPUs it
/// had (the capture runs herd and the threads on one CPU while it injects calls): the
/// rest of the run, whose last line counts each thread's CPUs, is as if uninterrupted.
#[test]
fn threads_keep_their_cpus_after_a_checkpoint() {
    if !ready("threads_keep_their_cpus_after_a_checkpoint", &[Need::Cc, Need::Root]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "thr_work", &["-pthread"]);
    let cmd = argv![exe, "30"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    let mut p = spawn_prog(dir.path(), "ckpt", &cmd, Out::File, false);
    p.wait_for_lines(5);
    checkpoint_ok_with(p.pid(), &dir.path().join("ckpt.img"), false, &[], &p.context());
    let status = p.wait();
    assert_eq!(status.code(), Some(3), "{}", p.context());
    assert_eq!(text(&p.output()), text(&expected.out), "the run checkpointed on the way differs");
}

/// A restored multi-threaded process is checkpointed again and restored
/// again: what the first restore set up (thread ids, rseq, robust lists,
/// names, masks) is what the second capture reads.
#[test]
fn threads_checkpoint_restart_twice() {
    if !ready("threads_checkpoint_restart_twice", &[Need::Cc, Need::Root]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "thr_work", &["-pthread"]);
    let cmd = argv![exe, "60"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::Pipe);
    assert_eq!(expected.status.code(), Some(3), "{}", expected.notes);
    let got = run_checkpointed_twice(dir.path(), &cmd, "thr_work", 5, 10);
    assert_eq!(image_threads(&dir.path().join("second.img")), 6, "the second checkpoint should hold all six threads");
    assert_same_run(&expected, &got);
}

/// A JVM (about fifteen threads: three of the program's at a CyclicBarrier,
/// the JIT compilers, the garbage collector, ...) checkpointed mid-run.
#[test]
fn threads_java_program_resumes() {
    if !ready("threads_java_program_resumes", &[Need::Java, Need::Root]) {
        return;
    }
    let dir = tmp();
    // Compiled first: `java File.java` compiles in the JVM, which then holds a socket.
    let out = Command::new("javac").arg("-d").arg(dir.path()).arg(program_source("ThrJava.java")).output().expect("running javac");
    assert!(out.status.success(), "javac: {}", String::from_utf8_lossy(&out.stderr));
    let cmd = argv!["java", "-XX:-UsePerfData", "-cp", dir.path(), "ThrJava", "80"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert_eq!(expected.status.code(), Some(6), "{}", expected.notes);
    let got = run_checkpointed(dir.path(), "ckpt", &cmd, Out::File, 10);
    assert!(image_threads(&dir.path().join("ckpt.img")) >= 8, "the checkpoint should hold the JVM's threads");
    assert_same_run(&expected, &got);
}

/// A Go program (the runtime's threads: sysmon, the collector's workers, the
/// netpoller's epoll wait and its pipe, SIGURG preemption by tgkill) with four
/// goroutines hashing each round, checkpointed mid-run.
#[test]
fn threads_go_program_resumes() {
    if !ready("threads_go_program_resumes", &[Need::Go, Need::Root]) {
        return;
    }
    let dir = tmp();
    let exe = dir.path().join("thr_go");
    gobuild::build_go(Path::new(&program_source("thr_go.go")), &exe, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let cmd = argv![exe, "80"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert_eq!(expected.status.code(), Some(7), "{}", expected.notes);
    let got = run_checkpointed(dir.path(), "ckpt", &cmd, Out::File, 10);
    assert!(image_threads(&dir.path().join("ckpt.img")) >= 3, "the checkpoint should hold the Go runtime's threads");
    assert_same_run(&expected, &got);
}

/// An OpenMP kernel (gcc -fopenmp, four threads: libgomp's pool waiting on
/// futexes between parallel regions, threadprivate state).
#[test]
fn threads_openmp_kernel_resumes() {
    if !ready("threads_openmp_kernel_resumes", &[Need::Cc]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "thr_omp", &["-fopenmp"]);
    let cmd = argv![exe, "60"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert_eq!(expected.status.code(), Some(4), "{}", expected.notes);
    let got = run_checkpointed(dir.path(), "ckpt", &cmd, Out::File, 5);
    assert_eq!(image_threads(&dir.path().join("ckpt.img")), 4, "the checkpoint should hold libgomp's four threads");
    assert_same_run(&expected, &got);
}

/// python3 with five threads handing a token round queues (condition waits
/// with timeouts, the GIL's timed waits, time.sleep, thread-local data).
#[test]
fn threads_python_threading_resumes() {
    if !ready("threads_python_threading_resumes", &[Need::Python]) {
        return;
    }
    let dir = tmp();
    let cmd = argv![python3().unwrap(), "-I", program_source("thr_py.py"), "60"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert_eq!(expected.status.code(), Some(5), "{}", expected.notes);
    let got = run_checkpointed(dir.path(), "ckpt", &cmd, Out::File, 8);
    assert_eq!(image_threads(&dir.path().join("ckpt.img")), 5, "the checkpoint should hold all five threads");
    assert_same_run(&expected, &got);
}

/// `sort --parallel=2` checkpointed while both of its threads sort: the
/// restarted sort writes the same bytes.
#[test]
fn threads_sort_parallel_output_identical() {
    if !ready("threads_sort_parallel_output_identical", &[]) {
        return;
    }
    let dir = tmp();
    let input = dir.path().join("numbers.txt");
    let mut text_in = String::new();
    let mut x: u64 = 88172645463325252;
    for _ in 0..1_500_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text_in.push_str(&format!("{:x} {}\n", x % 1_000_000_007, x % 97));
    }
    fs::write(&input, text_in).unwrap();
    let cmd = argv!["/usr/bin/sort", "--parallel=2", "-S", "64M", "-k2,2n", "-k1,1", input];
    same_output_checkpointed_with_threads(dir.path(), "sort", &cmd, 2, Duration::ZERO);
}

/// `cmd` (named `tool`) run uninterrupted, then again checkpointed (--kill) once it runs
/// `threads` threads and `settle` more, and restarted: its output file has the same bytes.
fn same_output_checkpointed_with_threads(dir: &Path, tool: &str, cmd: &[OsString], threads: usize, settle: Duration) {
    let expected = run_uninterrupted(dir, "plain", cmd, Out::File);
    assert!(expected.status.success(), "{}", expected.notes);
    let mut p = spawn_prog(dir, "ckpt", cmd, Out::File, false);
    let pid = p.pid();
    let running = || fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0);
    wait_until(&format!("{tool} runs {threads} threads"), TIMEOUT, || running() >= threads, || p.context());
    thread::sleep(settle);
    let img = dir.join(format!("{tool}.img"));
    checkpoint_ok(pid, &img, true, &p.context());
    p.reap_killed();
    assert!(image_threads(&img) >= threads as u64, "the checkpoint should hold {tool}'s threads");
    let mut r = restart(&img, false);
    let (status, _, err) = r.wait();
    assert!(status.success(), "restarted {tool}: {}\n{err}", describe(&status));
    let got = fs::read(p.out_path()).unwrap();
    assert!(got == expected.out, "restarted {tool} wrote {} bytes, the direct run {}; they differ\n{err}", got.len(), expected.out.len());
}

/// `xz -2 -T2` (three threads: two compress blocks, the main one reads and writes)
/// checkpointed while it compresses 36 MB: the restarted xz writes the same bytes.
#[test]
fn threads_xz_t2_output_identical() {
    compressed_output_identical("threads_xz_t2_output_identical", "xz", &["-2", "-T2", "-c"]);
}

/// `zstd -12 -T2` (a pool of two workers) checkpointed while it compresses 36 MB: the
/// restarted zstd writes the same bytes.
#[test]
fn threads_zstd_t2_output_identical() {
    compressed_output_identical("threads_zstd_t2_output_identical", "zstd", &["-12", "-T2", "-q", "-c"]);
}

/// About `bytes` of text: lines of eight words of a 5,000-word vocabulary (xorshift).
fn words_text(bytes: usize) -> String {
    let mut x: u64 = 88172645463325252;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let words: Vec<String> = (0..5000).map(|_| (0..2 + next() % 8).map(|_| (b'a' + (next() % 26) as u8) as char).collect()).collect();
    let mut text = String::with_capacity(bytes + 100);
    while text.len() < bytes {
        for k in 0..8 {
            text.push_str(&words[(next() % 5000) as usize]);
            text.push(if k == 7 { '\n' } else { ' ' });
        }
    }
    text
}

/// `tool ARGS INPUT > OUT`, checkpointed (--kill) once it runs three threads and then
/// restarted: OUT has the direct run's bytes.
fn compressed_output_identical(test: &str, tool: &str, args: &[&str]) {
    if !ready(test, &[]) {
        return;
    }
    if !tool_works(tool, &["--version"]) {
        eprintln!("SKIP {test}: no {tool}");
        return;
    }
    let dir = tmp();
    let input = dir.path().join("words.txt");
    fs::write(&input, words_text(36 << 20)).unwrap();
    let mut cmd: Vec<OsString> = std::iter::once(tool).chain(args.iter().copied()).map(OsString::from).collect();
    cmd.push(input.into_os_string());
    same_output_checkpointed_with_threads(dir.path(), tool, &cmd, 3, Duration::from_millis(300));
}

/// Checkpointed while asleep in nanosleep: after restart the sleep goes on
/// for the time that was left, and the program never sees EINTR.
#[test]
fn sleeping_in_nanosleep_resumes_the_remaining_sleep() {
    if !ready("sleeping_in_nanosleep_resumes_the_remaining_sleep", &[Need::Cc]) {
        return;
    }
    const SLEEP: Duration = Duration::from_secs(2);
    let dir = tmp();
    let exe = build_c(dir.path(), "sleeper", &[]);
    let cmd = argv![exe, SLEEP.as_secs().to_string()];
    // The reference run only sleeps, so it runs alongside the other one.
    let mut plain = spawn_prog(dir.path(), "plain", &cmd, Out::Pipe, false);

    let started = Instant::now();
    let mut p = spawn_prog(dir.path(), "ckpt", &cmd, Out::Pipe, false);
    p.wait_for_lines(1);
    p.wait_in_syscall("nanosleep", &[35, 230]); // nanosleep, clock_nanosleep
    thread::sleep(Duration::from_millis(300)); // part of the sleep is over, most remains
    let img = dir.path().join("sleeper.img");
    checkpoint_ok(p.pid(), &img, true, &p.context());
    p.reap_killed();
    let before = p.final_output();
    let mut r = restart(&img, false);
    let (status, after, err) = r.wait();
    let elapsed = started.elapsed();

    let plain_status = plain.wait();
    let expected = plain.final_output();
    assert_eq!(text(&expected), "start\nend rc=0\n", "the uninterrupted run itself misbehaved");
    assert_eq!(text(&[before, after].concat()), text(&expected), "herd restart stderr:\n{err}");
    assert_eq!(describe(&status), describe(&plain_status), "herd restart stderr:\n{err}");
    // Measured from before the program started, so a faithful restore can
    // only be later than SLEEP; the slack covers clock granularity.
    assert!(
        elapsed + Duration::from_millis(50) >= SLEEP,
        "the program asked to sleep {SLEEP:?} but ended {elapsed:?} after it was started: the sleep was cut short"
    );
}

/// Checkpointed while blocked reading a pipe on stdin; restarted with a new
/// pipe carrying the rest of the input.
#[test]
fn blocked_reading_stdin_pipe_continues_with_new_pipe() {
    if !ready("blocked_reading_stdin_pipe_continues_with_new_pipe", &[Need::Cc]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "upper", &[]);
    let cmd = argv![exe];
    let first = "hello world\n";
    let rest = "second line\nMixed Case 123\nlast one, no newline";

    let mut plain = spawn_prog(dir.path(), "plain", &cmd, Out::Pipe, true);
    plain.stdin.take().unwrap().write_all(format!("{first}{rest}").as_bytes()).unwrap();
    let plain_status = plain.wait();
    let expected = plain.final_output();
    assert_eq!(plain_status.code(), Some(3), "{}", plain.context());

    let mut p = spawn_prog(dir.path(), "ckpt", &cmd, Out::Pipe, true);
    let mut stdin = p.stdin.take().unwrap();
    stdin.write_all(first.as_bytes()).unwrap();
    p.wait_for_lines(1);
    p.wait_in_syscall("read", &[0]);
    let img = dir.path().join("upper.img");
    checkpoint_ok(p.pid(), &img, true, &p.context());
    p.reap_killed();
    drop(stdin);
    let before = p.final_output();

    let mut r = restart(&img, true);
    let mut new_stdin = r.stdin.take().unwrap();
    new_stdin.write_all(rest.as_bytes()).expect("writing to herd restart's stdin");
    drop(new_stdin); // EOF
    let (status, after, err) = r.wait();
    assert_eq!(text(&[before, after].concat()), text(&expected), "herd restart stderr:\n{err}");
    assert_eq!(describe(&status), describe(&plain_status), "herd restart stderr:\n{err}");
}

/// Signal dispositions, mask and a pending blocked signal survive; a signal
/// sent to the restored process runs its handler.
#[test]
fn signal_handlers_mask_and_pending_signal_survive() {
    if !ready("signal_handlers_mask_and_pending_signal_survive", &[Need::Cc]) {
        return;
    }
    // pause, ppoll, rt_sigsuspend: what glibc's pause() may use
    const PAUSE: &[i64] = &[34, 271, 130];
    let dir = tmp();
    let exe = build_c(dir.path(), "signals", &[]);
    let cmd = argv![exe];

    let mut plain = spawn_prog(dir.path(), "plain", &cmd, Out::Pipe, false);
    plain.wait_for_lines(1);
    plain.wait_in_syscall("pause", PAUSE);
    send_signal(plain.pid(), "HUP"); // ignored
    send_signal(plain.pid(), "USR1");
    let plain_status = plain.wait();
    let expected = plain.final_output();
    assert_eq!(plain_status.code(), Some(42), "{}", plain.context());

    let mut p = spawn_prog(dir.path(), "ckpt", &cmd, Out::Pipe, false);
    p.wait_for_lines(1);
    p.wait_in_syscall("pause", PAUSE);
    let fds_before = fd_table(p.pid());
    let img = dir.path().join("signals.img");
    checkpoint_ok(p.pid(), &img, true, &p.context());
    p.reap_killed();
    let before = p.final_output();

    let mut r = restart(&img, false);
    let pid = r.restored_pid("signals");
    wait_until("the restored process is blocked in pause", TIMEOUT, || blocked_syscall(pid).is_some_and(|nr| PAUSE.contains(&nr)), || r.context());
    // Exactly the fds it had: none of herd restart's own may leak in.
    assert_eq!(fd_table(pid), fds_before, "the restored process's fds (left) differ from the original's (right)\n{}", r.context());
    send_signal(pid, "HUP");
    send_signal(pid, "USR1");
    let (status, after, err) = r.wait();
    assert_eq!(text(&[before, after].concat()), text(&expected), "herd restart stderr:\n{err}");
    assert_eq!(describe(&status), describe(&plain_status), "herd restart stderr:\n{err}");
}

/// AVX ymm accumulators, an x87 long double and a non-default rounding mode
/// live in registers across the checkpoint; results must match bit for bit.
#[test]
fn avx_and_x87_registers_survive_bit_for_bit() {
    if !ready("avx_and_x87_registers_survive_bit_for_bit", &[Need::Cc, Need::Avx2]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "avx_accumulate", &["-mavx2", "-lm"]);
    let cmd = argv![exe, "16", "25000000"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::Pipe);
    assert_eq!(expected.status.code(), Some(0), "{}", expected.notes);
    let got = run_checkpointed(dir.path(), "ckpt", &cmd, Out::Pipe, 3);
    assert_same_run(&expected, &got);
}

/// bash running builtins only (bash must not fork: herd refuses processes
/// with children), stdout a file opened with O_APPEND. The test appends a
/// line of its own while the process is checkpointed: with O_APPEND kept,
/// the restored bash writes after it instead of over it.
#[test]
fn bash_builtin_loop_with_append_stdout() {
    if !ready("bash_builtin_loop_with_append_stdout", &[]) {
        return;
    }
    let dir = tmp();
    let cmd = argv!["bash", program_source("builtin_loop.sh"), "600000"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::AppendFile);
    assert_eq!(expected.status.code(), Some(5), "{}", expected.notes);

    let mut p = spawn_prog(dir.path(), "ckpt", &cmd, Out::AppendFile, false);
    p.wait_for_lines(3);
    let img = dir.path().join("bash.img");
    checkpoint_ok(p.pid(), &img, true, &p.context());
    p.reap_killed();
    let before = p.final_output();
    assert!(expected.out.starts_with(&before), "output before the checkpoint is not a prefix of the uninterrupted output");
    assert!(count_lines(&before) < count_lines(&expected.out), "the checkpoint landed after bash had printed everything");
    let marker = b"-- appended by the test while bash was checkpointed --\n";
    OpenOptions::new().append(true).open(p.out_path()).unwrap().write_all(marker).unwrap();

    let mut r = restart(&img, false);
    let (status, _, err) = r.wait();
    let want = [before.as_slice(), marker, &expected.out[before.len()..]].concat();
    assert_eq!(text(&fs::read(p.out_path()).unwrap()), text(&want), "herd restart stderr:\n{err}\nprogram stderr:\n{}", p.stderr_text());
    assert_eq!(describe(&status), describe(&expected.status), "herd restart stderr:\n{err}");
}

/// checkpoint → restart → checkpoint the restored process → restart.
#[test]
fn checkpoint_restart_checkpoint_restart() {
    if !ready("checkpoint_restart_checkpoint_restart", &[Need::Cc]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "steps", &[]);
    let cmd = argv![exe, "30", "30000000"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::Pipe);
    assert_eq!(expected.status.code(), Some(7), "{}", expected.notes);
    let got = run_checkpointed_twice(dir.path(), &cmd, "steps", 3, 3);
    assert_same_run(&expected, &got);
}

/// Runs `cmd` with stdout a pipe, checkpoints it with `--kill` once it has
/// printed `lines` lines, restarts it, checkpoints the restored process (the
/// child of herd restart, named `comm`) once it has printed `more` lines,
/// restarts that image and lets it finish.
fn run_checkpointed_twice(dir: &Path, cmd: &[OsString], comm: &str, lines: usize, more: usize) -> Run {
    let mut p = spawn_prog(dir, "ckpt", cmd, Out::Pipe, false);
    p.wait_for_lines(lines);
    let img1 = dir.join("first.img");
    checkpoint_ok(p.pid(), &img1, true, &p.context());
    p.reap_killed();
    let part1 = p.final_output();

    let mut r1 = restart(&img1, false);
    let pid1 = r1.restored_pid(comm);
    wait_until(&format!("the restored process prints {more} more lines"), TIMEOUT, || count_lines(&r1.stdout.snapshot()) >= more, || r1.context());
    let img2 = dir.join("second.img");
    checkpoint_ok(pid1, &img2, true, &r1.context());
    let (status1, part2, err1) = r1.wait();
    assert_eq!(
        status1.signal(),
        Some(SIGKILL),
        "herd restart should die by the signal that killed the restored process, but: {}\nstderr:\n{err1}",
        describe(&status1)
    );

    let mut r2 = restart(&img2, false);
    let (status, part3, err2) = r2.wait();
    assert!(count_lines(&part3) > 1, "the second checkpoint landed after the program had printed everything");
    Run {
        out: [part1.as_slice(), &part2, &part3].concat(),
        status,
        lines_before: Some(count_lines(&part1)),
        notes: format!("second herd restart stderr:\n{err2}\nfirst herd restart stderr:\n{err1}\nprogram stderr:\n{}", p.stderr_text()),
    }
}

/// A multi-threaded process that also holds a socket is refused (for the
/// socket), with or without --kill, and left running untouched, every thread.
#[test]
fn refuses_multithreaded_process_with_socket_and_leaves_it_running() {
    if !ready("refuses_multithreaded_process_with_socket_and_leaves_it_running", &[Need::Cc]) {
        return;
    }
    assert_refused_and_untouched("threads+socket", "socket");
}

/// A process holding a socket is refused, with or without --kill, and left
/// running untouched.
#[test]
fn refuses_process_with_socket_and_leaves_it_running() {
    if !ready("refuses_process_with_socket_and_leaves_it_running", &[Need::Cc]) {
        return;
    }
    assert_refused_and_untouched("socket", "socket");
}

fn assert_refused_and_untouched(mode: &str, reason: &str) {
    let dir = tmp();
    let exe = build_c(dir.path(), "refuse", &["-pthread"]);
    let mut p = spawn_prog(dir.path(), mode, &argv![exe, mode], Out::File, false);
    p.wait_for_lines(1);
    for kill in [false, true] {
        let img = dir.path().join(format!("{mode}-{kill}.img"));
        let run = checkpoint(p.pid(), &img, kill);
        run.assert_clean_failure();
        assert!(
            run.stderr.to_lowercase().contains(reason),
            "the refusal should mention {reason:?}: {}",
            run.report()
        );
        p.assert_still_running(&format!("the refused `{}`", run.cmd));
    }
}

/// `herd checkpoint --check` accepts a simple process and lists every reason
/// for the others, touching none of them.
#[test]
fn check_accepts_simple_process_and_lists_every_reason() {
    if !ready("check_accepts_simple_process_and_lists_every_reason", &[Need::Cc]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "refuse", &["-pthread"]);
    let io_uring = fs::read_to_string("/proc/sys/kernel/io_uring_disabled").map_or(true, |v| v.trim() == "0");
    if !io_uring {
        eprintln!("SKIP check_accepts_simple_process_and_lists_every_reason, case io_uring-wait: io_uring is disabled (kernel.io_uring_disabled)");
    }
    let cases: [(&str, &[&str]); 10] = [
        ("plain", &[]),
        ("threads", &[]),
        ("socket", &["socket"]),
        ("threads+socket", &["socket"]),
        // A read lease: carried (a lease being broken is refused).
        ("lease", &[]),
        // A deleted working directory: carried (made again, entered and removed).
        ("gone-cwd", &[]),
        ("epoll-reused", &["fd 3", "epoll watching fd 4", "another file"]),
        // Named: the process's other thread, not the process.
        ("thread-seccomp", &["its thread ", "runs under a seccomp filter"]),
        // The ring, the thread waiting for it, and the kernel's worker in the process.
        ("io_uring-wait", &["fd 3 is an io_uring", "waits in io_uring_enter", "(iou-wrk-", "io_uring workers"]),
        ("clone-vm", &["shares its memory with process ", "clone with clone_vm"]),
    ];
    for (mode, reasons) in cases.into_iter().filter(|(mode, _)| io_uring || *mode != "io_uring-wait") {
        let mut p = spawn_prog(dir.path(), &mode.replace('+', "-"), &argv![exe, mode, dir.path()], Out::File, false);
        p.wait_for_lines(1);
        let run = herd(&argv!["checkpoint", "--check", p.pid().to_string()], None);
        run.assert_no_panic();
        let said = format!("{}{}", run.stdout, run.stderr).to_lowercase();
        if reasons.is_empty() {
            assert!(run.status.success(), "--check should accept a simple process: {}", run.report());
            assert!(said.contains("can be checkpointed"), "--check should say it can be checkpointed: {}", run.report());
        } else {
            assert!(!run.status.success(), "--check should refuse mode {mode}: {}", run.report());
            for reason in reasons {
                assert!(said.contains(reason), "--check on mode {mode} should mention {reason:?}: {}", run.report());
            }
        }
        p.assert_still_running(&format!("`{}`", run.cmd));
    }
}

/// Every piece of process state `ckpt_state` sets up (its pid, eventfd,
/// timerfd, signalfd, epoll, directory and O_PATH fds, flock / POSIX / OFD
/// locks, a read lease and its break signal, interval timer, subreaper, THP-disable, no_new_privs,
/// oom_score_adj) is there after a restart: the program checks each itself
/// and prints PASS or what differs, exactly as in an uninterrupted run.
#[test]
fn process_state_and_fds_survive_with_the_same_pid() {
    if !ready("process_state_and_fds_survive_with_the_same_pid", &[Need::Cc, Need::Root]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "ckpt_state", &[]);
    let cmd = argv![exe, dir.path(), "20"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert!(expected.status.success(), "ckpt_state fails uninterrupted:\n{}\n{}", text(&expected.out), expected.notes);
    let got = run_checkpointed(dir.path(), "ckpt", &cmd, Out::File, 3);
    assert_same_run(&expected, &got);
    // The image says what it holds.
    let img = dir.path().join("ckpt.img");
    assert_inspect_shows(&img, &["eventfd", "timerfd", "signalfd", "epoll", "directory", "O_PATH", "flock write lock", "posix write lock on fd", "(10-14)", "ofd read lock", "lease read lock", "break signal 36", "real in", "oom_score_adj 500", "child-subreaper", "no_new_privs", "THP disabled", "every 30.000 s, signal 10 to the process", "disarmed, signal 10 to thread", "ghost (deleted), 5000 bytes carried, at offset 100", "memfd:herdtest, 3000 bytes carried, seals 0x6, at offset 7"]);
}

/// A tree: a pipe to child A holding 50,000 unread bytes, A in its own process
/// group, a zombie child, a child leading its own session. After restart each
/// finds what it should (A checks its ids and every byte) and the parent
/// reaps them all, as in an uninterrupted run; also in a new pid namespace.
#[test]
fn tree_with_pipe_zombie_group_and_session_restores_exactly() {
    if !ready("tree_with_pipe_zombie_group_and_session_restores_exactly", &[Need::Cc, Need::Root]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "ckpt_tree", &[]);
    let cmd = argv![exe, "20"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert!(text(&expected.out).contains("A (pipe, own group): exit 7"), "ckpt_tree fails uninterrupted:\n{}", text(&expected.out));
    let got = run_checkpointed(dir.path(), "tree", &cmd, Out::File, 3);
    assert_same_run(&expected, &got);
    assert_inspect_shows(dir.path().join("tree.img"), &["tree image", "4 processes", "zombie (exit 3)", "pipe 0      50000 bytes waiting", "pipe 0, read end", "pidfd"]);
    let got = run_checkpointed_with(dir.path(), "treens", &cmd, Out::File, 3, Some(&["--new-pidns"]), &[]);
    assert_same_run(&expected, &got);
}

/// An eventfd (with a dup), a timerfd, a signalfd, an inotify instance (watch 2:
/// watch 1 was given up) and an epoll (filled by the child: only it holds every file
/// the epoll watches) shared by a parent and its child, checkpointed as a tree: after
/// restart each is still one object of both (the child reads what the parent put in
/// each, and the event of the directory the parent made; its epoll no longer watches
/// what the parent took out of it), as uninterrupted.
#[test]
fn tree_sharing_event_timer_and_signal_fds_restores_them_shared() {
    if !ready("tree_sharing_event_timer_and_signal_fds_restores_them_shared", &[Need::Cc, Need::Root]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "ckpt_events", &[]);
    let (plain, watched) = (dir.path().join("plain.d"), dir.path().join("tree.d"));
    fs::create_dir(&plain).unwrap();
    fs::create_dir(&watched).unwrap();
    let expected = run_uninterrupted(dir.path(), "plain", &argv![&exe, "20", &plain], Out::File);
    for want in ["epoll sees 0x77\n", "eventfd holds 7", "timerfd fired 1 time(s)", "signalfd read signal SIGUSR1", "inotify watch 2 saw new", "child ended: exit 4"] {
        assert!(text(&expected.out).contains(want), "ckpt_events does not say {want:?} uninterrupted:\n{}", text(&expected.out));
    }
    let got = run_checkpointed(dir.path(), "tree", &argv![&exe, "20", &watched], Out::File, 3);
    assert_same_run(&expected, &got);
    assert_inspect_shows(dir.path().join("tree.img"), &["eventfd, count 5", "timerfd, clock 1, fires in", "signalfd, signals", "inotify, watch 2 on", "epoll, watching fd ", "(events 0x19, data 0xe1)", "(events 0x19, data 0x77)", " of member 1"]);
}

/// A fanotify group with a mark on a file, checkpointed (the group is made again by
/// the restorer, its mark found again by the file's handle): after the restart the
/// program's write to the file is what the group reports, as uninterrupted. With an
/// event waiting in the group, the checkpoint is refused and the program runs on.
#[test]
fn fanotify_group_keeps_its_mark() {
    if !ready("fanotify_group_keeps_its_mark", &[Need::Cc, Need::Root]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "ckpt_fanotify", &[]);
    let (plain, watched) = (dir.path().join("plain.txt"), dir.path().join("watched.txt"));
    fs::write(&plain, "x\n").unwrap();
    fs::write(&watched, "x\n").unwrap();
    let expected = run_uninterrupted(dir.path(), "plain", &argv![&exe, "20", &plain], Out::File);
    assert!(text(&expected.out).contains("event MODIFY CLOSE_WRITE on the marked file\n1 event(s)"), "ckpt_fanotify uninterrupted:\n{}", text(&expected.out));
    let got = run_checkpointed(dir.path(), "tree", &argv![&exe, "20", &watched], Out::File, 3);
    assert_same_run(&expected, &got);
    assert_inspect_shows(dir.path().join("tree.img"), &["fanotify, flags ", "marks: inode /", "watched.txt (mask 0x"]);
    // An event waiting in the group (it cannot be read without taking it): refused, and
    // the program runs on and reads it.
    let mut p = spawn_prog(dir.path(), "early", &argv![&exe, "20", &watched, "early"], Out::File, false);
    p.wait_for_lines(2);
    let run = checkpoint(p.pid(), &dir.path().join("early.img"), true);
    run.assert_clean_failure();
    assert!(run.stderr.contains("fanotify group with") && run.stderr.contains("events waiting"), "the refusal should name the events waiting: {}", run.report());
    p.assert_still_running("the refused checkpoint");
}

/// Memory without a name shared by a parent and its child (shared anonymous memory
/// they take turns through, a memfd mapped over its end with its fd closed, a sealed
/// memfd written through its fd and read through a mapping, a deleted file mapped
/// private and changed), checkpointed as a tree mid-run: after restart each is still
/// one object of both (the turns go on, the child's words reach the parent), the page
/// beyond the memfd's end still faults, the seals are back (also those of the memfd
/// no descriptor holds, read through its mapping): the same output.
#[test]
fn tree_sharing_memory_without_a_name_restores_it_shared() {
    if !ready("tree_sharing_memory_without_a_name_restores_it_shared", &[Need::Cc, Need::Root]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "ckpt_shm", &[]);
    let cmd = argv![exe, "25"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    for want in ["round 24: sum 4925, B says child's word 24, C says parent's 168", "child ended: exit 3", "D: changed here abcde qrstu", "beyond B's end: SIGBUS", "C's seals: 0x6", "B's seals: 0x1"] {
        assert!(text(&expected.out).contains(want), "ckpt_shm does not say {want:?} uninterrupted:\n{}", text(&expected.out));
    }
    let got = run_checkpointed(dir.path(), "tree", &cmd, Out::File, 3);
    assert_same_run(&expected, &got);
    assert_inspect_shows(
        dir.path().join("tree.img"),
        &["memory 0    shared anonymous memory, 1048576 bytes", "deleted file", "memfd ckpt-c (seals 0x6), 4096 bytes, also open as shared file", "memfd ckpt-b (seals 0x1), 12288 bytes"],
    );
}

/// Python's multiprocessing: three forked workers adding to a shared Value and Array
/// under a Lock (deleted files of /dev/shm mapped by all four processes, one of them
/// still open), checkpointed as a tree: the same totals after restart.
#[test]
fn python_multiprocessing_shared_value_and_lock_resume() {
    if !ready("python_multiprocessing_shared_value_and_lock_resume", &[Need::Python, Need::Root]) {
        return;
    }
    let dir = tmp();
    let cmd = argv![python3().unwrap(), "-I", program_source("ckpt_mp.py"), "40"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert!(text(&expected.out).contains("total 4680 counts [40, 40, 40] exits [0, 0, 0]"), "{}", text(&expected.out));
    let got = run_checkpointed(dir.path(), "tree", &cmd, Out::File, 3);
    assert_same_run(&expected, &got);
    assert_inspect_shows(dir.path().join("tree.img"), &["4 processes", "deleted file /dev/shm/sem.", "also open as shared file"]);
}

/// `seq | while read; do ...; sleep; done | sort -n | uniq -c` run by bash,
/// checkpointed as a tree mid-stream (five or six processes, lines waiting
/// in the pipes) and restarted: the same counts, the same exit status.
#[test]
fn shell_pipeline_checkpointed_as_a_tree() {
    if !ready("shell_pipeline_checkpointed_as_a_tree", &[Need::Root]) {
        return;
    }
    let dir = tmp();
    let cmd = argv!["bash", program_source("ckpt_pipeline.sh"), "40"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert!(text(&expected.out).contains("pipeline done"), "{}", text(&expected.out));
    // The pipeline prints nothing until its input ends: checkpoint it while
    // its loop still runs (its output file is still empty).
    let mut p = spawn_prog(dir.path(), "tree", &cmd, Out::File, false);
    wait_until("the pipeline's loop has started `sleep`", TIMEOUT, || children_of(p.pid()).iter().any(|&k| !children_of(k).is_empty()), || p.context());
    thread::sleep(Duration::from_millis(600));
    let img = dir.path().join("tree.img");
    checkpoint_ok(p.pid(), &img, true, &p.context());
    p.reap_killed();
    assert!(p.final_output().is_empty(), "the pipeline finished before the checkpoint: make it run longer");
    let mut r = restart(&img, false);
    let (status, _, err) = r.wait();
    assert_eq!(describe(&status), describe(&expected.status), "herd restart stderr:\n{err}");
    assert_eq!(text(&fs::read(p.out_path()).unwrap()), text(&expected.out), "herd restart stderr:\n{err}");
}

/// python3 with a stream socketpair to a child (551-odd bytes waiting in it
/// at the checkpoint: the child reads a byte at a time) and a datagram pair
/// holding three datagrams: the tree restarts with every byte and datagram
/// where it was, and prints what an uninterrupted run prints.
#[test]
fn python_socketpairs_to_a_child_restore_with_queued_data() {
    if !ready("python_socketpairs_to_a_child_restore_with_queued_data", &[Need::Python, Need::Root]) {
        return;
    }
    let dir = tmp();
    let cmd = argv![python3().unwrap(), "-I", program_source("ckpt_sockpair.py"), "40"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert!(text(&expected.out).contains("datagrams [b'one', b'two!', b'three']"), "{}", text(&expected.out));
    let got = run_checkpointed(dir.path(), "pair", &cmd, Out::File, 3);
    assert_same_run(&expected, &got);
    let shown = herd(&argv!["inspect", dir.path().join("pair.img")], None);
    shown.assert_ok();
    assert!(shown.stdout.contains("unix stream") && shown.stdout.contains("unix datagram: waiting at end 0 0 messages, 0 bytes, at end 1 3 messages, 12 bytes"), "{}", shown.stdout);
}

/// A TCP listener, a UDP socket and a unix listener, idle at the checkpoint,
/// come back on the same ports and path: after the restart the program's
/// own client child connects to each and is served, as uninterrupted.
#[test]
fn listening_tcp_udp_and_unix_sockets_restore_on_their_ports() {
    if !ready("listening_tcp_udp_and_unix_sockets_restore_on_their_ports", &[Need::Python, Need::Root]) {
        return;
    }
    let dir = tmp();
    let cmd = argv![python3().unwrap(), "-I", program_source("ckpt_server.py"), dir.path(), "20"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert!(text(&expected.out).contains("unix got hello unix"), "{}", text(&expected.out));
    let got = run_checkpointed(dir.path(), "srv", &cmd, Out::File, 3);
    assert_same_run(&expected, &got);
    let shown = herd(&argv!["inspect", dir.path().join("srv.img")], None);
    assert!(shown.stdout.contains("socket listening (backlog 5) on 127.0.0.1:") && shown.stdout.contains("srv.sock"), "{}", shown.stdout);
}

/// A process outside any tree a test checkpoints ([`start_outsider`]): killed (by
/// pid) and reaped when dropped.
struct Outsider(Child);

impl Drop for Outsider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts python test program `program` with `args`, outside any tree a test
/// checkpoints, and returns once it has made file `ready`.
fn start_outsider(program: &str, args: &[OsString], ready: &Path) -> Outsider {
    let child = Command::new("bash")
        .args(["-c", CLOSE_FDS_AND_EXEC, "herd-test-exec"])
        .arg(python3().unwrap())
        .arg("-I")
        .arg(program_source(program))
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    let child = Outsider(child);
    let until = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < until, "{program} did not make {}", ready.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A logger outside the tree (`ckpt_syslog.py server`): a unix datagram socket
/// bound at `path`, what it receives written to `out`.
struct Logger {
    _child: Outsider,
    path: PathBuf,
    out: PathBuf,
}

impl Logger {
    fn start(dir: &Path, label: &str) -> Logger {
        let (path, out) = (dir.join(format!("{label}.log.sock")), dir.join(format!("{label}.log")));
        Logger { _child: start_outsider("ckpt_syslog.py", &argv!["server", &path, &out], &path), path, out }
    }

    /// What it has written, once `lines` lines (or after 10 s).
    fn lines(&self, lines: usize) -> String {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let got = fs::read_to_string(&self.out).unwrap_or_default();
            if count_lines(got.as_bytes()) >= lines || Instant::now() > until {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// python3 logging through `logging.handlers.SysLogHandler` to a logger's socket
/// outside the tree (an unnamed unix datagram socket connected to a named one, as
/// syslog(3) to /dev/log): restored connected to that name again, so the logger
/// receives every message, as from the uninterrupted run. When the logger's name
/// no longer leads to a socket, refused, and the program runs on; when it is gone
/// at the restart, the restart fails saying so.
#[test]
fn syslog_style_socket_to_a_logger_outside_is_connected_again() {
    if !ready("syslog_style_socket_to_a_logger_outside_is_connected_again", &[Need::Python]) {
        return;
    }
    let dir = tmp();
    let plain = Logger::start(dir.path(), "plain");
    let cmd = argv![python3().unwrap(), "-I", program_source("ckpt_syslog.py"), "client", &plain.path, "12"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    let logged = plain.lines(12);
    assert_eq!(logged, (0..12).map(|i| format!("<14>tick {i}\n")).collect::<String>());
    let logger = Logger::start(dir.path(), "ckpt");
    let cmd = argv![python3().unwrap(), "-I", program_source("ckpt_syslog.py"), "client", &logger.path, "12"];
    let got = run_checkpointed(dir.path(), "syslog", &cmd, Out::File, 4);
    assert_same_run(&expected, &got);
    assert_eq!(logger.lines(12), logged, "what the logger received from the restored program\n{}", got.notes);
    let shown = herd(&argv!["inspect", dir.path().join("syslog.img")], None);
    shown.assert_ok();
    assert!(shown.stdout.contains(&logger.path.display().to_string()), "{}", shown.stdout);

    let gone = Logger::start(dir.path(), "gone");
    let cmd = argv![python3().unwrap(), "-I", program_source("ckpt_syslog.py"), "client", &gone.path, "30"];
    let mut p = spawn_prog(dir.path(), "gone", &cmd, Out::File, false);
    p.wait_for_lines(2);
    fs::remove_file(&gone.path).unwrap();
    let run = checkpoint(p.pid(), &dir.path().join("gone.img"), true);
    run.assert_clean_failure();
    assert!(run.stderr.contains("a name that no longer leads to a socket"), "{}", run.report());
    p.assert_still_running(&format!("the refused `{}`", run.cmd));
    drop(p);

    let late = Logger::start(dir.path(), "late");
    let cmd = argv![python3().unwrap(), "-I", program_source("ckpt_syslog.py"), "client", &late.path, "30"];
    let mut p = spawn_prog(dir.path(), "late", &cmd, Out::File, false);
    p.wait_for_lines(2);
    let img = dir.path().join("late.img");
    checkpoint_ok_with(p.pid(), &img, true, &[], &p.context());
    p.reap_killed();
    fs::remove_file(&late.path).unwrap();
    let (status, _, err) = restart(&img, false).wait();
    assert!(!status.success() && err.contains(&format!("a socket connected to {}", late.path.display())), "herd restart without the logger: {status:?}\n{err}");
}

/// An echo server outside the tree (`ckpt_tcp.py peer`) for one connection; its
/// port is in the file it names.
struct TcpPeer {
    _child: Outsider,
    port_file: PathBuf,
}

impl TcpPeer {
    fn start(dir: &Path, label: &str) -> TcpPeer {
        TcpPeer::holding(dir, label, None)
    }

    /// With `held`, its answer to `tick HELD` waits for [`TcpPeer::go`].
    fn holding(dir: &Path, label: &str, held: Option<usize>) -> TcpPeer {
        let port_file = dir.join(format!("{label}.port"));
        let mut args = argv!["peer", &port_file].to_vec();
        args.extend(held.map(|k| k.to_string().into()));
        TcpPeer { _child: start_outsider("ckpt_tcp.py", &args, &port_file), port_file }
    }

    /// Lets it send its held answer.
    fn go(&self) {
        let mut go = self.port_file.clone().into_os_string();
        go.push(".go");
        fs::write(go, b"").expect("writing the peer's go file");
    }
}

/// A client's established TCP connection to a server outside the tree, with
/// the server's answer waiting unread in it: `herd checkpoint --kill
/// --tcp-established`, then `herd restart` a moment later; the client reads
/// that answer and talks on over the same connection, the server never knew,
/// and the output is the uninterrupted run's.
#[test]
fn tcp_connection_to_a_server_outside_goes_on_after_restart() {
    if !ready("tcp_connection_to_a_server_outside_goes_on_after_restart", &[Need::Python, Need::Root, Need::Nft]) {
        return;
    }
    let dir = tmp();
    let plain_peer = TcpPeer::start(dir.path(), "plain");
    let cmd = argv![python3().unwrap(), "-I", program_source("ckpt_tcp.py"), "client", &plain_peer.port_file, "30"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert!(text(&expected.out).ends_with("echo tick 29\nend of stream\n"), "{}", text(&expected.out));
    let peer = TcpPeer::start(dir.path(), "tcp");
    let cmd = argv![python3().unwrap(), "-I", program_source("ckpt_tcp.py"), "client", &peer.port_file, "30"];
    let got = run_checkpointed_with(dir.path(), "tcp", &cmd, Out::File, 3, None, &["--tcp-established"]);
    assert_same_run(&expected, &got);
    let shown = herd(&argv!["inspect", dir.path().join("tcp.img")], None);
    shown.assert_ok();
    assert!(shown.stdout.contains("TCP connection 127.0.0.1:") && shown.stdout.contains("bytes received and not read"), "{}", shown.stdout);
}

/// The network held still (netfilter, herd_checkpoint::netlock) from the
/// checkpoint of a client with `--kill --tcp-established` until its restart: the
/// server outside speaks while the client is gone (its answer to tick 3, held
/// until then); its segments are dropped, not answered with a reset, and the
/// restored client gets them when the peer retransmits: the uninterrupted run's
/// output. Without the lock the peer's connection is reset and the client waits
/// for that answer forever.
#[test]
fn tcp_peer_that_speaks_while_the_client_is_gone_is_heard_after_restart() {
    if !ready("tcp_peer_that_speaks_while_the_client_is_gone_is_heard_after_restart", &[Need::Python, Need::Root, Need::Nft]) {
        return;
    }
    let dir = tmp();
    let plain_peer = TcpPeer::holding(dir.path(), "plain", Some(3));
    plain_peer.go();
    let cmd = argv![python3().unwrap(), "-I", program_source("ckpt_tcp.py"), "client", &plain_peer.port_file, "8"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert!(text(&expected.out).ends_with("echo tick 7\nend of stream\n"), "{}", text(&expected.out));
    let peer = TcpPeer::holding(dir.path(), "held", Some(3));
    let cmd = argv![python3().unwrap(), "-I", program_source("ckpt_tcp.py"), "client", &peer.port_file, "8"];
    let got = run_checkpointed_then(dir.path(), "held", &cmd, Out::File, 3, None, &["--tcp-established"], || {
        peer.go();
        // Its answer goes out now and meets the lock (and so do its retransmissions meanwhile).
        std::thread::sleep(Duration::from_millis(700));
    });
    assert_same_run(&expected, &got);
    let locks = Command::new("nft").args(["list", "tables"]).output().expect("nft list tables");
    assert!(!String::from_utf8_lossy(&locks.stdout).contains("herd_tcp_"), "a lock is left after the restart: {}", String::from_utf8_lossy(&locks.stdout));
}

/// A shared writable mapping of a file (MAP_SHARED, PROT_WRITE) is mapped again
/// from the file: the program's writes after the restart reach the file, its
/// counter goes on from where it was, and read(2) of the file at the end sees
/// what the mapping holds: the uninterrupted run's output and file.
#[test]
fn shared_writable_mapping_of_a_file_writes_on_into_it() {
    if !ready("shared_writable_mapping_of_a_file_writes_on_into_it", &[Need::Cc]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "ckpt_mapfile", &[]);
    let (plain, ckpt) = (dir.path().join("plain.data"), dir.path().join("ckpt.data"));
    let expected = run_uninterrupted(dir.path(), "plain", &argv![&exe, &plain, "20"], Out::File);
    assert!(text(&expected.out).contains("file: counter 210, t0 t1 "), "{}", text(&expected.out));
    let got = run_checkpointed(dir.path(), "mapfile", &argv![&exe, &ckpt, "20"], Out::File, 5);
    assert_same_run(&expected, &got);
    assert_eq!(fs::read(&ckpt).unwrap(), fs::read(&plain).unwrap(), "the file after the restart");
}

/// A program under two seccomp filters of its own on both its threads (as a
/// sandboxed program or one in a container runs): checkpointed as root (the
/// filters read with PTRACE_SECCOMP_GET_FILTER, and suspended while it is held)
/// and restarted with both again, in their order, with their flags, on every
/// thread: each thread checks what each filter answers, as uninterrupted.
#[test]
fn process_under_its_own_seccomp_filters_keeps_them() {
    if !ready("process_under_its_own_seccomp_filters_keeps_them", &[Need::Cc, Need::Root]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "ckpt_seccomp", &["-pthread"]);
    let cmd = argv![exe, "20"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    let out = text(&expected.out);
    assert!(out.contains("PASS main thread") && out.contains("PASS other thread") && out.contains("Seccomp_filters:\t2"), "ckpt_seccomp fails uninterrupted:\n{out}");
    let got = run_checkpointed(dir.path(), "seccomp", &cmd, Out::File, 3);
    assert_same_run(&expected, &got);
    assert_inspect_shows(dir.path().join("seccomp.img"), &["seccomp     2 filters on every thread, first installed first: 6 instructions, 6 instructions (flags 0x2)"]);
}

/// A working directory deleted while the program is in it comes back deleted: a
/// new empty directory beside where it was, entered and removed by the restorer;
/// getcwd fails, nothing can be made in it, its parent is the same: the
/// uninterrupted run's output.
#[test]
fn deleted_working_directory_comes_back_deleted() {
    if !ready("deleted_working_directory_comes_back_deleted", &[Need::Python]) {
        return;
    }
    let dir = tmp();
    let (plain, ckpt) = (dir.path().join("plain"), dir.path().join("ckpt"));
    fs::create_dir(&plain).unwrap();
    fs::create_dir(&ckpt).unwrap();
    let cmd = |d: &Path| argv![python3().unwrap(), "-I", program_source("ckpt_gonecwd.py"), d, "20"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd(&plain), Out::File);
    assert!(text(&expected.out).ends_with("getcwd: ENOENT\nlinks: 0 entries: []\nmaking a file: ENOENT\nparent is DIR: True\n"), "{}", text(&expected.out));
    let got = run_checkpointed(dir.path(), "gonecwd", &cmd(&ckpt), Out::File, 3);
    assert_same_run(&expected, &got);
    let left: Vec<_> = fs::read_dir(&ckpt).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "the restore left {left:?} in the directory");
}

/// A netlink socket (NETLINK_ROUTE, bound to a multicast group) comes back with
/// its port id and groups and still answers: python3 dumps the network links
/// through it after the restart, as uninterrupted. With answers waiting in it,
/// refused, and the program runs on.
#[test]
fn netlink_socket_keeps_its_port_and_groups() {
    if !ready("netlink_socket_keeps_its_port_and_groups", &[Need::Python, Need::Root]) {
        return;
    }
    let dir = tmp();
    let cmd = argv![python3().unwrap(), "-I", program_source("ckpt_netlink.py"), "20"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert!(text(&expected.out).ends_with("same port: True groups 0x80\nlinks include lo: True\n"), "{}", text(&expected.out));
    let got = run_checkpointed(dir.path(), "netlink", &cmd, Out::File, 3);
    assert_same_run(&expected, &got);
    assert_inspect_shows(dir.path().join("netlink.img"), &["socket on netlink port ", "groups 0x80"]);

    let cmd = argv![python3().unwrap(), "-I", program_source("ckpt_netlink.py"), "30", "unread"];
    let mut p = spawn_prog(dir.path(), "unread", &cmd, Out::File, false);
    p.wait_for_lines(2);
    let run = checkpoint(p.pid(), &dir.path().join("unread.img"), true);
    run.assert_clean_failure();
    assert!(run.stderr.contains("a netlink socket (protocol 0) with") && run.stderr.contains("bytes waiting to be read"), "{}", run.report());
    p.assert_still_running(&format!("the refused `{}`", run.cmd));
}

/// A tmux server on a socket of its own in the test's directory, ended (kill-server,
/// then SIGKILL by pid) when dropped.
struct Tmux {
    dir: PathBuf,
    server: Option<i32>,
}

impl Tmux {
    /// `tmux ARGS` on this server: its stdout, or a panic with what it said.
    fn run(&self, args: &[&str]) -> String {
        let out = self.try_run(args);
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn try_run(&self, args: &[&str]) -> std::process::Output {
        // Through bash with only fds 0-2: the first command forks the server, which keeps what it inherits.
        Command::new("bash")
            .args(["-c", CLOSE_FDS_AND_EXEC, "herd-test-exec", "tmux", "-L", "herd-test"])
            .args(args)
            .env("TMUX_TMPDIR", &self.dir)
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .output()
            .expect("running tmux")
    }

    /// Waits until the pane shows `text`; its contents.
    fn wait_for_pane(&self, text: &str) -> String {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let pane = self.run(&["capture-pane", "-p", "-t", "t"]);
            if pane.contains(text) {
                return pane;
            }
            assert!(Instant::now() < until, "the pane never showed {text:?}:\n{pane}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.try_run(&["kill-server"]);
        if let Some(pid) = self.server {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// A tmux session (the server, a daemon, and the shell in its pane on a pty whose
/// master the server holds; its listening unix socket; libevent's epoll and signal
/// pipe) checkpointed with --kill and restarted: `tmux` commands reach it again
/// at its socket, the shell has its pid and its screen, and runs what is typed.
#[test]
fn tmux_session_comes_back_with_its_shell_and_screen() {
    if !ready("tmux_session_comes_back_with_its_shell_and_screen", &[Need::Tmux, Need::Root]) {
        return;
    }
    let dir = tmp();
    let mut tmux = Tmux { dir: dir.path().to_path_buf(), server: None };
    tmux.run(&["new-session", "-d", "-s", "t", "-x", "80", "-y", "24", "bash --norc --noprofile"]);
    let server: i32 = tmux.run(&["display-message", "-p", "-t", "t", "#{pid}"]).trim().parse().expect("the server's pid");
    tmux.server = Some(server);
    let shell = tmux.run(&["display-message", "-p", "-t", "t", "#{pane_pid}"]).trim().to_string();
    tmux.run(&["send-keys", "-t", "t", "echo before $$", "Enter"]);
    tmux.wait_for_pane(&format!("before {shell}"));

    let img = dir.path().join("tmux.img");
    checkpoint_ok_with(server as u32, &img, true, &[], "the tmux server");
    assert!(!tmux.try_run(&["has-session", "-t", "t"]).status.success(), "the tmux server still answers after checkpoint --kill");
    let mut r = restart(&img, false);
    let until = Instant::now() + Duration::from_secs(20);
    while !tmux.try_run(&["has-session", "-t", "t"]).status.success() {
        assert!(Instant::now() < until, "the restored tmux server does not answer at its socket:\n{}", r.context());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(tmux.run(&["display-message", "-p", "-t", "t", "#{pid} #{pane_pid}"]).trim(), format!("{server} {shell}"));
    tmux.run(&["send-keys", "-t", "t", "echo after $$", "Enter"]);
    let pane = tmux.wait_for_pane(&format!("after {shell}"));
    assert!(pane.contains(&format!("before {shell}")), "the screen before the checkpoint is gone:\n{pane}");
    tmux.run(&["kill-server"]);
    let (status, _, err) = r.wait();
    assert!(status.success(), "herd restart of the tmux server: {status:?}\n{err}");
}

/// Both ends of a TCP connection in the tree (python3 and the echo server
/// it forked, whose listener is restored too): made again together, neither
/// speaks before the other exists, and the pair talks on as uninterrupted.
/// Without `--tcp-established` the checkpoint is refused, saying so, and the
/// processes run on untouched.
#[test]
fn tcp_connection_inside_the_tree_goes_on_after_restart() {
    if !ready("tcp_connection_inside_the_tree_goes_on_after_restart", &[Need::Python, Need::Root, Need::Nft]) {
        return;
    }
    let dir = tmp();
    let cmd = argv![python3().unwrap(), "-I", program_source("ckpt_tcp.py"), "pair", "30"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert!(text(&expected.out).ends_with("echo tick 29\nend of stream\nserver 0\n"), "{}", text(&expected.out));

    let mut p = spawn_prog(dir.path(), "refused", &cmd, Out::File, false);
    p.wait_for_lines(2);
    let run = checkpoint(p.pid(), &dir.path().join("refused.img"), true);
    run.assert_clean_failure();
    assert!(run.stderr.contains("a TCP connection 127.0.0.1:") && run.stderr.contains("--tcp-established"), "{}", run.report());
    p.assert_still_running(&format!("the refused `{}`", run.cmd));
    drop(p);

    let got = run_checkpointed_with(dir.path(), "pair", &cmd, Out::File, 3, None, &["--tcp-established"]);
    assert_same_run(&expected, &got);
}

/// A pseudo-terminal inside the tree (python3 and a child on a pty it forked,
/// `pty.fork`): made again as a new pair with the child's settings (echo off,
/// the window size), the child leading its session with the new slave as its
/// controlling terminal and in the foreground, so that Ctrl-C typed on the
/// master after the restart reaches it: the uninterrupted run's output.
#[test]
fn pseudo_terminal_inside_the_tree_restores_with_its_settings_and_session() {
    if !ready("pseudo_terminal_inside_the_tree_restores_with_its_settings_and_session", &[Need::Python, Need::Root]) {
        return;
    }
    let dir = tmp();
    let cmd = argv![python3().unwrap(), "-I", program_source("ckpt_pty.py"), "30"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    for want in ["got tick 29 echo=False size=100x30 leader=True fg=True", "child says child: interrupted\nchild says child: end of input\nchild exit 3\n"] {
        assert!(text(&expected.out).contains(want), "ckpt_pty does not say {want:?} uninterrupted:\n{}", text(&expected.out));
    }
    let got = run_checkpointed(dir.path(), "pty", &cmd, Out::File, 3);
    assert_same_run(&expected, &got);
    let shown = herd(&argv!["inspect", dir.path().join("pty.img")], None);
    shown.assert_ok();
    assert!(shown.stdout.contains("pseudo-terminal master (was /dev/pts/") && shown.stdout.contains("100x30, no echo, canonical, controlling terminal of session"), "{}", shown.stdout);

    // A line typed that the child has not read: refused (it cannot be read without
    // taking it), the processes left running.
    let stuck = argv![python3().unwrap(), "-I", program_source("ckpt_pty.py"), "1", "stuck"];
    let mut p = spawn_prog(dir.path(), "stuck", &stuck, Out::File, false);
    p.wait_for_lines(1);
    let run = checkpoint(p.pid(), &dir.path().join("stuck.img"), true);
    run.assert_clean_failure();
    // 7 bytes for the child; 8 for the master: their echo, "unread\r\n".
    assert!(run.stderr.contains("a pseudo-terminal with bytes waiting in it: 8 for the master, 7 for the slave"), "{}", run.report());
    p.assert_still_running(&format!("the refused `{}`", run.cmd));
}

/// `tail -f` of a growing log, started by a bash script: its inotify watch
/// (found again by file handle), its poll and the script's `kill $!` all work
/// after a restart in the middle of the wait.
#[test]
fn tail_follow_keeps_its_inotify_watch() {
    if !ready("tail_follow_keeps_its_inotify_watch", &[Need::Root]) {
        return;
    }
    let dir = tmp();
    let plain = argv!["bash", program_source("ckpt_tailf.sh"), dir.path().join("plain.log")];
    let expected = run_uninterrupted(dir.path(), "plain", &plain, Out::File);
    assert!(text(&expected.out).contains("line 6\n"), "{}", text(&expected.out));
    let cmd = argv!["bash", program_source("ckpt_tailf.sh"), dir.path().join("tail.log")];
    let got = run_checkpointed(dir.path(), "tail", &cmd, Out::File, 3);
    assert_same_run(&expected, &got);
    let shown = herd(&argv!["inspect", dir.path().join("tail.img")], None);
    assert!(shown.stdout.contains("inotify") && shown.stdout.contains("tail.log (0x"), "{}", shown.stdout);
}

/// A FIFO between two processes of a bash script, full of lines the reader
/// takes slowly: the lines waiting in it come back, and the reader goes on.
#[test]
fn fifo_inside_the_tree_keeps_what_waits_in_it() {
    if !ready("fifo_inside_the_tree_keeps_what_waits_in_it", &[Need::Root]) {
        return;
    }
    let dir = tmp();
    let cmd = argv!["bash", program_source("ckpt_fifo.sh"), dir.path()];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    assert!(text(&expected.out).ends_with("got item 30\nfifo done\n"), "{}", text(&expected.out));
    let got = run_checkpointed(dir.path(), "fifo", &cmd, Out::File, 3);
    assert_same_run(&expected, &got);
    let shown = herd(&argv!["inspect", dir.path().join("fifo.img")], None);
    assert!(shown.stdout.contains("bytes waiting (capacity 65536, FIFO "), "{}", shown.stdout);
}

/// A tree member holding a FIFO whose other end is outside the tree is
/// refused by `--check` and by `herd checkpoint`, which leaves it running.
#[test]
fn tree_with_a_fifo_to_the_outside_is_refused() {
    if !ready("tree_with_a_fifo_to_the_outside_is_refused", &[]) {
        return;
    }
    let dir = tmp();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // The reader is the test's, outside the tree.
    let mut reader = Command::new("cat").arg(&fifo).stdout(Stdio::null()).spawn().unwrap();
    let script = format!("exec 3>{}; for i in $(seq 600); do echo tick $i; sleep 0.1; done", fifo.display());
    let mut p = spawn_prog(dir.path(), "fifo", &argv!["bash", "-c", script], Out::File, false);
    p.wait_for_lines(1);
    let check = herd(&argv!["checkpoint", "--check", p.pid().to_string()], None);
    check.assert_no_panic();
    assert!(!check.status.success() && check.stdout.contains("fd 3") && check.stdout.contains("FIFO"), "{}", check.report());
    let img = dir.path().join("fifo.img");
    let run = checkpoint(p.pid(), &img, true);
    run.assert_clean_failure();
    assert!(run.stderr.contains("fd 3"), "{}", run.report());
    assert!(!img.exists());
    p.assert_still_running("a refused tree checkpoint");
    drop(p);
    let _ = reader.kill();
    let _ = reader.wait();
}

/// `--new-pidns`: the process gets its own pid in a new pid namespace, even
/// while that pid is taken outside it (here by the original, still running);
/// herd restart ends with its exit status.
#[test]
fn restart_in_a_new_pid_namespace_while_the_pid_is_taken() {
    if !ready("restart_in_a_new_pid_namespace_while_the_pid_is_taken", &[Need::Cc, Need::Root]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "ckpt_state", &[]);
    let cmd = argv![exe, dir.path(), "15"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);
    let mut p = spawn_prog(dir.path(), "orig", &cmd, Out::File, false);
    p.wait_for_lines(3);
    let img = dir.path().join("ns.img");
    checkpoint_ok(p.pid(), &img, false, &p.context());
    // The original runs on and holds its pid and its locks: a plain restart
    // is refused before anything starts, naming the pid.
    let refused = herd(&argv!["restart", &img], None);
    refused.assert_clean_failure();
    assert!(refused.stderr.contains(&format!("pid {} is in use", p.pid())) && refused.stderr.contains("--new-pidns"), "{}", refused.report());
    assert_eq!(p.wait().code(), Some(0), "the original was disturbed:\n{}", p.context());

    // Now the locks are free; the pid is free too, but the namespace is used anyway.
    // The finished output is overwritten with '#': what the restored process
    // writes from its saved offset on must be the uninterrupted run's.
    let out = p.out_path().to_path_buf();
    fs::write(&out, vec![b'#'; expected.out.len()]).unwrap();
    let mut r = restart_with(&img, false, &["--new-pidns"]);
    let (status, _, err) = r.wait();
    let got = fs::read(&out).unwrap();
    assert_eq!(describe(&status), describe(&expected.status), "herd restart --new-pidns stderr:\n{err}\noutput:\n{}", text(&got));
    let from = got.iter().position(|&b| b != b'#').unwrap_or(got.len());
    assert!(from > 0 && text(&got[from..]).contains("PASS pid\n"), "the restored process wrote:\n{}\nstderr:\n{err}", text(&got));
    assert_eq!(text(&got[from..]), text(&expected.out[from..]), "herd restart --new-pidns stderr:\n{err}");
}

/// `--any-pid` restarts while the original still runs (it gets another pid);
/// a lock the original holds makes that restart fail cleanly instead of
/// running without it.
#[test]
fn any_pid_restarts_beside_the_original_but_not_without_its_locks() {
    if !ready("any_pid_restarts_beside_the_original_but_not_without_its_locks", &[Need::Cc]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "steps", &[]);
    let mut p = spawn_prog(dir.path(), "steps", &argv![exe, "40", "30000000"], Out::File, false);
    p.wait_for_lines(2);
    let img = dir.path().join("steps.img");
    checkpoint_ok(p.pid(), &img, false, &p.context());
    let mut r = restart_with(&img, false, &["--any-pid"]);
    let pid = r.restored_pid("steps");
    assert_ne!(pid, p.pid());
    p.assert_still_running("a restart beside it with --any-pid");
    drop(r);

    let state = build_c(dir.path(), "ckpt_state", &[]);
    let mut q = spawn_prog(dir.path(), "state", &argv![state, dir.path(), "100"], Out::File, false);
    q.wait_for_lines(2);
    let img = dir.path().join("state.img");
    checkpoint_ok(q.pid(), &img, false, &q.context());
    let refused = herd(&argv!["restart", "--any-pid", &img], None);
    refused.assert_clean_failure();
    assert!(refused.stderr.contains("lock on fd") && refused.stderr.contains("cannot be taken again"), "{}", refused.report());
    q.assert_still_running("a restart that could not take its locks");
}

/// A corrupted, a truncated and an empty image are refused before anything
/// runs; the intact image still restarts (which proves the program would
/// have written to its output file had it been started).
#[test]
fn corrupt_or_truncated_image_starts_nothing() {
    if !ready("corrupt_or_truncated_image_starts_nothing", &[Need::Cc]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "steps", &[]);
    let cmd = argv![exe, "30", "30000000"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);

    let mut p = spawn_prog(dir.path(), "ckpt", &cmd, Out::File, false);
    p.wait_for_lines(3);
    let img = dir.path().join("good.img");
    checkpoint_ok(p.pid(), &img, true, &p.context());
    p.reap_killed();
    let out_path = p.out_path().to_path_buf();
    let at_checkpoint = fs::read(&out_path).unwrap();
    let good = fs::read(&img).unwrap();

    let flip = |at: usize| {
        let mut bad = good.clone();
        for b in &mut bad[at..(at + 16).min(good.len())] {
            *b ^= 0x5a;
        }
        bad
    };
    let bad_images: [(&str, Vec<u8>, &[&str]); 4] = [
        ("flipped-middle", flip(good.len() / 2), &["corrupt", "checksum"]),
        ("flipped-start", flip(40.min(good.len() / 4)), &["corrupt", "checksum"]),
        ("truncated", good[..good.len() / 2].to_vec(), &["truncated"]),
        ("empty", Vec::new(), &["truncated", "corrupt", "not a herd image"]),
    ];
    for (name, bytes, words) in bad_images {
        let bad = dir.path().join(format!("{name}.img"));
        fs::write(&bad, &bytes).unwrap();
        let run = herd(&argv!["restart", bad], None);
        run.assert_clean_failure();
        let err = run.stderr.to_lowercase();
        assert!(words.iter().any(|w| err.contains(w)), "{name} image: stderr should mention one of {words:?}: {}", run.report());
        // Had anything been started, it would write to (and hold open) the
        // program's output file; give it time to do so.
        thread::sleep(Duration::from_millis(300));
        let holders = holders_of(&out_path);
        for &pid in &holders {
            if let Some(t) = start_time(pid) {
                kill_exact(pid, t);
            }
        }
        assert!(holders.is_empty(), "{name} image: processes {holders:?} were started and hold the program's output file");
        assert_eq!(text(&fs::read(&out_path).unwrap()), text(&at_checkpoint), "{name} image: the output file changed, so the program ran");
    }

    let mut r = restart(&img, false);
    let (status, _, err) = r.wait();
    assert_eq!(text(&fs::read(&out_path).unwrap()), text(&expected.out), "the intact image, restarted: herd restart stderr:\n{err}");
    assert_eq!(describe(&status), describe(&expected.status), "herd restart stderr:\n{err}");
}

/// `herd inspect` shows an image as text and as JSON naming the command.
#[test]
fn inspect_shows_image_as_text_and_json() {
    if !ready("inspect_shows_image_as_text_and_json", &[Need::Cc]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "steps", &[]);
    let mut p = spawn_prog(dir.path(), "ckpt", &argv![exe, "30", "30000000"], Out::File, false);
    p.wait_for_lines(2);
    let img = dir.path().join("steps.img");
    checkpoint_ok(p.pid(), &img, true, &p.context());
    p.reap_killed();

    let plain = herd(&argv!["inspect", img], None);
    plain.assert_ok();
    assert!(plain.stdout.contains("steps"), "inspect should name the command: {}", plain.report());

    let json = herd(&argv!["inspect", img, "--json"], None);
    json.assert_ok();
    assert!(json.stdout.contains("\"steps\""), "inspect --json should name the command as a JSON string: {}", json.report());
    match python3() {
        Some(py) => {
            let parse = run_tool(py, &argv!["-c", "import json, sys; json.load(sys.stdin)"], Some(json.stdout.as_bytes()));
            assert!(parse.status.success(), "inspect --json is not valid JSON: {}\n{}", parse.stderr, json.report());
        }
        None => {
            // No python: at least one balanced object.
            let s = json.stdout.trim();
            let opens = s.matches('{').count();
            assert!(s.starts_with('{') && s.ends_with('}') && opens == s.matches('}').count(), "inspect --json does not look like a JSON object: {}", json.report());
        }
    }
}

/// Without --kill the process keeps running as if nothing happened, and the
/// image restarts: the restored process rewrites the file from its saved
/// offset on.
#[test]
fn checkpoint_without_kill_leaves_process_running_and_image_restarts() {
    if !ready("checkpoint_without_kill_leaves_process_running_and_image_restarts", &[Need::Cc]) {
        return;
    }
    let dir = tmp();
    let exe = build_c(dir.path(), "steps", &[]);
    let cmd = argv![exe, "30", "30000000"];
    let expected = run_uninterrupted(dir.path(), "plain", &cmd, Out::File);

    let mut p = spawn_prog(dir.path(), "ckpt", &cmd, Out::File, false);
    p.wait_for_lines(3);
    let img = dir.path().join("steps.img");
    checkpoint_ok(p.pid(), &img, false, &p.context());
    let lines_at_checkpoint = 3;
    p.assert_still_running("`herd checkpoint` without --kill");
    let status = p.wait();
    assert_eq!(text(&p.final_output()), text(&expected.out), "the process checkpointed without --kill did not carry on unchanged\n{}", p.context());
    assert_eq!(describe(&status), describe(&expected.status));

    // Overwrite the finished file with '#' (same length): the restored
    // process must write exactly the uninterrupted output from its saved
    // offset P to the end, leaving the '#' before P.
    let path = p.out_path().to_path_buf();
    fs::write(&path, vec![b'#'; expected.out.len()]).unwrap();
    let mut r = restart(&img, false);
    let (status, _, err) = r.wait();
    let got = fs::read(&path).unwrap();
    assert_eq!(describe(&status), describe(&expected.status), "herd restart stderr:\n{err}");
    let saved_offset = got.iter().position(|&b| b != b'#').unwrap_or(got.len());
    let min_offset: usize = expected.out.split_inclusive(|&b| b == b'\n').take(lines_at_checkpoint).map(|l| l.len()).sum();
    assert!(
        saved_offset >= min_offset && saved_offset < expected.out.len() && expected.out[saved_offset - 1] == b'\n',
        "the restored process started writing at byte {saved_offset}; expected a line start at or after byte {min_offset}\nfile:\n{}\nherd restart stderr:\n{err}",
        text(&got)
    );
    assert_eq!(text(&got[saved_offset..]), text(&expected.out[saved_offset..]), "herd restart stderr:\n{err}");
    assert_eq!(got.len(), expected.out.len(), "herd restart stderr:\n{err}");
}

/// Bad command lines fail with a message, never a panic.
#[test]
fn bad_command_lines_fail_cleanly() {
    if !ready("bad_command_lines_fail_cleanly", &[]) {
        return;
    }
    let dir = tmp();
    let img = dir.path().join("x.img");

    herd(&argv!["checkpoint"], None).assert_clean_failure();
    herd(&argv!["checkpoint", "not-a-pid", "--output", img], None).assert_clean_failure();
    herd(&argv!["restart"], None).assert_clean_failure();
    herd(&argv!["restart", dir.path().join("no-such.img")], None).assert_clean_failure();
    herd(&argv!["inspect", dir.path().join("no-such.img")], None).assert_clean_failure();

    let missing = herd(&argv!["checkpoint", "999999999", "--output", img], None);
    missing.assert_clean_failure();
    assert_eq!(missing.stderr.trim().lines().count(), 1, "expected one clear line on stderr: {}", missing.report());
    assert!(missing.stderr.contains("999999999"), "the message should name the pid: {}", missing.report());

    let check = herd(&argv!["checkpoint", "--check", "999999999"], None);
    assert!(!check.status.success(), "--check of a missing process should fail: {}", check.report());
    check.assert_no_panic();
}
