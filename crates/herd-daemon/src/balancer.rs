//! Automatic balancing: every `policy.interval` seconds herdd builds the policy's
//! snapshot — the nodes from gossip, this home's processes from the registry — asks
//! [`herd_balance::decide`] what to move, and moves it through the processes' actors,
//! exactly as `herd migrate` would.
//!
//! Each home decides for its own processes, wherever they run. What it decided stays in
//! a [`Ledger`] until gossip shows it, so a second round does not send more processes to
//! a node whose published load has not caught up yet. A process whose move was refused
//! (it cannot move now, or the target refused) is left alone for a while.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_balance::{Flags, Ledger, Node, Proc, Snapshot};
use herd_cluster::{NodeState, NodeStatus};
use tokio::sync::mpsc;

use crate::control::{ControlError, ErrorKind, Migrated};
use crate::daemon::Shared;
use crate::migrate;

/// Moves smaller than this teach nothing of the transfer rate: their time is the fixed
/// cost of a move (the stop, a first look at the target's copies of the files), and a few
/// of them would make every larger process look too dear to move.
const RATE_SAMPLE_MIN: u64 = 4 << 20;

/// The smoothed transfer rate after move `m`.
fn learn_rate(old: Option<f64>, m: &Migrated) -> Option<f64> {
    if m.total_ms <= 0.0 || m.bytes < RATE_SAMPLE_MIN {
        return old;
    }
    let r = m.bytes as f64 / (m.total_ms / 1e3);
    Some(old.map_or(r, |old| 0.7 * old + 0.3 * r))
}

/// How long a process whose automatic move failed is left where it is.
const BACKOFF: Duration = Duration::from_secs(30);

fn node_id(name: &str) -> u64 {
    // SipHash with fixed keys: the same name gives the same id in every round.
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

fn flags(s: NodeStatus) -> Flags {
    Flags { blocked: s.blocked, quiet: s.quiet, stay: s.stay, lstay: s.lstay }
}

/// Runs until herdd stops; returns at once when `balance = false`.
pub async fn run(shared: Arc<Shared>) {
    if !shared.config.balance {
        tracing::info!("automatic balancing is off (balance = false)");
        return;
    }
    let params = shared.config.policy.clone();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(params.interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut b = Balancer { shared, ledger: Ledger::default(), start: Instant::now(), rate: None, moving: HashMap::new(), backoff: HashMap::new(), done: done_tx };
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                b.round().await;
                last = Instant::now();
            }
            // A new process has its first figures: placed at once (at most every
            // BORN_ROUNDS, for a burst of births).
            _ = b.shared.born.notified() => {
                tokio::time::sleep_until((last + BORN_ROUNDS).into()).await;
                b.round().await;
                last = Instant::now();
            }
            Some((pid, nodes, result)) = done_rx.recv() => b.finished(pid, nodes, result),
        }
    }
}

/// The least time between two rounds that births start.
const BORN_ROUNDS: Duration = Duration::from_millis(200);

struct Balancer {
    shared: Arc<Shared>,
    ledger: Ledger,
    start: Instant,
    /// Measured migration rate, bytes a second (smoothed).
    rate: Option<f64>,
    /// Processes being moved by the balancer now, with the ids of the two nodes.
    moving: HashMap<i32, (u64, u64)>,
    /// Processes left alone until then (their last automatic move failed).
    backoff: HashMap<i32, Instant>,
    done: mpsc::UnboundedSender<Done>,
}

/// A finished move: the process, the ids of the two nodes, the outcome.
type Done = (i32, (u64, u64), Result<Migrated, ControlError>);

impl Balancer {
    async fn round(&mut self) {
        let now = Instant::now();
        self.backoff.retain(|_, until| *until > now);
        let Some((snap, names)) = self.snapshot() else { return };
        if snap.procs.is_empty() {
            return;
        }
        let params = &self.shared.config.policy;
        let mut snap = snap;
        let t = self.start.elapsed().as_secs_f64();
        // Moves still under way keep their nodes' figures adjusted.
        let busy: Vec<u64> = self.moving.values().flat_map(|&(a, b)| [a, b]).collect();
        self.ledger.refresh(&busy, t);
        self.ledger.adjust(&mut snap.nodes, t, params);
        let mut moves = herd_balance::decide(&snap, params);
        // A process at home that cannot be captured (threads, shared memory…) is found
        // out here, once, rather than in every round's snapshot. /proc/PID/maps may wait
        // on the process's memory: read aside, not on the runtime's threads.
        let at_home: Vec<i32> = moves.iter().filter(|m| m.from == snap.home).map(|m| m.proc as i32).collect();
        let cannot: HashMap<i32, String> = tokio::task::spawn_blocking(move || {
            at_home
                .into_iter()
                .filter_map(|pid| {
                    let why = migrate::cannot_move(pid);
                    (!why.is_empty()).then(|| (pid, why.join("; ")))
                })
                .collect()
        })
        .await
        .unwrap_or_default();
        moves.retain(|m| {
            let pid = m.proc as i32;
            let Some(why) = cannot.get(&pid) else { return true };
            tracing::debug!(pid, "balancer leaves it: {why}");
            self.backoff.insert(pid, now + BACKOFF);
            false
        });
        if moves.is_empty() {
            return;
        }
        self.ledger.record(&snap, &moves, t);
        for m in moves {
            let nodes = (snap.nodes[m.from].id, snap.nodes[m.to].id);
            let pid = m.proc as i32;
            let target = if m.to == snap.home { migrate::Target::Home } else { migrate::Target::Node(names[m.to].clone()) };
            tracing::info!(pid, "balancer: {} → {target} ({})", names[m.from], m.reason);
            self.shared.counters.balancer_moves.inc();
            self.moving.insert(pid, nodes);
            let (shared, done) = (self.shared.clone(), self.done.clone());
            tokio::spawn(async move {
                // Its own task, so that whatever happens to the move is reported.
                let r = tokio::spawn(async move { migrate::migrate_auto(&shared, pid, target).await })
                    .await
                    .unwrap_or_else(|e| Err(ControlError { kind: ErrorKind::Internal, message: format!("the move task failed: {e}") }));
                let _ = done.send((pid, nodes, r));
            });
        }
    }

    fn finished(&mut self, pid: i32, (from, to): (u64, u64), result: Result<Migrated, ControlError>) {
        self.moving.remove(&pid);
        match result {
            Ok(m) => self.rate = learn_rate(self.rate, &m),
            Err(e) => {
                // The target's refusal (blocked since, say) says nothing against the process:
                // it may go elsewhere soon. Its own refusal (cannot move now) holds longer.
                let wait = if e.kind == ErrorKind::TargetRefused { Duration::from_secs(3) } else { BACKOFF };
                tracing::info!(pid, "balancer: move not made ({e}); left alone for {} s", wait.as_secs());
                self.backoff.insert(pid, Instant::now() + wait);
                // The two nodes' figures no longer include a move that did not happen.
                self.ledger.forget(&[from, to]);
            }
        }
    }

    /// The policy's view now: nodes (this one as `home`) and their names by index.
    fn snapshot(&self) -> Option<(Snapshot, Vec<String>)> {
        let cluster = self.shared.snapshot.borrow().clone();
        let own = cluster.nodes.iter().find(|n| n.is_self).and_then(|n| n.info.clone())?;
        let mut nodes = Vec::new();
        let mut names = Vec::new();
        let mut home = 0;
        for v in &cluster.nodes {
            let Some(info) = &v.info else { continue };
            if !v.is_self && v.state != NodeState::Up {
                continue;
            }
            if v.is_self {
                home = nodes.len();
            }
            let status = if v.is_self { cluster.status } else { info.status };
            nodes.push(Node {
                id: node_id(&info.name),
                cpus: info.cpus.max(1),
                speed: info.speed.max(1),
                load: f64::from(info.load),
                mem_total: info.mem_total,
                mem_free: info.mem_free,
                flags: flags(status),
                compatible: v.is_self || migrate::usable(Some(&own), v).is_ok(),
            });
            names.push(info.name.clone());
        }
        let allow_root = self.shared.config.allow_root_guests;
        let procs = migrate::candidates(&self.shared, |r, c| {
            let at = names.iter().position(|n| *n == r.where_)?;
            let settled = r.state == "home" || r.state == "remote";
            Some(Proc {
                id: r.pid as u64,
                at,
                demand: r.demand / 100.0,
                rss: r.rss,
                growth: r.rss_growth,
                moves: r.nmigs,
                age: c.age,
                since_move: c.since_move,
                io_rate: r.io_rate,
                locked: r.lock,
                movable: settled && !self.moving.contains_key(&r.pid) && !self.backoff.contains_key(&r.pid) && (r.uid != 0 || allow_root),
            })
        });
        let snap = Snapshot { home, nodes, procs, transfer_rate: self.rate.unwrap_or(0.0) };
        Some((snap, names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(bytes: u64, total_ms: f64) -> Migrated {
        Migrated { pid: 1, node: "n2".into(), frozen_ms: 10.0, total_ms, bytes, mode: Default::default() }
    }

    #[test]
    fn small_moves_teach_no_rate() {
        // 270 KiB in a second (a first move to a node): not a rate.
        assert_eq!(learn_rate(None, &moved(270 << 10, 1000.0)), None);
        assert_eq!(learn_rate(Some(5e8), &moved(270 << 10, 1000.0)), Some(5e8));
        let r = learn_rate(None, &moved(64 << 20, 250.0)).unwrap();
        assert!((r - (64u64 << 20) as f64 * 4.0).abs() < 1.0);
        let smoothed = learn_rate(Some(r), &moved(64 << 20, 500.0)).unwrap();
        assert!(smoothed < r && smoothed > r / 2.0);
        assert_eq!(learn_rate(Some(r), &moved(64 << 20, 0.0)), Some(r));
    }
}
