//! A simulated cluster of a thousand or more nodes, to measure the policy against simple
//! placements on the same job trace.
//!
//! Pure and seeded: the same [`SimConfig`] gives the same [`Outcome`], bit for bit, and
//! nothing here reads a clock or does I/O.
//!
//! # The model
//!
//! - **Nodes.** Node `i` has speed 0.5×, 1× or 2× [`REFERENCE_SPEED`] (`i % 3`) and 1, 2 or
//!   4 CPUs (`i / 3 % 3`), so every combination is equally common, and
//!   [`SimConfig::mem_per_cpu`] of memory per CPU.
//! - **Jobs** arrive as a Poisson process over `[0, seconds)`, at a rate that makes the
//!   CPU work offered [`SimConfig::utilisation`] of the cluster's total capacity, each at
//!   a node drawn uniformly (its *home*). A job's lifetime alone on an idle reference
//!   CPU follows the heavy tail Harchol-Balter and Downey measured for Unix processes,
//!   P(lifetime > t) ∝ 1/t (a Pareto of index 1, bounded to [`SimConfig::min_life`,
//!   `max_life`]): most jobs are short, and most of the work is in a few long ones. Its
//!   resident size is log-uniform over [`SimConfig::min_rss`, `max_rss`]. A fraction
//!   [`SimConfig::io_fraction`] of the jobs is I/O-bound: it wants only
//!   [`SimConfig::io_demand`] of a CPU (its CPU work is its lifetime × that) and makes
//!   [`SimConfig::io_rate`] system calls a second, each of which costs
//!   [`SimConfig::remote_call_cost`] more when it runs away from home (forwarded to its
//!   home); the others want a whole CPU and make few calls.
//! - **Processor sharing.** A node with `cpus` CPUs and runnable jobs wanting `L` CPUs in
//!   all gives each job `demand × min(1, cpus / L)` of a CPU at its speed. Within a round
//!   the simulation is event-driven (arrivals, completions, the end of a move), so
//!   response times are exact for that model, not rounded to the round.
//! - **Placements** (see [`Placement`]): where a job arrives; at a random node; at the
//!   node that gives it the most CPU knowing every node's exact load, for free; or
//!   at home, then moved by the policy.
//! - **herd.** Every round ([`Params::interval`]) each home that has live jobs calls
//!   [`decide`] for them on a [`Snapshot`] of itself (exact, current), a random window of
//!   [`SimConfig::window`] other nodes, and the nodes its jobs run on, the others' load
//!   and memory as they were published 1 to [`SimConfig::gossip_age`] rounds before (as
//!   gossip delivers them), corrected by the home's own [`Ledger`]. Node loads are the
//!   runnable demand averaged over a round, smoothed with [`Params::decay`] as herdd does;
//!   a job's demand is smoothed the same way from its arrival. A move freezes the job for
//!   `rss / transfer_rate +` [`SimConfig::move_overhead`] seconds; it then runs at the
//!   target. Nodes' memory is accounted (for the policy) but not a cost: nothing swaps.
//!
//! # What is measured
//!
//! A job's **slowdown** is its response time (arrival to completion) over its lifetime
//! alone on an idle reference CPU at home (`work / demand`). Alone on a 2×
//! node it is 0.5; every job's denominator is the same whatever the placement, so the
//! placements compare job by job. The **makespan** is the time of the last completion.

use std::collections::{BTreeSet, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::policy::{decide, Ledger, Move, Node, Params, Proc, Reason, Snapshot, REFERENCE_SPEED};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Everything a run depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub nodes: usize,
    /// Jobs arrive during `[0, seconds)`; the run goes on until the last one completes.
    pub seconds: f64,
    /// CPU work offered over the cluster's capacity (Σ cpus × speed).
    pub utilisation: f64,
    pub seed: u64,
    /// Bounds of a job's lifetime alone on an idle reference CPU, seconds.
    pub min_life: f64,
    pub max_life: f64,
    /// Bounds of a job's resident size, bytes.
    pub min_rss: u64,
    pub max_rss: u64,
    /// Memory of a node per CPU, bytes.
    pub mem_per_cpu: u64,
    /// Fraction of jobs that are I/O-bound.
    pub io_fraction: f64,
    /// Share of a CPU an I/O-bound job wants.
    pub io_demand: f64,
    /// System calls a second of an I/O-bound job (CPU-bound jobs: under 20).
    pub io_rate: f64,
    /// Extra seconds per system call of a job away from home (forwarded to its home).
    pub remote_call_cost: f64,
    /// Migration rate, bytes a second (herd's measured rate is given to the policy too).
    pub transfer_rate: f64,
    /// Fixed seconds of every move, on top of `rss / transfer_rate`.
    pub move_overhead: f64,
    /// Other nodes in a home's snapshot each round.
    pub window: usize,
    /// The others' figures are 1 to `gossip_age` rounds old.
    pub gossip_age: usize,
    /// Seconds after the last arrival before the run gives up on unfinished jobs.
    pub drain_limit: f64,
    pub params: Params,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1000,
            seconds: 3600.0,
            utilisation: 0.7,
            seed: 1,
            min_life: 1.0,
            max_life: 1000.0,
            min_rss: 8 * MIB,
            max_rss: 2 * GIB,
            mem_per_cpu: 4 * GIB,
            io_fraction: 0.2,
            io_demand: 0.3,
            io_rate: 2000.0,
            // A forwarded call costs 160-210 µs against a few µs at home (docs/benchmarks.md).
            remote_call_cost: 150e-6,
            // herd moves 185-290 MiB/s (docs/benchmarks.md).
            transfer_rate: 200.0 * MIB as f64,
            move_overhead: 0.05,
            window: 32,
            gossip_age: 4,
            drain_limit: 100_000.0,
            params: Params::default(),
        }
    }
}

impl SimConfig {
    /// CPUs and speed of node `i`.
    pub fn node_shape(i: usize) -> (u32, u32) {
        const SPEEDS: [u32; 3] = [5_000, 10_000, 20_000];
        const CPUS: [u32; 3] = [1, 2, 4];
        (CPUS[i / 3 % 3], SPEEDS[i % 3])
    }

    /// Total capacity, in reference CPUs.
    pub fn capacity(&self) -> f64 {
        (0..self.nodes).map(|i| {
            let (cpus, speed) = Self::node_shape(i);
            f64::from(cpus) * f64::from(speed) / REFERENCE_SPEED
        })
        .sum()
    }

    /// Mean lifetime of a job: the bounded Pareto of index 1 has mean
    /// `L·H/(H−L) · ln(H/L)`.
    pub fn mean_life(&self) -> f64 {
        let (l, h) = (self.min_life, self.max_life);
        if h <= l {
            l
        } else {
            l * h / (h - l) * (h / l).ln()
        }
    }

    /// Mean CPU work of a job, reference CPU seconds.
    pub fn mean_work(&self) -> f64 {
        let f = self.io_fraction.clamp(0.0, 1.0);
        self.mean_life() * (1.0 - f + f * self.io_demand)
    }

    /// Jobs a second.
    pub fn arrival_rate(&self) -> f64 {
        self.utilisation * self.capacity() / self.mean_work()
    }
}

/// Where a job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Where it arrived, for good.
    None,
    /// At a node drawn uniformly when it arrives, for good.
    Random,
    /// At the node giving it the most CPU (counting the forwarding cost of an I/O-bound
    /// job away from home) by every node's exact load when it arrives, at no cost, for
    /// good.
    Omniscient,
    /// Where it arrived, then wherever herd's policy moves it.
    Herd,
}

impl Placement {
    pub const ALL: [Placement; 4] = [Placement::None, Placement::Random, Placement::Omniscient, Placement::Herd];

    pub fn name(self) -> &'static str {
        match self {
            Placement::None => "none",
            Placement::Random => "random",
            Placement::Omniscient => "omniscient",
            Placement::Herd => "herd",
        }
    }
}

/// One job of the trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: u64,
    /// Seconds.
    pub arrival: f64,
    pub home: usize,
    /// CPU seconds on the reference CPU.
    pub work: f64,
    /// Share of a CPU it wants while it lives.
    pub demand: f64,
    pub rss: u64,
    /// System calls a second.
    pub io_rate: f64,
}

impl Job {
    /// Seconds it would take alone on an idle reference CPU at home.
    pub fn ideal(&self) -> f64 {
        self.work / self.demand
    }
}

/// The job trace of `cfg`, in arrival order: the same for every placement.
pub fn trace(cfg: &SimConfig) -> impl Iterator<Item = Job> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(0);
    let rate = cfg.arrival_rate();
    let cfg = cfg.clone();
    let mut now = 0.0;
    let mut id = 0;
    std::iter::from_fn(move || {
        if rate.is_nan() || rate <= 0.0 || cfg.nodes == 0 {
            return None;
        }
        // Exponential gaps; 1 − u is in (0, 1], so the logarithm is finite.
        now += -(1.0 - rng.random::<f64>()).ln() / rate;
        if now >= cfg.seconds {
            return None;
        }
        let (l, h) = (cfg.min_life, cfg.max_life.max(cfg.min_life));
        let life = l / (1.0 - rng.random::<f64>() * (1.0 - l / h));
        let (lo, hi) = ((cfg.min_rss.max(1)) as f64, (cfg.max_rss.max(cfg.min_rss).max(1)) as f64);
        let rss = (lo * (hi / lo).powf(rng.random::<f64>())) as u64;
        let io = rng.random_bool(cfg.io_fraction.clamp(0.0, 1.0));
        let home = rng.random_range(0..cfg.nodes);
        let demand = if io { cfg.io_demand } else { 1.0 };
        id += 1;
        Some(Job {
            id,
            arrival: now,
            home,
            work: life * demand,
            demand,
            rss,
            io_rate: if io { cfg.io_rate } else { rng.random_range(0.0..20.0) },
        })
    })
}

/// The result of one placement over the trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub placement: Placement,
    pub jobs: usize,
    /// Jobs not finished `drain_limit` seconds after the last arrival (left out of the
    /// slowdowns).
    pub unfinished: usize,
    pub mean_slowdown: f64,
    pub p95_slowdown: f64,
    pub p99_slowdown: f64,
    /// Mean slowdown of the jobs of a lifetime of 100 s or more.
    pub mean_slowdown_long: f64,
    /// Time of the last completion, seconds.
    pub makespan: f64,
    /// Moves, by [`Reason`]: I/O, memory, load.
    pub moves: [u64; 3],
    /// Jobs that moved at least once.
    pub moved_jobs: usize,
    /// The most moves of one job.
    pub max_job_moves: u32,
    /// Seconds jobs spent frozen by moves, in all.
    pub frozen: f64,
    /// Crowding: of the rounds in which a node received jobs moved for load, the 90th
    /// percentile of how many it received, per CPU (homes decide independently, so
    /// several may pick the same node in one round).
    pub received_p90: f64,
    /// Calls of [`decide`].
    pub rounds: u64,
}

impl Outcome {
    pub fn migrations(&self) -> u64 {
        self.moves.iter().sum()
    }

    pub fn migrations_per_job(&self) -> f64 {
        self.migrations() as f64 / self.jobs.max(1) as f64
    }
}

/// Runs the trace of `cfg` under `placement`.
pub fn simulate(cfg: &SimConfig, placement: Placement) -> Outcome {
    let nodes = (0..cfg.nodes).map(SimConfig::node_shape).collect();
    run(cfg, nodes, trace(cfg), placement)
}

/// A live job.
#[derive(Clone, Debug)]
struct Live {
    job: Job,
    /// The node it is on (or moving to).
    at: usize,
    /// While frozen: CPU work left, reference seconds.
    remaining: f64,
    /// While runnable: the node's virtual time at which it ends.
    ends: f64,
    /// Not runnable before this time: its arrival, or the end of a move.
    frozen_until: f64,
    /// Runnable (in its node's `running`), else frozen (in `frozen`).
    running: bool,
    /// When it last arrived somewhere.
    arrived: f64,
    /// Smoothed demand, as herdd measures it.
    demand: f64,
    migrations: u32,
}

impl Live {
    /// Work done per unit of its node's virtual time: its demand, less, away from home,
    /// the time it waits for its forwarded calls.
    fn pace(&self, cfg: &SimConfig) -> f64 {
        let away = if self.at == self.job.home { 1.0 } else { 1.0 / (1.0 + self.job.io_rate * cfg.remote_call_cost) };
        self.job.demand * away
    }
}

/// A node under processor sharing, kept in virtual time: `vtime` advances by the CPU
/// rate one job wanting a whole CPU gets (`speed × min(1, cpus / load)`, in reference
/// CPUs), so a runnable job ends when `vtime` reaches its `ends`, whatever happens to the
/// load meanwhile, and the next completion is the first of `running`.
#[derive(Clone, Debug)]
struct SimNode {
    cpus: u32,
    speed: u32,
    mem_total: u64,
    mem_used: u64,
    vtime: f64,
    /// Runnable jobs by (`ends` as ordered bits, slot).
    running: BTreeSet<(u64, usize)>,
    /// Slots of the jobs frozen here: arriving later this round, or moving in.
    frozen: Vec<usize>,
    /// Runnable demand now.
    load: f64,
    /// Runnable demand averaged over rounds, smoothed: what the node publishes.
    smoothed: f64,
    /// Slots of the jobs whose home this is.
    own: Vec<usize>,
    ledger: Ledger,
}

impl SimNode {
    fn rate_factor(&self, load: f64) -> f64 {
        let cpus = f64::from(self.cpus);
        let share = if load <= cpus { 1.0 } else { cpus / load };
        share * f64::from(self.speed) / REFERENCE_SPEED
    }

    fn mem_free(&self) -> u64 {
        self.mem_total.saturating_sub(self.mem_used)
    }

    fn is_idle(&self) -> bool {
        self.running.is_empty() && self.frozen.is_empty()
    }
}

/// Orders non-negative times as their bits do.
fn key(t: f64) -> u64 {
    debug_assert!(t >= 0.0);
    t.max(0.0).to_bits()
}

/// Published figures of every node, one entry per round, newest first.
type History = VecDeque<Vec<(f64, u64)>>;

struct World<'a> {
    cfg: &'a SimConfig,
    nodes: Vec<SimNode>,
    slots: Vec<Option<Live>>,
    free_slots: Vec<usize>,
    slowdowns: Vec<f64>,
    long: (f64, usize),
    moved_jobs: usize,
    max_job_moves: u32,
    makespan: f64,
    moves: [u64; 3],
    frozen: f64,
    rounds: u64,
    jobs: usize,
    /// Load moves into each node this round.
    received: Vec<u32>,
    /// Per node and round with some: load moves received per CPU.
    crowding: Vec<f64>,
}

impl World<'_> {
    fn add(&mut self, live: Live) {
        let at = live.at;
        let home = live.job.home;
        self.nodes[at].mem_used += live.job.rss;
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s] = Some(live);
                s
            }
            None => {
                self.slots.push(Some(live));
                self.slots.len() - 1
            }
        };
        self.nodes[at].frozen.push(slot);
        self.nodes[home].own.push(slot);
    }

    /// Makes the frozen job in `slot` runnable on its node.
    fn thaw(&mut self, slot: usize) {
        let cfg = self.cfg;
        let j = self.slots[slot].as_mut().expect("frozen job is live");
        let node = &mut self.nodes[j.at];
        remove(&mut node.frozen, slot);
        j.running = true;
        j.ends = node.vtime + j.remaining / j.pace(cfg);
        node.running.insert((key(j.ends), slot));
        node.load += j.job.demand;
    }

    /// Takes the job in `slot` off its node, frozen with the work it has left.
    fn freeze(&mut self, slot: usize) {
        let cfg = self.cfg;
        let j = self.slots[slot].as_mut().expect("job is live");
        let node = &mut self.nodes[j.at];
        if j.running {
            node.running.remove(&(key(j.ends), slot));
            node.load = if node.running.is_empty() { 0.0 } else { (node.load - j.job.demand).max(0.0) };
            j.remaining = ((j.ends - node.vtime) * j.pace(cfg)).max(0.0);
            j.running = false;
        } else {
            remove(&mut node.frozen, slot);
        }
    }

    fn finish(&mut self, slot: usize, now: f64) {
        let live = self.slots[slot].take().expect("finished job is live");
        self.free_slots.push(slot);
        let node = &mut self.nodes[live.at];
        node.mem_used -= live.job.rss;
        node.running.remove(&(key(live.ends), slot));
        node.load = if node.running.is_empty() { 0.0 } else { (node.load - live.job.demand).max(0.0) };
        remove(&mut self.nodes[live.job.home].own, slot);
        let slowdown = (now - live.job.arrival) / live.job.ideal();
        self.slowdowns.push(slowdown);
        if live.job.ideal() >= 100.0 {
            self.long.0 += slowdown;
            self.long.1 += 1;
        }
        self.makespan = self.makespan.max(now);
        self.moved_jobs += usize::from(live.migrations > 0);
        self.max_job_moves = self.max_job_moves.max(live.migrations);
    }

    /// Runs node `n` from `start` to `end`: processor sharing between its runnable jobs,
    /// exact between events (a job ends or thaws). Returns the runnable demand averaged
    /// over the interval.
    fn run_node(&mut self, n: usize, start: f64, end: f64) -> f64 {
        let mut now = start;
        let mut integral = 0.0;
        loop {
            // Jobs whose arrival or move is over.
            let mut thaw_at = f64::INFINITY;
            let mut k = 0;
            while k < self.nodes[n].frozen.len() {
                let slot = self.nodes[n].frozen[k];
                let until = self.slots[slot].as_ref().expect("frozen job is live").frozen_until;
                if until <= now {
                    self.thaw(slot); // removes it from `frozen`
                } else {
                    thaw_at = thaw_at.min(until);
                    k += 1;
                }
            }
            let node = &mut self.nodes[n];
            let next_event = thaw_at.min(end);
            let Some(&(first, slot)) = node.running.first() else {
                if next_event >= end {
                    break;
                }
                now = next_event;
                continue;
            };
            let rate = node.rate_factor(node.load);
            let ends = now + (f64::from_bits(first) - node.vtime).max(0.0) / rate;
            if ends > next_event {
                integral += node.load * (next_event - now);
                node.vtime += rate * (next_event - now);
                now = next_event;
                if now >= end {
                    break;
                }
                continue;
            }
            integral += node.load * (ends - now);
            node.vtime = node.vtime.max(f64::from_bits(first));
            now = ends;
            self.finish(slot, now);
        }
        integral / (end - start)
    }

    /// One round of herd: every home with live jobs decides on its own snapshot.
    fn balance(&mut self, now: f64, history: &History, rng: &mut ChaCha8Rng, index: &mut [usize]) {
        let cfg = self.cfg;
        let p = &cfg.params;
        let n = self.nodes.len();
        let mut members: Vec<usize> = Vec::with_capacity(cfg.window + 8);
        for home in 0..n {
            if self.nodes[home].own.is_empty() {
                continue;
            }
            // Itself, its jobs' nodes, and a random window of others.
            members.clear();
            include(index, &mut members, home);
            for &s in &self.nodes[home].own {
                include(index, &mut members, self.slots[s].as_ref().expect("own job is live").at);
            }
            let mut drawn = 0;
            while drawn < cfg.window && members.len() < n {
                let i = rng.random_range(0..n);
                if include(index, &mut members, i) {
                    drawn += 1;
                }
            }
            let nodes = members
                .iter()
                .map(|&i| {
                    let node = &self.nodes[i];
                    let (load, mem_free) = if i == home {
                        (node.smoothed, node.mem_free())
                    } else {
                        let age = rng.random_range(1..=cfg.gossip_age.max(1)).min(history.len() - 1);
                        history[age][i]
                    };
                    Node {
                        id: i as u64,
                        cpus: node.cpus,
                        speed: node.speed,
                        load,
                        mem_total: node.mem_total,
                        mem_free,
                        flags: Default::default(),
                        compatible: true,
                    }
                })
                .collect();
            let procs = self.nodes[home]
                .own
                .iter()
                .map(|&s| {
                    let j = self.slots[s].as_ref().expect("own job is live");
                    Proc {
                        id: s as u64,
                        at: index[j.at],
                        demand: j.demand,
                        rss: j.job.rss,
                        growth: 0.0,
                        moves: j.migrations,
                        age: (now - j.job.arrival).max(0.0),
                        since_move: (now - j.arrived).max(0.0),
                        io_rate: j.job.io_rate,
                        locked: false,
                        movable: j.frozen_until <= now,
                    }
                })
                .collect();
            let mut snap = Snapshot { home: 0, nodes, procs, transfer_rate: cfg.transfer_rate };
            let ledger = &mut self.nodes[home].ledger;
            ledger.adjust(&mut snap.nodes, now, p);
            let moves = decide(&snap, p);
            ledger.record(&snap, &moves, now);
            self.rounds += 1;
            for m in &moves {
                self.carry_out(m, &members, now);
            }
            for &i in &members {
                index[i] = usize::MAX;
            }
        }
        for (got, node) in self.received.iter_mut().zip(&self.nodes) {
            if *got > 0 {
                self.crowding.push(f64::from(*got) / f64::from(node.cpus));
                *got = 0;
            }
        }
    }

    fn carry_out(&mut self, m: &Move, members: &[usize], now: f64) {
        let slot = m.proc as usize;
        let (from, to) = (members[m.from], members[m.to]);
        let cfg = self.cfg;
        self.freeze(slot);
        let j = self.slots[slot].as_mut().expect("moved job is live");
        debug_assert_eq!(j.at, from);
        let freeze = j.job.rss as f64 / cfg.transfer_rate + cfg.move_overhead;
        j.at = to;
        j.frozen_until = now + freeze;
        j.arrived = now + freeze;
        j.migrations += 1;
        let rss = j.job.rss;
        self.frozen += freeze;
        self.moves[match m.reason {
            Reason::Io => 0,
            Reason::Memory => 1,
            Reason::Load { .. } => 2,
        }] += 1;
        if let Reason::Load { .. } = m.reason {
            self.received[to] += 1;
        }
        self.nodes[from].mem_used -= rss;
        let dst = &mut self.nodes[to];
        dst.frozen.push(slot);
        dst.mem_used += rss;
    }
}

/// The omniscient placement: the node that gives `job` the most CPU by the nodes' exact
/// `loads` (counting the wait for forwarded calls away from home; home on a tie, then the
/// lowest index).
fn best_node(job: &Job, nodes: &[SimNode], loads: &[f64], cfg: &SimConfig) -> usize {
    let gets = |i: usize| {
        let away = if i == job.home { 1.0 } else { 1.0 / (1.0 + job.io_rate * cfg.remote_call_cost) };
        nodes[i].rate_factor(loads[i] + job.demand) * away
    };
    let mut best = (gets(job.home), job.home);
    for i in 0..nodes.len() {
        let g = gets(i);
        if g > best.0 {
            best = (g, i);
        }
    }
    best.1
}

/// Adds node `i` to a snapshot's `members` unless it is there; `index` maps nodes to
/// their place in `members` (`usize::MAX`: not a member). True if it was added.
fn include(index: &mut [usize], members: &mut Vec<usize>, i: usize) -> bool {
    if index[i] != usize::MAX {
        return false;
    }
    index[i] = members.len();
    members.push(i);
    true
}

fn remove(v: &mut Vec<usize>, x: usize) {
    if let Some(i) = v.iter().position(|&y| y == x) {
        v.swap_remove(i);
    }
}

/// Runs `jobs` (in arrival order) on nodes of the given (cpus, speed) under `placement`.
fn run(cfg: &SimConfig, shapes: Vec<(u32, u32)>, jobs: impl Iterator<Item = Job>, placement: Placement) -> Outcome {
    let p = &cfg.params;
    let step = p.interval;
    let mut world = World {
        cfg,
        nodes: shapes
            .into_iter()
            .map(|(cpus, speed)| SimNode {
                cpus: cpus.max(1),
                speed: speed.max(1),
                mem_total: u64::from(cpus.max(1)) * cfg.mem_per_cpu,
                mem_used: 0,
                vtime: 0.0,
                running: BTreeSet::new(),
                frozen: Vec::new(),
                load: 0.0,
                smoothed: 0.0,
                own: Vec::new(),
                ledger: Ledger::default(),
            })
            .collect(),
        slots: Vec::new(),
        free_slots: Vec::new(),
        slowdowns: Vec::new(),
        long: (0.0, 0),
        moved_jobs: 0,
        max_job_moves: 0,
        makespan: 0.0,
        moves: [0; 3],
        frozen: 0.0,
        rounds: 0,
        jobs: 0,
        received: Vec::new(),
        crowding: Vec::new(),
    };
    let n = world.nodes.len();
    world.received = vec![0; n];
    let mut jobs = jobs.peekable();
    let mut place_rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    place_rng.set_stream(1);
    let mut herd_rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    herd_rng.set_stream(2);
    let mut history: History = VecDeque::new();
    let mut index = vec![usize::MAX; n];
    let mut loads = vec![0.0; n];
    let mut live = 0usize;
    let mut last_arrival = 0.0f64;
    let mut round = 0u64;
    loop {
        let now = round as f64 * step;
        let end = (round + 1) as f64 * step;
        if jobs.peek().is_none() && live == 0 {
            break;
        }
        if jobs.peek().is_none() && now > last_arrival + cfg.drain_limit {
            break;
        }
        if placement == Placement::Herd {
            history.push_front(world.nodes.iter().map(|x| (x.smoothed, x.mem_free())).collect());
            history.truncate(cfg.gossip_age.max(1) + 1);
            world.balance(now, &history, &mut herd_rng, &mut index);
        }
        // This round's arrivals.
        if placement == Placement::Omniscient {
            for (l, node) in loads.iter_mut().zip(&world.nodes) {
                *l = node.load;
            }
        }
        while let Some(job) = jobs.next_if(|j| j.arrival < end) {
            last_arrival = job.arrival;
            world.jobs += 1;
            let at = match placement {
                Placement::None | Placement::Herd => job.home,
                Placement::Random => place_rng.random_range(0..n),
                Placement::Omniscient => {
                    let at = best_node(&job, &world.nodes, &loads, cfg);
                    loads[at] += job.demand;
                    at
                }
            };
            world.add(Live {
                at,
                remaining: job.work,
                ends: 0.0,
                frozen_until: job.arrival,
                running: false,
                arrived: job.arrival,
                demand: 0.0,
                migrations: 0,
                job,
            });
        }
        // Processor sharing on every node, then what each node publishes.
        for i in 0..n {
            let busy = if world.nodes[i].is_idle() { 0.0 } else { world.run_node(i, now, end) };
            let node = &mut world.nodes[i];
            node.smoothed = p.smooth(node.smoothed, busy, step);
        }
        live = world.jobs - world.slowdowns.len();
        if placement == Placement::Herd {
            for j in world.slots.iter_mut().flatten() {
                let alive = end - j.job.arrival.max(now);
                j.demand = p.smooth(j.demand, j.job.demand, alive);
            }
        }
        round += 1;
    }
    let s = sorted(std::mem::take(&mut world.slowdowns));
    let crowding = sorted(std::mem::take(&mut world.crowding));
    Outcome {
        placement,
        jobs: world.jobs,
        unfinished: live,
        mean_slowdown: if s.is_empty() { 0.0 } else { s.iter().sum::<f64>() / s.len() as f64 },
        p95_slowdown: percentile(&s, 0.95),
        p99_slowdown: percentile(&s, 0.99),
        mean_slowdown_long: if world.long.1 == 0 { 0.0 } else { world.long.0 / world.long.1 as f64 },
        makespan: world.makespan,
        moves: world.moves,
        moved_jobs: world.moved_jobs,
        max_job_moves: world.max_job_moves,
        frozen: world.frozen,
        received_p90: percentile(&crowding, 0.9),
        rounds: world.rounds,
    }
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The `q` quantile of sorted values, nearest rank (0 for none).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, arrival: f64, home: usize, work: f64) -> Job {
        Job { id, arrival, home, work, demand: 1.0, rss: 16 * MIB, io_rate: 0.0 }
    }

    fn small() -> SimConfig {
        SimConfig { nodes: 60, seconds: 400.0, max_life: 200.0, ..SimConfig::default() }
    }

    #[test]
    fn processor_sharing_is_exact_between_rounds() {
        let cfg = SimConfig::default();
        // Two jobs of 1 s on one reference CPU: both end at 2 s. A third of 1 s arrives at
        // 2.5 s and ends at 3.5 s.
        let jobs = vec![job(1, 0.0, 0, 1.0), job(2, 0.0, 0, 1.0), job(3, 2.5, 0, 1.0)];
        let out = run(&cfg, vec![(1, 10_000)], jobs.into_iter(), Placement::None);
        assert_eq!((out.jobs, out.unfinished), (3, 0));
        assert!((out.makespan - 3.5).abs() < 1e-9, "{out:?}");
        assert!((out.mean_slowdown - 5.0 / 3.0).abs() < 1e-9, "{out:?}");
        // On two CPUs at twice the speed, each takes 0.5 s.
        let jobs = vec![job(1, 0.0, 0, 1.0), job(2, 0.25, 0, 1.0)];
        let out = run(&cfg, vec![(2, 20_000)], jobs.into_iter(), Placement::None);
        assert!((out.makespan - 0.75).abs() < 1e-9 && (out.mean_slowdown - 0.5).abs() < 1e-9, "{out:?}");
    }

    #[test]
    fn omniscient_takes_the_idle_fast_node() {
        let cfg = SimConfig::default();
        let jobs = vec![job(1, 0.0, 0, 2.0)];
        let out = run(&cfg, vec![(1, 10_000), (1, 20_000)], jobs.into_iter(), Placement::Omniscient);
        assert!((out.makespan - 1.0).abs() < 1e-9, "{out:?}");
    }

    #[test]
    fn herd_moves_a_long_job_off_a_busy_node() {
        let cfg = SimConfig::default();
        let jobs = vec![job(1, 0.0, 0, 60.0), job(2, 0.0, 0, 60.0)];
        let none = run(&cfg, vec![(1, 10_000), (1, 10_000)], jobs.clone().into_iter(), Placement::None);
        let herd = run(&cfg, vec![(1, 10_000), (1, 10_000)], jobs.into_iter(), Placement::Herd);
        assert!((none.makespan - 120.0).abs() < 1e-6, "{none:?}");
        assert_eq!(herd.moves, [0, 0, 1], "{herd:?}");
        assert!(herd.makespan < 70.0, "{herd:?}");
    }

    #[test]
    fn trace_offers_the_configured_work() {
        let cfg = SimConfig { nodes: 300, seconds: 2000.0, max_life: 100.0, ..SimConfig::default() };
        let jobs: Vec<Job> = trace(&cfg).collect();
        let offered = jobs.iter().map(|j| j.work).sum::<f64>() / (cfg.capacity() * cfg.seconds);
        assert!((offered - cfg.utilisation).abs() < 0.05, "offered {offered}");
        assert!(jobs.windows(2).all(|w| w[0].arrival <= w[1].arrival));
        let io = jobs.iter().filter(|j| j.demand < 1.0).count() as f64 / jobs.len() as f64;
        assert!((io - cfg.io_fraction).abs() < 0.02, "I/O-bound fraction {io}");
    }

    #[test]
    fn runs_are_reproducible_and_finish() {
        let cfg = small();
        for placement in Placement::ALL {
            let a = simulate(&cfg, placement);
            assert_eq!(a, simulate(&cfg, placement));
            assert_eq!(a.unfinished, 0, "{a:?}");
            assert!(a.jobs > 1000, "{a:?}");
        }
    }

    /// Placement at birth ([`Params::birth_placement`]) on a trace of short jobs (0.3 to
    /// 10 s alone, compiler runs): placed in their first second, not after `min_residence`,
    /// they wait less on crowded nodes, on average and in the tail.
    #[test]
    fn birth_placement_spreads_short_jobs() {
        let mut cfg = SimConfig { nodes: 60, seconds: 300.0, min_life: 0.3, max_life: 10.0, max_rss: 256 * MIB, ..SimConfig::default() };
        cfg.params.birth_placement = false;
        let held = simulate(&cfg, Placement::Herd);
        cfg.params.birth_placement = true;
        let born = simulate(&cfg, Placement::Herd);
        assert_eq!((held.unfinished, born.unfinished), (0, 0));
        assert!(born.mean_slowdown < 0.95 * held.mean_slowdown, "mean: at birth {born:?}\nheld {held:?}");
        assert!(born.p95_slowdown < held.p95_slowdown, "p95: at birth {born:?}\nheld {held:?}");
        assert!(born.migrations() > held.migrations(), "it places more jobs");
    }

    #[test]
    fn herd_beats_doing_nothing() {
        let cfg = small();
        let none = simulate(&cfg, Placement::None);
        let herd = simulate(&cfg, Placement::Herd);
        assert!(herd.mean_slowdown < none.mean_slowdown, "herd {herd:?}\nnone {none:?}");
        assert!(herd.migrations() > 0);
    }
}
