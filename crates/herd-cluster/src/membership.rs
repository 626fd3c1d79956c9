//! SWIM membership (foca) and the table of node states, as a state machine.
//!
//! Nothing here touches a socket or a clock: every entry point takes `now` (time since
//! an arbitrary start) and returns an [`Output`] with the datagrams to send and the timer
//! events to deliver later. herdd feeds it from UDP and tokio timers; [`crate::sim`] feeds
//! hundreds of instances on a virtual clock.
//!
//! Node states travel as foca "custom broadcasts" piggybacked on the protocol's own bounded
//! packets: a node's traffic does not grow with the cluster, and when the cluster is large
//! the information about far nodes simply gets a little older (as in MOSIX's gossip
//! windows), while failure detection stays SWIM's.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foca::{BroadcastHandler, Foca, Invalidates, OwnedNotification, PostcardCodec, State};

/// A timer event of the membership protocol, to be handed back when it expires.
pub type Timer = foca::Timer<NodeId>;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::info::{InfoError, StateUpdate};
use crate::{NodeId, NodeInfo};

/// Timing and size of the protocol. The defaults detect a dead node in about 2–3 s.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// Each node probes one random member this often.
    pub probe_period: Duration,
    /// How long a direct probe may take before indirect probes are sent.
    pub probe_rtt: Duration,
    /// How long a suspected member has to refute the suspicion before it is down.
    pub suspect_to_down: Duration,
    /// Largest packet the protocol builds (before sealing adds 42 bytes).
    pub max_packet: usize,
    /// A node publishes its state when it changed noticeably, and at least this often.
    pub publish_every: Duration,
    /// State publications the whole cluster may make per second. Each node waits at least
    /// (nodes up / this) seconds between publications, so a node receives about this many
    /// updates a second whatever the cluster's size, and its gossip traffic grows only with
    /// the number of times each update is passed on (logarithmic). In a large cluster the
    /// state of other nodes is older instead, as with MOSIX's gossip windows.
    pub cluster_updates_per_sec: f64,
    /// A down node is listed as down this long, then forgotten.
    pub forget_down_after: Duration,
    /// Expected cluster size, for foca's dissemination count.
    pub expected_size: u32,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            probe_period: Duration::from_millis(400),
            probe_rtt: Duration::from_millis(200),
            suspect_to_down: Duration::from_millis(1200),
            max_packet: 1400,
            publish_every: Duration::from_secs(5),
            cluster_updates_per_sec: 20.0,
            forget_down_after: Duration::from_secs(3600),
            expected_size: 32,
        }
    }
}

impl MembershipConfig {
    /// How many times each node passes an update on, for a cluster of `nodes`. An update
    /// that every node forwards k times misses a given node with probability about e^-k,
    /// so k grows with ln(n) and has a floor: 6·log10(n+1), at least 8 (12 at 100 nodes,
    /// 18 at 1000). Packets are bounded, so this costs latency of other updates, not bytes.
    fn transmissions(nodes: usize) -> NonZeroU8 {
        let k = (6.0 * ((nodes + 1) as f64).log10()).ceil().clamp(8.0, 255.0);
        NonZeroU8::new(k as u8).expect("at least 8")
    }

    fn foca(&self) -> foca::Config {
        let mut c = foca::Config::new_lan(std::num::NonZeroU32::new(self.expected_size.max(1)).expect("max(1)"));
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt;
        c.suspect_to_down_after = self.suspect_to_down;
        c.max_packet_size = NonZeroUsize::new(self.max_packet.max(512)).expect("max(512)");
        c.max_transmissions = Self::transmissions(self.expected_size as usize);
        // Down members stay in foca long enough that a late packet from them is
        // recognised as stale; our own table keeps them listed longer.
        c.remove_down_after = Duration::from_secs(30);
        c
    }
}

/// What the membership protocol says about a node.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Up,
    /// Missed probes; down unless it answers soon.
    Suspect,
    Down,
}

/// One node as this node sees it.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub id: NodeId,
    pub state: NodeState,
    /// Its published state, if any has arrived from its current boot.
    pub info: Option<NodeInfo>,
    /// How old that state is.
    pub info_age: Option<Duration>,
    /// When `state` last changed (same clock as `now`).
    pub since: Duration,
    pub is_self: bool,
}

/// What the caller must do after an entry point returns.
#[derive(Default, Debug)]
pub struct Output {
    /// Datagrams to send, unsealed.
    pub sends: Vec<(SocketAddr, Vec<u8>)>,
    /// Timer events to hand back to [`Membership::handle_timer`] after the delay.
    pub timers: Vec<(Duration, Timer)>,
    /// Membership changes worth a log line.
    pub events: Vec<String>,
    /// The others declared this node down (it has rejoined since, or will): they have
    /// given up what ran here for them.
    pub declared_down: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("gossip packet rejected: {0}")]
    Protocol(#[from] foca::Error),
}

/// How long published state from an address that is not a member is kept.
const STATE_GRACE: Duration = Duration::from_secs(60);

struct Known {
    id: NodeId,
    state: NodeState,
    since: Duration,
}

struct Published {
    origin: NodeId,
    seq: u64,
    info: NodeInfo,
    received: Duration,
}

/// Latest published state of every node, shared with foca's broadcast handler.
struct StateTable {
    own_addr: SocketAddr,
    now: Duration,
    by_addr: HashMap<SocketAddr, Published>,
    rejected: u64,
}

/// Identifies one publication; a newer one from the same node replaces an older
/// one still being disseminated.
struct StateKey {
    addr: SocketAddr,
    version: (u64, u64),
}

impl Invalidates for StateKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.addr == other.addr && self.version >= other.version
    }
}

struct StateHandler(Arc<Mutex<StateTable>>);

impl BroadcastHandler<NodeId> for StateHandler {
    type Key = StateKey;
    type Error = InfoError;

    fn receive_item(&mut self, data: &[u8], sender: Option<&NodeId>) -> Result<Option<StateKey>, InfoError> {
        let update = StateUpdate::decode(data)
            .inspect_err(|_| self.0.lock().expect("state table poisoned").rejected += 1)?;
        let mut table = self.0.lock().expect("state table poisoned");
        let addr = update.origin.addr;
        if sender.is_some() && addr == table.own_addr {
            // Our own state coming back, or a stale one from our previous boot.
            return Ok(None);
        }
        let version = (update.origin.boot, update.seq);
        if let Some(old) = table.by_addr.get(&addr) {
            if (old.origin.boot, old.seq) >= version {
                return Ok(None);
            }
        }
        let received = table.now;
        table.by_addr.insert(addr, Published { origin: update.origin, seq: update.seq, info: update.info, received });
        Ok(Some(StateKey { addr, version }))
    }
}

/// One node's membership protocol instance and view of the cluster.
pub struct Membership {
    foca: Foca<NodeId, PostcardCodec, StdRng, StateHandler>,
    runtime: foca::AccumulatingRuntime<NodeId>,
    table: Arc<Mutex<StateTable>>,
    known: BTreeMap<SocketAddr, Known>,
    config: MembershipConfig,
    info: NodeInfo,
    seq: u64,
    last_published: Option<(Duration, NodeInfo)>,
    /// Cluster size the dissemination count was last set for.
    tuned_for: usize,
    last_prune: Duration,
    /// A member appeared that has not heard our state yet.
    republish: bool,
    started: Duration,
}

impl Membership {
    pub fn new(id: NodeId, info: NodeInfo, config: MembershipConfig, seed: u64, now: Duration) -> Self {
        let table = Arc::new(Mutex::new(StateTable { own_addr: id.addr, now, by_addr: HashMap::new(), rejected: 0 }));
        let foca = Foca::with_custom_broadcast(
            id,
            config.foca(),
            StdRng::seed_from_u64(seed),
            PostcardCodec,
            StateHandler(table.clone()),
        );
        Self {
            foca,
            runtime: foca::AccumulatingRuntime::new(),
            table,
            known: BTreeMap::new(),
            config,
            info,
            seq: 0,
            last_published: None,
            tuned_for: 0,
            last_prune: now,
            republish: false,
            started: now,
        }
    }

    pub fn id(&self) -> NodeId {
        *self.foca.identity()
    }

    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// Asks a node to let us in (a static peer, or one heard in a beacon).
    pub fn announce(&mut self, to: NodeId, now: Duration) -> Output {
        self.tick_clock(now);
        // Announcing can only fail on encoding our own header: not possible for a NodeId.
        let _ = self.foca.announce(to, &mut self.runtime);
        self.drain(now)
    }

    /// Called for a beacon from `id`: announce ourselves unless we already have it up.
    pub fn heard_beacon(&mut self, id: NodeId, now: Duration) -> Output {
        if id.addr == self.id().addr {
            return Output::default();
        }
        match self.known.get(&id.addr) {
            Some(k) if k.id.boot >= id.boot && k.state != NodeState::Down => Output::default(),
            _ => self.announce(id, now),
        }
    }

    /// A datagram arrived (already opened and authenticated).
    pub fn handle_data(&mut self, data: &[u8], now: Duration) -> (Output, Result<(), MembershipError>) {
        self.tick_clock(now);
        let result = self.foca.handle_data(data, &mut self.runtime).map_err(MembershipError::from);
        (self.drain(now), result)
    }

    pub fn handle_timer(&mut self, timer: Timer, now: Duration) -> Output {
        self.tick_clock(now);
        if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
            tracing::debug!("membership timer: {e}");
        }
        self.drain(now)
    }

    /// Updates this node's own state and publishes it if it changed noticeably or
    /// has not been published for `publish_every`.
    pub fn set_info(&mut self, info: NodeInfo, now: Duration) -> Output {
        self.info = info;
        self.tick_clock(now);
        let due = match &self.last_published {
            None => true,
            Some((at, last)) => {
                let since = now.saturating_sub(*at);
                let gap = self.min_gap();
                let wanted = self.republish || last.differs_noticeably(&self.info);
                (wanted && since >= gap) || since >= self.config.publish_every.max(gap)
            }
        };
        if due {
            self.publish(now);
        }
        self.drain(now)
    }

    /// Updates this node's own state at an operator's command (block, stay, quiet, a
    /// speed): published at once if it differs from what was last published, without
    /// waiting out the gap between publications. Operators act rarely and mean it now:
    /// a node being drained must stop receiving processes, an unblocked one take them
    /// again; and a block undone within the gap would otherwise never be published, so
    /// that others could not tell its end from its absence for `publish_every`.
    pub fn set_info_now(&mut self, info: NodeInfo, now: Duration) -> Output {
        self.info = info;
        self.tick_clock(now);
        if self.last_published.as_ref().is_none_or(|(_, last)| last.differs_noticeably(&self.info)) {
            self.publish(now);
        }
        self.drain(now)
    }

    /// Leaves the cluster politely (others mark us down at once).
    pub fn leave(&mut self, now: Duration) -> Output {
        let _ = self.foca.leave_cluster(&mut self.runtime);
        self.drain(now)
    }

    /// Number of members currently up, not counting ourselves.
    pub fn peers_up(&self) -> usize {
        self.known.values().filter(|k| k.state == NodeState::Up).count()
    }

    /// Gossip packets whose node-state payload failed validation.
    pub fn rejected_states(&self) -> u64 {
        self.table.lock().expect("state table poisoned").rejected
    }

    /// Every node this one knows, itself first.
    pub fn view(&self, now: Duration) -> Vec<NodeView> {
        let suspects: HashMap<SocketAddr, (NodeId, State)> =
            self.foca.iter_membership_state().map(|m| (m.id().addr, (*m.id(), m.state()))).collect();
        let table = self.table.lock().expect("state table poisoned");
        let mut out = vec![NodeView {
            id: self.id(),
            state: NodeState::Up,
            info: Some(self.info.clone()),
            info_age: Some(Duration::ZERO),
            since: self.started,
            is_self: true,
        }];
        for (addr, k) in &self.known {
            let mut state = k.state;
            if state == NodeState::Up && matches!(suspects.get(addr), Some((id, State::Suspect)) if *id == k.id) {
                state = NodeState::Suspect;
            }
            let published = table.by_addr.get(addr).filter(|p| p.origin.boot == k.id.boot);
            out.push(NodeView {
                id: k.id,
                state,
                info: published.map(|p| p.info.clone()),
                info_age: published.map(|p| now.saturating_sub(p.received)),
                since: k.since,
                is_self: false,
            });
        }
        out
    }

    /// Keeps the dissemination count right for the cluster's size as it grows or shrinks.
    fn retune(&mut self) {
        let nodes = (self.peers_up() + 1).max(self.config.expected_size as usize);
        if nodes == self.tuned_for {
            return;
        }
        let wanted = MembershipConfig::transmissions(nodes);
        let mut c = self.config.foca();
        c.max_transmissions = wanted;
        if MembershipConfig::transmissions(self.tuned_for) != wanted || self.tuned_for == 0 {
            if let Err(e) = self.foca.set_config(c) {
                tracing::warn!("cannot retune membership for {nodes} nodes: {e}");
            }
        }
        self.tuned_for = nodes;
    }

    /// The shortest time between two publications of this node at the cluster's size.
    fn min_gap(&self) -> Duration {
        let nodes = (self.peers_up() + 1) as f64;
        Duration::from_secs_f64((nodes / self.config.cluster_updates_per_sec.max(0.001)).max(1.0))
    }

    fn publish(&mut self, now: Duration) {
        self.republish = false;
        self.seq += 1;
        let update = StateUpdate { origin: self.id(), seq: self.seq, info: self.info.clone() };
        if let Err(e) = self.foca.add_broadcast(&update.encode()) {
            tracing::warn!("cannot publish node state: {e}");
        }
        self.last_published = Some((now, self.info.clone()));
    }

    fn tick_clock(&mut self, now: Duration) {
        let mut table = self.table.lock().expect("state table poisoned");
        table.now = now;
        if now.saturating_sub(self.last_prune) < Duration::from_secs(1) {
            return;
        }
        self.last_prune = now;
        let forget = self.config.forget_down_after;
        self.known.retain(|_, k| k.state != NodeState::Down || now.saturating_sub(k.since) < forget);
        // Published state of addresses that are not (or no longer) members is dropped after
        // a grace period (state may arrive just before the member does), so nothing a peer
        // sends can grow the table beyond the membership.
        let known = &self.known;
        table.by_addr.retain(|addr, p| known.contains_key(addr) || now.saturating_sub(p.received) < STATE_GRACE);
    }

    fn drain(&mut self, now: Duration) -> Output {
        let mut out = Output::default();
        let mut republish = false;
        while let Some(n) = self.runtime.to_notify() {
            match n {
                OwnedNotification::MemberUp(id) => {
                    out.events.push(format!("node {id} is up"));
                    self.known.insert(id.addr, Known { id, state: NodeState::Up, since: now });
                    republish = true;
                }
                OwnedNotification::MemberDown(id) => {
                    if let Some(k) = self.known.get_mut(&id.addr) {
                        if k.id == id {
                            out.events.push(format!("node {id} is down"));
                            k.state = NodeState::Down;
                            k.since = now;
                        }
                    }
                }
                OwnedNotification::Rename(old, new) => {
                    let active = self.foca.iter_members().any(|m| *m.id() == new);
                    out.events.push(format!("node {old} restarted as {new}"));
                    let state = if active { NodeState::Up } else { NodeState::Down };
                    self.known.insert(new.addr, Known { id: new, state, since: now });
                    republish |= active;
                }
                OwnedNotification::Rejoin(id) => {
                    out.events.push(format!("this node was declared down; rejoined as {id}"));
                    out.declared_down = true;
                    self.table.lock().expect("state table poisoned").own_addr = id.addr;
                    republish = true;
                }
                OwnedNotification::Active => out.events.push("joined the cluster".into()),
                OwnedNotification::Idle => out.events.push("no other node is up".into()),
                OwnedNotification::Defunct => {
                    out.events.push("this node was declared down".into());
                    out.declared_down = true;
                }
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
        self.retune();
        if republish {
            // A newcomer learns our state only if we publish it again: soon, within the
            // cluster's budget (at once while the cluster is small).
            self.republish = true;
            if self.last_published.as_ref().is_none_or(|(at, _)| now.saturating_sub(*at) >= self.min_gap()) {
                self.publish(now);
            }
        }
        while let Some((to, data)) = self.runtime.to_send() {
            out.sends.push((to.addr, data.to_vec()));
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            out.timers.push((after, timer));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{addr, Sim};

    #[test]
    fn an_operators_change_is_published_at_once_a_loads_waits_for_the_gap() {
        let t0 = Duration::from_secs(10);
        let mut m = Membership::new(NodeId::new(addr(0), 1), Sim::info(0), MembershipConfig::default(), 1, t0);
        let _ = m.set_info(Sim::info(0), t0);
        assert_eq!(m.seq, 1, "the first state is published");
        // Within the gap (1 s at this size): a load change waits.
        let mut busy = Sim::info(0);
        busy.load = 3.0;
        let _ = m.set_info(busy.clone(), t0 + Duration::from_millis(100));
        assert_eq!(m.seq, 1, "a load change within the gap is not published");
        // A block, then its end, each at once.
        let mut blocked = busy.clone();
        blocked.status.blocked = true;
        let _ = m.set_info_now(blocked, t0 + Duration::from_millis(200));
        assert_eq!(m.seq, 2);
        assert!(m.last_published.as_ref().is_some_and(|(_, i)| i.status.blocked));
        let _ = m.set_info_now(busy.clone(), t0 + Duration::from_millis(250));
        assert_eq!(m.seq, 3);
        assert!(m.last_published.as_ref().is_some_and(|(_, i)| !i.status.blocked));
        // The same state again: nothing new to say.
        let _ = m.set_info_now(busy, t0 + Duration::from_millis(300));
        assert_eq!(m.seq, 3);
    }
}
