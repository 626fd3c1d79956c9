//! `herd run`, `herd migrate`, `herd ps` and their MOSIX names, where no herdd runs.
//!
//! Everything here works without a daemon: every command gets HERD_SOCKET pointing at
//! a socket that does not exist (and no HERD_NODE or HERD_CLUSTER from the caller), so
//! `herd run` runs the command unmigrated and the rest say herdd is not running. Real
//! processes, the real `herd` binary; each test's files live in its own directory under
//! Cargo's target tmpdir. Every process is waited for with a time limit and killed (by
//! pid) if it overstays, so a failing test leaves nothing running.

#[path = "common/wait.rs"]
mod wait;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const HERD: &str = env!("CARGO_BIN_EXE_herd");
const TIMEOUT: Duration = Duration::from_secs(30);
const WARNING: &str = "herdd is not running here";

fn scratch() -> TempDir {
    tempfile::Builder::new().prefix("cli_run").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// `program` (herd, or a link to it) with no daemon reachable.
fn without_daemon(program: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("HERD_SOCKET", dir.join("no-herdd.sock"))
        .env_remove("HERD_NODE")
        .env_remove("HERD_CLUSTER")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn herd(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = without_daemon(Path::new(HERD), dir);
    cmd.args(args);
    cmd
}

/// Kills (by pid) and reaps a child still running when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits for `child` (its pipes read to the end), within TIMEOUT.
fn finish(child: Child) -> Output {
    wait::finish(child, TIMEOUT, libc::SIGKILL)
}

fn output(mut cmd: Command) -> Output {
    finish(cmd.spawn().expect("start herd"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn exit_code_passes_through_with_one_warning() {
    let dir = scratch();
    let out = output(herd(dir.path(), &["run", "--", "sh", "-c", "echo out; exit 3"]));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    let err = stderr(&out);
    assert_eq!(err, "herd run: herdd is not running here; sh runs without migration\n");
}

#[test]
fn dies_by_the_commands_signal() {
    let dir = scratch();
    let out = output(herd(dir.path(), &["run", "--", "sh", "-c", "kill -SEGV $$"]));
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "status {:?}: {}", out.status, stderr(&out));
    assert!(!out.status.core_dumped(), "herd run wrote a core file for the command's crash");
}

#[test]
fn a_command_that_cannot_start_exits_like_a_shell() {
    let dir = scratch();
    let out = output(herd(dir.path(), &["run", "--", "/nonexistent"]));
    assert_eq!(out.status.code(), Some(127));
    let err = stderr(&out);
    assert!(err.contains("herd run: /nonexistent: No such file or directory"), "{err}");
    assert!(!err.contains(WARNING), "warned about herdd for a command that never ran: {err}");

    let script = dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\necho ran\n").unwrap();
    let out = output(herd(dir.path(), &["run", script.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(126));
    assert!(stderr(&out).contains("Permission denied"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

#[test]
fn node_without_daemon_starts_nothing() {
    let dir = scratch();
    let marker = dir.path().join("ran");
    let script = format!("touch '{}'", marker.display());
    let out = output(herd(dir.path(), &["run", "--node", "n2", "--", "sh", "-c", &script]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("herd run: herdd is not running here"), "{err}");
    assert!(err.contains("sh cannot move to n2; nothing was started"), "{err}");
    assert!(!marker.exists(), "herd run --node started the command without a daemon");
}

#[test]
fn mosix_names() {
    let dir = scratch();
    for name in ["mosrun", "mps", "migrate"] {
        std::os::unix::fs::symlink(HERD, dir.path().join(name)).unwrap();
    }
    let mut mosrun = without_daemon(&dir.path().join("mosrun"), dir.path());
    mosrun.args(["--", "sh", "-c", "echo hi"]);
    let out = output(mosrun);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
    assert!(stderr(&out).contains(WARNING), "{}", stderr(&out));

    let mut mps = without_daemon(&dir.path().join("mps"), dir.path());
    mps.arg("--json");
    let out = output(mps);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("herdd is not running"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");

    let mut migrate = without_daemon(&dir.path().join("migrate"), dir.path());
    migrate.args(["4242", "n2"]);
    let out = output(migrate);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("herd migrate: herdd is not running"), "{}", stderr(&out));

    // The alias's help is herd run's.
    let mut help = without_daemon(&dir.path().join("mosrun"), dir.path());
    help.arg("--help");
    let out = output(help);
    assert!(out.status.success());
    assert!(stdout(&out).contains("Usage: herd run"), "{}", stdout(&out));
}

#[test]
fn stdin_passes_through() {
    let dir = scratch();
    let mut cmd = herd(dir.path(), &["run", "--", "cat"]);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap(); // dropped: EOF
    let out = finish(child);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "abc\n");
}

#[test]
fn migrate_checks_its_pid() {
    let dir = scratch();
    let out = output(herd(dir.path(), &["migrate", "0", "n2"]));
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    let out = output(herd(dir.path(), &["ps"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("herdd is not running"), "{}", stderr(&out));
}

/// A local cluster's directory with nodes `names` and no daemon in any.
fn fake_cluster(dir: &Path, names: &[&str]) -> PathBuf {
    let cluster = dir.join("cluster");
    std::fs::create_dir(&cluster).unwrap();
    std::fs::write(cluster.join("cluster.json"), "{}").unwrap();
    for n in names {
        std::fs::create_dir(cluster.join(n)).unwrap();
    }
    cluster
}

#[test]
fn daemon_node_and_target_node_are_apart() {
    let dir = scratch();
    let cluster = fake_cluster(dir.path(), &["n1"]); // no n2: talking to n2 would fail differently
    let n1_socket = herd_lab::node_socket(&cluster, "n1");
    let marker = dir.path().join("ran");
    let script = format!("touch '{}'", marker.display());

    let from_env = {
        let mut cmd = herd(dir.path(), &["run", "--node", "n2", "--", "sh", "-c", &script]);
        cmd.env_remove("HERD_SOCKET").env("HERD_NODE", "n1").env("HERD_CLUSTER", &cluster);
        cmd
    };
    let from_flag = {
        let mut cmd = herd(dir.path(), &["--node", "n1", "run", "--node", "n2", "--", "sh", "-c", &script]);
        cmd.env_remove("HERD_SOCKET").env("HERD_CLUSTER", &cluster);
        cmd
    };
    for cmd in [from_env, from_flag] {
        let out = output(cmd);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(err.contains(&n1_socket.display().to_string()), "not n1's daemon: {err}");
        assert!(err.contains("sh cannot move to n2"), "{err}");
        assert!(!marker.exists());
    }
}

/// Whether signal `sig` is in the `field` mask (SigIgn, SigCgt...) of /proc/PID/status.
fn signal_set(pid: i32, field: &str, sig: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    mask & (1 << (sig - 1)) != 0
}

/// Waits for the first line the command writes (it has started).
fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    line
}

#[test]
fn interrupt_is_the_commands_and_terminate_is_passed_on() {
    let dir = scratch();
    let mut cmd = herd(dir.path(), &["run", "--", "sh", "-c", "echo ready; exec sleep 60"]);
    let mut guard = Guard(cmd.spawn().unwrap());
    assert_eq!(first_line(&mut guard.0), "ready\n");
    let pid = guard.0.id() as i32;
    // herd run sets its signals up just after the command starts: wait for that.
    let start = Instant::now();
    while !(signal_set(pid, "SigIgn", libc::SIGINT) && signal_set(pid, "SigCgt", libc::SIGTERM)) {
        assert!(start.elapsed() < TIMEOUT, "herd run never ignored SIGINT and caught SIGTERM");
        std::thread::sleep(Duration::from_millis(5));
    }

    // Ctrl-C reaches the whole foreground group; herd run alone must outlive it.
    // SAFETY: kill takes plain integers; `pid` is our unreaped child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(300));
    assert!(guard.0.try_wait().unwrap().is_none(), "herd run ended on SIGINT sent to it alone");

    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < TIMEOUT, "SIGTERM did not reach the command");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}
