//! The process image: what herd captures of a running process ([`model`]) and
//! the byte format it travels in ([`format`]), to a file (checkpoint) or over a
//! socket (migration), and chains of incremental checkpoints merged ([`chain`]).
//! Pure code: no system calls but file reads, no `unsafe`. Everything read
//! here may come from a hostile peer or a damaged disk, so every size is checked
//! before it is used.

pub mod chain;
pub mod format;
pub mod model;
pub mod tree;

pub use format::{ImageReader, ImageWriter, InPlace, InPlaceSection, OwnedSection, PagesInPlace, Section, FormatError, FORMAT_VERSION, MIN_FORMAT_VERSION, MAGIC, PAGE_SIZE, MAX_FILTER_INSNS, MAX_CHAIN_INSNS};
pub use model::*;
