//! `herd ctl` (`mosctl`): how this node takes part in the cluster; `herd lock` and
//! `herd unlock`: whether the balancer may move one process.

use anyhow::Result;
use herd_daemon::control::{ClientError, CtlDone, CtlOp, ErrorKind, Request, Response};

use crate::nodes::{flags, Target};
use crate::run::reason;

/// The `herd ctl` words, one clap subcommand each (the openMosix `mosctl` ones).
#[derive(clap::Subcommand, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtlWord {
    /// Accept no guests: processes of other nodes are not moved here (running guests stay)
    Block,
    /// Accept guests again
    #[command(name = "noblock")]
    NoBlock,
    /// Send every guest back to its home, and block (no new ones come)
    Expel,
    /// Call every process of this node that runs elsewhere back home, and lstay (they stay)
    Bring,
    /// Processes running here are not moved away for load (they may still be sent home)
    Stay,
    /// Processes running here may be moved away for load again
    #[command(name = "nostay")]
    NoStay,
    /// This node's own processes stay at home (guests may still leave)
    #[command(name = "lstay")]
    LStay,
    /// This node's own processes may move again
    #[command(name = "nolstay")]
    NoLStay,
    /// Take no part in balancing: nothing is moved here or away for load, and this node moves none of its own (still a member)
    Quiet,
    /// Take part in balancing again
    #[command(name = "noquiet")]
    NoQuiet,
    /// Set this node's CPU speed as balancing sees it (10000 = the reference CPU; 0 = measure it again)
    #[command(alias = "setspeed")]
    Speed {
        #[arg(value_name = "N", value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
        speed: u32,
    },
}

impl CtlWord {
    pub fn op(self) -> CtlOp {
        match self {
            CtlWord::Block => CtlOp::Block,
            CtlWord::NoBlock => CtlOp::NoBlock,
            CtlWord::Expel => CtlOp::Expel,
            CtlWord::Bring => CtlOp::Bring,
            CtlWord::Stay => CtlOp::Stay,
            CtlWord::NoStay => CtlOp::NoStay,
            CtlWord::LStay => CtlOp::LStay,
            CtlWord::NoLStay => CtlOp::NoLStay,
            CtlWord::Quiet => CtlOp::Quiet,
            CtlWord::NoQuiet => CtlOp::NoQuiet,
            CtlWord::Speed { speed } => CtlOp::Speed(speed),
        }
    }
}

/// `herd ctl WORD`: one line saying what changed and the node's flags now.
pub fn ctl(target: &Target, word: CtlWord) -> Result<i32> {
    let op = word.op();
    let answer = target.connect().and_then(|mut c| {
        let done = c.call(&Request::Ctl { op })?;
        // The node's name, for the line; "this node" if the daemon will not say.
        let name = match c.call(&Request::Status) {
            Ok(Response::Status(s)) => s.name,
            _ => "this node".into(),
        };
        Ok((done, name))
    });
    match answer {
        Ok((Response::Ctl(done), name)) => {
            println!("{}", ctl_line(&name, op, &done));
            Ok(0)
        }
        Ok((other, _)) => anyhow::bail!("herdd answered the ctl request with something else: {other:?}"),
        Err(e) => {
            eprintln!("herd ctl: {}", failure_line(&e));
            Ok(1)
        }
    }
}

/// `n1: blocked: no process of another node is moved here (flags now: block)`
pub fn ctl_line(node: &str, op: CtlOp, done: &CtlDone) -> String {
    let processes = |n: usize| if n == 1 { "1 process".to_string() } else { format!("{n} processes") };
    let what = match op {
        CtlOp::Block => "blocked: no process of another node is moved here".to_string(),
        CtlOp::NoBlock => "not blocked: processes of other nodes may be moved here again".to_string(),
        CtlOp::Expel => format!("blocked, and sent {} of other nodes home", processes(done.moving)),
        CtlOp::Bring => format!("called {} back home; its processes stay home now (lstay)", processes(done.moving)),
        CtlOp::Stay => "stay: processes running here are not moved away for load".to_string(),
        CtlOp::NoStay => "nostay: processes running here may be moved away for load again".to_string(),
        CtlOp::LStay => "lstay: this node's own processes stay at home".to_string(),
        CtlOp::NoLStay => "nolstay: this node's own processes may move again".to_string(),
        CtlOp::Quiet => "quiet: takes no part in balancing (nothing is moved here or away for load)".to_string(),
        CtlOp::NoQuiet => "noquiet: takes part in balancing again".to_string(),
        CtlOp::Speed(0) => "speed: measured again from now on".to_string(),
        CtlOp::Speed(n) => format!("speed set to {n} (10000 = the reference CPU)"),
    };
    format!("{node}: {what} (flags now: {})", flags(&done.status))
}

/// The daemon's refusal as it said it; for a permission refusal, who may.
fn failure_line(e: &ClientError) -> String {
    match e {
        ClientError::Daemon(d) if d.kind == ErrorKind::PermissionDenied => {
            format!("{} (herd ctl is for root and herdd's own user)", d.message)
        }
        other => reason(other),
    }
}

/// `herd lock [-j] PID` / `herd unlock [-j] PID`: one process, or every process of job PID.
pub fn lock(target: &Target, pid: i32, job: bool, lock: bool) -> Result<i32> {
    let verb = if lock { "lock" } else { "unlock" };
    let pids = if job {
        match crate::ps::job_members(target, pid) {
            Ok(rows) => rows.iter().map(|r| r.pid).collect(),
            Err(e) => {
                eprintln!("herd {verb}: {e}");
                return Ok(1);
            }
        }
    } else {
        vec![pid]
    };
    let mut code = 0;
    for pid in pids {
        match target.connect().and_then(|mut c| c.call(&Request::Lock { pid, lock })) {
            Ok(Response::Done) => println!("{}", lock_line(pid, lock)),
            Ok(other) => anyhow::bail!("herdd answered the {verb} request with something else: {other:?}"),
            Err(e) => {
                eprintln!("herd {verb}: {}", reason(&e));
                code = 1;
            }
        }
    }
    Ok(code)
}

fn lock_line(pid: i32, lock: bool) -> String {
    if lock {
        format!("locked {pid}: the balancer leaves it where it runs (herd migrate still moves it)")
    } else {
        format!("unlocked {pid}: the balancer may move it again")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use herd_daemon::control::{ControlError, NodeStatus};

    #[derive(Parser)]
    struct Ctl {
        #[command(subcommand)]
        word: CtlWord,
    }

    #[test]
    fn every_mosctl_word_is_a_distinct_operation() {
        let names: Vec<String> = Ctl::command().get_subcommands().map(|s| s.get_name().to_string()).collect();
        let mosctl = ["block", "noblock", "expel", "bring", "stay", "nostay", "lstay", "nolstay", "quiet", "noquiet", "speed"];
        assert_eq!(names, mosctl, "the openMosix mosctl words, in order");
        let mut ops = Vec::new();
        for name in &names {
            let mut args = vec!["ctl", name.as_str()];
            args.extend((name == "speed").then_some("1234"));
            let op = Ctl::try_parse_from(&args).unwrap_or_else(|e| panic!("{name}: {e}")).word.op();
            assert!(!ops.contains(&op), "{name} means what another word means: {op:?}");
            ops.push(op);
        }
        assert_eq!(ops.last(), Some(&CtlOp::Speed(1234)));
        let word = Ctl::try_parse_from(["ctl", "setspeed", "0"]).unwrap().word;
        assert_eq!(word.op(), CtlOp::Speed(0));
    }

    #[test]
    fn lines() {
        let done = |blocked, lstay, moving| CtlDone { status: NodeStatus { blocked, lstay, ..Default::default() }, moving };
        assert_eq!(
            ctl_line("n1", CtlOp::Block, &done(true, false, 0)),
            "n1: blocked: no process of another node is moved here (flags now: block)"
        );
        assert_eq!(ctl_line("n1", CtlOp::Expel, &done(true, false, 3)), "n1: blocked, and sent 3 processes of other nodes home (flags now: block)");
        assert_eq!(
            ctl_line("n2", CtlOp::Bring, &done(false, true, 1)),
            "n2: called 1 process back home; its processes stay home now (lstay) (flags now: lstay)"
        );
        assert_eq!(ctl_line("n2", CtlOp::Speed(0), &done(false, false, 0)), "n2: speed: measured again from now on (flags now: -)");
        assert_eq!(lock_line(7, true), "locked 7: the balancer leaves it where it runs (herd migrate still moves it)");
        assert_eq!(lock_line(7, false), "unlocked 7: the balancer may move it again");
    }

    #[test]
    fn permission_refusal_says_who_may() {
        let e = ClientError::Daemon(ControlError { kind: ErrorKind::PermissionDenied, message: "permission denied: only root may change this node".into() });
        assert_eq!(failure_line(&e), "permission denied: only root may change this node (herd ctl is for root and herdd's own user)");
    }
}
