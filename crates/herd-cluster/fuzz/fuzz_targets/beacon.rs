//! Decodes arbitrary bytes as a discovery beacon against a fixed wall clock. It
//! must never panic; what it accepts has a printable name, was sent within
//! `MAX_AGE` of now, and round-trips.
//!
//! Run with `cargo +nightly fuzz run beacon` from `crates/herd-cluster`.
#![no_main]

use herd_cluster::beacon::{Beacon, MAX_AGE};
use herd_cluster_fuzz::NOW_UNIX_MS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(beacon) = Beacon::decode(data, NOW_UNIX_MS) else {
        return;
    };
    assert!(!beacon.name.is_empty() && beacon.name.len() <= 64);
    assert!(!beacon.name.chars().any(char::is_control));
    assert!(beacon.sent_unix_ms.abs_diff(NOW_UNIX_MS) <= MAX_AGE.as_millis() as u64);
    let again = beacon.encode();
    assert!(again.len() <= data.len(), "re-encoding grew");
    assert_eq!(
        Beacon::decode(&again, NOW_UNIX_MS).expect("a re-encoded beacon is rejected"),
        beacon
    );
});
