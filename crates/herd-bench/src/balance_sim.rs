//! `herd-bench balance-sim`: herd's balancing policy on a simulated cluster of a thousand
//! nodes or more, against three placements without migration, over the same job trace
//! (herd_balance::sim describes the model).

use std::time::Instant;

use herd_balance::sim::{self, Outcome, Placement, SimConfig};
use serde::Serialize;

pub struct Config {
    pub nodes: usize,
    pub seconds: f64,
    pub utilisation: f64,
    pub seed: u64,
    /// Lifetimes of 0.3 to 10 s and sizes up to 256 MiB (compiler runs).
    pub short_jobs: bool,
    pub birth_placement: bool,
    pub json: bool,
}

pub fn run(c: Config) -> anyhow::Result<bool> {
    anyhow::ensure!(c.nodes >= 2, "--nodes must be at least 2");
    anyhow::ensure!(c.seconds > 0.0 && c.seconds.is_finite(), "--seconds must be > 0");
    anyhow::ensure!(c.utilisation > 0.0 && c.utilisation.is_finite(), "--utilisation must be > 0");
    let mut cfg = SimConfig { nodes: c.nodes, seconds: c.seconds, utilisation: c.utilisation, seed: c.seed, ..SimConfig::default() };
    if c.short_jobs {
        (cfg.min_life, cfg.max_life, cfg.max_rss) = (0.3, 10.0, 256 << 20);
    }
    cfg.params.birth_placement = c.birth_placement;
    cfg.params.validate()?;
    let started = Instant::now();
    // The placements are independent runs of the same trace: one thread each.
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let runs: Vec<_> = Placement::ALL.iter().map(|&p| s.spawn({
            let cfg = &cfg;
            move || sim::simulate(cfg, p)
        })).collect();
        runs.into_iter().map(|r| r.join().expect("simulation thread panicked")).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    if c.json {
        println!("{}", json(&cfg, &outcomes, elapsed));
    } else {
        print(&cfg, &outcomes, elapsed);
    }
    Ok(outcomes.iter().all(|o| o.unfinished == 0))
}

fn print(cfg: &SimConfig, outcomes: &[Outcome], elapsed: f64) {
    println!("herd-bench balance-sim");
    crate::report::print_machine();
    println!(
        "{} nodes (speed 0.5/1/2x, 1/2/4 CPUs, {:.0} reference CPUs), jobs arriving for {:.0} s at {:.0} % of capacity \
         ({:.1} jobs/s, lifetime {}-{} s, mean {:.2} s), seed {}; herd with placement at birth {}",
        cfg.nodes,
        cfg.capacity(),
        cfg.seconds,
        cfg.utilisation * 100.0,
        cfg.arrival_rate(),
        cfg.min_life,
        cfg.max_life,
        cfg.mean_life(),
        cfg.seed,
        if cfg.params.birth_placement { "on" } else { "off" }
    );
    println!();
    println!(
        "| placement | jobs | mean slowdown | vs none | p95 slowdown | vs none | p99 slowdown | mean slowdown, lifetime >= 100 s | makespan s | vs none | migrations/job |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let none = outcomes.iter().find(|o| o.placement == Placement::None);
    let ratio = |x: f64, base: Option<f64>| base.filter(|b| *b > 0.0).map_or("-".to_string(), |b| format!("{:.3}", x / b));
    for o in outcomes {
        println!(
            "| {} | {}{} | {:.2} | {} | {:.2} | {} | {:.2} | {:.2} | {:.0} | {} | {:.4} |",
            o.placement.name(),
            o.jobs,
            if o.unfinished > 0 { format!(" ({} unfinished)", o.unfinished) } else { String::new() },
            o.mean_slowdown,
            ratio(o.mean_slowdown, none.map(|n| n.mean_slowdown)),
            o.p95_slowdown,
            ratio(o.p95_slowdown, none.map(|n| n.p95_slowdown)),
            o.p99_slowdown,
            o.mean_slowdown_long,
            o.makespan,
            ratio(o.makespan, none.map(|n| n.makespan)),
            o.migrations_per_job(),
        );
    }
    println!();
    if let Some(h) = outcomes.iter().find(|o| o.placement == Placement::Herd) {
        println!(
            "herd: {} moves ({} I/O, {} memory, {} load) of {} jobs ({:.1} % of all), at most {} moves of one job, \
             {:.2} s frozen per move, {} decisions; a node receiving load moves got up to {:.2} per CPU in one round (p90)",
            h.migrations(),
            h.moves[0],
            h.moves[1],
            h.moves[2],
            h.moved_jobs,
            100.0 * h.moved_jobs as f64 / h.jobs.max(1) as f64,
            h.max_job_moves,
            h.frozen / h.migrations().max(1) as f64,
            h.rounds,
            h.received_p90
        );
    }
    println!(
        "slowdown = response time / lifetime alone on an idle reference CPU (1 = as fast as that); \
         random and omniscient place at arrival, for free, and never move"
    );
    println!("simulated in {elapsed:.1} s (the four placements in parallel)");
}

/// The same figures as one JSON object, in the table's order (serde_json writes NaN and
/// infinity, which JSON does not have, as null).
#[derive(Serialize)]
struct Report<'a> {
    nodes: usize,
    seconds: f64,
    utilisation: f64,
    seed: u64,
    capacity: f64,
    arrival_rate: f64,
    elapsed_s: f64,
    placements: Vec<Row<'a>>,
}

#[derive(Serialize)]
struct Row<'a> {
    placement: &'a str,
    jobs: usize,
    unfinished: usize,
    mean_slowdown: f64,
    p95_slowdown: f64,
    p99_slowdown: f64,
    mean_slowdown_long: f64,
    makespan: f64,
    migrations: u64,
    migrations_per_job: f64,
    moves: Moves,
    moved_jobs: usize,
    max_job_moves: u32,
    frozen_s: f64,
    received_p90: f64,
    decisions: u64,
}

#[derive(Serialize)]
struct Moves {
    io: u64,
    memory: u64,
    load: u64,
}

fn json(cfg: &SimConfig, outcomes: &[Outcome], elapsed: f64) -> String {
    let report = Report {
        nodes: cfg.nodes,
        seconds: cfg.seconds,
        utilisation: cfg.utilisation,
        seed: cfg.seed,
        capacity: cfg.capacity(),
        arrival_rate: cfg.arrival_rate(),
        elapsed_s: elapsed,
        placements: outcomes
            .iter()
            .map(|o| Row {
                placement: o.placement.name(),
                jobs: o.jobs,
                unfinished: o.unfinished,
                mean_slowdown: o.mean_slowdown,
                p95_slowdown: o.p95_slowdown,
                p99_slowdown: o.p99_slowdown,
                mean_slowdown_long: o.mean_slowdown_long,
                makespan: o.makespan,
                migrations: o.migrations(),
                migrations_per_job: o.migrations_per_job(),
                moves: Moves { io: o.moves[0], memory: o.moves[1], load: o.moves[2] },
                moved_jobs: o.moved_jobs,
                max_job_moves: o.max_job_moves,
                frozen_s: o.frozen,
                received_p90: o.received_p90,
                decisions: o.rounds,
            })
            .collect(),
    };
    serde_json::to_string(&report).expect("plain numbers and strings serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(placement: Placement, mean_slowdown: f64) -> Outcome {
        Outcome {
            placement,
            jobs: 10,
            unfinished: 0,
            mean_slowdown,
            p95_slowdown: 3.0,
            p99_slowdown: 4.0,
            mean_slowdown_long: 1.5,
            makespan: 100.0,
            moves: [1, 2, 3],
            moved_jobs: 4,
            max_job_moves: 2,
            frozen: 0.5,
            received_p90: 1.0,
            rounds: 7,
        }
    }

    #[test]
    fn json_has_every_figure_and_no_nan() {
        let cfg = SimConfig { nodes: 3, seconds: 10.0, ..SimConfig::default() };
        let text = json(&cfg, &[outcome(Placement::None, 1.5), outcome(Placement::Herd, f64::NAN)], 2.0);
        assert!(text.starts_with(r#"{"nodes":3,"seconds":10.0,"#), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(back["nodes"], 3);
        assert_eq!(back["seed"], 1);
        let rows = back["placements"].as_array().expect("placements");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["placement"], "none");
        assert_eq!(rows[0]["mean_slowdown"], 1.5);
        assert_eq!(rows[0]["migrations"], 6);
        assert_eq!(rows[0]["moves"]["memory"], 2);
        assert_eq!(rows[0]["decisions"], 7);
        assert!(rows[1]["mean_slowdown"].is_null(), "{text}");
    }
}
