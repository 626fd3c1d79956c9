//! Decodes arbitrary bytes as a sequence of control frames, with the sync
//! and the async reader. Neither may panic or allocate what a header merely
//! claims; both must agree; what they decode re-encodes to the input's
//! prefix.
//!
//! Run with `cargo +nightly fuzz run control_frame` from `crates/herd-wire`.
#![no_main]

use std::io::Cursor;
use std::sync::OnceLock;

use herd_wire::{read_frame, read_frame_async, write_frame, FrameError};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;

/// Small, so that the fuzzer reaches both sides of the limit.
const MAX: usize = 1024;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    })
}

fn decode_sync(data: &[u8]) -> (Vec<Vec<u8>>, String) {
    let mut r = Cursor::new(data);
    let mut frames = Vec::new();
    loop {
        match read_frame(&mut r, MAX) {
            Ok(f) => {
                assert!(f.len() <= MAX);
                frames.push(f);
            }
            Err(e) => {
                if matches!(e, FrameError::Io(_)) {
                    panic!("i/o error from a byte slice: {e}");
                }
                return (frames, e.to_string());
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (frames, end) = decode_sync(data);

    let (async_frames, async_end) = runtime().block_on(async {
        let mut r = data;
        let mut frames = Vec::new();
        loop {
            match read_frame_async(&mut r, MAX).await {
                Ok(f) => frames.push(f),
                Err(e) => return (frames, e.to_string()),
            }
        }
    });
    assert_eq!(frames, async_frames);
    assert_eq!(end, async_end);

    let mut encoded = Vec::new();
    for f in &frames {
        write_frame(&mut encoded, f, MAX).unwrap();
    }
    assert!(data.starts_with(&encoded));
});
