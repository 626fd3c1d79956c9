//! What the multi-node tests share: prerequisites (root, herdd, iproute2, setpriv, a C
//! compiler, a python3 uid 65534 may run) and building the test programs.
#![allow(dead_code)] // each test file uses its own part

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

pub const HERD: &str = env!("CARGO_BIN_EXE_herd");
pub const PROGRAMS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/programs");
/// The tests' processes run as nobody: herdd does not move root's processes by default.
pub const NOBODY: u32 = 65534;

pub fn herdd() -> PathBuf {
    Path::new(HERD).with_file_name("herdd")
}

pub fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}{}", if status.core_dumped() { " (core dumped)" } else { "" }),
        _ => format!("{status:?}"),
    }
}

/// Everything but the programs; Ok(setpriv's path).
pub fn prerequisites() -> Result<PathBuf, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the multi-node tests need root: their processes run as uid 65534 (setpriv), \
                    which a cluster in a user namespace does not map"
            .into());
    }
    if !herdd().exists() {
        return Err(format!("{} is not built (run the tests with --workspace)", herdd().display()));
    }
    if herd_lab::net::ip_command().is_none() {
        return Err("the `ip` command (iproute2) is not installed".into());
    }
    if fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").is_ok_and(|s| s.trim() == "3") {
        return Err("kernel.yama.ptrace_scope is 3: ptrace, which migration needs, is disabled".into());
    }
    let setpriv = find_in_path("setpriv").ok_or("no setpriv (util-linux) to run the programs as uid 65534")?;
    let works = Command::new(&setpriv)
        .args([&format!("--reuid={NOBODY}"), &format!("--regid={NOBODY}"), "--clear-groups", "--", "true"])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        return Err(format!("{} cannot run a program as uid {NOBODY}", setpriv.display()));
    }
    Ok(setpriv)
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")]).map(|d| d.join(name)).find(|p| p.is_file())
}

pub fn c_compiler() -> Option<&'static str> {
    ["gcc", "cc"].into_iter().find(|cc| {
        Command::new(cc)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// tests/programs/<name>.c → <bin>/<name>, mode 0755 (with -fopenmp if it uses OpenMP).
pub fn build_c(cc: &str, bin: &Path, name: &str) {
    let src = Path::new(PROGRAMS).join(format!("{name}.c"));
    let exe = bin.join(name);
    let openmp = fs::read_to_string(&src).is_ok_and(|text| text.contains("#pragma omp"));
    let out = Command::new(cc)
        .args(["-O1", "-Wall", "-o"])
        .arg(&exe)
        .arg(&src)
        .args(openmp.then_some("-fopenmp"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(out.status.success(), "building {}: {}\n{}", src.display(), describe(&out.status), String::from_utf8_lossy(&out.stderr));
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Nobody must be able to run the programs and herd, and read the script: every
/// directory on their paths must let others in.
pub fn nobody_can_run(setpriv: &Path, exes: &[PathBuf], script: &Path) -> Result<(), String> {
    let mut check = String::from("ok=0");
    for e in exes {
        check.push_str(&format!(" && test -x '{}'", e.display()));
    }
    check.push_str(&format!(" && test -r '{}'", script.display()));
    let ok = Command::new(setpriv)
        .args([&format!("--reuid={NOBODY}"), &format!("--regid={NOBODY}"), "--clear-groups", "--", "sh", "-c", &check])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Ok(());
    }
    let modes: Vec<String> = script
        .ancestors()
        .chain(Path::new(HERD).ancestors())
        .filter_map(|d| Some(format!("{:o} {}", fs::metadata(d).ok()?.permissions().mode() & 0o7777, d.display())))
        .collect();
    Err(format!("uid {NOBODY} cannot reach the test programs or herd (the checkout is not open to other users?): {}", modes.join(", ")))
}

/// A python3 that nobody may run: the one on PATH may live under /root (pyenv). The
/// check execs it from a shell that already runs as nobody, as `herd run` will: setpriv's
/// own exec still succeeds where nobody's would not.
pub fn python_for_nobody(setpriv: &Path) -> Option<PathBuf> {
    let on_path = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let candidates = on_path.into_iter().chain(["/usr/bin/python3".into(), "/usr/local/bin/python3".into()]);
    candidates.into_iter().find(|py| {
        py.is_file()
            && Command::new(setpriv)
                .args([&format!("--reuid={NOBODY}"), &format!("--regid={NOBODY}"), "--clear-groups", "--"])
                .args(["sh", "-c", "exec \"$0\" -I -S -c 'import hashlib, os, sys, time'"])
                .arg(py)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    })
}

/// A fresh directory for a test's local cluster, `<prefix>-<pid>` under cargo's target tmp
/// dir, with `bin/` for its programs, both open to every user (the processes under test
/// run as nobody). The programs live in the cluster's directory: every node sees it at the
/// same path (the lab carries it into the nodes even when it lies under /tmp, which each
/// node has its own of), and a moved process needs the very same files on every node.
pub fn cluster_dir(prefix: &str) -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{prefix}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let bin = dir.join("bin");
    for d in [&dir, &bin] {
        fs::create_dir_all(d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    (dir, bin)
}

/// [`prerequisites`], or None after a `SKIP:` line with the reason.
pub fn prerequisites_or_skip() -> Option<PathBuf> {
    prerequisites().map_err(|reason| println!("SKIP: {reason}")).ok()
}
