//! herdd, the daemon on every node: configuration, node statistics, membership by gossip,
//! the control socket, HTTP, node streams.
//!
//! - [`cli`]: herdd's command line.
//! - [`config`]: `/etc/herd/herd.toml` and openMosix map files.
//! - [`stats`]: CPUs, speed calibration, load, memory, kernel features.
//! - [`sampler`]: one look a second at every process of the node (the load, and what
//!   the other tasks need of each process).
//! - [`dashboard`]: the web dashboard's sessions, history and live view.
//! - [`daemon`]: the gossip loop and the state the other tasks read.
//! - [`control`] / [`server`]: the CLI protocol and its server (SO_PEERCRED).
//! - [`hpc`]: openMosix's /proc/hpc, as a FUSE file system.
//! - [`http`]: `/metrics`, `/api/nodes`.
//! - [`peer`]: Noise streams from other nodes.
//! - [`migrate`]: this node's migratable processes (home side) and guests (remote side).

pub mod balancer;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dashboard;
pub mod dfsa;
pub mod family;
pub mod hpc;
pub mod http;
pub mod migrate;
pub mod net;
pub mod peer;
pub mod sampler;
pub mod server;
pub mod stats;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
