//! A node's identity on the wire.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A node as the membership protocol knows it: the address its gossip socket
/// listens on (also where its stream listener is), and a boot number that grows
/// each time herdd starts (and each time the node rejoins after being declared
/// down), so that a restarted daemon replaces its earlier self instead of
/// colliding with it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct NodeId {
    pub addr: SocketAddr,
    pub boot: u64,
}

impl NodeId {
    pub fn new(addr: SocketAddr, boot: u64) -> Self {
        Self { addr, boot }
    }

    /// The identity to address a peer we only know by address (a static peer):
    /// the membership protocol routes by address and ignores the rest.
    pub fn unknown(addr: SocketAddr) -> Self {
        Self { addr, boot: 0 }
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self { addr: self.addr, boot: self.boot.wrapping_add(1) })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.boot > adversary.boot
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.addr, self.boot)
    }
}
