//! `herd restart`.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, Result};
use herd_checkpoint::filehash::FileHashes;
use herd_kernel::task::{self, Exit};

pub fn run(image: &Path) -> Result<i32> {
    let file = File::open(image).with_context(|| format!("cannot open image {}", image.display()))?;
    let mut hashes = FileHashes::load();
    let restored = herd_checkpoint::restore(BufReader::with_capacity(1 << 20, file), &mut hashes)
        .with_context(|| format!("cannot restart {}", image.display()))?;
    hashes.save();
    tracing::info!(
        "restored process {} ({:.1} MiB of pages) in {:.0} ms",
        restored.pid,
        restored.stats.page_bytes as f64 / (1 << 20) as f64,
        restored.stats.total.as_secs_f64() * 1e3
    );
    for w in &restored.warnings {
        tracing::warn!("{w}");
    }
    task::ignore_interactive_signals();
    task::forward_signals_to(restored.pid);
    match task::reap(restored.pid)? {
        Exit::Code(c) => Ok(c),
        Exit::Signal(s) => task::die_by_signal(s),
    }
}
