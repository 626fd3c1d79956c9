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
    let step = Duration::from_millis(if n > 100 { 1000 } else { 250 });
    let converge = sim.run_until_true(limit, step, Sim::converged);
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

pub fn print_sim_header() {
    println!("\nsimulated nodes (same membership code, virtual clock, 0.1-0.6 ms latency, sealed sizes):");
    println!(
        "| nodes | converge s | detect s | gossip B/s per node | vs first row | log2(n) vs first row | packets/s per node | mean state age s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
}

pub fn print_sim_row(r: &SimRow, first: &SimRow) {
    let base = first.bytes_per_node_s.max(1.0);
    let base_n = first.nodes as f64;
    {
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

pub struct RealRow {
    pub up: Duration,
    pub converge: Duration,
    pub detect: Duration,
    pub bytes_per_node_s: f64,
}

fn client_nodes(socket: &std::path::Path) -> anyhow::Result<Vec<herd_daemon::control::NodeRow>> {
    use herd_daemon::control::{Client, Request, Response};
    match Client::connect(socket)?.call(&Request::Nodes)? {
        Response::Nodes(rows) => Ok(rows),
        r => anyhow::bail!("unexpected answer {r:?}"),
    }
}

fn client_sent_bytes(socket: &std::path::Path) -> anyhow::Result<u64> {
    use herd_daemon::control::{Client, Request, Response};
    match Client::connect(socket)?.call(&Request::Status)? {
        Response::Status(s) => Ok(s.counters.gossip_sent_bytes),
        r => anyhow::bail!("unexpected answer {r:?}"),
    }
}

fn poll(limit: Duration, mut cond: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond()? {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("not within {limit:?}")
}

/// A real local cluster of `n` herdd (namespaces, bridge, sealed UDP).
pub fn real(n: u32, window: Duration) -> anyhow::Result<RealRow> {
    let exe = std::env::current_exe()?;
    let mut opts = herd_lab::UpOptions::new(n);
    // The cluster dir must be visible in the nodes: they have a private /tmp.
    opts.dir = Some(exe.with_file_name(format!("herd-bench-cluster-{}", std::process::id())));
    opts.herd_exe = Some(exe.with_file_name("herd"));
    opts.daemon = Some(exe.with_file_name("herdd"));
    let started = std::time::Instant::now();
    let cluster = herd_lab::LocalCluster::up(&opts)?;
    let up = started.elapsed();
    let names: Vec<String> = (1..=n).map(|k| format!("n{k}")).collect();
    let sockets: Vec<_> = names.iter().map(|name| cluster.node_socket(name)).collect();
    let all_up = |rows: &[herd_daemon::control::NodeRow]| rows.len() == n as usize && rows.iter().all(|r| r.state == "up");
    poll(Duration::from_secs(60), || Ok(sockets.iter().all(|s| client_nodes(s).is_ok_and(|r| all_up(&r)))))?;
    let converge = started.elapsed();
    let before: Vec<u64> = sockets.iter().map(|s| client_sent_bytes(s)).collect::<anyhow::Result<_>>()?;
    let t0 = std::time::Instant::now();
    std::thread::sleep(window);
    let after: Vec<u64> = sockets.iter().map(|s| client_sent_bytes(s)).collect::<anyhow::Result<_>>()?;
    let secs = t0.elapsed().as_secs_f64();
    let bytes_per_node_s = after.iter().zip(&before).map(|(a, b)| (a - b) as f64).sum::<f64>() / secs / f64::from(n);
    let victim = &names[names.len() / 2];
    let pid = cluster
        .status()?
        .into_iter()
        .find(|s| &s.name == victim)
        .and_then(|s| s.pid)
        .ok_or_else(|| anyhow::anyhow!("{victim}'s herdd is not running"))?;
    herd_kernel::task::kill(pid, libc::SIGKILL)?;
    let others: Vec<_> = names.iter().zip(&sockets).filter(|(name, _)| *name != victim).map(|(_, s)| s.clone()).collect();
    let detect = poll(Duration::from_secs(60), || {
        Ok(others.iter().all(|s| {
            client_nodes(s).is_ok_and(|rows| rows.iter().any(|r| &r.name == victim && r.state == "down"))
        }))
    })?;
    cluster.down()?;
    Ok(RealRow { up, converge, detect, bytes_per_node_s })
}

pub fn run(sizes: &[usize], window: Duration, real_nodes: u32) -> anyhow::Result<bool> {
    if real_nodes > 0 {
        println!("local cluster ({real_nodes} herdd, each in its own namespaces, sealed UDP over a bridge):");
        println!("| nodes | cluster up s | all list all up s | detect dead s | gossip B/s per node |");
        println!("|---|---|---|---|---|");
        match real(real_nodes, window) {
            Ok(r) => println!(
                "| {real_nodes} | {:.2} | {:.2} | {:.2} | {:.0} |",
                r.up.as_secs_f64(),
                r.converge.as_secs_f64(),
                r.detect.as_secs_f64(),
                r.bytes_per_node_s
            ),
            Err(e) => println!("| {real_nodes} | failed: {e:#} | | | |"),
        }
    }
    print_sim_header();
    let mut rows: Vec<SimRow> = Vec::new();
    for &n in sizes {
        let row = simulate(n, window, 42 + n as u64);
        print_sim_row(&row, rows.first().unwrap_or(&row));
        rows.push(row);
    }
    let goal = rows.iter().all(|r| r.detect.is_some_and(|d| d < Duration::from_secs(5)));
    println!("\ngoal (detection within 5 s at every size): {}", if goal { "met" } else { "NOT met" });
    Ok(true)
}
