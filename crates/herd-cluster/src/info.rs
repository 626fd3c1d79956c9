//! What each node publishes about itself.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// Administrative state of a node (openMosix `mosctl block` / `quiet`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Accepts no arriving processes.
    pub blocked: bool,
    /// Takes no part in balancing: no process is sent here, it moves none (still a member).
    pub quiet: bool,
    /// Nothing running here is moved away for load (`mosctl stay`).
    pub stay: bool,
    /// This node's own processes stay at home (`mosctl lstay`; `bring` sets it).
    pub lstay: bool,
}

/// What a process needs of a node to run there after migration.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Features {
    /// `std::env::consts::ARCH`, e.g. "x86_64".
    pub arch: String,
    /// `uname -r`.
    pub kernel: String,
    /// blake3 of the vDSO image: a process keeps the vDSO it started with.
    pub vdso_hash: [u8; 32],
    /// XCR0: xsave features enabled by the kernel.
    pub xcr0: u64,
    /// Size of the xsave area for those features.
    pub xsave_size: u32,
}

/// The state a node publishes to the cluster, about once a second when it changes.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// herd version of the node's daemon.
    pub version: String,
    /// CPUs this node may use (its affinity mask: a cpuset counts).
    pub cpus: u32,
    /// Relative CPU speed from a calibration at start (10000 = the reference CPU), or configured.
    pub speed: u32,
    /// Runnable processes, smoothed: rises slowly, falls at once.
    pub load: f32,
    pub mem_total: u64,
    pub mem_free: u64,
    pub status: NodeStatus,
    pub features: Features,
    /// Directories this node offers for direct file access (DFSA): on a file system
    /// other nodes may mount too. Each carries the id of a marker file herdd wrote
    /// there; a node that reads the same id at the same path sees the same file
    /// system (see herd-daemon's `dfsa`).
    pub shared: Vec<SharedMount>,
}

/// A directory offered for direct file access, and the id written in its marker.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct SharedMount {
    pub path: String,
    pub marker: u128,
}

/// At most this many shared directories travel in a node's state (it must fit a
/// gossip packet with the rest).
pub const MAX_SHARED: usize = 8;
/// The longest path of a shared directory that travels.
pub const MAX_SHARED_PATH: usize = 120;

const MAX_NAME: usize = 64;
const MAX_TEXT: usize = 128;

/// A node's published state as it travels: who, which version of it, what.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct StateUpdate {
    pub origin: NodeId,
    /// Grows with every publication of the same boot.
    pub seq: u64,
    pub info: NodeInfo,
}

#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error("undecodable node state: {0}")]
    Decode(#[from] postcard::Error),
    #[error("node state has trailing bytes")]
    Trailing,
    #[error("node state field {0} is too long or not printable")]
    BadField(&'static str),
}

impl StateUpdate {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("serializing to a Vec cannot fail")
    }

    /// Decodes and validates an update from the network (already authenticated,
    /// but still checked: a bug or a different version must not poison the table).
    pub fn decode(bytes: &[u8]) -> Result<Self, InfoError> {
        let (update, rest): (StateUpdate, _) = postcard::take_from_bytes(bytes)?;
        if !rest.is_empty() {
            return Err(InfoError::Trailing);
        }
        update.info.validate()?;
        Ok(update)
    }
}

impl NodeInfo {
    pub fn validate(&self) -> Result<(), InfoError> {
        fn text(s: &str, max: usize, field: &'static str) -> Result<(), InfoError> {
            if s.len() > max || s.chars().any(|c| c.is_control()) {
                return Err(InfoError::BadField(field));
            }
            Ok(())
        }
        text(&self.name, MAX_NAME, "name")?;
        if self.name.is_empty() {
            return Err(InfoError::BadField("name"));
        }
        text(&self.version, MAX_TEXT, "version")?;
        text(&self.features.arch, MAX_TEXT, "arch")?;
        text(&self.features.kernel, MAX_TEXT, "kernel")?;
        if self.shared.len() > MAX_SHARED {
            return Err(InfoError::BadField("shared"));
        }
        for m in &self.shared {
            text(&m.path, MAX_SHARED_PATH, "shared")?;
            if !m.path.starts_with('/') {
                return Err(InfoError::BadField("shared"));
            }
        }
        if !self.load.is_finite() || self.load < 0.0 {
            return Err(InfoError::BadField("load"));
        }
        Ok(())
    }

    /// Whether `other` differs enough from `self` to be worth telling the cluster now
    /// (load by a twentieth of a process, free memory by 1 %, anything else at all).
    pub fn differs_noticeably(&self, other: &NodeInfo) -> bool {
        let mem_step = (self.mem_total / 100).max(1);
        (self.load - other.load).abs() >= 0.05
            || self.mem_free.abs_diff(other.mem_free) >= mem_step
            || self.name != other.name
            || self.cpus != other.cpus
            || self.speed != other.speed
            || self.mem_total != other.mem_total
            || self.status != other.status
            || self.features != other.features
            || self.version != other.version
            || self.shared != other.shared
    }
}
