//! The decision: which of this node's processes should run elsewhere, and where.
//!
//! [`decide`] is a pure function of a [`Snapshot`] and [`Params`]: the same input gives
//! the same moves, on a real node and in the simulator. It applies, in this order:
//!
//! 1. **I/O pulled home.** A process away from home that makes many forwarded calls a
//!    second ([`Params::io_calls`]) pays a network round trip for each: it comes home.
//!    An I/O-heavy process at home is never sent out for load.
//! 2. **Memory ushering.** On a node whose free memory is under [`Params::mem_low`] of
//!    its total — counting what this home's processes there will have grown by
//!    [`Params::usher_horizon`] seconds from now — this home's largest movable processes
//!    there go to the nodes with the most room, until the node is above the threshold
//!    again: before the kernel's OOM killer has to act. Residence times do not hold it back.
//! 3. **Load.** Loads are normalised by CPUs and speed. A process moves from node S to
//!    node T only when T's load with the process added, the process's share weighted by
//!    [`Params::stability`] (MOSIX used 1.3), is still below S's load, and the process
//!    would get more CPU on T than on S. It must have run long enough to pay for its own
//!    move (resident size over the measured transfer rate, times [`Params::pay_factor`])
//!    and must have stayed [`Params::min_residence`] seconds where it is (no ping-pong) —
//!    except before its first move, with [`Params::birth_placement`] (MOSIX's `mosrun -b`).
//!    The move with the largest gain is made first; the loads are updated and the next
//!    one is chosen, up to [`Params::max_moves`] a round.
//!
//! Loads are the nodes' published ones (smoothed: they rise slowly), but never less than
//! this home's own processes on a node make it.
//!
//! Never a target: a node that is blocked, quiet, not compatible with this home's
//! processes, or not up (home itself always takes its own processes back). Memory
//! ushering only goes to nodes whose memory is known. A locked process never moves; a
//! process on a `stay` or `quiet` node, or at home on an `lstay` home, is not moved for
//! load (memory ushering and the I/O rule still move it: the alternatives are the OOM
//! killer and a round trip per call). A quiet home moves nothing at all: it takes no
//! part in balancing. Figures that are not numbers (NaN) count as none, and such a
//! process stays where it is.

use serde::{Deserialize, Serialize};

/// The speed of the reference CPU (herdd's calibration scale).
pub const REFERENCE_SPEED: f64 = 10_000.0;

/// Every tunable of the policy. Each one is a key of herdd's `[policy]` config table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// A process moves only if the target's load plus `stability` × its share stays below
    /// the source's load (MOSIX: 1.3). Higher: fewer, surer moves.
    pub stability: f64,
    /// Seconds a process stays where it arrived (or was started) before balancing may
    /// move it again.
    pub min_residence: f64,
    /// Placement at birth (MOSIX's `mosrun -b`): a process that has never moved is not
    /// held at home by `min_residence`. Young, it is at its smallest and cheapest to move,
    /// and a short job (a compiler run) that waited out the residence would be half
    /// over; it still must have run long enough to pay for its move.
    pub birth_placement: bool,
    /// A process must have run `pay_factor` × (its resident size / transfer rate) seconds
    /// before it moves, and as long again after each move.
    pub pay_factor: f64,
    /// Processes that want less than this share of a CPU are not moved for load.
    pub min_demand: f64,
    /// Forwarded (or, at home, read/write) calls per second from which a process counts
    /// as I/O-bound: it is pulled home and never sent away for load.
    pub io_calls: f64,
    /// Memory ushering starts when a node's free memory is below this fraction of its total.
    pub mem_low: f64,
    /// Ushering sends a process only to a node that keeps at least this fraction of its
    /// memory free with the process there.
    pub mem_target_free: f64,
    /// Seconds ahead ushering looks: a node's free memory counts less what this home's
    /// processes there grow by in that time (a move must be over before the OOM killer).
    pub usher_horizon: f64,
    /// At most this many moves a round, per home.
    pub max_moves: usize,
    /// Seconds during which a move made by this node counts in the loads and memory of
    /// the two nodes, before their published figures can be trusted to show it.
    pub settle: f64,
    /// Per-second weight of the past in a process's smoothed CPU demand (0 = only the
    /// last second counts; MOSIX decayed by 0.926–0.975 a tick).
    pub decay: f64,
    /// Transfer rate assumed until a move has been measured, bytes a second.
    pub default_rate: f64,
    /// Seconds between two rounds of [`decide`].
    pub interval: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            stability: 1.3,
            min_residence: 2.0,
            birth_placement: true,
            pay_factor: 1.0,
            min_demand: 0.25,
            io_calls: 200.0,
            mem_low: 0.10,
            mem_target_free: 0.20,
            usher_horizon: 5.0,
            max_moves: 4,
            settle: 6.0,
            decay: 0.5,
            default_rate: 100.0 * 1024.0 * 1024.0,
            interval: 1.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamError {
    Invalid(&'static str, String),
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamError::Invalid(key, why) => write!(f, "policy.{key}: {why}"),
        }
    }
}

impl std::error::Error for ParamError {}

impl Params {
    /// Checks every value is in its range; herdd refuses to start otherwise.
    pub fn validate(&self) -> Result<(), ParamError> {
        let check = |ok: bool, key: &'static str, why: &str| if ok { Ok(()) } else { Err(ParamError::Invalid(key, why.into())) };
        let fin = |x: f64| x.is_finite();
        check(fin(self.stability) && self.stability >= 1.0, "stability", "must be a number ≥ 1")?;
        check(fin(self.min_residence) && self.min_residence >= 0.0, "min_residence", "must be seconds ≥ 0")?;
        check(fin(self.pay_factor) && self.pay_factor >= 0.0, "pay_factor", "must be ≥ 0")?;
        check(fin(self.min_demand) && (0.0..=1.0).contains(&self.min_demand), "min_demand", "must be between 0 and 1")?;
        check(fin(self.io_calls) && self.io_calls > 0.0, "io_calls", "must be calls per second > 0")?;
        check(fin(self.mem_low) && (0.0..1.0).contains(&self.mem_low), "mem_low", "must be a fraction between 0 and 1")?;
        check(
            fin(self.mem_target_free) && (0.0..1.0).contains(&self.mem_target_free) && self.mem_target_free >= self.mem_low,
            "mem_target_free",
            "must be a fraction between mem_low and 1",
        )?;
        check(fin(self.usher_horizon) && (0.0..=600.0).contains(&self.usher_horizon), "usher_horizon", "must be seconds between 0 and 600")?;
        check(self.max_moves >= 1, "max_moves", "must be at least 1")?;
        check(fin(self.settle) && self.settle >= 0.0, "settle", "must be seconds ≥ 0")?;
        check(fin(self.decay) && (0.0..1.0).contains(&self.decay), "decay", "must be between 0 and 1 (excluded)")?;
        check(fin(self.default_rate) && self.default_rate > 0.0, "default_rate", "must be bytes per second > 0")?;
        check(fin(self.interval) && (0.1..=3600.0).contains(&self.interval), "interval", "must be seconds between 0.1 and 3600")?;
        Ok(())
    }

    /// A smoothed demand after `dt` seconds in which the process wanted `sample` of a CPU.
    pub fn smooth(&self, old: f64, sample: f64, dt: f64) -> f64 {
        let keep = self.decay.powf(dt.max(0.0));
        old * keep + sample * (1.0 - keep)
    }
}

/// Administrative flags of a node (`herd ctl`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    /// Accepts no arriving processes.
    pub blocked: bool,
    /// Takes no part in balancing: no target, and (if it is this home) moves nothing.
    pub quiet: bool,
    /// Nothing running here is moved away for load.
    pub stay: bool,
    /// This node's own processes at home are not sent away for load.
    pub lstay: bool,
}

/// One node as this home sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Stable identity (the caller's: a hash of the node's name in herdd, an index in
    /// the simulator).
    pub id: u64,
    /// Usable CPUs (≥ 1).
    pub cpus: u32,
    /// Relative speed, [`REFERENCE_SPEED`] = the reference CPU.
    pub speed: u32,
    /// Runnable processes, smoothed.
    pub load: f64,
    pub mem_total: u64,
    pub mem_free: u64,
    pub flags: Flags,
    /// Can run this home's processes (same vDSO, every xsave feature, up, state known).
    pub compatible: bool,
}

impl Node {
    fn capacity(&self) -> f64 {
        f64::from(self.cpus.max(1)) * f64::from(self.speed.max(1)) / REFERENCE_SPEED
    }

    /// Load per unit of reference capacity.
    pub fn normalised(&self) -> f64 {
        self.load / self.capacity()
    }

    /// The CPU rate (in reference CPUs) one more process wanting `demand` of a CPU gets
    /// here, with `load` runnable processes including it.
    fn rate(&self, load: f64, demand: f64) -> f64 {
        let share = if load <= f64::from(self.cpus.max(1)) { 1.0 } else { f64::from(self.cpus.max(1)) / load };
        demand.min(share) * f64::from(self.speed.max(1)) / REFERENCE_SPEED
    }

    fn can_receive(&self) -> bool {
        self.compatible && !self.flags.blocked && !self.flags.quiet
    }

}

/// One of this home's migratable processes.
#[derive(Clone, Debug, PartialEq)]
pub struct Proc {
    /// Its home pid (herdd) or job number (simulator).
    pub id: u64,
    /// Index in [`Snapshot::nodes`] of the node it runs on.
    pub at: usize,
    /// Smoothed share of a CPU it wants (time runnable / time), 0..=1.
    pub demand: f64,
    /// Resident memory, bytes.
    pub rss: u64,
    /// How fast its resident memory grows, bytes a second (smoothed; 0 when it shrinks).
    pub growth: f64,
    /// Seconds since it started.
    pub age: f64,
    /// Seconds since it last arrived somewhere (= age if it never moved).
    pub since_move: f64,
    /// How many times it has moved.
    pub moves: u32,
    /// Forwarded calls a second when away, read/write calls a second at home.
    pub io_rate: f64,
    /// `herd lock`, `herd run --lock`: never moved by the policy.
    pub locked: bool,
    /// It can move now (no reason in `herd ps`'s cantmove, no move under way).
    pub movable: bool,
}

/// What a home knows when it decides.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Index in `nodes` of this node, the home of every process in `procs`.
    pub home: usize,
    pub nodes: Vec<Node>,
    pub procs: Vec<Proc>,
    /// Measured migration rate, bytes a second (0 or less: use [`Params::default_rate`]).
    pub transfer_rate: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reason {
    /// Pulled home: too many forwarded calls a second.
    Io,
    /// Its node is short of memory.
    Memory,
    /// Another node gives it more CPU; `gain` is the ratio of CPU rates there and here.
    Load { gain: f64 },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Io => write!(f, "I/O-bound: brought home"),
            Reason::Memory => write!(f, "memory ushering"),
            Reason::Load { gain } => write!(f, "load ({gain:.2}× the CPU)"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    pub proc: u64,
    pub from: usize,
    pub to: usize,
    pub reason: Reason,
}

/// The moves this home should make now. Pure and deterministic; ties go to the lower index.
pub fn decide(snap: &Snapshot, p: &Params) -> Vec<Move> {
    let mut moves = Vec::new();
    let sane = sanitised(snap);
    let snap = &sane;
    let Some(home) = snap.nodes.get(snap.home) else { return moves };
    if home.flags.quiet {
        return moves;
    }
    let rate = if snap.transfer_rate > 0.0 { snap.transfer_rate } else { p.default_rate };
    let mut w = Work::new(snap, p);
    let mut moved = vec![false; snap.procs.len()];
    let free = |p: &Proc| p.movable && !p.locked && p.at < snap.nodes.len();

    // 1. I/O-bound processes away from home come home — if home has room for them (else
    //    ushering would send them out again at once).
    for (i, pr) in snap.procs.iter().enumerate() {
        if moves.len() >= p.max_moves {
            return moves;
        }
        if free(pr) && pr.at != snap.home && pr.io_rate >= p.io_calls && w.room(snap.home, pr, p, p.mem_low) >= 0.0 {
            w.shift(pr, snap.home, p);
            moved[i] = true;
            moves.push(Move { proc: pr.id, from: pr.at, to: snap.home, reason: Reason::Io });
        }
    }

    // 2. Memory ushering, largest first, from every node short of memory.
    let mut by_size: Vec<usize> = (0..snap.procs.len()).collect();
    by_size.sort_by(|&a, &b| snap.procs[b].rss.cmp(&snap.procs[a].rss).then(a.cmp(&b)));
    for &i in &by_size {
        if moves.len() >= p.max_moves {
            return moves;
        }
        let pr = &snap.procs[i];
        if moved[i] || !free(pr) || !w.short(pr.at, p) {
            continue;
        }
        // Only to nodes whose memory is known to have room.
        let target = (0..snap.nodes.len())
            .filter(|&t| t != pr.at && (snap.nodes[t].can_receive() || t == snap.home) && snap.nodes[t].mem_total > 0)
            .map(|t| (t, w.room(t, pr, p, p.mem_target_free)))
            .filter(|&(_, room)| room >= 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        if let Some((t, _)) = target {
            w.shift(pr, t, p);
            moved[i] = true;
            moves.push(Move { proc: pr.id, from: pr.at, to: t, reason: Reason::Memory });
        }
    }

    // 3. Load: the process that gains most first, loads updated after each move.
    while moves.len() < p.max_moves {
        let mut best: Option<(f64, usize, usize)> = None;
        for (i, pr) in snap.procs.iter().enumerate() {
            if moved[i] || !free(pr) || pr.demand < p.min_demand || pr.io_rate >= p.io_calls {
                continue;
            }
            let src = &snap.nodes[pr.at];
            if src.flags.stay || src.flags.quiet || (pr.at == snap.home && src.flags.lstay) {
                continue;
            }
            let pay = p.pay_factor * pr.rss as f64 / rate;
            let held = if p.birth_placement && pr.moves == 0 { 0.0 } else { residence(pr, p) };
            if pr.since_move < held.max(pay) || pr.age < pay {
                continue;
            }
            if let Some((gain, t)) = w.best_target(snap, pr, p) {
                if best.map_or(true, |(g, _, _)| gain > g) {
                    best = Some((gain, i, t));
                }
            }
        }
        let Some((gain, i, t)) = best else { break };
        let pr = &snap.procs[i];
        w.shift(pr, t, p);
        moved[i] = true;
        moves.push(Move { proc: pr.id, from: pr.at, to: t, reason: Reason::Load { gain } });
    }
    moves
}

/// The snapshot with every figure usable: a NaN or negative demand, I/O rate or growth
/// (a bug, or garbage from a node) counts as none and the process stays; a node whose
/// load is not a number is no target, and counts as idle.
fn sanitised(snap: &Snapshot) -> Snapshot {
    let mut s = snap.clone();
    for n in &mut s.nodes {
        if !(n.load.is_finite() && n.load >= 0.0) {
            n.load = 0.0;
            n.compatible = false;
        }
    }
    let n = s.nodes.len();
    for pr in &mut s.procs {
        let bad = !(pr.demand.is_finite() && pr.io_rate.is_finite() && pr.growth.is_finite() && pr.age.is_finite() && pr.since_move.is_finite());
        if bad || pr.at >= n {
            pr.movable = false;
        }
        pr.demand = if pr.demand.is_finite() { pr.demand.clamp(0.0, 1.0) } else { 0.0 };
        pr.io_rate = if pr.io_rate.is_finite() { pr.io_rate.max(0.0) } else { 0.0 };
        pr.growth = if pr.growth.is_finite() { pr.growth.max(0.0) } else { 0.0 };
    }
    s
}

/// How long `pr` must stay where it is before a load move: `min_residence`, doubled with
/// each move it made (up to 64×): a process the homes keep sending around settles.
fn residence(pr: &Proc, p: &Params) -> f64 {
    p.min_residence * f64::from(1u32 << pr.moves.min(6))
}

/// Two targets whose gains differ by less than this share are as good: the process picks
/// between them by a hash of itself, its home and the node, so that homes deciding at
/// once (and listing the nodes in the same order) spread their processes.
const EQUAL_GAIN: f64 = 0.9;

/// The nodes' loads and free memory as this round's decisions change them. Free memory
/// is projected `usher_horizon` seconds ahead and may go below zero.
struct Work {
    load: Vec<f64>,
    free: Vec<f64>,
    nodes: Vec<Node>,
}

impl Work {
    fn new(snap: &Snapshot, p: &Params) -> Work {
        let mut free: Vec<f64> = snap.nodes.iter().map(|n| n.mem_free as f64).collect();
        for pr in &snap.procs {
            if let Some(f) = free.get_mut(pr.at) {
                *f -= ahead(pr, p);
            }
        }
        // Published loads rise slowly: a node is at least as loaded as this home's own
        // processes there make it (six new CPU-bound jobs are six, not the 4.4 that the
        // smoothed load says after three seconds).
        let mut mine = vec![0.0; snap.nodes.len()];
        for pr in &snap.procs {
            if let Some(m) = mine.get_mut(pr.at) {
                *m += pr.demand;
            }
        }
        let load = snap.nodes.iter().zip(mine).map(|(n, m)| n.load.max(m)).collect();
        Work { load, free, nodes: snap.nodes.clone() }
    }

    /// Free memory left on node `t` above `keep` × its total with `pr` there.
    fn room(&self, t: usize, pr: &Proc, p: &Params, keep: f64) -> f64 {
        let n = &self.nodes[t];
        if n.mem_total == 0 {
            return f64::INFINITY; // memory unknown: not a reason to refuse
        }
        self.free[t] - pr.rss as f64 - ahead(pr, p) - keep * n.mem_total as f64
    }

    fn short(&self, t: usize, p: &Params) -> bool {
        let n = &self.nodes[t];
        n.mem_total > 0 && self.free[t] < p.mem_low * n.mem_total as f64
    }

    fn normalised(&self, t: usize) -> f64 {
        self.load[t] / self.nodes[t].capacity()
    }

    /// The node that gives `pr` the most CPU under the stability rule, and the gain.
    fn best_target(&self, snap: &Snapshot, pr: &Proc, p: &Params) -> Option<(f64, usize)> {
        let src = &self.nodes[pr.at];
        let here = src.rate(self.load[pr.at].max(pr.demand), pr.demand);
        let mut fits = Vec::new();
        for (t, dst) in self.nodes.iter().enumerate() {
            if t == pr.at || !(dst.can_receive() || t == snap.home) {
                continue;
            }
            if self.room(t, pr, p, p.mem_target_free) < 0.0 {
                continue; // it would start memory ushering there
            }
            if self.normalised(t) + p.stability * pr.demand / dst.capacity() >= self.normalised(pr.at) {
                continue;
            }
            let there = dst.rate(self.load[t] + pr.demand, pr.demand);
            if there > here {
                fits.push((there / here.max(1e-9), t));
            }
        }
        let top = fits.iter().map(|f| f.0).fold(0.0, f64::max);
        fits.into_iter()
            .filter(|f| f.0 >= EQUAL_GAIN * top)
            .min_by_key(|&(_, t)| (mix(pr.id ^ self.nodes[snap.home].id.rotate_left(13) ^ self.nodes[t].id.rotate_left(29)), t))
            .map(|(_, t)| (top, t))
    }

    fn shift(&mut self, pr: &Proc, to: usize, p: &Params) {
        let bytes = pr.rss as f64 + ahead(pr, p);
        self.load[pr.at] = (self.load[pr.at] - pr.demand).max(0.0);
        self.free[pr.at] += bytes;
        self.load[to] += pr.demand;
        self.free[to] -= bytes;
    }
}

/// splitmix64's finaliser: a fixed, well-spread hash.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What `pr` will have grown by at the ushering horizon, bytes.
fn ahead(pr: &Proc, p: &Params) -> f64 {
    pr.growth.max(0.0) * p.usher_horizon
}

/// Accounts a move in published node figures (the ledger's): load and resident memory.
fn shift(nodes: &mut [Node], pr: &Proc, to: usize) {
    let bytes = pr.rss;
    let from = &mut nodes[pr.at];
    from.load = (from.load - pr.demand).max(0.0);
    from.mem_free = from.mem_free.saturating_add(bytes).min(from.mem_total.max(from.mem_free));
    let to = &mut nodes[to];
    to.load += pr.demand;
    to.mem_free = to.mem_free.saturating_sub(bytes);
}

/// The moves a home made recently, kept until the nodes' published figures show them.
///
/// Published loads rise slowly and travel by gossip: for [`Params::settle`] seconds after
/// a move, a node counts at least as loaded (and at most as free) as the move made it,
/// from the figures it had when the move was decided.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    at: f64,
    node: u64,
    /// The node's load and free memory right after the move, as decided.
    load: f64,
    mem_free: u64,
    /// The node received a process (else it gave one).
    received: bool,
}

impl Ledger {
    /// Records `moves` (decided on `snap`) at time `now` (seconds, any origin).
    pub fn record(&mut self, snap: &Snapshot, moves: &[Move], now: f64) {
        let mut nodes = snap.nodes.clone();
        for m in moves {
            if let Some(pr) = snap.procs.iter().find(|p| p.id == m.proc) {
                shift(&mut nodes, pr, m.to);
            }
        }
        for m in moves {
            for (idx, received) in [(m.to, true), (m.from, false)] {
                let n = &nodes[idx];
                self.entries.retain(|e| e.node != n.id);
                self.entries.push(Entry { at: now, node: n.id, load: n.load, mem_free: n.mem_free, received });
            }
        }
    }

    /// Brings `nodes` up to date with the moves of the last `settle` seconds. A node that
    /// gave a process shows it within a round or two of the move's end (a load falls at
    /// once, memory is freed), one that received it only slowly (a load rises slowly): the
    /// giver's entry lasts two rounds after the last [`Ledger::refresh`].
    pub fn adjust(&mut self, nodes: &mut [Node], now: f64, p: &Params) {
        let giver = p.settle.min(2.0 * p.interval);
        self.entries.retain(|e| now - e.at < if e.received { p.settle } else { giver });
        for e in &self.entries {
            if let Some(n) = nodes.iter_mut().find(|n| n.id == e.node) {
                if e.received {
                    n.load = n.load.max(e.load);
                    n.mem_free = n.mem_free.min(e.mem_free);
                } else {
                    n.load = n.load.min(e.load);
                    n.mem_free = n.mem_free.max(e.mem_free);
                }
            }
        }
    }

    /// Keeps what was recorded of nodes `ids` as if just recorded: a move between them is
    /// still under way (a giver frees its memory only once the move is over).
    pub fn refresh(&mut self, ids: &[u64], now: f64) {
        for e in self.entries.iter_mut().filter(|e| ids.contains(&e.node)) {
            e.at = now;
        }
    }

    /// Drops what was recorded of nodes `ids` (a move between them failed).
    pub fn forget(&mut self, ids: &[u64]) {
        self.entries.retain(|e| !ids.contains(&e.node));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn node(id: u64, load: f64) -> Node {
        Node { id, cpus: 1, speed: 10_000, load, mem_total: 8 * GIB, mem_free: 6 * GIB, flags: Flags::default(), compatible: true }
    }

    fn job(id: u64, at: usize) -> Proc {
        Proc { id, at, demand: 1.0, rss: 10 << 20, growth: 0.0, moves: 0, age: 60.0, since_move: 60.0, io_rate: 0.0, locked: false, movable: true }
    }

    /// Runs rounds, applying moves to the snapshot, until the policy stops moving.
    fn settle(mut s: Snapshot, p: &Params) -> (Snapshot, usize) {
        let mut total = 0;
        for _ in 0..20 {
            let moves = decide(&s, p);
            if moves.is_empty() {
                return (s, total);
            }
            total += moves.len();
            for m in moves {
                let pr = s.procs.iter_mut().find(|x| x.id == m.proc).unwrap();
                s.nodes[m.from].load -= pr.demand;
                s.nodes[m.to].load += pr.demand;
                pr.at = m.to;
            }
        }
        panic!("the policy never settles: {s:?}");
    }

    fn counts(s: &Snapshot) -> Vec<usize> {
        (0..s.nodes.len()).map(|n| s.procs.iter().filter(|p| p.at == n).count()).collect()
    }

    #[test]
    fn even_jobs_split_evenly_and_then_stay() {
        for jobs in [2u64, 6, 8] {
            let s = Snapshot { home: 0, nodes: vec![node(1, jobs as f64), node(2, 0.0)], procs: (0..jobs).map(|i| job(i, 0)).collect(), transfer_rate: 0.0 };
            let (s, moves) = settle(s, &Params::default());
            assert_eq!(counts(&s), vec![jobs as usize / 2, jobs as usize / 2], "{jobs} jobs");
            assert_eq!(moves, jobs as usize / 2);
        }
    }

    #[test]
    fn one_job_each_does_not_move() {
        let s = Snapshot { home: 0, nodes: vec![node(1, 1.0), node(2, 0.0)], procs: vec![job(1, 0)], transfer_rate: 0.0 };
        assert!(decide(&s, &Params::default()).is_empty());
        // …but goes to a node twice as fast.
        let mut s = s;
        s.nodes[1].speed = 20_000;
        assert_eq!(decide(&s, &Params::default()).len(), 1);
    }

    #[test]
    fn young_or_just_moved_processes_wait() {
        let mut s = Snapshot { home: 0, nodes: vec![node(1, 4.0), node(2, 0.0)], procs: (0..4).map(|i| job(i, 0)).collect(), transfer_rate: 0.0 };
        for p in &mut s.procs {
            p.since_move = 1.0;
            p.moves = 1;
        }
        assert!(decide(&s, &Params::default()).is_empty(), "residence");
        // One that never moved is placed at birth (unless that is turned off).
        for p in &mut s.procs {
            (p.moves, p.age) = (0, 1.0);
        }
        assert!(!decide(&s, &Params::default()).is_empty(), "placement at birth");
        assert!(decide(&s, &Params { birth_placement: false, ..Params::default() }).is_empty(), "residence, without placement at birth");
        for p in &mut s.procs {
            p.since_move = 60.0;
            p.rss = 40 * GIB;
        }
        assert!(decide(&s, &Params::default()).is_empty(), "cannot pay for its move");
    }

    #[test]
    fn io_bound_comes_home_and_is_not_sent_out() {
        let mut s = Snapshot { home: 0, nodes: vec![node(1, 3.0), node(2, 1.0)], procs: vec![job(1, 1), job(2, 0)], transfer_rate: 0.0 };
        s.procs[0].io_rate = 5000.0;
        s.procs[1].io_rate = 5000.0;
        let moves = decide(&s, &Params::default());
        assert_eq!(moves, vec![Move { proc: 1, from: 1, to: 0, reason: Reason::Io }]);
    }

    #[test]
    fn memory_ushering_moves_the_largest_first() {
        let mut s = Snapshot { home: 0, nodes: vec![node(1, 0.2), node(2, 0.0)], procs: vec![job(1, 0), job(2, 0), job(3, 0)], transfer_rate: 0.0 };
        s.nodes[0].mem_free = GIB / 4; // 3 % free
        s.procs[0].rss = GIB;
        s.procs[1].rss = 3 * GIB;
        s.procs[2].rss = 2 * GIB;
        for p in &mut s.procs {
            p.demand = 0.05;
            p.since_move = 0.5;
        }
        let moves = decide(&s, &Params::default());
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!((moves[0].proc, moves[0].to, moves[0].reason), (2, 1, Reason::Memory));
    }

    #[test]
    fn ushering_looks_ahead_at_growing_processes() {
        let mut s = Snapshot { home: 0, nodes: vec![node(1, 0.1), node(2, 0.0)], procs: vec![job(1, 0), job(2, 0)], transfer_rate: 0.0 };
        s.nodes[0].mem_free = GIB; // 12 % free: not short yet
        for p in &mut s.procs {
            p.demand = 0.05;
            p.rss = 3 * GIB;
        }
        assert!(decide(&s, &Params::default()).is_empty());
        s.procs[1].growth = 64.0 * (1 << 20) as f64; // 320 MiB in 5 s
        let moves = decide(&s, &Params::default());
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!(moves[0].reason, Reason::Memory);
    }

    #[test]
    fn ledger_keeps_a_received_process_counted_until_settled() {
        let p = Params::default();
        let s = Snapshot { home: 0, nodes: vec![node(1, 4.0), node(2, 0.0)], procs: (0..4).map(|i| job(i, 0)).collect(), transfer_rate: 0.0 };
        let moves = decide(&s, &p);
        assert_eq!(moves.len(), 2);
        let mut ledger = Ledger::default();
        ledger.record(&s, &moves, 100.0);
        // One second later, gossip still says node 2 is idle and home still at 4.
        let mut nodes = s.nodes.clone();
        ledger.adjust(&mut nodes, 101.0, &p);
        assert_eq!((nodes[0].load, nodes[1].load), (2.0, 2.0));
        let mut later = s.clone();
        later.nodes = nodes;
        for pr in later.procs.iter_mut().filter(|pr| moves.iter().any(|m| m.proc == pr.id)) {
            pr.at = 1;
            pr.since_move = 1.0;
        }
        assert!(decide(&later, &p).is_empty());
        let mut nodes = s.nodes.clone();
        ledger.adjust(&mut nodes, 100.0 + p.settle, &p);
        assert!(ledger.is_empty());
    }

    #[test]
    fn figures_that_are_not_numbers_move_nothing_anywhere() {
        let mut s = Snapshot { home: 0, nodes: vec![node(1, 6.0), node(2, f64::NAN), node(3, 0.0)], procs: (0..6).map(|i| job(i, 0)).collect(), transfer_rate: 0.0 };
        s.procs[0].demand = f64::NAN;
        s.procs[1].growth = f64::INFINITY;
        s.procs.push(Proc { at: 7, ..job(99, 0) }); // on a node it does not know
        let moves = decide(&s, &Params::default());
        assert!(!moves.is_empty());
        for m in &moves {
            assert_eq!(m.to, 2, "only the sane idle node is a target: {m:?}");
            assert!(![0, 1, 99].contains(&m.proc), "a process with broken figures moved: {m:?}");
        }
        s.home = 5;
        assert!(decide(&s, &Params::default()).is_empty(), "home out of range");
    }

    #[test]
    fn a_giver_counts_the_memory_it_frees_while_the_move_lasts() {
        let p = Params::default();
        let mut s = Snapshot { home: 0, nodes: vec![node(1, 0.3), node(2, 0.0)], procs: vec![job(1, 0), job(2, 0), job(3, 0)], transfer_rate: 0.0 };
        s.nodes[0].mem_free = GIB / 4;
        for (i, pr) in s.procs.iter_mut().enumerate() {
            pr.demand = 0.1;
            pr.rss = GIB + i as u64;
        }
        let moves = decide(&s, &p);
        assert_eq!(moves.len(), 1, "{moves:?}");
        let mut ledger = Ledger::default();
        ledger.record(&s, &moves, 0.0);
        // Ten seconds on, the move is still under way: home still publishes its memory as
        // short, and the process moving is not movable.
        let mut later = s.clone();
        later.procs.iter_mut().find(|pr| pr.id == moves[0].proc).unwrap().movable = false;
        ledger.refresh(&[s.nodes[0].id, s.nodes[1].id], 9.5);
        ledger.adjust(&mut later.nodes, 10.0, &p);
        assert!(decide(&later, &p).is_empty(), "ushered again while the first move runs: {:?}", decide(&later, &p));
        // Without the refresh the entry has lapsed, and home looks short again.
        let mut lapsed = s.clone();
        lapsed.procs.iter_mut().find(|pr| pr.id == moves[0].proc).unwrap().movable = false;
        let mut old = Ledger::default();
        old.record(&s, &moves, 0.0);
        old.adjust(&mut lapsed.nodes, 10.0, &p);
        assert_eq!(decide(&lapsed, &p).len(), 1);
    }

    #[test]
    fn params_validate() {
        assert!(Params::default().validate().is_ok());
        let bad = Params { stability: 0.5, ..Params::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("stability"));
        let bad = Params { mem_target_free: 0.05, ..Params::default() };
        assert!(bad.validate().is_err());
    }
}
