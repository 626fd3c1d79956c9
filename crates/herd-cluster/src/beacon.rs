//! The discovery beacon: "a herd node with this key listens at this address".
//!
//! Sent by UDP multicast, sealed with a key derived from the cluster key, so a node
//! without the key can neither be heard nor impersonate one. A beacon carries its send
//! time; receivers ignore beacons older than [`MAX_AGE`] (a replayed beacon can at worst
//! make us announce ourselves to a live node again, which is harmless).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// Default multicast group and port (administratively scoped range).
pub const DEFAULT_GROUP: &str = "239.255.47.47:4701";

/// Beacons older than this (or this far in the future) are ignored.
pub const MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Beacon {
    pub id: NodeId,
    pub name: String,
    /// Sender's wall clock, milliseconds since the Unix epoch.
    pub sent_unix_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BeaconError {
    #[error("undecodable beacon: {0}")]
    Decode(#[from] postcard::Error),
    #[error("beacon has trailing bytes")]
    Trailing,
    #[error("beacon name is too long or not printable")]
    BadName,
    #[error("beacon is stale or from the future ({0} s off)")]
    Stale(i64),
}

impl Beacon {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("serializing to a Vec cannot fail")
    }

    /// Decodes a beacon and checks it was sent within [`MAX_AGE`] of `now_unix_ms`.
    pub fn decode(bytes: &[u8], now_unix_ms: u64) -> Result<Self, BeaconError> {
        let (beacon, rest): (Beacon, _) = postcard::take_from_bytes(bytes)?;
        if !rest.is_empty() {
            return Err(BeaconError::Trailing);
        }
        if beacon.name.is_empty() || beacon.name.len() > 64 || beacon.name.chars().any(|c| c.is_control()) {
            return Err(BeaconError::BadName);
        }
        // Any u64 may arrive: compute the skew without overflow.
        if now_unix_ms.abs_diff(beacon.sent_unix_ms) > MAX_AGE.as_millis() as u64 {
            let skew = (i128::from(now_unix_ms) - i128::from(beacon.sent_unix_ms)) / 1000;
            return Err(BeaconError::Stale(skew.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64));
        }
        Ok(beacon)
    }
}

/// How often to send beacons: often while alone, rarely once joined, and less often in a
/// large cluster so that the whole cluster sends about one beacon every two seconds.
pub fn interval(peers_up: usize) -> Duration {
    if peers_up == 0 {
        Duration::from_secs(2)
    } else {
        Duration::from_secs((10 + peers_up as u64 * 2).min(600))
    }
}
