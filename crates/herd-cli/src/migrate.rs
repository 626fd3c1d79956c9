//! `herd migrate` (`migrate`): move a migratable process of this node.

use anyhow::Result;
use herd_daemon::control::{ClientError, ErrorKind, Migrated, Request, Response, Verb};
use herd_daemon::control::MoveMode;

use crate::nodes::Target;
use crate::run::reason;

/// Asks this node's herdd to move `pid` to `to` (a node, `home` or `balance`), by `mode`
/// (None: herdd chooses), and waits for the move to end. Prints one line either way; the
/// exit code is 0 or 1.
pub fn run(target: &Target, pid: i32, to: &str, mode: Option<MoveMode>) -> Result<i32> {
    let done = std::sync::atomic::AtomicBool::new(false);
    let answer = std::thread::scope(|s| {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            s.spawn(|| progress(target, pid, to, &done));
        }
        let answer = target.connect().and_then(|mut c| c.call(&Request::Migrate { pid, target: to.to_string(), mode }));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        answer
    });
    match answer {
        Ok(Response::Migrated(m)) => {
            println!("{}", moved_line(&m));
            Ok(0)
        }
        Ok(other) => anyhow::bail!("herdd answered the migrate request with something else: {other:?}"),
        Err(e) => {
            eprintln!("herd migrate: {}", failure_line(&e));
            Ok(1)
        }
    }
}

/// `herd migrate PID checkpoint|freeze|continue|chkstop|chkexit`: one line either way.
pub fn act(target: &Target, pid: i32, verb: Verb) -> Result<i32> {
    match target.connect().and_then(|mut c| c.call(&Request::Act { pid, verb })) {
        Ok(Response::Checkpointed(c)) => {
            let then = match verb {
                Verb::Chkstop => ", then frozen",
                Verb::Chkexit => ", then ended",
                _ => "",
            };
            println!(
                "checkpointed process {pid} on {} to {}: {:.1} MiB, stopped for {:.0} ms{then}",
                c.node,
                c.path,
                c.bytes as f64 / (1 << 20) as f64,
                c.frozen_ms
            );
            Ok(0)
        }
        Ok(Response::Done) => {
            println!("process {pid} {}", if verb == Verb::Freeze { "is frozen (herd migrate PID continue lets it run)" } else { "continues" });
            Ok(0)
        }
        Ok(other) => anyhow::bail!("herdd answered with something else: {other:?}"),
        Err(e) => {
            eprintln!("herd migrate: {}", failure_line(&e));
            Ok(1)
        }
    }
}

/// On a terminal, while the move goes on: a bar of the bytes sent (what `herd ps` shows
/// of the move), from herdd's rows, five times a second; gone when the move ends.
fn progress(target: &Target, pid: i32, to: &str, done: &std::sync::atomic::AtomicBool) {
    use indicatif::{ProgressBar, ProgressStyle};
    let tick = std::time::Duration::from_millis(200);
    // A quick move needs no bar.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut bar: Option<ProgressBar> = None;
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let row = match target.call(&Request::Processes) {
            Ok(Response::Processes(rows)) => rows.into_iter().find(|r| r.pid == pid),
            _ => None,
        };
        if let Some(m) = row.and_then(|r| r.moving) {
            let b = bar.get_or_insert_with(|| {
                let b = ProgressBar::new(0);
                b.set_style(
                    ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                        .expect("a valid template")
                        .progress_chars("=> "),
                );
                b
            });
            b.set_length(m.total_bytes.max(m.sent_bytes));
            b.set_position(m.sent_bytes);
            b.set_message(format!("moving {pid} to {to} ({}, {})", m.mode, m.phase));
        }
        std::thread::sleep(tick);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

/// `herd migrate -j JOB TO`: moves every process of job `job` that is not on `to` yet,
/// all at once (each move is its process's own), one line each as they end; the exit code
/// is 1 if any failed.
pub fn job(target: &Target, job: i32, to: &str, mode: Option<MoveMode>) -> Result<i32> {
    let rows = match crate::ps::job_members(target, job) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("herd migrate: {e}");
            return Ok(1);
        }
    };
    // Home is `home` or this node's name (that of any process at home).
    let home_name = rows.iter().find(|r| r.state == "home").map(|r| r.where_.clone());
    let to_home = to == "home" || home_name.as_deref() == Some(to);
    let (stay, go): (Vec<_>, Vec<_>) =
        rows.into_iter().partition(|r| if to_home { r.state == "home" } else { r.state == "remote" && r.where_ == to });
    for r in &stay {
        println!("{} is on {} already", r.pid, r.where_);
    }
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for r in &go {
            let failed = &failed;
            s.spawn(move || {
                let answer = target.connect().and_then(|mut c| c.call(&Request::Migrate { pid: r.pid, target: to.to_string(), mode }));
                match answer {
                    Ok(Response::Migrated(m)) => println!("{}", moved_line(&m)),
                    Ok(other) => {
                        eprintln!("herd migrate: {}: herdd answered with something else: {other:?}", r.pid);
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("herd migrate: {}: {}", r.pid, failure_line(&e));
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    Ok(if failed.into_inner() { 1 } else { 0 })
}

/// `moved 4242 to n2 by post-copy (stopped 4.1 ms, total 63 ms, 12.3 MiB)`
fn moved_line(m: &Migrated) -> String {
    format!(
        "moved {} to {} by {} (stopped {:.1} ms, total {:.0} ms, {:.1} MiB)",
        m.pid,
        m.node,
        m.mode,
        m.frozen_ms,
        m.total_ms,
        m.bytes as f64 / (1u64 << 20) as f64
    )
}

fn failure_line(e: &ClientError) -> String {
    match e {
        // Both leave the process where it was; say so, it is what the user worries about.
        ClientError::Daemon(d) if matches!(d.kind, ErrorKind::Refused | ErrorKind::TargetRefused | ErrorKind::Busy | ErrorKind::Failed) => {
            format!("{}; it runs where it was", d.message)
        }
        other => reason(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_daemon::control::ControlError;

    #[test]
    fn success_line() {
        let m = Migrated { pid: 4242, node: "n2".into(), frozen_ms: 4.12, total_ms: 62.7, bytes: 12_897_485, mode: MoveMode::PostCopy };
        assert_eq!(moved_line(&m), "moved 4242 to n2 by post-copy (stopped 4.1 ms, total 63 ms, 12.3 MiB)");
    }

    #[test]
    fn failure_lines() {
        let daemon = |kind, message: &str| ClientError::Daemon(ControlError { kind, message: message.into() });
        assert_eq!(failure_line(&daemon(ErrorKind::Refused, "n2 is blocked")), "n2 is blocked; it runs where it was");
        assert_eq!(failure_line(&daemon(ErrorKind::Failed, "n2 went away")), "n2 went away; it runs where it was");
        assert_eq!(failure_line(&daemon(ErrorKind::NoSuchProcess, "no migratable process 7")), "no migratable process 7");
        assert_eq!(failure_line(&daemon(ErrorKind::Lost, "the process was lost")), "the process was lost");
        let down = ClientError::NotRunning("/run/herd/herdd.sock".into());
        assert!(failure_line(&down).starts_with("herdd is not running"));
    }
}
