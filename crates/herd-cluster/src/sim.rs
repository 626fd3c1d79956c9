//! Many [`Membership`] instances in one process on a virtual clock, for the gossip
//! benchmark and tests: the same state machine herdd runs, with datagrams delivered
//! through an in-memory queue after a small random latency.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use crate::membership::Timer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Membership, MembershipConfig, NodeId, NodeInfo, NodeState, Output};

enum Event {
    Deliver { from: usize, to: usize, data: Vec<u8> },
    Timer { node: usize, boot: u64, timer: Timer },
    Publish { node: usize, boot: u64 },
}

struct Scheduled {
    at: Duration,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A datagram the simulator delivered (recorded while [`Sim::capture`] is on): from
/// node `from` to node `to`'s address, at `at` on the virtual clock, unsealed. Whether
/// `to` was running to receive it is not considered.
#[derive(Clone, Debug)]
pub struct Captured {
    pub from: usize,
    pub to: usize,
    pub at: Duration,
    pub data: Vec<u8>,
}


pub struct Sim {
    config: MembershipConfig,
    nodes: Vec<Option<Membership>>,
    boots: Vec<u64>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    now: Duration,
    rng: StdRng,
    /// Bytes and datagrams each node has sent (sealed size).
    pub bytes_sent: Vec<u64>,
    pub packets_sent: Vec<u64>,
    capturing: bool,
    captured: Vec<Captured>,
}

/// Gossip address of node `i`: 10.x.y.z:4700 with x.y.z = `i + 1`.
pub fn addr(i: usize) -> SocketAddr {
    let i = i as u32 + 1;
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8), 4700))
}

fn index(a: SocketAddr) -> Option<usize> {
    match a {
        SocketAddr::V4(v4) => {
            let [_, b, c, d] = v4.ip().octets();
            let i = ((b as usize) << 16) | ((c as usize) << 8) | d as usize;
            i.checked_sub(1)
        }
        SocketAddr::V6(_) => None,
    }
}

impl Sim {
    /// `n` nodes, none started yet.
    pub fn new(n: usize, config: MembershipConfig, seed: u64) -> Self {
        Self {
            config,
            nodes: (0..n).map(|_| None).collect(),
            boots: vec![0; n],
            queue: BinaryHeap::new(),
            seq: 0,
            now: Duration::ZERO,
            rng: StdRng::seed_from_u64(seed),
            bytes_sent: vec![0; n],
            packets_sent: vec![0; n],
            capturing: false,
            captured: Vec::new(),
        }
    }

    pub fn now(&self) -> Duration {
        self.now
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Identity of node `i` in its latest (or, if never started, its first) boot.
    pub fn id(&self, i: usize) -> NodeId {
        NodeId::new(addr(i), self.boots[i].max(1))
    }

    /// Starts (`true`) or stops recording every datagram delivered; see [`Self::take_captured`].
    pub fn capture(&mut self, on: bool) {
        self.capturing = on;
    }

    /// The datagrams recorded since capture started or this was last called, in
    /// order of delivery.
    pub fn take_captured(&mut self) -> Vec<Captured> {
        std::mem::take(&mut self.captured)
    }

    /// The state node `i` publishes when it starts (named `s{i + 1}`).
    pub fn info(i: usize) -> NodeInfo {
        NodeInfo {
            name: format!("s{}", i + 1),
            version: env!("CARGO_PKG_VERSION").into(),
            cpus: 4,
            speed: 10000,
            load: 0.0,
            mem_total: 16 << 30,
            mem_free: 8 << 30,
            ..Default::default()
        }
    }

    /// Starts node `i` (again, with a new boot number if it ran before) and has it
    /// announce itself to `contact`, as a discovery beacon or a static peer would.
    pub fn start(&mut self, i: usize, contact: Option<usize>) {
        self.boots[i] += 1;
        let id = NodeId::new(addr(i), self.boots[i]);
        let seed = self.rng.random();
        let mut m = Membership::new(id, Self::info(i), self.config.clone(), seed, self.now);
        let mut out = m.set_info(Self::info(i), self.now);
        if let Some(c) = contact {
            let more = m.announce(NodeId::unknown(addr(c)), self.now);
            out.sends.extend(more.sends);
            out.timers.extend(more.timers);
        }
        self.nodes[i] = Some(m);
        self.apply(i, out);
        let boot = self.boots[i];
        let jitter = Duration::from_millis(self.rng.random_range(0..1000));
        self.push(self.now + jitter, Event::Publish { node: i, boot });
    }

    /// Starts every node, each but node 0 announcing itself to node 0.
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i, (i != 0).then_some(0));
        }
    }

    /// Stops node `i` without a goodbye, as a killed daemon would.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i] = None;
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].is_some()
    }

    fn push(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled { at, seq: self.seq, event }));
    }

    fn apply(&mut self, from: usize, out: Output) {
        for (to, data) in out.sends {
            self.bytes_sent[from] += (data.len() + herd_wire::seal::OVERHEAD) as u64;
            self.packets_sent[from] += 1;
            if let Some(to) = index(to).filter(|&t| t < self.nodes.len()) {
                let latency = Duration::from_micros(self.rng.random_range(100..600));
                self.push(self.now + latency, Event::Deliver { from, to, data });
            }
        }
        let boot = self.boots[from];
        for (after, timer) in out.timers {
            self.push(self.now + after, Event::Timer { node: from, boot, timer });
        }
    }

    /// Runs events until the virtual clock reaches `until`.
    pub fn run_until(&mut self, until: Duration) {
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at > until {
                break;
            }
            let Reverse(ev) = self.queue.pop().expect("peeked");
            self.now = ev.at;
            match ev.event {
                Event::Deliver { from, to, data } => {
                    if self.capturing {
                        self.captured.push(Captured { from, to, at: self.now, data: data.clone() });
                    }
                    if let Some(m) = self.nodes[to].as_mut() {
                        let (out, _) = m.handle_data(&data, self.now);
                        self.apply(to, out);
                    }
                }
                Event::Timer { node, boot, timer } => {
                    if self.boots[node] != boot {
                        continue;
                    }
                    if let Some(m) = self.nodes[node].as_mut() {
                        let out = m.handle_timer(timer, self.now);
                        self.apply(node, out);
                    }
                }
                Event::Publish { node, boot } => {
                    if self.boots[node] != boot {
                        continue;
                    }
                    let now = self.now;
                    let jitter = self.rng.random_range(0.0..2.0f32);
                    if let Some(m) = self.nodes[node].as_mut() {
                        // A load that wanders, as a busy node's does.
                        let mut info = m.info().clone();
                        info.load = jitter;
                        let out = m.set_info(info, now);
                        self.apply(node, out);
                        self.push(now + Duration::from_secs(1), Event::Publish { node, boot });
                    }
                }
            }
        }
        self.now = until;
    }

    /// Steps the clock by `step` until `done` holds or `limit` passes; returns when it held.
    pub fn run_until_true(&mut self, limit: Duration, step: Duration, done: impl Fn(&Sim) -> bool) -> Option<Duration> {
        while self.now < limit {
            let next = self.now + step;
            self.run_until(next);
            if done(self) {
                return Some(self.now);
            }
        }
        None
    }

    /// States that running node `viewer` gives node `i` (None: not listed).
    pub fn state_of(&self, viewer: usize, i: usize) -> Option<NodeState> {
        let m = self.nodes[viewer].as_ref()?;
        m.view(self.now).into_iter().find(|v| v.id.addr == addr(i)).map(|v| v.state)
    }

    /// Every running node lists every running node as up, with its published state.
    pub fn converged(&self) -> bool {
        let running: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.is_running(i)).collect();
        running.iter().all(|&v| {
            let view = self.nodes[v].as_ref().expect("running").view(self.now);
            let up: std::collections::HashSet<NodeId> =
                view.iter().filter(|n| n.state == NodeState::Up && n.info.is_some()).map(|n| n.id).collect();
            running.iter().all(|&i| up.contains(&NodeId::new(addr(i), self.boots[i])))
        })
    }

    /// Every running node lists node `i` as down (or no longer lists it).
    pub fn all_see_down(&self, i: usize) -> bool {
        (0..self.nodes.len())
            .filter(|&v| v != i && self.is_running(v))
            .all(|v| !matches!(self.state_of(v, i), Some(NodeState::Up | NodeState::Suspect)))
    }

    /// Mean age of the published state that running nodes hold about other nodes.
    pub fn mean_info_age(&self) -> Duration {
        let (mut total, mut count) = (Duration::ZERO, 0u32);
        for m in self.nodes.iter().flatten() {
            for v in m.view(self.now) {
                if let (false, Some(age)) = (v.is_self, v.info_age) {
                    total += age;
                    count += 1;
                }
            }
        }
        if count == 0 {
            Duration::ZERO
        } else {
            total / count
        }
    }
}
