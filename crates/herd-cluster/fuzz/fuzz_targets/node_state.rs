//! Decodes arbitrary bytes as a published node state. It must never panic; what
//! it accepts is valid, re-encodes no longer than the input (postcard may accept
//! overlong varints, never shorter ones) and decodes again to the same value.
//!
//! Run with `cargo +nightly fuzz run node_state` from `crates/herd-cluster`.
#![no_main]

use herd_cluster::info::StateUpdate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(update) = StateUpdate::decode(data) else {
        return;
    };
    update
        .info
        .validate()
        .expect("decode accepted an invalid node state");
    let again = update.encode();
    assert!(
        again.len() <= data.len(),
        "re-encoding grew: {} > {}",
        again.len(),
        data.len()
    );
    let back = StateUpdate::decode(&again).expect("a re-encoded node state is rejected");
    assert_eq!(back, update);
    assert_eq!(back.encode(), again, "encoding is not stable");
});
