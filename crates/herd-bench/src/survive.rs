//! `herd-bench survive`: what surviving a node's death costs and how well it works, on
//! the two-node local cluster of `herd-bench migrate` (the same program under test,
//! started in n1 as uid 65534 under `herd run --checkpoint-every`, running on n2):
//!
//! 1. the cost of periodic checkpoints: the same CPU-bound work on n2 without
//!    checkpoints and with one every `--every` seconds (asked by the bench through the
//!    control socket, `herd migrate PID checkpoint`, so that each one's stop and size are
//!    read), interleaved;
//! 2. the time from a fault to the process running again: n2's herdd killed (SIGKILL:
//!    its guests die with it, the stream breaks) and n2's herdd stopped (SIGSTOP: only
//!    membership sees it); "running again" is the process answering a ping;
//! 3. a chaos run: rounds of moves n1 → n2 → home with a fault injected at a random
//!    point in some (n2's herdd killed during the move there, while the process runs
//!    there, or during the move home, whose source it is; stopped for 3 s; with a herdd
//!    built with failpoints, a failpoint at a random step of either move), then a check
//!    of the process: it answers, its memory is what it wrote, no copy of it is left on
//!    n2, no answer came twice or went missing.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use herd_daemon::control::{Client, Request, Response, Verb};

use crate::migrate::{field, fmt, med, print_table, row, spread, Lab, Target};

pub struct Config {
    pub mib: u64,
    pub every: f64,
    pub cpu_secs: f64,
    /// MB/s of its memory the process rewrites during its CPU work (part 1).
    pub dirty: u64,
    pub reps: usize,
    pub rounds: usize,
    pub seed: u64,
    /// Part 3 alone.
    pub chaos_only: bool,
    /// The nodes share the machine's CPUs instead of one each.
    pub shared_cpus: bool,
    pub keep: bool,
}

pub fn run(cfg: Config) -> Result<bool> {
    let lab = Lab::up_with(cfg.keep, !cfg.shared_cpus)?;
    lab.print_header("herd-bench survive");
    println!(
        "process under test: {} MiB of pseudo-random words, started in n1 as uid 65534 under `herd run --checkpoint-every`, run on n2",
        cfg.mib
    );
    let mut failures = Vec::new();
    if !cfg.chaos_only {
        if let Err(e) = cost(&lab, &cfg) {
            failures.push(format!("part 1: {e:#}"));
        }
        if let Err(e) = recovery(&lab, &cfg) {
            failures.push(format!("part 2: {e:#}"));
        }
    }
    if cfg.rounds > 0 {
        if let Err(e) = chaos(&lab, &cfg) {
            failures.push(format!("part 3: {e:#}"));
        }
    }
    if !failures.is_empty() {
        println!();
        println!("FAILED ({}):", failures.len());
        for f in &failures {
            println!("  {f}");
        }
        eprintln!("{}", lab.logs());
    }
    let ok = failures.is_empty();
    lab.finish(ok)?;
    Ok(ok)
}

fn call(lab: &Lab, request: &Request) -> Result<Response> {
    Ok(Client::connect(&lab.cluster.node_socket("n1")).and_then(|mut c| c.call(request))?)
}

fn row_of(lab: &Lab, pid: i32) -> Result<Option<herd_daemon::control::ProcessRow>> {
    match call(lab, &Request::Processes)? {
        Response::Processes(rows) => Ok(rows.into_iter().find(|r| r.pid == pid)),
        other => bail!("herd ps answered {other:?}"),
    }
}

/// Until the row of `pid` satisfies `cond`, within `limit`.
fn wait_row(lab: &Lab, pid: i32, what: &str, limit: Duration, cond: impl Fn(&herd_daemon::control::ProcessRow) -> bool) -> Result<()> {
    let start = Instant::now();
    loop {
        if row_of(lab, pid)?.is_some_and(|r| cond(&r)) {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("process {pid}: not {what} within {limit:?}: {:?}", row_of(lab, pid)?);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Seconds per round of the program's `cpu` work, measured on n2.
fn cpu_rate(t: &mut Target) -> Result<f64> {
    let rounds = 50_000_000u64;
    let line = t.p.ask(&format!("cpu {rounds}"), "cpu")?;
    Ok(field(&line, "secs")? / rounds as f64)
}

fn herdd_of(lab: &Lab, node: &str) -> Result<i32> {
    let nodes = lab.cluster.status()?;
    nodes.iter().find(|n| n.name == node).and_then(|n| n.pid).with_context(|| format!("{node}'s herdd does not run"))
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) -> Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).with_context(|| format!("{sig} to {pid}"))
}

/// n2's herdd again after it was killed (`killed`: its pid), and both nodes up.
fn restart_n2(lab: &Lab, killed: i32) -> Result<()> {
    // Its node-init reaps it first; until then the node says it runs.
    let start = Instant::now();
    while herdd_of(lab, "n2").is_ok_and(|p| p == killed) {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("n2's killed herdd (pid {killed}) is still listed after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.cluster.start_node("n2")?;
    lab.wait_all_up()
}

// ---------------------------------------------------------------------------
// 1. Cost
// ---------------------------------------------------------------------------

fn cost(lab: &Lab, cfg: &Config) -> Result<()> {
    eprintln!("herd-bench: part 1, the cost of a checkpoint every {} s", cfg.every);
    let mut t = Target::start_run(lab, cfg.mib, 1, &["--checkpoint-every", "1h"])?;
    t.migrate(lab, "n2", "n2")?;
    let per_round = cpu_rate(&mut t)?;
    let rounds = (cfg.cpu_secs / per_round) as u64;
    let (mut without, mut with, mut frozen, mut bytes, mut taken) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0usize);
    for rep in 0..cfg.reps {
        eprintln!("herd-bench:   rep {}/{}", rep + 1, cfg.reps);
        let work = if cfg.dirty > 0 { format!("cpu {rounds} {}", cfg.dirty) } else { format!("cpu {rounds}") };
        let line = t.p.ask(&work, "cpu")?;
        without.push(field(&line, "secs")?);
        // The same work while the bench asks for a checkpoint every `every` seconds.
        t.p.send(&work)?;
        let start = Instant::now();
        let mut next = cfg.every;
        let line = loop {
            match t.p.line(Duration::from_millis(50)) {
                Ok(l) => break l,
                Err(_) if t.p.exited().is_some() => bail!("{} ended; {}", t.p.what, t.p.stderr_tail()),
                Err(_) => {}
            }
            if start.elapsed().as_secs_f64() >= next {
                next += cfg.every;
                match call(lab, &Request::Act { pid: t.pid, verb: Verb::Checkpoint })? {
                    Response::Checkpointed(c) => {
                        frozen.push(c.frozen_ms);
                        bytes.push(c.bytes as f64);
                        taken += 1;
                    }
                    other => bail!("checkpoint: {other:?}"),
                }
            }
        };
        if !line.starts_with("cpu") {
            bail!("expected the cpu answer, got {line:?}");
        }
        with.push(field(&line, "secs")?);
    }
    let check = t.p.ask("check", "checked")?;
    if field(&check, "bad")? != 0.0 {
        bail!("its memory changed: {check}");
    }
    t.quit()?;
    let slow: Vec<f64> = with.iter().zip(&without).map(|(w, o)| (w / o - 1.0) * 100.0).collect();
    println!();
    let dirtying = if cfg.dirty > 0 { format!(", rewriting {} MB/s of its memory", cfg.dirty) } else { String::new() };
    println!("1. Periodic checkpoints: {} MiB on n2, a checkpoint every {} s, {} reps of {:.1} s of CPU work{dirtying} (interleaved)", cfg.mib, cfg.every, cfg.reps, cfg.cpu_secs);
    let mut rows = vec![row(&["", "median", "spread"])];
    rows.push(vec!["work without checkpoints, s".into(), fmt(med(without.iter().copied()), 2), spread(without.iter().copied(), 2)]);
    rows.push(vec!["work with checkpoints, s".into(), fmt(med(with.iter().copied()), 2), spread(with.iter().copied(), 2)]);
    rows.push(vec!["slowdown, % (goal <= 2)".into(), fmt(med(slow.iter().copied()), 1), spread(slow.iter().copied(), 1)]);
    rows.push(vec![format!("stopped per checkpoint, ms ({taken} checkpoints)"), fmt(med(frozen.iter().copied()), 0), spread(frozen.iter().copied(), 0)]);
    let mib: Vec<f64> = bytes.iter().map(|b| b / (1 << 20) as f64).collect();
    rows.push(vec!["bytes per checkpoint, MiB".into(), fmt(med(mib.iter().copied()), 1), spread(mib.iter().copied(), 1)]);
    print_table(&rows, 1);
    Ok(())
}

// ---------------------------------------------------------------------------
// 2. Recovery time
// ---------------------------------------------------------------------------

/// One fault on n2 while the process runs there; seconds until it answers again.
fn fault_to_running(lab: &Lab, cfg: &Config, stop: bool) -> Result<(f64, f64)> {
    let mut t = Target::start_run(lab, cfg.mib.min(256), 1, &["--checkpoint-every", "1s"])?;
    t.migrate(lab, "n2", "n2")?;
    wait_row(lab, t.pid, "checkpointed", Duration::from_secs(30), |r| r.checkpoint_unix > 0)?;
    t.p.ask("ping", "pong")?;
    let herdd = herdd_of(lab, "n2")?;
    let sig = if stop { nix::sys::signal::Signal::SIGSTOP } else { nix::sys::signal::Signal::SIGKILL };
    signal(herdd, sig)?;
    let t0 = Instant::now();
    wait_row(lab, t.pid, "resumed", Duration::from_secs(30), |r| r.resumed >= 1)?;
    let resumed = t0.elapsed().as_secs_f64();
    t.p.ask("ping", "pong")?;
    let answered = t0.elapsed().as_secs_f64();
    if stop {
        signal(herdd, nix::sys::signal::Signal::SIGCONT)?;
    }
    let check = t.p.ask("check", "checked")?;
    if field(&check, "bad")? != 0.0 {
        bail!("its memory changed: {check}");
    }
    t.quit()?;
    if stop {
        lab.wait_all_up()?;
    } else {
        restart_n2(lab, herdd)?;
    }
    Ok((resumed, answered))
}

fn recovery(lab: &Lab, cfg: &Config) -> Result<()> {
    eprintln!("herd-bench: part 2, from a fault on n2 to the process running again");
    let mut rows = vec![row(&["fault on n2", "resumed, s", "spread", "answers, s", "spread"])];
    for (stop, name) in [(false, "herdd killed (SIGKILL)"), (true, "herdd stopped (SIGSTOP)")] {
        let (mut resumed, mut answered) = (Vec::new(), Vec::new());
        for _ in 0..cfg.reps {
            let (r, a) = fault_to_running(lab, cfg, stop)?;
            resumed.push(r);
            answered.push(a);
        }
        rows.push(vec![
            name.into(),
            fmt(med(resumed.iter().copied()), 2),
            spread(resumed.iter().copied(), 2),
            fmt(med(answered.iter().copied()), 2),
            spread(answered.iter().copied(), 2),
        ]);
    }
    println!();
    println!("2. From a fault to the process running again ({} MiB, a checkpoint every second, {} reps; goal: within 5 s)", cfg.mib.min(256), cfg.reps);
    print_table(&rows, 1);
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. Chaos
// ---------------------------------------------------------------------------

/// xorshift: the faults of a run depend on `--seed` only.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Tally {
    moves: usize,
    failpoints: usize,
    /// Moves with a failpoint set on their path that succeeded: the point was not met.
    unmet: usize,
    completed: usize,
    aborted: usize,
    faults: usize,
    resumed: u32,
    lost: usize,
    twice: usize,
    bad_memory: usize,
    answers_wrong: usize,
}

fn copies_on_n2(lab: &Lab) -> usize {
    let Ok(st) = herd_lab::status(lab.work_dir()) else { return 0 };
    let Some(init) = st.nodes.iter().find(|n| n.name == "n2").map(|n| n.init_pid) else { return 0 };
    let Ok(ns) = std::fs::read_link(format!("/proc/{init}/ns/pid")) else { return 0 };
    let target = lab.target.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|s| s.parse::<i32>().is_ok()))
        .filter(|e| std::fs::read_link(e.path().join("ns/pid")).ok().as_ref() == Some(&ns))
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).starts_with(&target)))
        .count()
}

/// Failpoints a move n1 -> n2 meets (the node whose herdd fails there, the point), and a
/// move home from n2 (`herd_migrate::failpoint`).
const AWAY_POINTS: [(&str, &str); 5] = [("n1", "out-connected"), ("n1", "out-image"), ("n1", "out-commit"), ("n2", "arrive-restore"), ("n2", "arrive-restored")];
const BACK_POINTS: [(&str, &str); 3] = [("n2", "away-capture"), ("n2", "away-image"), ("n1", "home-restore")];

/// Sets failpoint `name` of `node`'s herdd to `actions`.
fn failpoint(lab: &Lab, node: &str, name: &str, actions: &str) -> Result<()> {
    let request = Request::Failpoint { name: name.into(), actions: actions.into() };
    Client::connect(&lab.cluster.node_socket(node)).and_then(|mut c| c.call(&request)).with_context(|| format!("failpoint {name} of {node}"))?;
    Ok(())
}

/// A move of `t` to `target` with failpoint `at` set (an image point a few messages in);
/// whether it succeeded anyway (it must not: the point is on its path).
fn faulted_move(lab: &Lab, t: &Target, rng: &mut Rng, tally: &mut Tally, at: (&str, &str), target: &str, node: &str) -> Result<bool> {
    let (where_, point) = at;
    let actions = if point.ends_with("-image") { format!("{}*off->return", rng.below(6)) } else { "return".to_string() };
    failpoint(lab, where_, point, &actions)?;
    let moved = t.migrate(lab, target, node);
    failpoint(lab, where_, point, "off")?;
    tally.faults += 1;
    tally.failpoints += 1;
    match moved {
        Ok(_) => {
            // Its point was not met (an image shorter than the messages let pass).
            eprintln!("herd-bench:   the move to {target} succeeded despite failpoint {point} ({actions}) of {where_}");
            tally.completed += 1;
            tally.unmet += 1;
            Ok(true)
        }
        Err(_) => {
            tally.aborted += 1;
            Ok(false)
        }
    }
}

fn chaos(lab: &Lab, cfg: &Config) -> Result<()> {
    eprintln!("herd-bench: part 3, {} chaos rounds", cfg.rounds);
    // splitmix64 of the seed: small seeds give well-mixed faults from the first round.
    let mut z = cfg.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let mut rng = Rng((z ^ (z >> 31)).max(1));
    let mut tally = Tally::default();
    let mib = cfg.mib.min(64);
    lab.wait_all_up()?;
    let mut t = Target::start_run(lab, mib, 1, &["--checkpoint-every", "1s"])?;
    let mut pings = 0u64;
    // Faults at the steps of a move, where herdd has its failpoints (`--features failpoints`).
    let failpoints = match failpoint(lab, "n1", "out-commit", "off") {
        Ok(()) => true,
        Err(e) => {
            eprintln!("herd-bench:   no failpoint faults: {e:#}");
            false
        }
    };
    for round in 0..cfg.rounds {
        // 0 none, 1 kill during the move, 2 kill while there, 3 stop 3 s, 4 kill (the
        // source) during the move home, 5 a failpoint of the move there, 6 a failpoint of
        // the move home.
        let fault = rng.below(if failpoints { 7 } else { 5 });
        eprintln!("herd-bench:   round {}/{} fault {fault}", round + 1, cfg.rounds);
        let herdd = herdd_of(lab, "n2")?;
        tally.moves += 1;
        if fault == 1 {
            let delay = Duration::from_millis(rng.below(40));
            let killer = std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = signal(herdd, nix::sys::signal::Signal::SIGKILL);
            });
            let moved = t.migrate(lab, "n2", "n2");
            let _ = killer.join();
            tally.faults += 1;
            match moved {
                Ok(_) => tally.completed += 1,
                Err(_) => tally.aborted += 1,
            }
            restart_n2(lab, herdd)?;
        } else if fault == 5 {
            let (node, point) = AWAY_POINTS[rng.below(AWAY_POINTS.len() as u64) as usize];
            if faulted_move(lab, &t, &mut rng, &mut tally, (node, point), "n2", "n2")? {
                // A move with a fault that succeeds anyway: home again for the next round.
                t.migrate(lab, "home", "n1").context("home after a move that ignored its fault")?;
            }
        } else {
            match t.migrate(lab, "n2", "n2") {
                Ok(_) => tally.completed += 1,
                Err(e) => {
                    eprintln!("herd-bench:   move failed: {e:#}");
                    tally.aborted += 1;
                }
            }
            if fault == 4 && row_of(lab, t.pid)?.is_some_and(|r| r.where_ == "n2") {
                // n2's herdd, the move's source, killed 0-40 ms into the move home: before
                // the commit the process is lost there and resumed from its checkpoint,
                // after it the process is home.
                wait_row(lab, t.pid, "checkpointed", Duration::from_secs(30), |r| r.checkpoint_unix > 0)?;
                let herdd = herdd_of(lab, "n2")?;
                let delay = Duration::from_millis(rng.below(40));
                let killer = std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = signal(herdd, nix::sys::signal::Signal::SIGKILL);
                });
                tally.moves += 1;
                tally.faults += 1;
                match t.migrate(lab, "home", "n1") {
                    Ok(_) => tally.completed += 1,
                    Err(_) => tally.aborted += 1,
                }
                let _ = killer.join();
                restart_n2(lab, herdd)?;
            }
            if fault == 6 && row_of(lab, t.pid)?.is_some_and(|r| r.where_ == "n2") {
                let (node, point) = BACK_POINTS[rng.below(BACK_POINTS.len() as u64) as usize];
                tally.moves += 1;
                faulted_move(lab, &t, &mut rng, &mut tally, (node, point), "home", "n1")?;
            }
            if (fault == 2 || fault == 3) && row_of(lab, t.pid)?.is_some_and(|r| r.where_ == "n2") {
                wait_row(lab, t.pid, "checkpointed", Duration::from_secs(30), |r| r.checkpoint_unix > 0)?;
                tally.faults += 1;
                if fault == 2 {
                    signal(herdd, nix::sys::signal::Signal::SIGKILL)?;
                } else {
                    signal(herdd, nix::sys::signal::Signal::SIGSTOP)?;
                }
                let before = row_of(lab, t.pid)?.map_or(0, |r| r.resumed);
                let resumed = wait_row(lab, t.pid, "resumed", Duration::from_secs(30), |r| r.resumed > before);
                if fault == 3 {
                    std::thread::sleep(Duration::from_secs(3).saturating_sub(Duration::from_millis(100)));
                    signal(herdd, nix::sys::signal::Signal::SIGCONT)?;
                    lab.wait_all_up()?;
                } else {
                    restart_n2(lab, herdd)?;
                }
                if resumed.is_err() {
                    tally.lost += 1;
                }
            }
        }
        // The process answers each ping once, its memory is intact, no copy is left on n2
        // unless it runs there.
        pings += 1;
        match t.p.ask("ping", "pong") {
            Ok(_) => {}
            Err(e) if t.p.exited().is_some() => {
                eprintln!("herd-bench:   the process is gone: {e:#}");
                tally.lost += 1;
                t = Target::start_run(lab, mib, 1, &["--checkpoint-every", "1s"])?;
                continue;
            }
            Err(e) => {
                eprintln!("herd-bench:   no pong: {e:#}");
                tally.answers_wrong += 1;
            }
        }
        let check = t.p.ask("check", "checked")?;
        if field(&check, "bad")? != 0.0 {
            tally.bad_memory += 1;
        }
        std::thread::sleep(Duration::from_millis(300));
        let r = row_of(lab, t.pid)?;
        let there = r.as_ref().is_some_and(|r| r.where_ == "n2");
        let copies = copies_on_n2(lab);
        if copies > usize::from(there) {
            tally.twice += 1;
        }
        if let Some(r) = r {
            tally.resumed = tally.resumed.max(r.resumed);
        }
        // Home again for the next round.
        if there {
            if let Err(e) = t.migrate(lab, "home", "n1") {
                eprintln!("herd-bench:   coming home failed: {e:#}");
            }
        }
    }
    let end = t.p.ask("ping", "pong");
    if end.is_err() {
        tally.answers_wrong += 1;
    }
    t.quit()?;
    println!();
    println!(
        "3. Chaos: {} rounds (seed {}) of a move n1 -> n2 and home, a fault in about {}: n2's herdd killed during the move there, killed while the process runs there, stopped for 3 s, or killed during the move home (the source){}; {pings} pings",
        cfg.rounds,
        cfg.seed,
        if failpoints { "six of seven" } else { "four of five" },
        if failpoints { ", or a failpoint at a random step of the move there or home (`herd_migrate::failpoint`)" } else { " (herdd without failpoints)" }
    );
    let mut rows = vec![row(&["", "count", "goal"])];
    for (name, v, goal) in [
        ("moves tried", tally.moves, ""),
        ("completed", tally.completed, ""),
        ("aborted (the process ran on where it was)", tally.aborted, ""),
        ("faults injected", tally.faults, ""),
        ("  of them at a failpoint of a move", tally.failpoints, ""),
        ("  failpoints not met (the move succeeded)", tally.unmet, ""),
        ("resumes from a checkpoint (last process)", tally.resumed as usize, ""),
        ("processes lost", tally.lost, "0"),
        ("processes running twice", tally.twice, "0"),
        ("memory checks failed", tally.bad_memory, "0"),
        ("answers missing or twice", tally.answers_wrong, "0"),
    ] {
        rows.push(vec![name.into(), v.to_string(), goal.into()]);
    }
    print_table(&rows, 1);
    if tally.lost + tally.twice + tally.bad_memory + tally.answers_wrong > 0 {
        bail!("chaos: {} lost, {} running twice, {} memory checks failed, {} answers wrong", tally.lost, tally.twice, tally.bad_memory, tally.answers_wrong);
    }
    Ok(())
}
