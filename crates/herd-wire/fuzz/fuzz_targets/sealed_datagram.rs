//! Opens arbitrary bytes as a sealed gossip datagram. It must never panic and
//! never accept anything it did not seal; and whatever it seals it opens.
//!
//! Run with `cargo +nightly fuzz run sealed_datagram` from `crates/herd-wire`.
#![no_main]

use std::sync::OnceLock;

use herd_wire::seal::MAX_PLAINTEXT;
use herd_wire::{ClusterKey, Purpose, Sealer};
use libfuzzer_sys::fuzz_target;

fn sealer() -> &'static Sealer {
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    SEALER.get_or_init(|| Sealer::new(&ClusterKey::from_bytes([0x42; 32]), Purpose::Gossip))
}

fuzz_target!(|data: &[u8]| {
    let sealer = sealer();
    assert!(
        sealer.open(data).is_err(),
        "an unsealed datagram was accepted"
    );
    if data.len() <= MAX_PLAINTEXT {
        let sealed = sealer.seal(data).expect("sealing within the limit");
        assert_eq!(sealer.open(&sealed).expect("opening what we sealed"), data);
    }
});
