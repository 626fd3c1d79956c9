//! `herd-bench balance-sim`: herd's balancing policy on a simulated cluster of a thousand
//! nodes or more, against three placements without migration, over the same job trace
//! (herd_balance::sim describes the model).

use std::time::Instant;

use herd_balance::sim::{self, Outcome, Placement, SimConfig};

pub struct Config {
    pub nodes: usize,
    pub seconds: f64,
    pub utilisation: f64,
    pub seed: u64,
    pub json: bool,
}

pub fn run(c: Config) -> anyhow::Result<bool> {
    anyhow::ensure!(c.nodes >= 2, "--nodes must be at least 2");
    anyhow::ensure!(c.seconds > 0.0 && c.seconds.is_finite(), "--seconds must be > 0");
    anyhow::ensure!(c.utilisation > 0.0 && c.utilisation.is_finite(), "--utilisation must be > 0");
    let cfg = SimConfig { nodes: c.nodes, seconds: c.seconds, utilisation: c.utilisation, seed: c.seed, ..SimConfig::default() };
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
         ({:.1} jobs/s, lifetime {:.0}-{:.0} s, mean {:.2} s), seed {}",
        cfg.nodes,
        cfg.capacity(),
        cfg.seconds,
        cfg.utilisation * 100.0,
        cfg.arrival_rate(),
        cfg.min_life,
        cfg.max_life,
        cfg.mean_life(),
        cfg.seed
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

/// The same figures as one JSON object (written by hand: herd-bench has no JSON dependency).
fn json(cfg: &SimConfig, outcomes: &[Outcome], elapsed: f64) -> String {
    let rows: Vec<String> = outcomes
        .iter()
        .map(|o| {
            format!(
                "{{\"placement\":\"{}\",\"jobs\":{},\"unfinished\":{},\"mean_slowdown\":{},\"p95_slowdown\":{},\"p99_slowdown\":{},\
                 \"mean_slowdown_long\":{},\"makespan\":{},\"migrations\":{},\"migrations_per_job\":{},\
                 \"moves\":{{\"io\":{},\"memory\":{},\"load\":{}}},\"moved_jobs\":{},\"max_job_moves\":{},\"frozen_s\":{},\"received_p90\":{},\"decisions\":{}}}",
                o.placement.name(),
                o.jobs,
                o.unfinished,
                num(o.mean_slowdown),
                num(o.p95_slowdown),
                num(o.p99_slowdown),
                num(o.mean_slowdown_long),
                num(o.makespan),
                o.migrations(),
                num(o.migrations_per_job()),
                o.moves[0],
                o.moves[1],
                o.moves[2],
                o.moved_jobs,
                o.max_job_moves,
                num(o.frozen),
                num(o.received_p90),
                o.rounds
            )
        })
        .collect();
    format!(
        "{{\"nodes\":{},\"seconds\":{},\"utilisation\":{},\"seed\":{},\"capacity\":{},\"arrival_rate\":{},\"elapsed_s\":{},\"placements\":[{}]}}",
        cfg.nodes,
        num(cfg.seconds),
        num(cfg.utilisation),
        cfg.seed,
        num(cfg.capacity()),
        num(cfg.arrival_rate()),
        num(elapsed),
        rows.join(",")
    )
}

/// A JSON number (JSON has no NaN or infinity: those become null).
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers() {
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(3.0), "3");
        assert_eq!(num(f64::NAN), "null");
    }
}
