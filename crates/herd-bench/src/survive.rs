//! `herd-bench survive`: what surviving a node's death costs and how well it works, on
//! the local cluster of `herd-bench migrate` (the same program under test, started in n1
//! as uid 65534 under `herd run --checkpoint-every`, running on n2; two nodes for parts 1
//! and 2, three for part 3):
//!
//! 1. the cost of periodic checkpoints: the same CPU-bound work on n2 without
//!    checkpoints and with one every `--every` seconds (asked by the bench through the
//!    control socket, `herd migrate PID checkpoint`, so that each one's stop and size are
//!    read), interleaved;
//! 2. the time from a fault to the process running again: n2's herdd killed (SIGKILL:
//!    its guests die with it, the stream breaks) and n2's herdd stopped (SIGSTOP: only
//!    membership sees it); "running again" is the process answering a ping;
//! 3. a chaos run, on a cluster of three nodes of its own: rounds of moves n1 → n2 or n3
//!    (sometimes on to the other) → home with a fault injected at a random point in most
//!    (`FAULTS`: a herdd killed during a move there, on or home, or while the process runs
//!    there; stopped for 3 s; a whole node killed — its namespace init — and made again;
//!    with a herdd built with failpoints, a failpoint at a random step of a move), then a
//!    check of the process: it answers, its memory is what it wrote, no copy of it is left
//!    on a node it does not run on, no answer came twice or went missing.

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
    let mut ok = true;
    if !cfg.chaos_only {
        ok &= on_lab(&cfg, 2, |lab| {
            let mut failures = Vec::new();
            if let Err(e) = cost(lab, &cfg) {
                failures.push(format!("part 1: {e:#}"));
            }
            if let Err(e) = recovery(lab, &cfg) {
                failures.push(format!("part 2: {e:#}"));
            }
            failures
        })?;
    }
    if cfg.rounds > 0 {
        ok &= on_lab(&cfg, 3, |lab| chaos(lab, &cfg).err().map(|e| format!("part 3: {e:#}")).into_iter().collect())?;
    }
    Ok(ok)
}

/// Runs `parts` on a local cluster of `nodes` nodes, taken down after; whether nothing failed.
fn on_lab(cfg: &Config, nodes: usize, parts: impl FnOnce(&Lab) -> Vec<String>) -> Result<bool> {
    let lab = Lab::up_nodes(cfg.keep, !cfg.shared_cpus, nodes)?;
    lab.print_header("herd-bench survive");
    println!(
        "process under test: {} MiB of pseudo-random words, started in n1 as uid 65534 under `herd run --checkpoint-every`",
        cfg.mib
    );
    let failures = parts(&lab);
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

/// `node`'s herdd again after it was killed (`killed`: its pid), and every node up.
fn restart_node(lab: &Lab, node: &str, killed: i32) -> Result<()> {
    // Its node-init reaps it first; until then the node says it runs.
    let start = Instant::now();
    while herdd_of(lab, node).is_ok_and(|p| p == killed) {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{node}'s killed herdd (pid {killed}) is still listed after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.cluster.start_node(node)?;
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
        restart_node(lab, "n2", herdd)?;
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
    nodes_killed: usize,
    resumed: u32,
    lost: usize,
    twice: usize,
    bad_memory: usize,
    answers_wrong: usize,
}

/// Copies of the program under test in `node` (in its pid namespace) that may run: not
/// a checkpoint's snapshot (a copy-on-write clone herdd holds in a tracing stop, never
/// run). Each as (host pid, state, parent's host pid).
fn copies_on(lab: &Lab, node: &str) -> Vec<(i32, char, i32)> {
    let Ok(st) = herd_lab::status(lab.work_dir()) else { return Vec::new() };
    let Some(init) = st.nodes.iter().find(|n| n.name == node).map(|n| n.init_pid) else { return Vec::new() };
    let Ok(ns) = std::fs::read_link(format!("/proc/{init}/ns/pid")) else { return Vec::new() };
    let target = lab.target.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<i32>().ok()?, e.path())))
        .filter(|(_, p)| std::fs::read_link(p.join("ns/pid")).ok().as_ref() == Some(&ns))
        .filter(|(_, p)| std::fs::read(p.join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).starts_with(&target)))
        .filter_map(|(pid, p)| {
            let stat = std::fs::read_to_string(p.join("stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut f = rest.split_whitespace();
            let state = f.next()?.chars().next()?;
            let ppid = f.next()?.parse().ok()?;
            Some((pid, state, ppid))
        })
        .filter(|&(_, state, _)| state != 't')
        .collect()
}

/// Failpoints a move n1 -> X meets (whose herdd fails there: home, or the target X;
/// the point), and a move home from X (`herd_migrate::failpoint`).
const AWAY_POINTS: [(bool, &str); 5] = [(true, "out-connected"), (true, "out-image"), (true, "out-commit"), (false, "arrive-restore"), (false, "arrive-restored")];
const BACK_POINTS: [(bool, &str); 3] = [(false, "away-capture"), (false, "away-image"), (true, "home-restore")];

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

/// A move of `t` to `target` (where it runs on `node`) with `node`'s herdd SIGKILLed
/// 0-40 ms into it.
fn move_with_kill(lab: &Lab, t: &Target, rng: &mut Rng, tally: &mut Tally, target: &str, node: &str, victim: &str) -> Result<()> {
    let herdd = herdd_of(lab, victim)?;
    let delay = Duration::from_millis(rng.below(40));
    let killer = std::thread::spawn(move || {
        std::thread::sleep(delay);
        let _ = signal(herdd, nix::sys::signal::Signal::SIGKILL);
    });
    tally.moves += 1;
    tally.faults += 1;
    match t.migrate(lab, target, node) {
        Ok(_) => tally.completed += 1,
        Err(_) => tally.aborted += 1,
    }
    let _ = killer.join();
    restart_node(lab, victim, herdd)
}

/// Where the process runs now (its home's view), if it is known.
fn where_of(lab: &Lab, pid: i32) -> Result<Option<String>> {
    Ok(row_of(lab, pid)?.map(|r| r.where_))
}

/// The kinds of fault of a chaos round.
const FAULTS: [&str; 11] = [
    "none",
    "the target's herdd killed during the move there",
    "its herdd killed while it runs there",
    "its herdd stopped for 3 s while it runs there",
    "its herdd killed during the move home (the source)",
    "its whole node killed while it runs there (then made again)",
    "on to the other node, whose herdd is killed during the move",
    "on to the other node, then that whole node killed",
    "a failpoint of the move there",
    "a failpoint of the move home",
    "a byte flipped on the wire by home, during the move there or while it runs there",
];

/// The kinds of [`FAULTS`] that need a herdd with failpoints.
const FAILPOINT_KINDS: usize = 3;

fn chaos(lab: &Lab, cfg: &Config) -> Result<()> {
    eprintln!("herd-bench: part 3, {} chaos rounds on 3 nodes", cfg.rounds);
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
    let kinds = if failpoints { FAULTS.len() } else { FAULTS.len() - FAILPOINT_KINDS };
    for round in 0..cfg.rounds {
        let fault = rng.below(kinds as u64) as usize;
        let (away, other) = if rng.below(2) == 0 { ("n2", "n3") } else { ("n3", "n2") };
        eprintln!("herd-bench:   round {}/{}: to {away}, fault {fault} ({})", round + 1, cfg.rounds, FAULTS[fault]);
        let there = |lab: &Lab, node: &str| -> Result<bool> { Ok(where_of(lab, t.pid)?.as_deref() == Some(node)) };
        match fault {
            1 => move_with_kill(lab, &t, &mut rng, &mut tally, away, away, away)?,
            10 => {
                // A frame home sends is corrupted: one of the move's image (64 KiB each:
                // the move fails, the process runs on at home), or, set once it runs
                // there, one of the next few (checkpoint requests and the like: the stream
                // breaks and the process resumes from its checkpoint).
                let before = row_of(lab, t.pid)?.map_or(0, |r| r.resumed);
                let during_move = rng.below(2) == 0;
                let flip = |lab: &Lab, frames: u64| failpoint(lab, "n1", "wire-flip", &format!("{frames}*off->1*return"));
                if during_move {
                    flip(lab, rng.below(((mib << 20) / (64 << 10)).max(1)))?;
                }
                tally.moves += 1;
                tally.faults += 1;
                tally.failpoints += 1;
                match t.migrate(lab, away, away) {
                    Ok(_) => tally.completed += 1,
                    Err(_) => tally.aborted += 1,
                }
                if !during_move && there(lab, away)? {
                    flip(lab, rng.below(3))?;
                }
                std::thread::sleep(Duration::from_secs(3));
                failpoint(lab, "n1", "wire-flip", "off")?;
                // A broken stream while it ran there: it is resumed (or was home already).
                if row_of(lab, t.pid)?.is_some_and(|r| r.state == "resuming" || r.resumed > before) {
                    wait_row(lab, t.pid, "running again after its stream broke", Duration::from_secs(30), |r| r.state != "resuming")?;
                }
            }
            8 => {
                tally.moves += 1;
                let (home_side, point) = AWAY_POINTS[rng.below(AWAY_POINTS.len() as u64) as usize];
                if faulted_move(lab, &t, &mut rng, &mut tally, (if home_side { "n1" } else { away }, point), away, away)? {
                    // A move with a fault that succeeds anyway: home again for the next round.
                    tally.moves += 1;
                    t.migrate(lab, "home", "n1").context("home after a move that ignored its fault")?;
                    tally.completed += 1;
                }
            }
            _ => {
                tally.moves += 1;
                match t.migrate(lab, away, away) {
                    Ok(_) => tally.completed += 1,
                    Err(e) => {
                        eprintln!("herd-bench:   move failed: {e:#}");
                        tally.aborted += 1;
                    }
                }
                if !there(lab, away)? {
                    // (Nothing more to do to it this round.)
                } else if fault == 4 {
                    // The source killed 0-40 ms into the move home: before the commit the
                    // process is lost there and resumed from its checkpoint, after it the
                    // process is home.
                    wait_row(lab, t.pid, "checkpointed", Duration::from_secs(30), |r| r.checkpoint_unix > 0)?;
                    move_with_kill(lab, &t, &mut rng, &mut tally, "home", "n1", away)?;
                } else if fault == 6 {
                    move_with_kill(lab, &t, &mut rng, &mut tally, other, other, other)?;
                } else if fault == 9 {
                    let (home_side, point) = BACK_POINTS[rng.below(BACK_POINTS.len() as u64) as usize];
                    tally.moves += 1;
                    faulted_move(lab, &t, &mut rng, &mut tally, (if home_side { "n1" } else { away }, point), "home", "n1")?;
                } else if matches!(fault, 2 | 3 | 5 | 7) {
                    let mut node = away;
                    if fault == 7 {
                        tally.moves += 1;
                        match t.migrate(lab, other, other) {
                            Ok(_) => {
                                tally.completed += 1;
                                node = other;
                            }
                            Err(e) => {
                                eprintln!("herd-bench:   move on failed: {e:#}");
                                tally.aborted += 1;
                            }
                        }
                    }
                    wait_row(lab, t.pid, "checkpointed", Duration::from_secs(30), |r| r.checkpoint_unix > 0)?;
                    let before = row_of(lab, t.pid)?.map_or(0, |r| r.resumed);
                    let herdd = herdd_of(lab, node)?;
                    tally.faults += 1;
                    match fault {
                        2 => signal(herdd, nix::sys::signal::Signal::SIGKILL)?,
                        3 => signal(herdd, nix::sys::signal::Signal::SIGSTOP)?,
                        _ => {
                            tally.nodes_killed += 1;
                            if !lab.cluster.kill_node(node)? {
                                bail!("{node} was dead already");
                            }
                        }
                    }
                    let resumed = wait_row(lab, t.pid, "resumed", Duration::from_secs(30), |r| r.resumed > before);
                    match fault {
                        2 => restart_node(lab, node, herdd)?,
                        3 => {
                            std::thread::sleep(Duration::from_secs(3).saturating_sub(Duration::from_millis(100)));
                            signal(herdd, nix::sys::signal::Signal::SIGCONT)?;
                            lab.wait_all_up()?;
                        }
                        _ => {
                            lab.cluster.revive_node(node).with_context(|| format!("making {node} again"))?;
                            lab.wait_all_up()?;
                        }
                    }
                    if let Err(e) = resumed {
                        eprintln!("herd-bench:   {e:#}");
                        tally.lost += 1;
                    }
                }
            }
        }
        // The process answers each ping once, its memory is intact, no copy is left on a
        // node unless it runs there.
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
        let at = r.as_ref().map(|r| r.where_.clone()).unwrap_or_default();
        let copies: Vec<(&str, (i32, char, i32))> = ["n2", "n3"].into_iter().flat_map(|n| copies_on(lab, n).into_iter().map(move |c| (n, c))).collect();
        if copies.len() > usize::from(at == "n2" || at == "n3") {
            eprintln!("herd-bench:   copies on n2 and n3 while it runs on {at} (node, (host pid, state, parent)): {copies:?}");
            tally.twice += 1;
        }
        if let Some(r) = r {
            tally.resumed = tally.resumed.max(r.resumed);
        }
        // Home again for the next round.
        if at != "n1" && !at.is_empty() {
            tally.moves += 1;
            match t.migrate(lab, "home", "n1") {
                Ok(_) => tally.completed += 1,
                Err(e) => {
                    eprintln!("herd-bench:   coming home failed: {e:#}");
                    tally.aborted += 1;
                }
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
        "3. Chaos on 3 nodes: {} rounds (seed {}) of a move n1 -> n2 or n3 (and sometimes on to the other) and home, {pings} pings; a fault in most rounds, each kind about as often:",
        cfg.rounds, cfg.seed
    );
    for (k, f) in FAULTS.iter().enumerate().take(kinds).skip(1) {
        println!("   {k}. {f}{}", if k >= FAULTS.len() - FAILPOINT_KINDS { " (`herd_migrate::failpoint`)" } else { "" });
    }
    if !failpoints {
        println!("   (herdd without failpoints: kinds 8 to 10 left out)");
    }
    let mut rows = vec![row(&["", "count", "goal"])];
    for (name, v, goal) in [
        ("moves tried", tally.moves, ""),
        ("completed", tally.completed, ""),
        ("aborted (the process ran on where it was)", tally.aborted, ""),
        ("faults injected", tally.faults, ""),
        ("  of them at a failpoint of a move", tally.failpoints, ""),
        ("  failpoints not met (the move succeeded)", tally.unmet, ""),
        ("  of them a whole node killed", tally.nodes_killed, ""),
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
