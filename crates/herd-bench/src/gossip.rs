//! `herd-bench gossip`: how fast a cluster forms and notices a dead node, and what the
//! gossip costs each node — on a real 3-node local cluster (herdd in namespaces, real
//! sealed UDP), and on up to thousands of simulated nodes running the same membership
//! state machine in one process on a virtual clock.

use std::time::Duration;

use herd_cluster::sim::Sim;
use herd_cluster::MembershipConfig;

pub struct SimRow {
    pub nodes: usize,
    pub converge: Option<Duration>,
    pub detect: Option<Duration>,
    pub bytes_per_node_s: f64,
    pub packets_per_node_s: f64,
    pub info_age: Duration,
}

/// Starts `n` nodes (each announcing itself to node 1, as a beacon would make it),
/// waits for convergence, measures traffic over `window`, kills one node and waits
/// until every other lists it down.
pub fn simulate(n: usize, window: Duration, seed: u64) -> SimRow {
    let config = MembershipConfig { expected_size: n as u32, ..Default::default() };
    let mut sim = Sim::new(n, config, seed);
    sim.start(0, None);
    for i in 1..n {
        sim.start(i, Some(0));
    }
    let limit = Duration::from_secs(300);
    let converge = sim.run_until_true(limit, Duration::from_millis(250), Sim::converged);
    let before: (u64, u64) = (sim.bytes_sent.iter().sum(), sim.packets_sent.iter().sum());
    let t0 = sim.now();
    sim.run_until(t0 + window);
    let bytes = sim.bytes_sent.iter().sum::<u64>() - before.0;
    let packets = sim.packets_sent.iter().sum::<u64>() - before.1;
    let secs = window.as_secs_f64() * n as f64;
    let info_age = sim.mean_info_age();
    let victim = n / 2;
    sim.kill(victim);
    let killed = sim.now();
    let detect = sim
        .run_until_true(killed + Duration::from_secs(60), Duration::from_millis(50), |s| s.all_see_down(victim))
        .map(|t| t - killed);
    SimRow { nodes: n, converge, detect, bytes_per_node_s: bytes as f64 / secs, packets_per_node_s: packets as f64 / secs, info_age }
}

pub fn fmt_secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".into(), |d| format!("{:.2}", d.as_secs_f64()))
}

pub fn print_sim(rows: &[SimRow]) {
    println!("\nsimulated nodes (same membership code, virtual clock, 0.1-0.6 ms latency, sealed sizes):");
    println!(
        "| nodes | converge s | detect s | gossip B/s per node | vs 3 nodes | log2(n)/log2(3) | packets/s per node | mean state age s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let base = rows.first().map_or(1.0, |r| r.bytes_per_node_s.max(1.0));
    let base_n = rows.first().map_or(3, |r| r.nodes) as f64;
    for r in rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {:.2} |",
            r.nodes,
            fmt_secs(r.converge),
            fmt_secs(r.detect),
            r.bytes_per_node_s,
            r.bytes_per_node_s / base,
            (r.nodes as f64).log2() / base_n.log2(),
            r.packets_per_node_s,
            r.info_age.as_secs_f64()
        );
    }
}
