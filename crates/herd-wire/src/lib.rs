//! What crosses between herd nodes and processes: the cluster key, sealed
//! datagrams, Noise streams, control frames.
//!
//! Layering, from the secret up:
//!
//! - [`key`]: the [`ClusterKey`], 32 random bytes in a mode-0600 file. Nothing
//!   uses it directly; every use derives its own key from it (blake3
//!   `derive_key` with a context string), so a leak of one derived key
//!   exposes nothing else.
//! - [`seal`]: single UDP datagrams (SWIM gossip, discovery beacons), each
//!   sealed on its own with XChaCha20-Poly1305 and a random nonce, because
//!   datagrams are lost, duplicated and reordered.
//! - [`stream`]: TCP streams between nodes (migration, remote syscalls),
//!   `Noise_XXpsk3` with the derived key as PSK, carrying messages of up to
//!   16 MiB split into Noise frames. A node without the cluster key fails the
//!   handshake; it never sees a byte of application data.
//! - [`frame`]: plain length-prefixed frames for the local control socket,
//!   which file permissions protect instead of cryptography.
//!
//! Every decoder here takes bytes from outside (network, file, socket) and
//! answers with a typed error, never a panic; none allocates what an
//! unauthenticated header merely claims, and none more than its configured
//! maximum. Fuzz targets live in `fuzz/` (a cargo-fuzz workspace of its own).

pub mod frame;
pub mod key;
pub mod seal;
pub mod stream;

pub use frame::{
    read_frame, read_frame_async, write_frame, write_frame_async, FrameError, DEFAULT_MAX_FRAME,
};
pub use key::{ClusterKey, KeyError};
pub use seal::{Purpose, SealError, Sealer, MAX_DATAGRAM};
pub use stream::{
    HandshakeError, NodeKeypair, SecureReceiver, SecureSender, SecureStream, StreamError,
    StreamOptions, MAX_MESSAGE,
};
