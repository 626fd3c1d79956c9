//! Properties of [`herd_balance::decide`] over random snapshots and parameters.
//!
//! Each property restates one rule of the policy's documentation and checks it against
//! whatever `decide` returns, replaying the moves on a [`Replica`] of the figures the
//! policy works on (loads shifted by the process's demand; free memory projected
//! `usher_horizon` seconds ahead, in f64 and possibly below zero, shifted by the
//! process's size and growth to come), so that a rule that depends on the moves made
//! before it in the same call is checked against the figures the policy had at that point.

use std::collections::BTreeSet;

use herd_balance::{decide, Flags, Move, Node, Params, Proc, Reason, Snapshot, REFERENCE_SPEED};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Load targets whose gain is at least this share of the best one are as good (the
/// policy's `EQUAL_GAIN`).
const EQUAL_GAIN: f64 = 0.9;

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

fn flags() -> impl Strategy<Value = Flags> {
    (prop::bool::weighted(0.15), prop::bool::weighted(0.15), prop::bool::weighted(0.15), prop::bool::weighted(0.15))
        .prop_map(|(blocked, quiet, stay, lstay)| Flags { blocked, quiet, stay, lstay })
}

/// Memory: mostly 1-64 GiB, sometimes unknown (0); free anywhere from none to all.
fn memory() -> impl Strategy<Value = (u64, u64)> {
    prop_oneof![
        1 => Just((0u64, 0u64)),
        9 => (1u64..=64, 0.0f64..=1.0).prop_map(|(gib, free)| (gib * GIB, (free * (gib * GIB) as f64) as u64)),
    ]
}

fn node(id: u64) -> impl Strategy<Value = Node> {
    (1u32..=8, 2_000u32..=40_000, 0.0f64..=20.0, memory(), flags(), prop::bool::weighted(0.85)).prop_map(
        move |(cpus, speed, load, (mem_total, mem_free), flags, compatible)| Node {
            id,
            cpus,
            speed,
            load,
            mem_total,
            mem_free,
            flags,
            compatible,
        },
    )
}

/// Resident sizes from nothing to 8 GiB, spread over the orders of magnitude.
fn rss() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(0u64), 9 => (0u32..=33, 0.0f64..1.0).prop_map(|(bits, f)| ((1u64 << bits) as f64 * (1.0 + f)) as u64)]
}

/// Memory growth: mostly none, sometimes up to 100 MiB a second.
fn growth() -> impl Strategy<Value = f64> {
    prop_oneof![2 => Just(0.0f64), 1 => 0.0f64..(100.0 * MIB as f64)]
}

fn process(id: u64, nodes: usize) -> impl Strategy<Value = Proc> {
    (
        0..nodes,
        0.0f64..=1.0,
        (rss(), growth()),
        0.0f64..=600.0,
        0.0f64..=1.0,
        prop_oneof![3 => 0.0f64..50.0, 1 => 0.0f64..5_000.0],
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.85),
        0u32..=8,
    )
        .prop_map(move |(at, demand, (rss, growth), age, moved, io_rate, locked, movable, moves)| Proc {
            id,
            at,
            demand,
            rss,
            growth,
            moves,
            age,
            since_move: age * moved,
            io_rate,
            locked,
            movable,
        })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (1usize..=12, 0usize..=30)
        .prop_flat_map(|(n, procs)| {
            let nodes: Vec<_> = (0..n as u64).map(|i| node(100 + i)).collect();
            let procs: Vec<_> = (0..procs as u64).map(|i| process(1000 + i, n)).collect();
            (0..n, nodes, procs, prop_oneof![Just(0.0f64), 1.0e6f64..2.0e9])
        })
        .prop_map(|(home, nodes, procs, transfer_rate)| Snapshot { home, nodes, procs, transfer_rate })
}

/// Mostly load at play: 2-4 plain nodes (no flags, memory to spare) and up to 12
/// CPU-bound processes of up to 2 GiB that have stayed up to 2 minutes where they are
/// and moved at most twice, so that load moves, and second rounds after them, are
/// common, and the residence and pay-for-move rules often decide.
fn busy_snapshot() -> impl Strategy<Value = Snapshot> {
    (2usize..=4, 1usize..=12)
        .prop_flat_map(|(n, procs)| {
            let nodes: Vec<_> = (0..n as u64)
                .map(|id| {
                    (1u32..=4, prop_oneof![Just(5_000u32), Just(10_000), Just(20_000)], 0.0f64..=10.0).prop_map(move |(cpus, speed, load)| Node {
                        id: 100 + id,
                        cpus,
                        speed,
                        load,
                        mem_total: 64 * GIB,
                        mem_free: 60 * GIB,
                        flags: Flags::default(),
                        compatible: true,
                    })
                })
                .collect();
            let procs: Vec<_> = (0..procs as u64)
                .map(|id| {
                    (0..n, 0.2f64..=1.0, 0u32..=2, (0u32..=30, 0.0f64..1.0), 0.0f64..=120.0, 0.0f64..=120.0).prop_map(
                        move |(at, demand, moves, (bits, f), since_move, before)| Proc {
                            moves,
                            rss: ((1u64 << bits) as f64 * (1.0 + f)) as u64,
                            since_move,
                            age: since_move + before,
                            ..job(1000 + id, at, demand)
                        },
                    )
                })
                .collect();
            (0..n, nodes, procs)
        })
        .prop_map(|(home, nodes, procs)| Snapshot { home, nodes, procs, transfer_rate: 0.0 })
}

/// Valid parameters; `min_residence` at least `min_residence_floor`.
fn params_from(min_residence_floor: f64) -> impl Strategy<Value = Params> {
    (
        (1.0f64..=3.0, min_residence_floor..=30.0, prop_oneof![1 => Just(0.0f64), 3 => 0.0f64..=3.0], 0.0f64..=1.0),
        (1.0f64..=1_000.0, 0.0f64..0.5, 0.0f64..1.0, 0.0f64..=600.0, 1usize..=8),
        (0.0f64..=20.0, 0.0f64..1.0, (1.0 * MIB as f64)..(1.0 * GIB as f64), any::<bool>()),
    )
        .prop_map(
            |(
                (stability, min_residence, pay_factor, min_demand),
                (io_calls, mem_low, target, usher_horizon, max_moves),
                (settle, decay, default_rate, birth_placement),
            )| {
                let p = Params {
                    stability,
                    min_residence,
                    pay_factor,
                    min_demand,
                    io_calls,
                    mem_low,
                    // Anywhere in [mem_low, 1).
                    mem_target_free: mem_low + target * (1.0 - mem_low),
                    usher_horizon,
                    max_moves,
                    settle,
                    decay,
                    default_rate,
                    birth_placement,
                    // Keys `decide` does not read keep their defaults.
                    ..Params::default()
                };
                assert_eq!(p.validate(), Ok(()), "{p:?}");
                p
            },
        )
}

fn params() -> impl Strategy<Value = Params> {
    params_from(0.0)
}

/// Homes deciding at once: `targets` equal idle nodes, and 24-48 homes, each a busy
/// 1-CPU node with 2-6 equal CPU-bound processes, all ids distinct. Every home sees the
/// same targets with the same figures, and is loaded enough (2 more runnable than its
/// processes) for each of them to gain on any.
#[derive(Clone, Debug)]
struct Crowd {
    targets: Vec<Node>,
    homes: Vec<(Node, Vec<Proc>)>,
}

fn crowd() -> impl Strategy<Value = Crowd> {
    (3usize..=8, 24usize..=48, 2usize..=6, 1u32..=4, prop_oneof![Just(5_000u32), Just(10_000), Just(20_000)], 0.0f64..=4.0)
        .prop_flat_map(|(k, h, m, cpus, speed, extra)| {
            let ids = prop::collection::btree_set(any::<u64>(), k + h);
            let pids = prop::collection::btree_set(any::<u64>(), h * m);
            (ids, pids).prop_map(move |(ids, pids)| {
                let ids: Vec<u64> = ids.into_iter().collect();
                let pids: Vec<u64> = pids.into_iter().collect();
                let targets = ids[..k].iter().map(|&id| Node { id, cpus, speed, load: 0.0, ..plain_node(id, 0.0) }).collect();
                let homes = ids[k..]
                    .iter()
                    .zip(pids.chunks(m))
                    .map(|(&id, pids)| {
                        let home = plain_node(id, m as f64 + 2.0 + extra);
                        (home, pids.iter().map(|&pid| job(pid, 0, 1.0)).collect())
                    })
                    .collect();
                Crowd { targets, homes }
            })
        })
}

/// One home's snapshot: itself first, then the targets.
fn crowd_snapshot(c: &Crowd, home: usize) -> Snapshot {
    let (node, procs) = &c.homes[home];
    let mut nodes = vec![node.clone()];
    nodes.extend(c.targets.iter().cloned());
    Snapshot { home: 0, nodes, procs: procs.clone(), transfer_rate: 0.0 }
}

// ---------------------------------------------------------------------------------------
// Replaying moves the way the policy accounts for them
// ---------------------------------------------------------------------------------------

fn capacity(n: &Node) -> f64 {
    f64::from(n.cpus.max(1)) * f64::from(n.speed.max(1)) / REFERENCE_SPEED
}

/// CPU rate (reference CPUs) a process wanting `demand` gets with `load` runnable there.
fn rate(n: &Node, load: f64, demand: f64) -> f64 {
    let cpus = f64::from(n.cpus.max(1));
    let share = if load <= cpus { 1.0 } else { cpus / load };
    demand.min(share) * f64::from(n.speed.max(1)) / REFERENCE_SPEED
}

/// What a process will have grown by at the ushering horizon, bytes.
fn ahead(pr: &Proc, p: &Params) -> f64 {
    pr.growth.max(0.0) * p.usher_horizon
}

/// Seconds a process must stay where it is before a load move: `min_residence`, doubled
/// with each move it made, up to 64×; none before its first move with placement at birth.
fn residence(pr: &Proc, p: &Params) -> f64 {
    if p.birth_placement && pr.moves == 0 {
        return 0.0;
    }
    p.min_residence * f64::from(1u32 << pr.moves.min(6))
}

/// Neither locked nor busy: the policy may move it.
fn free(pr: &Proc) -> bool {
    pr.movable && !pr.locked
}

fn find<'a>(snap: &'a Snapshot, m: &Move) -> &'a Proc {
    snap.procs.iter().find(|p| p.id == m.proc).unwrap_or_else(|| panic!("move of an unknown process: {m:?}"))
}

fn index(snap: &Snapshot, m: &Move) -> usize {
    snap.procs.iter().position(|p| p.id == m.proc).unwrap_or_else(|| panic!("move of an unknown process: {m:?}"))
}

/// Seconds a process must have run (and stayed) to pay for its move.
fn pay(snap: &Snapshot, p: &Params, pr: &Proc) -> f64 {
    let rate = if snap.transfer_rate > 0.0 { snap.transfer_rate } else { p.default_rate };
    p.pay_factor * pr.rss as f64 / rate
}

/// The figures the policy decides on, as the moves replayed so far left them.
struct Replica<'a> {
    snap: &'a Snapshot,
    p: &'a Params,
    load: Vec<f64>,
    /// Free memory `usher_horizon` seconds ahead: the published figure less what this
    /// home's processes on the node will have grown by. May go below zero.
    free: Vec<f64>,
    /// By index in `snap.procs`: moved by a replayed move.
    moved: Vec<bool>,
}

impl<'a> Replica<'a> {
    fn new(snap: &'a Snapshot, p: &'a Params) -> Self {
        let mut free: Vec<f64> = snap.nodes.iter().map(|n| n.mem_free as f64).collect();
        for pr in &snap.procs {
            free[pr.at] -= ahead(pr, p);
        }
        // A node is at least as loaded as this home's own processes there make it.
        let mut load: Vec<f64> = snap.nodes.iter().map(|n| n.load).collect();
        let mut mine = vec![0.0; snap.nodes.len()];
        for pr in &snap.procs {
            mine[pr.at] += pr.demand;
        }
        for (l, m) in load.iter_mut().zip(mine) {
            *l = l.max(m);
        }
        Replica { snap, p, load, free, moved: vec![false; snap.procs.len()] }
    }

    /// Free memory left on `t` above `keep` × its total with `pr` there (and grown);
    /// unlimited on a node whose memory is unknown (total 0).
    fn room(&self, t: usize, pr: &Proc, keep: f64) -> f64 {
        let n = &self.snap.nodes[t];
        if n.mem_total == 0 {
            return f64::INFINITY;
        }
        self.free[t] - pr.rss as f64 - ahead(pr, self.p) - keep * n.mem_total as f64
    }

    /// Below `mem_low` of its total, growth to come counted.
    fn short(&self, t: usize) -> bool {
        let n = &self.snap.nodes[t];
        n.mem_total > 0 && self.free[t] < self.p.mem_low * n.mem_total as f64
    }

    fn normalised(&self, t: usize) -> f64 {
        self.load[t] / capacity(&self.snap.nodes[t])
    }

    /// Can be sent this home's processes.
    fn receives(&self, t: usize) -> bool {
        let n = &self.snap.nodes[t];
        t == self.snap.home || (n.compatible && !n.flags.blocked && !n.flags.quiet)
    }

    /// Why process `i` cannot move for load now, wherever it would go.
    fn held(&self, i: usize) -> Option<String> {
        let (snap, p, pr) = (self.snap, self.p, &self.snap.procs[i]);
        let src = &snap.nodes[pr.at];
        let pay = pay(snap, p, pr);
        if self.moved[i] {
            Some("moved already".into())
        } else if !free(pr) {
            Some("locked or not movable".into())
        } else if pr.demand < p.min_demand {
            Some(format!("demand {} < min_demand {}", pr.demand, p.min_demand))
        } else if pr.io_rate >= p.io_calls {
            Some(format!("I/O-bound ({} calls/s)", pr.io_rate))
        } else if src.flags.stay || src.flags.quiet || (pr.at == snap.home && src.flags.lstay) {
            Some(format!("kept by {:?}", src.flags))
        } else if pr.since_move < residence(pr, p).max(pay) || pr.age < pay {
            Some(format!("there {} s, must stay {} s (residence) and pay {} s", pr.since_move, residence(pr, p), pay))
        } else {
            None
        }
    }

    /// The CPU rates `pr` gets where it is and on `t`.
    fn rates(&self, pr: &Proc, t: usize) -> (f64, f64) {
        let here = rate(&self.snap.nodes[pr.at], self.load[pr.at].max(pr.demand), pr.demand);
        let there = rate(&self.snap.nodes[t], self.load[t] + pr.demand, pr.demand);
        (here, there)
    }

    /// Why `t` is not a target of a load move of `pr`.
    fn refuses(&self, pr: &Proc, t: usize) -> Option<String> {
        let p = self.p;
        let dst = &self.snap.nodes[t];
        let (here, there) = self.rates(pr, t);
        if t == pr.at || !self.receives(t) {
            Some("cannot receive".into())
        } else if self.room(t, pr, p.mem_target_free) < 0.0 {
            Some(format!("memory: room {} < 0", self.room(t, pr, p.mem_target_free)))
        } else if self.normalised(t) + p.stability * pr.demand / capacity(dst) >= self.normalised(pr.at) {
            Some(format!(
                "stability: target {} + {} × {} / {} ≥ source {}",
                self.normalised(t),
                p.stability,
                pr.demand,
                capacity(dst),
                self.normalised(pr.at)
            ))
        } else if there <= here {
            Some(format!("rate {here} → {there}"))
        } else {
            None
        }
    }

    /// Every target of a load move of `pr`, with its gain.
    fn load_targets(&self, pr: &Proc) -> Vec<(f64, usize)> {
        (0..self.snap.nodes.len())
            .filter(|&t| self.refuses(pr, t).is_none())
            .map(|t| {
                let (here, there) = self.rates(pr, t);
                (there / here.max(1e-9), t)
            })
            .collect()
    }

    /// The best gain of a load move of process `i` now, if it can make one.
    fn best_gain(&self, i: usize) -> Option<f64> {
        if self.held(i).is_some() {
            return None;
        }
        self.load_targets(&self.snap.procs[i]).iter().map(|g| g.0).reduce(f64::max)
    }

    /// Accounts a move: load, and memory with its growth to come, follow the process.
    fn shift(&mut self, m: &Move) {
        let i = index(self.snap, m);
        let pr = &self.snap.procs[i];
        let bytes = pr.rss as f64 + ahead(pr, self.p);
        self.load[pr.at] = (self.load[pr.at] - pr.demand).max(0.0);
        self.free[pr.at] += bytes;
        self.load[m.to] += pr.demand;
        self.free[m.to] -= bytes;
        self.moved[i] = true;
    }
}

/// The next round's snapshot after the moves: published loads and memory shifted (the
/// growth to come has not happened yet; free memory as the policy counted it, not capped
/// at the node's total), moved processes at their target, just arrived, one more move.
fn apply(snap: &Snapshot, moves: &[Move]) -> Snapshot {
    let mut next = snap.clone();
    for m in moves {
        let pr = find(snap, m);
        let from = &mut next.nodes[m.from];
        from.load = (from.load - pr.demand).max(0.0);
        from.mem_free = from.mem_free.saturating_add(pr.rss);
        let to = &mut next.nodes[m.to];
        to.load += pr.demand;
        to.mem_free = to.mem_free.saturating_sub(pr.rss);
        let moved = next.procs.iter_mut().find(|p| p.id == m.proc).unwrap();
        moved.at = m.to;
        moved.since_move = 0.0;
        moved.moves += 1;
    }
    next
}

fn rank(reason: Reason) -> u8 {
    match reason {
        Reason::Io => 0,
        Reason::Memory => 1,
        Reason::Load { .. } => 2,
    }
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// (a) No move targets a blocked, quiet or incompatible node, except home.
    #[test]
    fn targets_can_receive(snap in snapshot(), p in params()) {
        for m in decide(&snap, &p) {
            let t = &snap.nodes[m.to];
            prop_assert!(
                m.to == snap.home || (t.compatible && !t.flags.blocked && !t.flags.quiet),
                "{m:?} to {t:?}"
            );
        }
    }

    /// (b) Locked or immovable processes stay; each process moves at most once, from
    /// where it is, somewhere else; at most `max_moves` moves; I/O moves first, then
    /// memory, then load.
    #[test]
    fn moves_are_well_formed(snap in snapshot(), p in params()) {
        let moves = decide(&snap, &p);
        prop_assert!(moves.len() <= p.max_moves, "{} moves, max {}", moves.len(), p.max_moves);
        for (k, m) in moves.iter().enumerate() {
            let pr = find(&snap, m);
            prop_assert!(free(pr), "{m:?} moves {pr:?}");
            prop_assert_eq!(m.from, pr.at);
            prop_assert_ne!(m.to, m.from);
            prop_assert!(m.to < snap.nodes.len());
            prop_assert!(moves[..k].iter().all(|o| o.proc != m.proc), "{:?} moved twice", m.proc);
        }
        prop_assert!(moves.windows(2).all(|w| rank(w[0].reason) <= rank(w[1].reason)), "out of order: {moves:?}");
    }

    /// (c) A load move passes every rule against the figures the moves before it left:
    /// the process has paid for its move and stayed its residence (doubled with each
    /// move it made), the target passes the stability rule, keeps `mem_target_free` of
    /// its memory free with the process and its growth to come, and gives it more CPU;
    /// the reported gain is the best of all such targets and the chosen one is within
    /// `EQUAL_GAIN` of it; no process that could move gains more. And the policy stops
    /// only at `max_moves` or when no process can move for load.
    #[test]
    fn load_moves_follow_the_rules(snap in prop_oneof![snapshot(), busy_snapshot()], p in params()) {
        let moves = decide(&snap, &p);
        let mut r = Replica::new(&snap, &p);
        for m in &moves {
            if let Reason::Load { gain } = m.reason {
                let i = index(&snap, m);
                let pr = &snap.procs[i];
                prop_assert!(r.held(i).is_none(), "{m:?} of {pr:?}: {}", r.held(i).unwrap_or_default());
                let refused = r.refuses(pr, m.to);
                prop_assert!(refused.is_none(), "{m:?} of {pr:?}: {}", refused.unwrap_or_default());
                let targets = r.load_targets(pr);
                let best = targets.iter().map(|g| g.0).fold(f64::NEG_INFINITY, f64::max);
                prop_assert_eq!(gain, best, "{:?}: not the best gain of {:?}", m, targets);
                let chosen = targets.iter().find(|g| g.1 == m.to).map(|g| g.0).unwrap_or_default();
                prop_assert!(chosen >= EQUAL_GAIN * best, "{m:?}: gain {chosen} there, {best} elsewhere: {targets:?}");
                for j in 0..snap.procs.len() {
                    if let Some(other) = r.best_gain(j).filter(|_| j != i) {
                        prop_assert!(
                            other < gain || (other == gain && j > i),
                            "{m:?} (gain {gain}) before {:?} (gain {other})", snap.procs[j]
                        );
                    }
                }
            }
            r.shift(m);
        }
        if moves.len() < p.max_moves && !snap.nodes[snap.home].flags.quiet {
            for j in 0..snap.procs.len() {
                prop_assert!(r.best_gain(j).is_none(), "{:?} could still move for load: {:?}", snap.procs[j], r.load_targets(&snap.procs[j]));
            }
        }
    }

    /// (d) A quiet home moves nothing.
    #[test]
    fn quiet_home_moves_nothing(mut snap in snapshot(), p in params()) {
        snap.nodes[snap.home].flags.quiet = true;
        prop_assert_eq!(decide(&snap, &p), vec![]);
    }

    /// (e) The same input gives the same moves.
    #[test]
    fn deterministic(snap in snapshot(), p in params()) {
        prop_assert_eq!(decide(&snap, &p), decide(&snap.clone(), &p.clone()));
    }

    /// (f) I/O moves bring I/O-bound processes home when home keeps `mem_low` of its
    /// memory free with them, and the I/O rule leaves away only those it has no room
    /// for; memory moves take the largest processes first off nodes short of memory (as
    /// the moves before left them, growth to come counted) to the node with the most
    /// room above `mem_target_free` (the lower index on a tie; unknown memory: unlimited).
    #[test]
    fn io_and_memory_moves_have_their_cause(snap in snapshot(), p in params()) {
        let moves = decide(&snap, &p);
        let mut r = Replica::new(&snap, &p);
        let io = moves.iter().take_while(|m| m.reason == Reason::Io).count();
        for m in &moves[..io] {
            let pr = find(&snap, m);
            prop_assert!(pr.io_rate >= p.io_calls && m.from != snap.home && m.to == snap.home, "{m:?} of {pr:?}");
            let room = r.room(snap.home, pr, p.mem_low);
            prop_assert!(room >= 0.0, "{m:?} of {pr:?}: home short by {} bytes", -room);
            r.shift(m);
        }
        if io < p.max_moves && !snap.nodes[snap.home].flags.quiet {
            for (i, pr) in snap.procs.iter().enumerate() {
                if !r.moved[i] && free(pr) && pr.at != snap.home && pr.io_rate >= p.io_calls {
                    let room = r.room(snap.home, pr, p.mem_low);
                    prop_assert!(room < 0.0, "{pr:?} left away with {room} bytes of room at home");
                }
            }
        }
        let mut last: Option<&Proc> = None;
        for m in &moves[io..] {
            let pr = find(&snap, m);
            prop_assert!(m.reason != Reason::Io, "{m:?} after other moves");
            if m.reason == Reason::Memory {
                prop_assert!(r.short(m.from), "{m:?} from node {} with {} bytes free", m.from, r.free[m.from]);
                let room = r.room(m.to, pr, p.mem_target_free);
                prop_assert!(room >= 0.0, "{m:?} to node {} short by {} bytes", m.to, -room);
                prop_assert!(snap.nodes[m.to].mem_total > 0, "{m:?}: ushered to a node whose memory is unknown");
                for t in (0..snap.nodes.len()).filter(|&t| t != m.from && t != m.to && r.receives(t) && snap.nodes[t].mem_total > 0) {
                    let other = r.room(t, pr, p.mem_target_free);
                    prop_assert!(other < room || (other == room && t > m.to), "{m:?}: {room} bytes of room there, {other} on {t}");
                }
                if let Some(before) = last {
                    let order = |x: &Proc| (std::cmp::Reverse(x.rss), snap.procs.iter().position(|y| y.id == x.id));
                    prop_assert!(order(before) < order(pr), "{before:?} ushered before {pr:?}");
                }
                last = Some(pr);
            }
            r.shift(m);
        }
    }

    /// (g) Homes that decide at once on the same equally good idle targets do not all
    /// send their processes to the same one.
    #[test]
    fn equal_targets_are_spread(c in crowd()) {
        let p = Params { max_moves: 1, ..Params::default() };
        let mut chosen = Vec::new();
        let mut gains = BTreeSet::new();
        for h in 0..c.homes.len() {
            let snap = crowd_snapshot(&c, h);
            let moves = decide(&snap, &p);
            prop_assert_eq!(moves.len(), 1, "home {}: {:?}", h, moves);
            if let Reason::Load { gain } = moves[0].reason {
                gains.insert(gain.to_bits());
            } else {
                prop_assert!(false, "home {}: {:?}", h, moves);
            }
            chosen.push(snap.nodes[moves[0].to].id);
        }
        prop_assert_eq!(gains.len(), 1, "the targets are equal, so are the gains");
        prop_assert!(chosen.iter().any(|&t| t != chosen[0]), "{} homes all chose node {} of {} equal ones", chosen.len(), chosen[0], c.targets.len());
    }

    /// No ping-pong: after the moves are carried out, a second round with the same
    /// parameters does not move the same processes again, nor a process as large as one
    /// the first round moved back across the same pair of nodes.
    ///
    /// `min_residence` > 0, so a process that just arrived is not movable for load. I/O
    /// and memory moves ignore residence by design, but a move never leaves its target
    /// short of memory (the I/O rule keeps `mem_low` free at home, memory and load moves
    /// `mem_target_free` at their target), so the second round finds no reason to move
    /// such a process again — except an I/O-bound process ushered in the first round,
    /// which comes home in the second when the first round's other moves made room
    /// there (memory, then I/O: once, not back and forth).
    #[test]
    fn no_ping_pong(snap in prop_oneof![snapshot(), busy_snapshot()], p in params_from(0.5)) {
        let first = decide(&snap, &p);
        let next = apply(&snap, &first);
        let second = decide(&next, &p);
        let touches = |m: &Move, a: usize, b: usize| [m.from, m.to].iter().any(|&x| x == a || x == b);
        for (k, m) in second.iter().enumerate() {
            if let Some(f) = first.iter().find(|f| f.proc == m.proc) {
                let pr = find(&next, m);
                let comes_home = (f.reason, m.reason) == (Reason::Memory, Reason::Io) && pr.io_rate >= p.io_calls;
                prop_assert!(comes_home, "{f:?} then {m:?}");
            }
            if !matches!(m.reason, Reason::Load { .. }) {
                continue;
            }
            let back = first.iter().position(|f| matches!(f.reason, Reason::Load { .. }) && (f.from, f.to) == (m.to, m.from));
            let Some(i) = back else { continue };
            // The stability rule guarantees that a process at least as large as the first
            // round's cannot go back while the pair's loads are what that move left
            // (see `swap_back_is_smaller`): no later move of the first round and no earlier
            // one of the second touched either node. A smaller one can, and that still
            // evens the pair out.
            let f = &first[i];
            let (s, t) = (f.from, f.to);
            if first[i + 1..].iter().chain(&second[..k]).any(|o| touches(o, s, t)) {
                continue;
            }
            let (a, b) = (find(&snap, f), find(&next, m));
            prop_assert!(b.demand < a.demand + 1e-9, "{f:?} ({a:?}) then back {m:?} ({b:?})");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Cases worth keeping apart
// ---------------------------------------------------------------------------------------

fn plain_node(id: u64, load: f64) -> Node {
    Node { id, cpus: 1, speed: 10_000, load, mem_total: 8 * GIB, mem_free: 6 * GIB, flags: Flags::default(), compatible: true }
}

fn job(id: u64, at: usize, demand: f64) -> Proc {
    Proc { id, at, demand, rss: 10 * MIB, growth: 0.0, moves: 0, age: 60.0, since_move: 60.0, io_rate: 0.0, locked: false, movable: true }
}

fn summary(moves: &[Move]) -> Vec<(u64, usize, usize)> {
    moves.iter().map(|m| (m.proc, m.from, m.to)).collect()
}

/// After a move S → T the same process (or one as large) cannot come back: for a
/// process of demand d, T + s·d/c_T < S implies S − d/c_S + s·d/c_S ≥ T + d/c_T for every
/// stability s ≥ 1. A smaller one can: two rounds can swap a large process for a small
/// one across the same pair, which brings the two loads closer each time.
#[test]
fn swap_back_is_smaller() {
    let p = Params { max_moves: 1, ..Params::default() };
    let mut snap = Snapshot {
        home: 0,
        nodes: vec![plain_node(1, 4.5), plain_node(2, 3.0)],
        procs: vec![job(1, 0, 1.0), job(2, 1, 0.3)],
        transfer_rate: 0.0,
    };
    let first = decide(&snap, &p);
    assert_eq!(summary(&first), vec![(1, 0, 1)]);
    snap = apply(&snap, &first);
    let second = decide(&snap, &p);
    assert_eq!(summary(&second), vec![(2, 1, 0)]);
    // Loads 4.5 / 3.0, then 3.5 / 4.0, then 3.8 / 3.7.
}

/// A process that has moved `k` times stays `min_residence` × 2^k seconds (at most 64×)
/// before it moves for load again; one that never moved is placed at birth (without
/// placement at birth, it stays `min_residence`).
#[test]
fn residence_doubles_with_each_move() {
    let born = Params::default(); // min_residence 2 s
    let mut snap = Snapshot { home: 0, nodes: vec![plain_node(1, 2.0), plain_node(2, 0.0)], procs: vec![job(1, 0, 1.0)], transfer_rate: 0.0 };
    snap.procs[0].since_move = 0.5;
    assert_eq!(summary(&decide(&snap, &born)), vec![(1, 0, 1)], "placed at birth");
    let p = Params { birth_placement: false, ..Params::default() };
    for (moves, stay) in [(0u32, 2.0), (1, 4.0), (3, 16.0), (6, 128.0), (20, 128.0)] {
        let mut snap = Snapshot { home: 0, nodes: vec![plain_node(1, 2.0), plain_node(2, 0.0)], procs: vec![job(1, 0, 1.0)], transfer_rate: 0.0 };
        snap.procs[0].moves = moves;
        snap.procs[0].since_move = stay - 0.01;
        assert_eq!(decide(&snap, &p), vec![], "{moves} moves, there {} s", stay - 0.01);
        snap.procs[0].since_move = stay;
        assert_eq!(summary(&decide(&snap, &p)), vec![(1, 0, 1)], "{moves} moves, there {stay} s");
    }
}

/// An I/O-bound process at home on a node short of memory is ushered out, and the I/O
/// rule does not bring it back while home would be short with it (it used to, every
/// second: both rules ignore residence). Once home has room, it comes home.
#[test]
fn io_bound_on_memory_short_home() {
    let p = Params::default();
    let mut snap = Snapshot { home: 0, nodes: vec![plain_node(1, 1.0), plain_node(2, 0.0)], procs: vec![job(1, 0, 1.0)], transfer_rate: 0.0 };
    snap.nodes[0].mem_free = GIB / 2; // 6 % free, below mem_low
    snap.procs[0].rss = GIB;
    snap.procs[0].io_rate = 5_000.0;
    let mut moves = Vec::new();
    for _ in 0..4 {
        let round = decide(&snap, &p);
        moves.extend(round.iter().map(|m| (m.from, m.to, m.reason)));
        snap = apply(&snap, &round);
    }
    assert_eq!(moves, vec![(0, 1, Reason::Memory)], "moves in 4 rounds");
    // Home has 1.5 GiB free of 8 without it: with it, 0.5 GiB, under the 0.8 of mem_low.
    // Another process's gigabyte leaving home makes room: 1.5 GiB left with it, over 0.8.
    snap.nodes[0].mem_free += GIB;
    assert_eq!(decide(&snap, &p), vec![Move { proc: 1, from: 1, to: 0, reason: Reason::Io }]);
}

/// A process whose growth to come is larger than its node's free memory does not leave
/// that node with memory it never had.
///
/// On A (32 GiB, 1 GiB free) P (1 GiB, growing 2 GiB/s: 10 GiB in 5 s) takes A to −9 GiB
/// ahead; ushered home, it leaves A with 2 GiB (6 %, itself below mem_low). Q, short of
/// memory on C, must then go home too, not to A as "the node with the most room" (which
/// it was when A's free memory saturated at 0 and P gave back 11 GiB).
#[test]
fn ushering_counts_no_phantom_memory() {
    let p = Params::default();
    let mem = |total: u64, free: u64| Node { mem_total: total, mem_free: free, ..plain_node(0, 0.5) };
    let snap = Snapshot {
        home: 0,
        nodes: vec![
            Node { id: 1, ..mem(24 * GIB, 20 * GIB) },
            Node { id: 2, ..mem(32 * GIB, GIB) },
            Node { id: 3, ..mem(8 * GIB, GIB / 2) },
        ],
        procs: vec![
            Proc { rss: GIB, growth: 2.0 * GIB as f64, demand: 0.1, ..job(1, 1, 0.1) },
            Proc { rss: GIB / 2, demand: 0.1, ..job(2, 2, 0.1) },
        ],
        transfer_rate: 0.0,
    };
    let moves: Vec<_> = decide(&snap, &p).iter().map(|m| (m.proc, m.from, m.to, m.reason)).collect();
    assert_eq!(moves, vec![(1, 1, 0, Reason::Memory), (2, 2, 0, Reason::Memory)]);
}

/// Homes pick among equal targets by a hash that includes the home: homes whose
/// candidates have the same pid (pids are per machine: machines started the same way run
/// the same pids) still spread them.
#[test]
fn homes_with_the_same_pids_spread() {
    let p = Params { max_moves: 1, ..Params::default() };
    let chosen: BTreeSet<u64> = (0..16)
        .map(|h| {
            let mut nodes = vec![plain_node(100 + h, 3.0)];
            nodes.extend((1..=4).map(|t| plain_node(t, 0.0)));
            let snap = Snapshot { home: 0, nodes, procs: vec![job(300, 0, 1.0), job(301, 0, 1.0), job(302, 0, 1.0)], transfer_rate: 0.0 };
            let moves = decide(&snap, &p);
            assert_eq!(moves.len(), 1, "{moves:?}");
            snap.nodes[moves[0].to].id
        })
        .collect();
    assert!(chosen.len() > 1, "16 homes, 4 equal targets, all chose {chosen:?}");
}
