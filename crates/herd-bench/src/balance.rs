//! `herd-bench balance`: automatic balancing on the real local cluster.
//!
//! Two nodes with one CPU each (cpusets). N CPU-bound jobs of about `--job-secs` each
//! are started together on n1 twice: confined to n1 (started directly, herd not
//! involved), and under `herd run`, where n1's herdd spreads them by itself. The table
//! compares the balanced makespan with the ideal — the jobs' total CPU time (each job
//! reports its own, in the confined run) spread perfectly over two CPUs, moves free — and
//! with the confined run, and counts the migrations per job. Every job's result is
//! compared with the job run alone. The machines are shared and noisy: the ideal comes
//! from CPU time, not from wall-clock time, so other load does not make it look better.

use std::ffi::OsString;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use herd_daemon::control::{Client, Request, Response};

use crate::migrate::{nobody_args, Lab};

pub struct Config {
    pub jobs: usize,
    pub job_secs: f64,
    pub keep: bool,
    pub json: bool,
}

/// One batch of jobs: its makespan and the moves of each job.
struct Batch {
    makespan: f64,
    outputs: Vec<String>,
    moves: Vec<u32>,
}

pub fn run(cfg: Config) -> Result<bool> {
    if cfg.jobs < 2 || cfg.jobs > 64 {
        bail!("--jobs must be between 2 and 64");
    }
    if !(cfg.job_secs >= 0.5 && cfg.job_secs <= 120.0) {
        bail!("--job-secs must be between 0.5 and 120");
    }
    if herd_kernel::task::euid() != 0 {
        bail!("herd-bench balance must run as root: it brings up a local cluster and runs its jobs as uid 65534");
    }
    if cfg!(debug_assertions) {
        eprintln!("herd-bench: warning: this is a debug build; build with --release for numbers to compare");
    }
    let lab = Lab::up(cfg.keep)?;
    let result = measure(&lab, &cfg);
    if let Err(e) = &result {
        eprintln!("herd-bench balance: {e:#}\n{}", lab.logs());
    }
    let ok = result.is_ok();
    lab.finish(ok)?;
    result
}

fn measure(lab: &Lab, cfg: &Config) -> Result<bool> {
    if !cfg.json {
        lab.print_header("herd-bench balance");
    }
    // Rounds for a job of about --job-secs, from a short run alone in n1.
    let probe_rounds = 200_000_000u64;
    let (probe, _) = one_job(lab, probe_rounds)?;
    let rounds = ((probe_rounds as f64) * cfg.job_secs / probe).max(1e6) as u64;
    let (single, expected) = one_job(lab, rounds)?;
    let expected = result_of(&expected).to_string();

    let confined = batch(lab, cfg.jobs, rounds, false)?;
    let balanced = batch(lab, cfg.jobs, rounds, true)?;
    for (what, b) in [("confined", &confined), ("balanced", &balanced)] {
        if let Some(bad) = b.outputs.iter().find(|o| result_of(o) != expected) {
            bail!("a {what} job printed {bad:?}, the job alone {expected:?}");
        }
    }
    let cpu: f64 = confined.outputs.iter().map(|o| cpu_of(o)).sum::<Result<f64>>()?;
    let ideal = cpu / 2.0;
    let total_moves: u32 = balanced.moves.iter().sum();
    let per_job = f64::from(total_moves) / cfg.jobs as f64;
    let max_moves = balanced.moves.iter().copied().max().unwrap_or(0);
    let efficiency = ideal / balanced.makespan;
    let met = efficiency >= 0.9 && per_job <= 2.0;
    if cfg.json {
        let v = serde_json::json!({
            "jobs": cfg.jobs, "single_job_secs": single, "cpu_secs": cpu, "ideal_secs": ideal,
            "confined_secs": confined.makespan, "balanced_secs": balanced.makespan,
            "efficiency": efficiency, "speedup": confined.makespan / balanced.makespan,
            "migrations": total_moves, "migrations_per_job": per_job, "max_migrations_of_a_job": max_moves,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(met);
    }
    println!(
        "{} CPU-bound jobs of {single:.2} s each (alone, in n1), started together on n1; {cpu:.2} s of CPU in all (confined run)",
        cfg.jobs
    );
    println!();
    println!("{:<34} {:>10} {:>14}", "run", "makespan", "ideal/makespan");
    println!("{:<34} {:>9.2}s {:>14.2}", "ideal (total CPU time / 2 CPUs)", ideal, 1.0);
    println!("{:<34} {:>9.2}s {:>14.2}", "confined to n1 (no herd)", confined.makespan, ideal / confined.makespan);
    println!("{:<34} {:>9.2}s {:>14.2}", "herd run, balanced by herdd", balanced.makespan, efficiency);
    println!();
    println!("speed-up over confined: {:.2}×", confined.makespan / balanced.makespan);
    println!("migrations: {total_moves} in all, {per_job:.2} per job, at most {max_moves} for one job (per job: {:?})", balanced.moves);
    println!(
        "goal: ≥ 0.90 of ideal and ≤ 2 migrations per job: {}",
        if met { "met" } else { "NOT met" }
    );
    Ok(met)
}

/// "spin x=… cpu=S" without its CPU time: the same wherever and however it ran.
fn result_of(line: &str) -> &str {
    line.split(" cpu=").next().unwrap_or(line)
}

fn cpu_of(line: &str) -> Result<f64> {
    line.split(" cpu=").nth(1).and_then(|c| c.trim().parse().ok()).with_context(|| format!("no CPU time in {line:?}"))
}

/// The job's argv inside n1, as nobody; under `herd run` when `herd`.
fn job_argv(lab: &Lab, rounds: u64, herd: bool) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![lab.setpriv.clone().into()];
    argv.extend(nobody_args().map(OsString::from));
    if herd {
        argv.extend([lab.herd.clone().into_os_string(), "run".into(), "--".into()]);
    }
    argv.extend([lab.target.clone().into_os_string(), "spin".into(), rounds.to_string().into()]);
    argv
}

fn one_job(lab: &Lab, rounds: u64) -> Result<(f64, String)> {
    let b = batch(lab, 1, rounds, false)?;
    Ok((b.makespan, b.outputs.into_iter().next().unwrap_or_default()))
}

/// Starts `jobs` jobs together in n1 and waits for all; with `herd`, watches n1's
/// `herd ps` for their moves meanwhile.
fn batch(lab: &Lab, jobs: usize, rounds: u64, herd: bool) -> Result<Batch> {
    let start = Instant::now();
    let mut children = Vec::new();
    for _ in 0..jobs {
        let mut cmd: Command = lab.node_cmd("n1", job_argv(lab, rounds, herd))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        children.push(cmd.spawn().context("starting a job in n1")?);
    }
    let waiters: Vec<_> = children.into_iter().map(|c| std::thread::spawn(move || (c.wait_with_output(), Instant::now()))).collect();
    let mut moves = std::collections::HashMap::<i32, u32>::new();
    let socket = lab.cluster.node_socket("n1");
    while herd && waiters.iter().any(|w| !w.is_finished()) {
        if let Ok(Response::Processes(rows)) = Client::connect(&socket).and_then(|mut c| c.call(&Request::Processes)) {
            for r in rows {
                let m = moves.entry(r.pid).or_default();
                *m = (*m).max(r.nmigs);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut outputs = Vec::new();
    let mut last = start;
    for w in waiters {
        let (out, end) = w.join().expect("waiter thread");
        let out = out.context("waiting for a job")?;
        if !out.status.success() {
            bail!("a job failed: {} ({})", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        outputs.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        last = last.max(end);
    }
    let mut moves: Vec<u32> = moves.into_values().collect();
    moves.resize(jobs.max(moves.len()), 0);
    Ok(Batch { makespan: last.duration_since(start).as_secs_f64(), outputs, moves })
}
