//! Properties of [`herd_balance::decide`] over random snapshots and parameters.
//!
//! Each property restates one rule of the policy's documentation and checks it against
//! whatever `decide` returns, replaying the moves on a copy of the nodes the way the
//! policy accounts for them (load shifted by the process's demand, memory by its size),
//! so that a rule that depends on the moves made before it in the same call is checked
//! against the figures the policy had at that point.

use herd_balance::{decide, Flags, Move, Node, Params, Proc, Reason, Snapshot, REFERENCE_SPEED};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

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
    )
        .prop_map(move |(at, demand, (rss, growth), age, moved, io_rate, locked, movable)| Proc {
            id,
            at,
            demand,
            rss,
            growth,
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

/// Only load at play: 2-4 plain nodes (no flags, memory to spare) and up to 12 old,
/// small, CPU-bound processes, so that load moves, and second rounds after them, are
/// common.
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
                .map(|id| (0..n, 0.2f64..=1.0).prop_map(move |(at, demand)| Proc { demand, ..job(1000 + id, at, demand) }))
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
        (0.0f64..=20.0, 0.0f64..1.0, (1.0 * MIB as f64)..(1.0 * GIB as f64)),
    )
        .prop_map(
            |(
                (stability, min_residence, pay_factor, min_demand),
                (io_calls, mem_low, target, usher_horizon, max_moves),
                (settle, decay, default_rate),
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

fn mem_low(n: &Node, p: &Params) -> bool {
    n.mem_total > 0 && (n.mem_free as f64) < p.mem_low * n.mem_total as f64
}

/// What a process will have grown by at the ushering horizon, bytes.
fn ahead(pr: &Proc, p: &Params) -> u64 {
    (pr.growth.max(0.0) * p.usher_horizon) as u64
}

/// The nodes as the policy starts from: free memory less what this home's processes on
/// each will have grown by at the ushering horizon.
fn working_copy(snap: &Snapshot, p: &Params) -> Vec<Node> {
    let mut nodes = snap.nodes.clone();
    for pr in &snap.procs {
        nodes[pr.at].mem_free = nodes[pr.at].mem_free.saturating_sub(ahead(pr, p));
    }
    nodes
}

/// The same bookkeeping as the policy's working copy: load and memory (with the growth
/// to come) follow the process.
fn shift(nodes: &mut [Node], pr: &Proc, to: usize, p: &Params) {
    let bytes = pr.rss.saturating_add(ahead(pr, p));
    let from = &mut nodes[pr.at];
    from.load = (from.load - pr.demand).max(0.0);
    from.mem_free = from.mem_free.saturating_add(bytes).min(from.mem_total.max(from.mem_free));
    let to = &mut nodes[to];
    to.load += pr.demand;
    to.mem_free = to.mem_free.saturating_sub(bytes);
}

fn find<'a>(snap: &'a Snapshot, m: &Move) -> &'a Proc {
    snap.procs.iter().find(|p| p.id == m.proc).unwrap_or_else(|| panic!("move of an unknown process: {m:?}"))
}

fn transfer_rate(snap: &Snapshot, p: &Params) -> f64 {
    if snap.transfer_rate > 0.0 {
        snap.transfer_rate
    } else {
        p.default_rate
    }
}

/// Seconds a process must have run (and stayed) to pay for its move.
fn pay(snap: &Snapshot, p: &Params, pr: &Proc) -> f64 {
    p.pay_factor * pr.rss as f64 / transfer_rate(snap, p)
}

/// The snapshot after the moves: loads and memory shifted (growth not counted: it has not
/// happened yet), moved processes at their target, just arrived.
fn apply(snap: &Snapshot, moves: &[Move]) -> Snapshot {
    let mut next = snap.clone();
    let now = Params { usher_horizon: 0.0, ..Params::default() };
    for m in moves {
        let pr = find(snap, m).clone();
        shift(&mut next.nodes, &pr, m.to, &now);
        let moved = next.procs.iter_mut().find(|p| p.id == m.proc).unwrap();
        moved.at = m.to;
        moved.since_move = 0.0;
    }
    next
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
    /// where it is, somewhere else; at most `max_moves` moves.
    #[test]
    fn moves_are_well_formed(snap in snapshot(), p in params()) {
        let moves = decide(&snap, &p);
        prop_assert!(moves.len() <= p.max_moves, "{} moves, max {}", moves.len(), p.max_moves);
        for (k, m) in moves.iter().enumerate() {
            let pr = find(&snap, m);
            prop_assert!(pr.movable && !pr.locked, "{m:?} moves {pr:?}");
            prop_assert_eq!(m.from, pr.at);
            prop_assert_ne!(m.to, m.from);
            prop_assert!(m.to < snap.nodes.len());
            prop_assert!(moves[..k].iter().all(|o| o.proc != m.proc), "{:?} moved twice", m.proc);
        }
    }

    /// (c) A load move passes the stability rule against the loads left by the moves
    /// before it, gives the process more CPU, and the process has paid for it.
    #[test]
    fn load_moves_are_stable_and_paid(snap in snapshot(), p in params()) {
        let mut nodes = working_copy(&snap, &p);
        for m in decide(&snap, &p) {
            let pr = find(&snap, &m);
            if let Reason::Load { gain } = m.reason {
                let (src, dst) = (&nodes[m.from], &nodes[m.to]);
                prop_assert!(
                    dst.normalised() + p.stability * pr.demand / capacity(dst) < src.normalised(),
                    "{m:?}: target {} + {} × {} / {} ≥ source {}",
                    dst.normalised(), p.stability, pr.demand, capacity(dst), src.normalised()
                );
                let here = rate(src, src.load.max(pr.demand), pr.demand);
                let there = rate(dst, dst.load + pr.demand, pr.demand);
                prop_assert!(there > here && gain > 1.0, "{m:?}: rate {here} → {there}");
                let pay = pay(&snap, &p, pr);
                prop_assert!(pr.since_move >= p.min_residence.max(pay) && pr.age >= pay, "{m:?} of {pr:?}, pay {pay}");
                prop_assert!(pr.demand >= p.min_demand && pr.io_rate < p.io_calls, "{m:?} of {pr:?}");
                let kept = src.flags.stay || (m.from == snap.home && src.flags.lstay);
                prop_assert!(!kept, "{m:?} from {src:?}");
                if dst.mem_total > 0 {
                    let left = dst.mem_free as f64 - pr.rss as f64;
                    prop_assert!(left >= p.mem_target_free * dst.mem_total as f64, "{m:?} starts ushering at {dst:?}");
                }
            }
            shift(&mut nodes, pr, m.to, &p);
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

    /// (f) I/O moves bring I/O-bound processes home; memory moves leave nodes short of
    /// memory (as the moves before left them) for nodes that keep enough free.
    #[test]
    fn io_and_memory_moves_have_their_cause(snap in snapshot(), p in params()) {
        let mut nodes = working_copy(&snap, &p);
        for m in decide(&snap, &p) {
            let pr = find(&snap, &m);
            match m.reason {
                Reason::Io => {
                    prop_assert!(pr.io_rate >= p.io_calls && m.to == snap.home, "{m:?} of {pr:?}");
                }
                Reason::Memory => {
                    prop_assert!(mem_low(&nodes[m.from], &p), "{m:?} from {:?}", nodes[m.from]);
                    let t = &nodes[m.to];
                    let left = t.mem_free as f64 - pr.rss as f64;
                    prop_assert!(left >= p.mem_target_free * t.mem_total as f64, "{m:?} to {t:?}");
                }
                Reason::Load { .. } => {}
            }
            shift(&mut nodes, pr, m.to, &p);
        }
    }

    /// No ping-pong: after the moves are carried out, a second round with the same
    /// parameters does not move the same processes again, nor a process as large as one
    /// the first round moved back across the same pair of nodes.
    ///
    /// `min_residence` > 0, so a process that just arrived is not movable for load. I/O
    /// and memory moves ignore residence by design; see `io_bound_on_memory_short_home`
    /// for the one way that makes a process bounce. Processes do not grow here: with
    /// growth, the phantom memory of `ushering_counts_no_phantom_memory` makes processes
    /// bounce too.
    #[test]
    fn no_ping_pong(mut snap in prop_oneof![snapshot(), busy_snapshot()], p in params_from(0.5)) {
        // Without growth: see `ushering_counts_no_phantom_memory` for what growth does.
        for pr in &mut snap.procs {
            pr.growth = 0.0;
        }
        let first = decide(&snap, &p);
        let next = apply(&snap, &first);
        let second = decide(&next, &p);
        let touches = |m: &Move, a: usize, b: usize| [m.from, m.to].iter().any(|&x| x == a || x == b);
        for (k, m) in second.iter().enumerate() {
            let again = first.iter().find(|f| f.proc == m.proc);
            if let Some(f) = again {
                let pr = find(&next, m);
                // Known: an I/O-bound process is pulled home, then ushered out of a home
                // short of memory, then pulled home again (see the ignored test below).
                let io_memory_bounce = matches!((f.reason, m.reason), (Reason::Io, Reason::Memory) | (Reason::Memory, Reason::Io))
                    && pr.io_rate >= p.io_calls;
                prop_assert!(io_memory_bounce, "{f:?} then {m:?}");
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
    Proc { id, at, demand, rss: 10 * MIB, growth: 0.0, age: 60.0, since_move: 60.0, io_rate: 0.0, locked: false, movable: true }
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
    assert_eq!(first.iter().map(|m| (m.proc, m.from, m.to)).collect::<Vec<_>>(), vec![(1, 0, 1)]);
    snap = apply(&snap, &first);
    let second = decide(&snap, &p);
    assert_eq!(second.iter().map(|m| (m.proc, m.from, m.to)).collect::<Vec<_>>(), vec![(2, 1, 0)]);
    // Loads 4.5 / 3.0, then 3.5 / 4.0, then 3.8 / 3.7.
}

/// An I/O-bound process at home on a node short of memory is ushered out, pulled back
/// home by the I/O rule the next round, ushered out again, and so on every second: the
/// I/O and memory rules both ignore residence, and neither looks at the other.
///
/// Ignored: it fails on the policy as it is (reported, not fixed here).
#[test]
#[ignore = "policy bug: I/O-bound process bounces between the I/O and memory rules"]
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
    assert!(moves.len() <= 1, "moves in 4 rounds: {moves:?}");
}

/// A process whose growth to come is larger than its node's free memory leaves that node
/// with memory it never had, and ushering then sends others there.
///
/// The policy first takes each process's growth to come off its node's free memory,
/// saturating at 0, then gives back size + growth when the process leaves. On A (32 GiB,
/// 1 GiB free) P (1 GiB, growing 2 GiB/s: 10 GiB in 5 s) takes A to 0, not −9 GiB; when P
/// is ushered home, A counts 11 GiB free where it has 2 GiB (6 %, itself below mem_low),
/// and Q, short of memory on C, is ushered to A as "the node with the most room".
///
/// Ignored: it fails on the policy as it is (reported, not fixed here).
#[test]
#[ignore = "policy bug: saturated growth leaves phantom free memory on the node a process leaves"]
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
    let moves: Vec<_> = decide(&snap, &p).iter().map(|m| (m.proc, m.from, m.to)).collect();
    assert!(!moves.contains(&(2, 2, 1)), "Q ushered to A, which has 2 GiB of 32 free: {moves:?}");
}
