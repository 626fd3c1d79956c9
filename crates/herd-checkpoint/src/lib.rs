//! The checkpoint engine: [`check`] says whether a process can be captured,
//! [`capture`] freezes one and streams its image, [`restore`] builds a new
//! process from an image and lets it continue.
//!
//! Nothing here is `unsafe`: kernel access goes through `herd-kernel`.

pub mod capture;
pub mod check;
pub mod dirty;
pub mod filehash;
pub mod netlock;
mod procinfo;
mod state;
pub mod restore;
pub mod tree;

pub use capture::{CaptureStats, Frozen, HomeRegion, LazyPages, Runs};
pub use check::{check, check_for, CantMove, Purpose};
pub use dirty::Dirty;
pub use procinfo::children;
pub use tree::{check_tree, FrozenTree};
pub use restore::{restore, restore_file, restore_into, restore_remote, PidMode, RemoteRestore, Restored, RestoreStats};

use herd_image::FormatError;
use herd_kernel::KernelError;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("process {pid} does not exist")]
    NoSuchProcess { pid: i32 },
    #[error("permission denied for process {pid}: {why}")]
    Permission { pid: i32, why: String },
    #[error("process {pid} cannot be checkpointed:\n{}", .reasons.iter().map(|r| format!("  - {r}")).collect::<Vec<_>>().join("\n"))]
    CantMove { pid: i32, reasons: Vec<CantMove> },
    #[error("process {pid} cannot be restored with its own pid: {why}")]
    PidUnavailable { pid: i32, why: String },
    #[error("image cannot be restored here: {0}")]
    Incompatible(String),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("reading /proc for process {pid}: {what}")]
    Proc { pid: i32, what: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, CheckpointError>;

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let what = what.into();
    move |source| CheckpointError::Io { what, source }
}
