//! `herd run` (`mosrun`): start a command as a migratable process of this node.
//!
//! The command is an ordinary child of `herd run`: same terminal, environment, working
//! directory and user, so it behaves as if started by the shell. Once it runs, herdd is
//! asked to adopt it (from then on the balancer may move it) and, with `--node`, to move
//! it there at once. `herd run` then only waits: it leaves Ctrl-C and Ctrl-\ to the
//! command (the terminal sends them to the whole foreground group), passes on the
//! signals a `kill` of herd run would mean for the command, and ends as the command did.
//! When the command has moved away, its pid here is the stand-in whose exit is the
//! command's exit, so waiting for it is waiting for the command wherever it runs.

use std::ffi::OsString;
use std::io;
use std::process::Command;

use anyhow::Result;
use herd_daemon::control::{Client, ClientError, Request};
use herd_kernel::task::{self, Exit};

use crate::nodes::Target;

/// What `herd run` was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Move the command to this node right after it starts.
    pub node: Option<String>,
    /// Keep it at home: balancing never moves it (`--lock`, `--home`).
    pub lock: bool,
    /// Run it, and what it starts, natively: never migratable (`--native`, `native`).
    pub native: bool,
    /// Checkpoint it (and what it starts) this often while away (`--checkpoint-every`).
    pub checkpoint_every: Option<std::time::Duration>,
    /// The command and its arguments; never empty (clap requires CMD).
    pub command: Vec<OsString>,
}

/// Runs the command; returns its exit code, or dies by the signal that ended it.
///
/// `daemon` is where this node's herdd listens (an error when `--node`/`HERD_NODE` named
/// no node of a local cluster: that is a mistake to report, not a daemon to do without).
pub fn run(daemon: Result<Target>, opts: &RunOptions) -> Result<i32> {
    let name = opts.command[0].to_string_lossy().into_owned();
    let (mut client, mut no_daemon) = match daemon?.connect() {
        Ok(c) => (Some(c), None),
        Err(e) => match &opts.node {
            // Nothing has started: the user asked for a move that cannot happen.
            Some(node) => anyhow::bail!("{}", cannot_move(&name, node, &e)),
            None => (None, Some(e)),
        },
    };

    if opts.native {
        if let Some(c) = client.as_mut() {
            // Before the command starts, so that herdd never takes it into this job.
            if let Err(e) = c.call(&Request::Native { pid: std::process::id() as i32 }) {
                eprintln!("herd run: {name} may be migrated after all: {}", reason(&e));
            }
        }
        client = None;
        no_daemon = None; // without herdd nothing moves: native is what it gets
    }

    let mut command = Command::new(&opts.command[0]);
    command.args(&opts.command[1..]);
    if let Some(dir) = std::env::var_os(CWD_ENV) {
        // `herd --node NAME run` inside a node: the directory it was typed in.
        if !std::path::Path::new(&dir).is_dir() {
            anyhow::bail!(
                "{} is not a directory inside this node (each node has its own /tmp); cd to a directory of this machine's file system; nothing was started",
                std::path::Path::new(&dir).display()
            );
        }
        command.current_dir(dir).env_remove(CWD_ENV);
    }
    let child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herd run: {name}: {}", os_message(&e));
            return Ok(cannot_start_code(&e));
        }
    };
    let pid = child.id() as i32;
    // Only now, not before the spawn: SIG_IGN is inherited across exec, and the command
    // must get Ctrl-C as it would from a shell (or not, if herd run itself was started
    // with it ignored, as `cmd &` in a script is).
    task::ignore_interactive_signals();
    task::forward_signals_to(pid);
    // Reaped below by pid; dropping a std Child neither waits for nor kills it.
    drop(child);
    if let Some(e) = no_daemon {
        // Said once the command runs (a command that cannot start needs no such news).
        eprintln!("{}", without_daemon(&name, &e));
    }

    if let Some(c) = client.as_mut() {
        hand_over(c, pid, &name, opts);
    }
    drop(client); // no connection held open while the command runs

    match task::reap(pid)? {
        Exit::Code(c) => Ok(c),
        Exit::Signal(s) => task::die_by_signal(s),
    }
}

/// The directory `herd --node NAME run` was started in, for the `herd run` it starts
/// inside the node (entering a node's mount namespace starts at its `/`).
const CWD_ENV: &str = "HERD_RUN_CWD";

/// `herd --node NAME run ...`: runs `herd run ...` inside node NAME of the local cluster
/// in `dir` (as `herd cluster exec NAME -- herd run ...`), in this directory, and ends as
/// it does: with its exit status, or by the same signal.
pub fn run_in_node(daemon: &Target, dir: &std::path::Path, name: &str, opts: &RunOptions) -> Result<i32> {
    // The node's herdd must be there to take the command: else nothing starts.
    if let Err(e) = daemon.connect() {
        let cmd = opts.command[0].to_string_lossy();
        match &opts.node {
            Some(to) => anyhow::bail!("{}", cannot_move(&cmd, to, &e)),
            None => anyhow::bail!("node {name}'s herdd does not answer ({e}), so {cmd} was not started there"),
        }
    }
    let me = std::env::current_exe()?;
    let mut argv: Vec<OsString> = vec![me.into_os_string(), "run".into()];
    if let Some(node) = &opts.node {
        argv.extend(["--node".into(), node.into()]);
    }
    if opts.lock {
        argv.push("--lock".into());
    }
    if opts.native {
        argv.push("--native".into());
    }
    argv.push("--".into());
    argv.extend(opts.command.iter().cloned());
    let mut cmd = herd_lab::cluster::node_exec(dir, name, &argv).map_err(|e| anyhow::anyhow!("cannot run in node {name}: {e}; nothing was started"))?;
    if let Ok(cwd) = std::env::current_dir() {
        cmd.env(CWD_ENV, cwd);
    }
    let child = cmd.spawn().map_err(|e| anyhow::anyhow!("cannot run in node {name}: {e}; nothing was started"))?;
    let pid = child.id() as i32;
    // As herd run itself: Ctrl-C and Ctrl-\ reach the command from the terminal; what a
    // `kill` of this process means goes on to it.
    task::ignore_interactive_signals();
    task::forward_signals_to(pid);
    drop(child);
    match task::reap(pid)? {
        Exit::Code(c) => Ok(c),
        Exit::Signal(s) => task::die_by_signal(s),
    }
}

/// Asks herdd to adopt `pid` and, with `--node`, to move it. A refusal leaves the
/// command running here: it is reported, never fatal.
fn hand_over(client: &mut Client, pid: i32, name: &str, opts: &RunOptions) {
    if let Err(e) = client.call(&Request::Adopt { pid, lock: opts.lock, checkpoint_every: opts.checkpoint_every.map(|d| d.as_secs_f64()) }) {
        if !ended(pid) {
            match &opts.node {
                Some(node) => eprintln!("herd run: could not move {name} to {node}: {}; it runs here", reason(&e)),
                None => eprintln!("herd run: herdd did not adopt {name}: {}; it runs without migration", reason(&e)),
            }
        }
        return;
    }
    tracing::info!("herdd adopted {name} (pid {pid}{})", if opts.lock { ", locked at home" } else { "" });
    let Some(node) = &opts.node else { return };
    match client.call(&Request::Migrate { pid, target: node.clone(), mode: None }) {
        Ok(r) => tracing::info!("moved {name} (pid {pid}) to {node}: {r:?}"),
        Err(e) => {
            if !ended(pid) {
                eprintln!("herd run: could not move {name} to {node}: {}; it runs here", reason(&e));
            }
        }
    }
}

/// Whether child `pid` has already ended (a quick command may be gone before herdd
/// looks at it; then its refusal is no news). Leaves the child to be reaped.
fn ended(pid: i32) -> bool {
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()));
    !matches!(state, Some(s) if s != 'Z' && s != 'X')
}

/// Why `herd run --node` starts nothing.
fn cannot_move(name: &str, node: &str, e: &ClientError) -> String {
    match e {
        ClientError::NotRunning(path) | ClientError::Refused(path) => {
            format!("herdd is not running here (no daemon at {}), so {name} cannot move to {node}; nothing was started", path.display())
        }
        other => format!("cannot reach herdd ({other}), so {name} cannot move to {node}; nothing was started"),
    }
}

/// The one warning when this node has no daemon to talk to.
fn without_daemon(name: &str, e: &ClientError) -> String {
    match e {
        ClientError::NotRunning(_) | ClientError::Refused(_) => {
            format!("herd run: herdd is not running here; {name} runs without migration")
        }
        other => format!("herd run: cannot reach herdd ({other}); {name} runs without migration"),
    }
}

/// What the daemon said, without the "herdd: " its errors display with.
pub(crate) fn reason(e: &ClientError) -> String {
    match e {
        ClientError::Daemon(d) => d.message.clone(),
        other => other.to_string(),
    }
}

/// A shell's status for a command it could not start: 127 when there is no such
/// command, 126 when there is one that cannot be executed.
fn cannot_start_code(e: &io::Error) -> i32 {
    if e.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// The system's message for an I/O error, as a shell prints it: "No such file or
/// directory", without Rust's " (os error 2)".
fn os_message(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_daemon::control::{ControlError, ErrorKind};
    use std::path::PathBuf;

    #[test]
    fn shell_like_messages_and_codes() {
        let missing = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(os_message(&missing), "No such file or directory");
        assert_eq!(cannot_start_code(&missing), 127);
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(cannot_start_code(&denied), 126);
        let plain = io::Error::other("odd");
        assert_eq!(os_message(&plain), "odd");
    }

    #[test]
    fn warning_when_no_daemon() {
        let e = ClientError::NotRunning(PathBuf::from("/x.sock"));
        assert_eq!(without_daemon("sleep", &e), "herd run: herdd is not running here; sleep runs without migration");
        let e = ClientError::Access(PathBuf::from("/x.sock"));
        assert!(without_daemon("sleep", &e).starts_with("herd run: cannot reach herdd (not allowed"));
        let e = ClientError::Refused(PathBuf::from("/x.sock"));
        assert_eq!(
            cannot_move("sleep", "n2", &e),
            "herdd is not running here (no daemon at /x.sock), so sleep cannot move to n2; nothing was started"
        );
    }

    #[test]
    fn daemon_reason_drops_prefix() {
        let e = ClientError::Daemon(ControlError { kind: ErrorKind::Refused, message: "n2 is blocked".into() });
        assert_eq!(reason(&e), "n2 is blocked");
    }

    #[test]
    fn a_zombie_has_ended() {
        assert!(!ended(std::process::id() as i32));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let start = std::time::Instant::now();
        while !ended(pid) {
            assert!(start.elapsed().as_secs() < 10, "`true` did not end");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.wait().unwrap();
    }
}
