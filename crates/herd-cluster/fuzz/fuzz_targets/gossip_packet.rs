//! Feeds arbitrary bytes to the membership state machine of node 1 (10.0.0.1:4700,
//! boot 1): first as one datagram to a fresh node, then as a sequence of datagrams
//! (`[delay/20ms: u8][len: u16 le][bytes]`, see `herd_cluster_fuzz::steps`) to
//! another, firing its timers as the virtual clock advances. It must never panic
//! and, after every event, the node lists itself first and once, no other node
//! with its address, and only valid node states.
//!
//! Seed with `cargo run --example seeds` (real traffic of a three-node cluster),
//! then run with `cargo +nightly fuzz run gossip_packet` from `crates/herd-cluster`.
#![no_main]

use std::time::Duration;

use herd_cluster_fuzz::{check_output, check_view, fresh, steps, Driver};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = Duration::from_secs(1);
    let mut m = fresh(1, now);
    let (out, _) = m.handle_data(data, now);
    check_output(&out);
    check_view(&m, now);

    let mut d = Driver::new(1);
    for (delay, packet) in steps(data) {
        d.step(delay, packet);
    }
});
