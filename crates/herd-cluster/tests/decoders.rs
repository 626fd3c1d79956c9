//! The decoders of what arrives from the network (after authentication: a node with
//! the key but a bug, or another version) against seeded random mutations of real
//! encodings. None may panic; a node fed the mutations keeps a sane membership table.
//!
//! The same properties, without the seeds' limits, are fuzzed in `fuzz/`
//! (`cargo +nightly fuzz run gossip_packet|node_state|beacon`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use herd_cluster::beacon::{Beacon, BeaconError, MAX_AGE};
use herd_cluster::info::StateUpdate;
use herd_cluster::membership::Timer;
use herd_cluster::sim::{Captured, Sim};
use herd_cluster::{Features, Membership, MembershipConfig, NodeId, NodeStatus, Output};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NOW_UNIX_MS: u64 = 1_700_000_000_000;

/// Mutated inputs per decoder (half as many datagrams): about a second in all in a debug build.
const MUTATIONS: usize = 20_000;

/// Times the long-lived node lives through the real traffic, mutations mixed in.
const ROUNDS: u64 = 8;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 4700))
}

fn node_id(i: u8) -> NodeId {
    NodeId::new(addr(i), 1)
}

/// A node that has just started as `id`.
fn fresh(id: NodeId, now: Duration) -> Membership {
    Membership::new(id, Sim::info(0), MembershipConfig::default(), 1, now)
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `f` on `input`, failing with the input in hex if it panics.
fn no_panic<T>(what: &str, input: &[u8], f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what} panicked ({msg}) on input {}", hex(input));
        }
    }
}

// ---------------------------------------------------------------------------
// Mutations

/// Values that blow up a length or count: postcard varints (u64::MAX, 2^63,
/// u32::MAX, 127) and foca's big-endian u16 counts.
const BIG: &[&[u8]] = &[
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0x7f],
    &[0xff, 0xff],
    &[0x80, 0x00],
    &[0x05, 0xdc],
];

fn mutate_once(rng: &mut StdRng, data: &mut Vec<u8>) {
    let len = data.len();
    let pos = if len == 0 { 0 } else { rng.random_range(0..len) };
    match rng.random_range(0..10) {
        0 if len > 0 => {
            for _ in 0..rng.random_range(1..=8) {
                let p = rng.random_range(0..len);
                data[p] ^= 1 << rng.random_range(0..8);
            }
        }
        1 => data.truncate(pos),
        2 => {
            let n = rng.random_range(1..=16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            data.splice(pos..pos, bytes);
        }
        3 => {
            let byte = [0x00, 0xff, 0x80, 0x7f, rng.random()][rng.random_range(0..5)];
            let end = (pos + rng.random_range(1..=32)).min(len);
            data[pos..end].fill(byte);
            if end == pos {
                data.push(byte);
            }
        }
        4 => {
            let end = (pos + rng.random_range(1..=16)).min(len);
            data.drain(pos..end);
        }
        5 => {
            let big = BIG[rng.random_range(0..BIG.len())];
            let end = (pos + rng.random_range(0..=2)).min(len);
            data.splice(pos..end, big.iter().copied());
        }
        6 => {
            let big = BIG[rng.random_range(0..BIG.len())];
            data.truncate(pos);
            data.extend_from_slice(big);
        }
        7 if len > 0 => {
            let start = rng.random_range(0..len);
            let end = (start + rng.random_range(1..=64)).min(len);
            let chunk = data[start..end].to_vec();
            data.splice(pos..pos, chunk);
        }
        8 if len > 0 => data[pos] = rng.random(),
        _ => {
            let n = rng.random_range(1..=8);
            data.extend((0..n).map(|_| rng.random::<u8>()));
        }
    }
}

/// One to three stacked mutations; never returns the input unchanged.
fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    loop {
        let mut data = input.to_vec();
        for _ in 0..rng.random_range(1..=3) {
            mutate_once(rng, &mut data);
        }
        if data != input {
            return data;
        }
    }
}

// ---------------------------------------------------------------------------
// Node states

fn updates() -> Vec<StateUpdate> {
    let mut full = Sim::info(1);
    full.name = "ñ".repeat(32); // 64 bytes: the longest name
    full.version = "v".repeat(128);
    full.load = 3.25;
    full.status = NodeStatus { blocked: true, quiet: true, stay: true, lstay: true };
    full.features = Features {
        arch: "x86_64".into(),
        kernel: "6.8.0-49-generic".into(),
        vdso_hash: [0xa5; 32],
        xcr0: 0x2e7,
        xsave_size: 2696,
    };
    vec![
        StateUpdate { origin: node_id(1), seq: 1, info: Sim::info(0) },
        StateUpdate { origin: NodeId::new("[fd00::1]:4700".parse().expect("v6"), u64::MAX), seq: u64::MAX, info: full },
    ]
}

#[test]
fn node_states_decode_and_survive_mutation() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    let originals: Vec<Vec<u8>> = updates().iter().map(StateUpdate::encode).collect();
    for (update, bytes) in updates().iter().zip(&originals) {
        assert_eq!(&StateUpdate::decode(bytes).expect("a real node state is rejected"), update);
    }
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..MUTATIONS {
        let k = rng.random_range(0..originals.len());
        let input = mutate(&mut rng, &originals[k]);
        match no_panic("StateUpdate::decode", &input, || StateUpdate::decode(&input)) {
            Ok(update) => {
                accepted += 1;
                update.info.validate().unwrap_or_else(|e| panic!("accepted an invalid state ({e}): {}", hex(&input)));
                let again = update.encode();
                assert_eq!(StateUpdate::decode(&again).expect("re-encoded state rejected"), update);
            }
            Err(_) => rejected += 1,
        }
    }
    println!("node states: {accepted} mutations accepted, {rejected} rejected");
    // Neither vacuous nor hopeless: most mutations are caught, some keep a valid state.
    assert!(rejected > MUTATIONS / 2, "only {rejected} of {MUTATIONS} mutated states rejected");
    assert!(accepted > MUTATIONS / 100, "only {accepted} of {MUTATIONS} mutated states accepted");
}

// ---------------------------------------------------------------------------
// Beacons

fn beacons() -> Vec<Beacon> {
    vec![
        Beacon { id: node_id(1), name: "n1".into(), sent_unix_ms: NOW_UNIX_MS - 1500 },
        Beacon {
            id: NodeId::new("[fd00::7]:4701".parse().expect("v6"), 1 << 40),
            name: "a-rather-long-host-name.example.org".into(),
            sent_unix_ms: NOW_UNIX_MS + 59_000,
        },
    ]
}

#[test]
fn beacons_decode_and_survive_mutation() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0002);
    let originals: Vec<Vec<u8>> = beacons().iter().map(Beacon::encode).collect();
    for (beacon, bytes) in beacons().iter().zip(&originals) {
        assert_eq!(&Beacon::decode(bytes, NOW_UNIX_MS).expect("a real beacon is rejected"), beacon);
    }
    let (mut accepted, mut stale, mut rejected) = (0, 0, 0);
    for _ in 0..MUTATIONS {
        let k = rng.random_range(0..originals.len());
        let input = mutate(&mut rng, &originals[k]);
        match no_panic("Beacon::decode", &input, || Beacon::decode(&input, NOW_UNIX_MS)) {
            Ok(beacon) => {
                accepted += 1;
                assert!(beacon.sent_unix_ms.abs_diff(NOW_UNIX_MS) <= MAX_AGE.as_millis() as u64);
                assert!(!beacon.name.is_empty() && beacon.name.len() <= 64);
                assert!(!beacon.name.chars().any(char::is_control), "control character accepted: {}", hex(&input));
                assert_eq!(Beacon::decode(&beacon.encode(), NOW_UNIX_MS).expect("re-encoded beacon rejected"), beacon);
            }
            Err(BeaconError::Stale(_)) => stale += 1,
            Err(_) => rejected += 1,
        }
    }
    println!("beacons: {accepted} mutations accepted, {stale} stale, {rejected} rejected");
    assert!(rejected > MUTATIONS / 2, "only {rejected} of {MUTATIONS} mutated beacons rejected");
    assert!(stale > MUTATIONS / 100, "only {stale} of {MUTATIONS} mutated beacons stale");
    assert!(accepted > MUTATIONS / 100, "only {accepted} of {MUTATIONS} mutated beacons accepted");
}

/// A send time of 2^63 ms or more (negative as an i64) is stale, not an overflow.
#[test]
fn beacon_with_a_send_time_beyond_i64_is_stale() {
    for sent_unix_ms in [1 << 63, (1 << 63) + NOW_UNIX_MS, u64::MAX, i64::MAX as u64, 0] {
        let bytes = Beacon { id: node_id(1), name: "n1".into(), sent_unix_ms }.encode();
        let result = no_panic("Beacon::decode", &bytes, || Beacon::decode(&bytes, NOW_UNIX_MS));
        assert!(matches!(result, Err(BeaconError::Stale(_))), "sent {sent_unix_ms}: {result:?}");
    }
}

// ---------------------------------------------------------------------------
// Gossip packets

/// What must hold whatever arrived: the node lists itself first and once, nobody
/// else with its address, every address once, and only valid node states.
fn check_view(m: &Membership, now: Duration, input: &[u8]) {
    let me = m.id();
    let view = m.view(now);
    let fail = |what: &str| -> ! { panic!("{what} after input {}: {view:?}", hex(input)) };
    if view.is_empty() || !view[0].is_self || view[0].id != me {
        fail("view does not start with self");
    }
    if view.iter().filter(|v| v.is_self).count() != 1 {
        fail("self listed more than once");
    }
    if view[1..].iter().any(|v| v.id.addr == me.addr) {
        fail("another node listed with our address");
    }
    let mut addrs: Vec<SocketAddr> = view.iter().map(|v| v.id.addr).collect();
    addrs.sort();
    addrs.dedup();
    if addrs.len() != view.len() {
        fail("an address listed twice");
    }
    if view.iter().filter_map(|v| v.info.as_ref()).any(|i| i.validate().is_err()) {
        fail("an invalid node state in the table");
    }
}

fn check_output(out: &Output, input: &[u8]) {
    let max = MembershipConfig::default().max_packet;
    for (to, data) in &out.sends {
        assert!(data.len() <= max, "{}-byte packet to {to} after input {}", data.len(), hex(input));
    }
}

/// Three nodes join through node 0 and publish changing states; node 2 dies at
/// 2.5 s, so the others suspect it, probe it indirectly and declare it down. Returns
/// every datagram delivered and each node's identity.
fn exchange() -> (Vec<Captured>, Vec<NodeId>) {
    let mut sim = Sim::new(3, MembershipConfig::default(), 0x5eed_0005);
    sim.capture(true);
    sim.start_all();
    sim.run_until(Duration::from_millis(2500));
    sim.kill(2);
    sim.run_until(Duration::from_secs(6));
    assert!(sim.all_see_down(2), "node 2 not declared down");
    (sim.take_captured(), (0..3).map(|i| sim.id(i)).collect())
}

/// A node on a virtual clock firing its own timers; what it sends goes nowhere.
struct Driver {
    m: Membership,
    now: Duration,
    timers: Vec<(Duration, Timer)>,
}

impl Driver {
    fn new(id: NodeId) -> Self {
        let mut m = fresh(id, Duration::ZERO);
        let out = m.set_info(Sim::info(0), Duration::ZERO);
        let mut d = Self { m, now: Duration::ZERO, timers: Vec::new() };
        d.absorb(out, &[]);
        d
    }

    fn absorb(&mut self, out: Output, input: &[u8]) {
        check_output(&out, input);
        self.timers.extend(out.timers.into_iter().map(|(after, t)| (self.now + after, t)));
    }

    /// Fires the timers due by `until`, then delivers `packet` then.
    fn deliver(&mut self, until: Duration, packet: &[u8]) -> bool {
        while let Some(k) =
            (0..self.timers.len()).filter(|&k| self.timers[k].0 <= until).min_by_key(|&k| self.timers[k].0)
        {
            let (at, timer) = self.timers.swap_remove(k);
            self.now = self.now.max(at);
            let out = no_panic("handle_timer", packet, || self.m.handle_timer(timer, self.now));
            self.absorb(out, packet);
        }
        self.now = self.now.max(until);
        let (out, result) = no_panic("handle_data", packet, || self.m.handle_data(packet, self.now));
        self.absorb(out, packet);
        check_view(&self.m, self.now, packet);
        result.is_ok()
    }
}

#[test]
fn gossip_packets_are_accepted_and_mutations_survived() {
    let (captured, ids) = exchange();
    assert!(captured.len() > 50, "only {} datagrams captured", captured.len());
    // Each real datagram is accepted by a node that has just started under its
    // addressee's identity, and the states it carries land in its table.
    let mut states_heard = 0;
    for c in &captured {
        let mut m = fresh(ids[c.to], Duration::from_secs(1));
        let (out, result) = m.handle_data(&c.data, Duration::from_secs(1));
        result.unwrap_or_else(|e| panic!("real datagram to node {} rejected ({e}): {}", c.to, hex(&c.data)));
        check_output(&out, &c.data);
        check_view(&m, Duration::from_secs(1), &c.data);
        states_heard += m.view(Duration::from_secs(1)).iter().filter(|v| !v.is_self && v.info.is_some()).count();
        assert_eq!(m.rejected_states(), 0);
    }
    assert!(states_heard > 10, "real datagrams carried only {states_heard} node states");

    // Mutations, each to a fresh node.
    let mut rng = StdRng::seed_from_u64(0x5eed_0003);
    let (mut accepted, mut rejected, mut bad_states) = (0, 0, 0);
    for _ in 0..MUTATIONS / 2 {
        let c = &captured[rng.random_range(0..captured.len())];
        let input = mutate(&mut rng, &c.data);
        let now = Duration::from_secs(1);
        let mut m = fresh(ids[c.to], now);
        let (out, result) = no_panic("handle_data", &input, || m.handle_data(&input, now));
        check_output(&out, &input);
        check_view(&m, now, &input);
        if result.is_ok() {
            accepted += 1;
        } else {
            rejected += 1;
        }
        bad_states += m.rejected_states();
    }
    println!(
        "gossip: {} datagrams captured carrying {states_heard} states; fresh node: {accepted} mutations accepted, \
         {rejected} rejected, {bad_states} bad states",
        captured.len()
    );
    assert!(rejected > MUTATIONS / 4, "only {rejected} of {} mutated datagrams rejected", MUTATIONS / 2);
    assert!(accepted > MUTATIONS / 100, "only {accepted} of {} mutated datagrams accepted", MUTATIONS / 2);
    assert!(bad_states > MUTATIONS as u64 / 100, "only {bad_states} mutated node states reached the state decoder");

    // A long-lived node 0 that lives through the real traffic with mutated
    // datagrams mixed in, its timers firing as the clock advances.
    let to_0: Vec<&Captured> = captured.iter().filter(|c| c.to == 0).collect();
    let mut d = Driver::new(ids[0]);
    let mut rng = StdRng::seed_from_u64(0x5eed_0004);
    let (mut real_ok, mut mutated_err) = (0, 0);
    for round in 0..ROUNDS {
        for c in &to_0 {
            let at = c.at + Duration::from_secs(6 * round);
            if d.deliver(at, &c.data) {
                real_ok += 1;
            }
            for _ in 0..rng.random_range(0..=6) {
                let other = to_0[rng.random_range(0..to_0.len())];
                let input = mutate(&mut rng, &other.data);
                if !d.deliver(at + Duration::from_millis(rng.random_range(0..50)), &input) {
                    mutated_err += 1;
                }
            }
        }
    }
    assert!(d.m.view(d.now).iter().any(|v| v.id.addr == ids[1].addr), "the long-lived node never learnt of node 1");
    println!("gossip: long-lived node accepted {real_ok} real datagrams, rejected {mutated_err} mutated");
    assert!(real_ok > to_0.len(), "only {real_ok} of {} real datagrams accepted", ROUNDS as usize * to_0.len());
    assert!(mutated_err > 300, "only {mutated_err} mutated datagrams rejected by the long-lived node");
}
