//! What the herd-cluster fuzz targets share: the fuzzed node, the invariants its
//! view must keep, the input format of a packet sequence, and a small cluster
//! whose real traffic seeds the corpus (`cargo run --example seeds`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use herd_cluster::membership::Timer;
pub use herd_cluster::sim::Captured;
use herd_cluster::sim::Sim;
use herd_cluster::{Membership, MembershipConfig, NodeId, NodeInfo, Output};

/// The wall clock the beacon target decodes against (Nov 2023).
pub const NOW_UNIX_MS: u64 = 1_700_000_000_000;

/// Most packets in one sequence input.
pub const MAX_STEPS: usize = 64;

/// Most timer events fired between two packets (the protocol's timers re-arm
/// themselves, so this bounds the work of one step).
const MAX_TIMERS_PER_STEP: usize = 256;

/// Gossip address of node `i` (1-based).
pub fn addr(i: u8) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 4700))
}

pub fn node_id(i: u8) -> NodeId {
    NodeId::new(addr(i), 1)
}

/// The state node `i` (1-based) publishes: the simulator's node `i - 1`'s.
pub fn info(i: u8) -> NodeInfo {
    Sim::info(usize::from(i) - 1)
}

pub fn config() -> MembershipConfig {
    MembershipConfig::default()
}

/// Node `i` as it starts: fresh state, nothing published yet.
pub fn fresh(i: u8, now: Duration) -> Membership {
    Membership::new(node_id(i), info(i), config(), u64::from(i), now)
}

/// What must hold whatever arrived: the node lists itself first and once, nobody
/// else with its address, every address once, and only validated node states.
pub fn check_view(m: &Membership, now: Duration) {
    let me = m.id();
    let view = m.view(now);
    assert!(!view.is_empty(), "empty view");
    assert!(view[0].is_self, "view does not start with self: {view:?}");
    assert_eq!(view[0].id, me, "first entry is not our identity");
    assert_eq!(
        view.iter().filter(|v| v.is_self).count(),
        1,
        "self listed more than once: {view:?}"
    );
    for v in &view[1..] {
        assert_ne!(
            v.id.addr, me.addr,
            "another node listed with our address: {view:?}"
        );
    }
    let mut addrs: Vec<SocketAddr> = view.iter().map(|v| v.id.addr).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), view.len(), "an address listed twice: {view:?}");
    for v in &view {
        if let Some(info) = &v.info {
            info.validate()
                .expect("an invalid node state made it into the table");
        }
    }
}

/// What must hold of what the node asks us to send.
pub fn check_output(out: &Output) {
    let max = config().max_packet;
    for (to, data) in &out.sends {
        assert!(
            data.len() <= max,
            "a {}-byte packet to {to} exceeds max_packet {max}",
            data.len()
        );
    }
}

/// Splits a sequence input into steps: `[delay: u8][len: u16 le][len bytes]`, repeated.
/// The delay is in units of 20 ms; a length beyond the input takes what is left.
pub fn steps(mut data: &[u8]) -> Vec<(Duration, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 3 && out.len() < MAX_STEPS {
        let delay = Duration::from_millis(20 * u64::from(data[0]));
        let len = usize::from(u16::from_le_bytes([data[1], data[2]])).min(data.len() - 3);
        out.push((delay, &data[3..3 + len]));
        data = &data[3 + len..];
    }
    out
}

/// The inverse of [`steps`] (delays rounded down to 20 ms, at most 5.1 s).
pub fn encode_steps(steps: &[(Duration, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (delay, data) in steps {
        out.push((delay.as_millis() / 20).min(255) as u8);
        out.extend_from_slice(&(data.len() as u16).to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// One node on a virtual clock with its own timers; what it sends goes nowhere.
pub struct Driver {
    pub m: Membership,
    pub now: Duration,
    timers: Vec<(Duration, Timer)>,
}

impl Driver {
    pub fn new(i: u8) -> Self {
        let now = Duration::from_secs(1);
        let mut m = fresh(i, now);
        let out = m.set_info(info(i), now);
        let mut d = Self {
            m,
            now,
            timers: Vec::new(),
        };
        d.absorb(out);
        d
    }

    fn absorb(&mut self, out: Output) {
        check_output(&out);
        for (after, timer) in out.timers {
            self.timers.push((self.now + after, timer));
        }
    }

    /// Advances the clock by `delay`, firing the timers that come due, and delivers `packet`.
    pub fn step(&mut self, delay: Duration, packet: &[u8]) {
        let until = self.now + delay;
        for _ in 0..MAX_TIMERS_PER_STEP {
            let Some(next) = (0..self.timers.len())
                .filter(|&k| self.timers[k].0 <= until)
                .min_by_key(|&k| self.timers[k].0)
            else {
                break;
            };
            let (at, timer) = self.timers.swap_remove(next);
            self.now = self.now.max(at);
            let out = self.m.handle_timer(timer, self.now);
            self.absorb(out);
            check_view(&self.m, self.now);
        }
        self.now = until;
        let (out, _) = self.m.handle_data(packet, self.now);
        self.absorb(out);
        check_view(&self.m, self.now);
    }
}

/// Three nodes join through the first and publish changing states, and the third
/// dies at 3 s so that the others probe it indirectly and declare it down. Returns
/// every datagram delivered, in order. Nodes are numbered as in the simulator, from
/// 0: node 0 has the identity of node 1 here ([`node_id`]`(1)`), the fuzzed one.
pub fn exchange() -> Vec<Captured> {
    let mut sim = Sim::new(3, config(), 1);
    assert_eq!(sim.id(0), node_id(1), "the simulator's node 0 is not the fuzzed node");
    sim.capture(true);
    sim.start_all();
    sim.run_until(Duration::from_secs(3));
    sim.kill(2);
    sim.run_until(Duration::from_secs(7));
    sim.take_captured()
}
