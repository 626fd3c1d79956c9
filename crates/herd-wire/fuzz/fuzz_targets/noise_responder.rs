//! Feeds arbitrary bytes to a Noise responder as if they came from a peer.
//! Without the cluster key's PSK no input can complete the handshake: every
//! run must end in an error, never a panic or a hang.
//!
//! Run with `cargo +nightly fuzz run noise_responder` from `crates/herd-wire`.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use herd_wire::{ClusterKey, NodeKeypair, SecureStream, StreamOptions};
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    })
}

fn keypair() -> &'static NodeKeypair {
    static KP: OnceLock<NodeKeypair> = OnceLock::new();
    KP.get_or_init(|| NodeKeypair::generate().unwrap())
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        // Room for all the input and the responder's answers: nothing blocks.
        let (mut peer, io) = tokio::io::duplex(data.len() + 4096);
        peer.write_all(data).await.unwrap();
        peer.shutdown().await.unwrap();
        let options = StreamOptions {
            handshake_timeout: Duration::from_secs(5),
            ..StreamOptions::default()
        };
        let key = ClusterKey::from_bytes([0x42; 32]);
        let result = SecureStream::accept_with(io, &key, keypair(), &options).await;
        let err = result.expect_err("a handshake completed without the cluster key");
        assert!(
            !matches!(err, herd_wire::StreamError::Timeout(_)),
            "the responder hung: {err}"
        );
        drop(peer);
    });
});
