//! `herd ctl` (`mosctl`), `herd lock` and `herd unlock`: argument errors without a
//! daemon, then against one real herdd (alone, on loopback, its own key and socket in a
//! scratch directory): the flags it reports in `herd nodes --json`, a refused non-root
//! user, and a process started with `herd run` locked and unlocked in `herd ps --json`.
//!
//! herdd is the one built next to herd (`cargo build -p herd-daemon`; `cargo test
//! --workspace` builds it). Without it the daemon tests print `SKIP` and return; so does
//! the non-root test when not run as root (it needs setpriv to become uid 65534). Every
//! process is waited for with a time limit and killed (by pid) if it overstays.

#[path = "common/wait.rs"]
mod wait;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

const HERD: &str = env!("CARGO_BIN_EXE_herd");
const TIMEOUT: Duration = Duration::from_secs(30);

fn scratch() -> TempDir {
    let dir = tempfile::Builder::new().prefix("cli_ctl").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // uid 65534 must reach the socket in it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `herd ARGS` against the daemon at `socket` (nothing from the caller's environment).
fn herd_at(socket: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(HERD);
    cmd.args(args)
        .env("HERD_SOCKET", socket)
        .env_remove("HERD_NODE")
        .env_remove("HERD_CLUSTER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for `child` (its pipes read to the end), within TIMEOUT.
fn finish(child: Child) -> Output {
    wait::finish(child, TIMEOUT, libc::SIGKILL)
}

fn output(mut cmd: Command) -> Output {
    finish(cmd.spawn().expect("start herd"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `herd ARGS` and expects exit 0; its stdout.
fn ok(socket: &Path, args: &[&str]) -> String {
    let out = output(herd_at(socket, args));
    assert!(out.status.success(), "herd {args:?}: {:?}\nstdout: {}\nstderr: {}", out.status, text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn json(socket: &Path, args: &[&str]) -> Value {
    let out = ok(socket, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("herd {args:?} --json: {e}: {out}"))
}

// ---------------------------------------------------------------------------
// Without a daemon
// ---------------------------------------------------------------------------

#[test]
fn unknown_words_and_bad_values_are_usage_errors() {
    let dir = scratch();
    let socket = dir.path().join("no-herdd.sock");
    let cases: &[(&[&str], &str)] = &[
        (&["ctl", "frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (&["ctl", "speed", "abc"], "invalid value 'abc'"),
        (&["ctl", "speed"], "<N>"),
        (&["ctl", "speed", "-3"], "-3"),
        (&["ctl", "speed", "99999999"], "99999999"),
        (&["ctl", "block", "now"], "'now'"),
        (&["lock", "abc"], "invalid value 'abc'"),
        (&["unlock", "0"], "invalid value '0'"),
        (&["lock"], "<PID>"),
    ];
    for (args, says) in cases {
        let out = output(herd_at(&socket, args));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "herd {args:?}: {err}");
        assert!(err.contains(says), "herd {args:?} does not say {says:?}: {err}");
        assert_eq!(text(&out.stdout), "", "herd {args:?}");
    }
    // The usage lists every word.
    let err = text(&output(herd_at(&socket, &["ctl", "frobnicate"])).stderr);
    assert!(err.contains("block|noblock|expel|bring|stay|nostay|lstay|nolstay|quiet|noquiet"), "{err}");
    assert!(err.contains("herd ctl speed N"), "{err}");
}

#[test]
fn without_a_daemon_it_says_so() {
    let dir = scratch();
    let socket = dir.path().join("no-herdd.sock");
    for args in [&["ctl", "block"][..], &["lock", "4242"], &["unlock", "4242"]] {
        let out = output(herd_at(&socket, args));
        assert_eq!(out.status.code(), Some(1), "herd {args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("herdd is not running"), "herd {args:?}: {err}");
    }
    // mosctl is herd ctl.
    let mosctl = dir.path().join("mosctl");
    std::os::unix::fs::symlink(HERD, &mosctl).unwrap();
    let mut cmd = Command::new(&mosctl);
    cmd.arg("quiet").env("HERD_SOCKET", &socket).env_remove("HERD_NODE").stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = output(cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("herd ctl: herdd is not running"), "{}", text(&out.stderr));
    let out = finish(Command::new(&mosctl).arg("--help").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    assert!(text(&out.stdout).contains("Usage: herd ctl"), "{}", text(&out.stdout));
}

// ---------------------------------------------------------------------------
// Against a real herdd
// ---------------------------------------------------------------------------

/// herdd, killed and reaped when dropped.
struct Daemon {
    child: Child,
    dir: TempDir,
    socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("herdd.log")).unwrap_or_default()
    }

    /// This node's row of `herd nodes --json`, once `cond` holds (herdd publishes a
    /// change through its gossip loop: not at once).
    fn self_row_when(&self, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows = json(&self.socket, &["nodes", "--json"]);
            let me = rows.as_array().and_then(|a| a.iter().find(|r| r["is_self"] == true)).cloned().expect("no is_self row");
            if cond(&me) {
                return me;
            }
            assert!(Instant::now() < deadline, "{what}: herd nodes --json shows {me}\nherdd's log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Starts herdd (built next to herd) on loopback, or None (SKIP) without one.
fn start_daemon() -> Option<Daemon> {
    let herdd = Path::new(HERD).with_file_name("herdd");
    if !herdd.is_file() {
        println!("SKIP: no herdd next to herd at {} (cargo build -p herd-daemon)", herdd.display());
        return None;
    }
    let dir = scratch();
    let key = dir.path().join("cluster.key");
    let out = output(herd_at(&dir.path().join("none"), &["keygen", "--output", key.to_str().unwrap()]));
    assert!(out.status.success(), "herd keygen: {}", text(&out.stderr));
    let socket = dir.path().join("herdd.sock");
    let config = format!(
        "name = \"solo\"\nkey_file = \"{}\"\nlisten = \"127.0.0.1:0\"\ndiscovery = false\ncontrol_socket = \"{}\"\nhttp = \"off\"\nhpc = \"off\"\nspeed = 10000\n",
        key.display(),
        socket.display()
    );
    std::fs::write(dir.path().join("herd.toml"), config).unwrap();
    let log = std::fs::File::create(dir.path().join("herdd.log")).unwrap();
    let mut cmd = Command::new(&herdd);
    cmd.arg("--config").arg(dir.path().join("herd.toml")).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
    // Whatever started the tests may leak fds; herdd must not inherit them.
    // SAFETY: close_range is async-signal-safe and touches only this child's fds.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let d = Daemon { child: cmd.spawn().unwrap(), dir, socket };
    let deadline = Instant::now() + TIMEOUT;
    while std::os::unix::net::UnixStream::connect(&d.socket).is_err() {
        assert!(Instant::now() < deadline, "herdd did not start:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(d)
}

#[test]
fn ctl_words_change_the_flags_herd_nodes_shows() {
    let Some(d) = start_daemon() else { return };
    let s = &d.socket;
    let me = d.self_row_when("at start", |_| true);
    assert_eq!(me["status"], serde_json::json!({"blocked": false, "quiet": false, "stay": false, "lstay": false}), "{me}");

    assert_eq!(ok(s, &["ctl", "block"]), "solo: blocked: no process of another node is moved here (flags now: block)\n");
    d.self_row_when("block", |r| r["status"]["blocked"] == true);
    let table = ok(s, &["nodes"]);
    assert!(table.lines().next().unwrap().ends_with("FLAGS"), "{table}");
    assert!(table.lines().nth(1).unwrap().ends_with(" block"), "{table}");

    assert_eq!(ok(s, &["ctl", "quiet"]), "solo: quiet: takes no part in balancing (nothing is moved here or away for load) (flags now: block,quiet)\n");
    d.self_row_when("quiet", |r| r["status"]["quiet"] == true && r["status"]["blocked"] == true);
    assert!(ok(s, &["ctl", "noquiet"]).ends_with("(flags now: block)\n"));
    d.self_row_when("noquiet", |r| r["status"]["quiet"] == false);
    assert!(ok(s, &["ctl", "noblock"]).ends_with("(flags now: -)\n"));
    d.self_row_when("noblock", |r| r["status"]["blocked"] == false);

    assert!(ok(s, &["ctl", "stay"]).ends_with("(flags now: stay)\n"));
    assert!(ok(s, &["ctl", "lstay"]).ends_with("(flags now: stay,lstay)\n"));
    d.self_row_when("stay, lstay", |r| r["status"]["stay"] == true && r["status"]["lstay"] == true);
    assert!(ok(s, &["ctl", "nostay"]).ends_with("(flags now: lstay)\n"));
    assert!(ok(s, &["ctl", "nolstay"]).ends_with("(flags now: -)\n"));

    // No guests and no process away: nothing to send home.
    assert_eq!(ok(s, &["ctl", "expel"]), "solo: blocked, and sent 0 processes of other nodes home (flags now: block)\n");
    assert_eq!(
        ok(s, &["ctl", "bring"]),
        "solo: called 0 processes back home; its processes stay home now (lstay) (flags now: block,lstay)\n"
    );
    d.self_row_when("expel, bring", |r| r["status"]["blocked"] == true && r["status"]["lstay"] == true);

    assert_eq!(ok(s, &["ctl", "speed", "12345"]), "solo: speed set to 12345 (10000 = the reference CPU) (flags now: block,lstay)\n");
    d.self_row_when("speed 12345", |r| r["speed"] == 12345);
}

#[test]
fn other_users_are_refused() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: needs root to run herd ctl as uid 65534");
        return;
    }
    let Some(setpriv) = ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().find(|p| Path::new(p).exists()) else {
        println!("SKIP: no setpriv (util-linux)");
        return;
    };
    let Some(d) = start_daemon() else { return };
    for args in [&["ctl", "block"][..], &["ctl", "speed", "5000"]] {
        let mut cmd = Command::new(setpriv);
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", HERD])
            .args(args)
            .env("HERD_SOCKET", &d.socket)
            .env_remove("HERD_NODE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = output(cmd);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "herd {args:?} as nobody: {err}");
        assert!(err.starts_with("herd ctl: permission denied"), "{err}");
        assert!(err.contains("root"), "{err}");
        assert_eq!(text(&out.stdout), "");
    }
    let me = d.self_row_when("after refusals", |_| true);
    assert_eq!(me["status"]["blocked"], false, "a refused herd ctl changed the node: {me}");
    assert_ne!(me["speed"], 5000, "a refused herd ctl changed the speed: {me}");
}

/// `herd run` of a shell that prints its pid and becomes `sleep 60`; killed when dropped.
struct Running {
    child: Child,
    pid: i32,
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // herd run passes SIGTERM on to the command; then it ends too.
            let _ = Command::new("kill").arg(self.child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: plain integers; `pid` is the command herd run started for this
            // test, and herd run (our child, not reaped yet) is still its parent or gone.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn lock_and_unlock_show_in_herd_ps() {
    let Some(d) = start_daemon() else { return };
    let s = &d.socket;
    let mut cmd = herd_at(s, &["run", "--", "sh", "-c", "echo $$; exec sleep 60"]);
    cmd.stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let pid: i32 = line.trim().parse().unwrap_or_else(|_| panic!("no pid from the command: {line:?}"));
    let running = Running { child, pid };

    let row = |want: &str, cond: &dyn Fn(&Value) -> bool| -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows = json(s, &["ps", "--json"]);
            if let Some(r) = rows.as_array().and_then(|a| a.iter().find(|r| r["pid"] == pid)) {
                if cond(r) {
                    return r.clone();
                }
            }
            assert!(Instant::now() < deadline, "{want}: herd ps --json shows {rows}\nherdd's log:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let r = row("adopted", &|_| true);
    assert_eq!(r["lock"], false, "{r}");
    for key in ["demand", "io_rate"] {
        assert!(r[key].as_f64().is_some_and(|v| v >= 0.0), "no {key} in {r}");
    }

    assert_eq!(ok(s, &["lock", &pid.to_string()]), format!("locked {pid}: the balancer leaves it where it runs (herd migrate still moves it)\n"));
    row("locked", &|r| r["lock"] == true);
    let table = ok(s, &["ps"]);
    assert!(table.lines().next().unwrap().contains("DEMAND  IO/s"), "{table}");
    assert!(table.contains(&format!("    why not: locked, the balancer leaves it (herd unlock {pid})")), "{table}");

    assert_eq!(ok(s, &["unlock", &pid.to_string()]), format!("unlocked {pid}: the balancer may move it again\n"));
    row("unlocked", &|r| r["lock"] == false);
    assert!(!ok(s, &["ps"]).contains("locked, the balancer"));

    // A pid that is not a migratable process of this node.
    let out = output(herd_at(s, &["lock", "999999"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("herd lock: process 999999 is not a migratable process"), "{}", text(&out.stderr));
    drop(running);
}
