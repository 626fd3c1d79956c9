//! Sealed datagrams: gossip and discovery beacons travel as single UDP
//! datagrams, each encrypted and authenticated on its own with
//! XChaCha20-Poly1305.
//!
//! ```text
//! offset  0        1         2                 26
//!         +--------+---------+-----------------+----------------------------+
//!         | ver=1  | purpose | nonce (24 bytes) | ciphertext + 16-byte tag  |
//!         +--------+---------+-----------------+----------------------------+
//!         \______ header: authenticated as associated data ______/
//! ```
//!
//! The nonce is random: 24 bytes make collisions negligible without any state
//! shared between senders (a node restarts, forks, runs twice). Each purpose
//! has its own key derived from the cluster key, and the purpose byte is in
//! the associated data, so a beacon can never be replayed as gossip.
//! Replays of the same datagram are not detected here: the layers above
//! (SWIM incarnations, beacon timestamps) tolerate them.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use rand::TryRngCore;
use std::fmt;

use crate::ClusterKey;

/// Format version, the first byte of every sealed datagram.
pub const VERSION: u8 = 1;
/// Bytes before the ciphertext: version, purpose, nonce.
pub const HEADER_LEN: usize = 2 + NONCE_LEN;
/// What sealing adds to a plaintext: header and tag.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Largest datagram accepted: the largest UDP payload over IPv4. Keeping
/// datagrams within one Ethernet frame (1472 bytes) is the caller's business.
pub const MAX_DATAGRAM: usize = 65507;
/// Largest plaintext that seals into at most [`MAX_DATAGRAM`] bytes.
pub const MAX_PLAINTEXT: usize = MAX_DATAGRAM - OVERHEAD;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// What a datagram is for; each purpose has its own key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Purpose {
    /// SWIM membership gossip between cluster members.
    Gossip = 1,
    /// Multicast discovery beacons.
    Beacon = 2,
}

impl Purpose {
    fn context(self) -> &'static str {
        match self {
            Purpose::Gossip => "herd 2026 gossip datagram v1",
            Purpose::Beacon => "herd 2026 beacon datagram v1",
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Purpose::Gossip),
            2 => Some(Purpose::Beacon),
            _ => None,
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Purpose::Gossip => "gossip",
            Purpose::Beacon => "beacon",
        })
    }
}

/// Why a datagram was not sealed or opened. Any datagram from the network may
/// be hostile; each reason is a value, never a panic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("datagram of {len} bytes is too short to be sealed (at least {OVERHEAD})")]
    TooShort { len: usize },
    #[error("datagram of {len} bytes exceeds the limit of {MAX_DATAGRAM}")]
    TooLarge { len: usize },
    #[error("sealed datagram version {0} is not supported (this herd reads version {VERSION})")]
    UnknownVersion(u8),
    #[error("datagram is sealed for {} but {expected} was expected", describe_purpose(*.found))]
    WrongPurpose { expected: Purpose, found: u8 },
    #[error("datagram failed authentication: sealed with another cluster key, or tampered with")]
    Forged,
    #[error("the operating system's random source failed")]
    Random,
}

fn describe_purpose(b: u8) -> String {
    match Purpose::from_byte(b) {
        Some(p) => p.to_string(),
        None => format!("unknown purpose {b}"),
    }
}

/// Seals and opens datagrams of one purpose with a key derived from the
/// cluster key.
#[derive(Clone)]
pub struct Sealer {
    purpose: Purpose,
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    pub fn new(key: &ClusterKey, purpose: Purpose) -> Self {
        let derived = key.derive(purpose.context());
        Self {
            purpose,
            cipher: XChaCha20Poly1305::new(Key::from_slice(&derived)),
        }
    }

    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// Encrypts `plaintext` into a new datagram of `plaintext.len() +`
    /// [`OVERHEAD`] bytes.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(SealError::TooLarge {
                len: plaintext.len() + OVERHEAD,
            });
        }
        let mut datagram = Vec::with_capacity(plaintext.len() + OVERHEAD);
        datagram.extend_from_slice(&[VERSION, self.purpose as u8]);
        let mut nonce = [0u8; NONCE_LEN];
        // Straight from the OS: a user-space generator's state could be
        // duplicated by fork, and a repeated nonce would expose plaintexts.
        rand::rngs::OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(|_| SealError::Random)?;
        datagram.extend_from_slice(&nonce);
        datagram.extend_from_slice(plaintext);
        let (header, body) = datagram.split_at_mut(HEADER_LEN);
        let tag = self
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), header, body)
            // Only fails for plaintexts of 256 GiB and more.
            .map_err(|_| SealError::TooLarge {
                len: plaintext.len() + OVERHEAD,
            })?;
        datagram.extend_from_slice(&tag);
        Ok(datagram)
    }

    /// Checks and decrypts a datagram sealed by [`Sealer::seal`] with the same
    /// cluster key and purpose.
    pub fn open(&self, datagram: &[u8]) -> Result<Vec<u8>, SealError> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(SealError::TooLarge {
                len: datagram.len(),
            });
        }
        if datagram.len() < OVERHEAD {
            return Err(SealError::TooShort {
                len: datagram.len(),
            });
        }
        let (header, rest) = datagram.split_at(HEADER_LEN);
        if header[0] != VERSION {
            return Err(SealError::UnknownVersion(header[0]));
        }
        if header[1] != self.purpose as u8 {
            return Err(SealError::WrongPurpose {
                expected: self.purpose,
                found: header[1],
            });
        }
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plaintext = ciphertext.to_vec();
        self.cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(&header[2..]),
                header,
                &mut plaintext,
                Tag::from_slice(tag),
            )
            .map_err(|_| SealError::Forged)?;
        Ok(plaintext)
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}
