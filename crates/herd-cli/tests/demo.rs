//! `herd demo`, short: a whole run (two jobs of half a second) ends with a summary in
//! which every job's output matched, and leaves no cluster; a run interrupted by SIGINT
//! (Ctrl-C) while its jobs run takes its cluster down and leaves no process behind.
//!
//! Each demo runs in a directory of its own (`--dir`), so the two tests, and other
//! clusters, do not meet. Without root (the jobs run as nobody; the cpusets need root)
//! or without herdd built next to herd: `SKIP` and return.

#[path = "common/wait.rs"]
mod wait;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HERD: &str = env!("CARGO_BIN_EXE_herd");
const TIMEOUT: Duration = Duration::from_secs(120);

fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: herd demo's test needs root (jobs as nobody, cpusets)");
        return false;
    }
    let herdd = Path::new(HERD).with_file_name("herdd");
    if !herdd.is_file() {
        println!("SKIP: no herdd next to herd at {} (cargo build -p herd-daemon)", herdd.display());
        return false;
    }
    true
}

fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("demo").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn demo(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(HERD);
    cmd.arg("demo")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("HERD_NODE")
        .env_remove("HERD_CLUSTER")
        .env_remove("HERD_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for `child` (its pipes read to the end), within TIMEOUT.
fn finish(child: Child) -> Output {
    wait::finish(child, TIMEOUT, libc::SIGINT)
}

/// Processes whose command line names `dir` (the demo's nodes, daemons and jobs do).
fn processes_in(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

fn assert_gone(dir: &Path, log: &str) {
    let status = Command::new(HERD).args(["cluster", "status", "--dir"]).arg(dir.join("cluster")).output().unwrap();
    assert!(!status.status.success(), "a cluster is left: {}\n{log}", String::from_utf8_lossy(&status.stdout));
    assert!(String::from_utf8_lossy(&status.stderr).contains("no cluster"), "{}", String::from_utf8_lossy(&status.stderr));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_in(dir);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left behind:\n{}\n{log}", left.join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_short_demo_checks_its_jobs_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    let dir = scratch();
    let demo_dir = dir.path().join("d");
    let out = finish(demo(&demo_dir, &["--jobs", "2", "--seconds", "0.5"]).spawn().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = format!("stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{log}");
    for says in [
        "== herd cluster up --nodes 2",
        "== 2 jobs on n1: herd run",
        "== the same 2 jobs confined to n1: herd run --lock",
        "== summary",
        "balanced over 2 nodes:",
        "confined to n1:",
        "outputs: every job printed the same result in both runs and exited 0",
        "cluster down",
    ] {
        assert!(stdout.contains(says), "no {says:?} in\n{log}");
    }
    // Not a terminal: progress comes as plain lines, without escape sequences.
    assert!(stdout.lines().any(|l| l.starts_with("[") && l.contains(" done, ")), "{log}");
    assert!(!stdout.contains('\x1b'), "{log}");
    assert_gone(&demo_dir, &log);
    assert!(!demo_dir.exists(), "the demo's directory is left after a clean run: {log}");
}

#[test]
fn ctrl_c_takes_the_cluster_down() {
    if !can_run() {
        return;
    }
    let dir = scratch();
    let demo_dir = dir.path().join("d");
    let mut child = demo(&demo_dir, &["--jobs", "2", "--seconds", "30"]).spawn().unwrap();
    let mut seen = String::new();
    {
        // Until the jobs run and the first progress line is out.
        let mut lines = BufReader::new(child.stdout.as_mut().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut line = String::new();
            if lines.read_line(&mut line).unwrap() == 0 {
                break;
            }
            seen += &line;
            if line.starts_with("[") {
                break;
            }
            assert!(Instant::now() < deadline, "no progress line:\n{seen}");
        }
    }
    assert!(seen.contains("== 2 jobs on n1"), "the jobs never started:\n{seen}");
    // SAFETY: plain integers; the child is ours and still running (not reaped).
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = finish(child);
    let stdout = format!("{seen}{}", String::from_utf8_lossy(&out.stdout));
    let log = format!("stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(130), "{log}");
    assert!(stdout.contains("interrupted (Ctrl-C): taking the cluster down"), "{log}");
    assert!(stdout.contains("cluster down"), "{log}");
    assert_gone(&demo_dir, &log);
}
