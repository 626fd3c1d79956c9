//! herd's balancing policy, and the simulator it is measured in.
//!
//! The policy ([`policy::decide`]) is a pure, deterministic function of what one home
//! knows: the nodes (load, CPUs, speed, memory, flags, compatibility) and its own
//! migratable processes (CPU demand with decay, size, age, forwarded-call rate, locks).
//! It does no I/O: herdd feeds it from gossip and /proc once a second and carries out the
//! moves it returns; [`sim`] feeds it a thousand simulated nodes.

pub mod policy;
pub mod sim;

pub use policy::{decide, Flags, Ledger, Move, Node, Params, Proc, Reason, Snapshot, REFERENCE_SPEED};
