//! What the herd-cluster fuzz targets share: the fuzzed node, the invariants its
//! view must keep, the input format of a packet sequence, and a small cluster
//! whose real traffic seeds the corpus (`cargo run --example seeds`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use herd_cluster::membership::Timer;
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

pub fn info(i: u8) -> NodeInfo {
    NodeInfo {
        name: format!("n{i}"),
        version: "0.1.0".into(),
        cpus: 4,
        speed: 10000,
        load: 0.5,
        mem_total: 16 << 30,
        mem_free: 8 << 30,
        ..Default::default()
    }
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

/// A datagram of the small cluster: when, from which node, to which.
pub struct Captured {
    pub at: Duration,
    pub from: u8,
    pub to: u8,
    pub data: Vec<u8>,
}

enum Ev {
    Deliver(u8, usize),
    Timer(u8, Timer),
    Publish(u8),
}

#[derive(Default)]
struct Net {
    queue: BTreeMap<(Duration, u64), Ev>,
    seq: u64,
    captured: Vec<Captured>,
}

impl Net {
    fn push(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn apply(&mut self, from: u8, now: Duration, out: Output) {
        for (to, data) in out.sends {
            let SocketAddr::V4(v4) = to else { continue };
            let to = v4.ip().octets()[3];
            self.captured.push(Captured {
                at: now,
                from,
                to,
                data,
            });
            self.push(
                now + Duration::from_millis(1),
                Ev::Deliver(to, self.captured.len() - 1),
            );
        }
        for (after, timer) in out.timers {
            self.push(now + after, Ev::Timer(from, timer));
        }
    }
}

/// Three nodes (1, 2, 3) join through node 1, publish changing states, and node 3
/// dies at 3 s so that the others probe it indirectly and declare it down. Returns
/// every datagram sent, in order.
pub fn exchange() -> Vec<Captured> {
    let mut nodes: BTreeMap<u8, Membership> =
        (1..=3).map(|i| (i, fresh(i, Duration::ZERO))).collect();
    let mut net = Net::default();
    for i in 1..=3u8 {
        let now = Duration::from_millis(u64::from(i) * 10);
        let m = nodes.get_mut(&i).expect("node");
        let mut out = m.set_info(info(i), now);
        if i != 1 {
            let more = m.announce(NodeId::unknown(addr(1)), now);
            out.sends.extend(more.sends);
            out.timers.extend(more.timers);
        }
        net.apply(i, now, out);
        net.push(now + Duration::from_millis(300), Ev::Publish(i));
    }
    let end = Duration::from_secs(7);
    let death = Duration::from_secs(3);
    while let Some(((now, _), ev)) = net.queue.pop_first() {
        if now > end {
            break;
        }
        if now >= death {
            nodes.remove(&3);
        }
        let (node, out) = match ev {
            Ev::Deliver(to, k) => match nodes.get_mut(&to) {
                Some(m) => (to, m.handle_data(&net.captured[k].data, now).0),
                None => continue,
            },
            Ev::Timer(i, timer) => match nodes.get_mut(&i) {
                Some(m) => (i, m.handle_timer(timer, now)),
                None => continue,
            },
            Ev::Publish(i) => match nodes.get_mut(&i) {
                Some(m) => {
                    let mut inf = m.info().clone();
                    inf.load = (now.as_millis() % 3000) as f32 / 1000.0;
                    inf.mem_free = (8 << 30) - (now.as_millis() as u64 % 4000) * 1_000_000;
                    net.push(now + Duration::from_millis(700), Ev::Publish(i));
                    (i, m.set_info(inf, now))
                }
                None => continue,
            },
        };
        net.apply(node, now, out);
    }
    net.captured
}
