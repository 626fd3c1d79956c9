//! Cluster membership and per-node state, independent of sockets and clocks.
//!
//! - [`identity`]: who a node is on the wire ([`NodeId`]: gossip address + boot number).
//! - [`info`]: what every node publishes about itself ([`NodeInfo`]: CPUs, speed, load,
//!   memory, status, kernel features).
//! - [`membership`]: SWIM failure detection and dissemination (foca) plus the table of
//!   node states, as a synchronous state machine: bytes and timer events in, bytes to send
//!   and timers to set out. herdd drives it from UDP sockets and tokio timers; the
//!   simulator ([`sim`]) drives hundreds of them in one process on a virtual clock.
//! - [`beacon`]: the discovery announcement multicast on the LAN.
//!
//! Why SWIM (foca) rather than a digest-exchanging gossip (chitchat): a chitchat SYN carries
//! one digest entry per known node, so each node's traffic grows linearly with the cluster;
//! SWIM probes one member per period and piggybacks updates on bounded packets, so per-node
//! traffic stays flat and failure detection time does not grow with the cluster (measured:
//! docs/benchmarks.md).

pub mod beacon;
pub mod identity;
pub mod info;
pub mod membership;
pub mod sim;

pub use identity::NodeId;
pub use info::{Features, NodeInfo, NodeStatus, SharedMount};
pub use membership::{Membership, MembershipConfig, NodeState, NodeView, Output};
