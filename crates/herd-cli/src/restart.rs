//! `herd restart`.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use herd_checkpoint::filehash::FileHashes;
use herd_checkpoint::{CheckpointError, PidMode};
use herd_kernel::task::{self, Exit};

pub fn run(image: &Path, pid: PidMode) -> Result<i32> {
    let file = File::open(image).with_context(|| format!("cannot open image {}", image.display()))?;
    let mut hashes = FileHashes::load();
    let restored = match herd_checkpoint::restore_file(&file, &mut hashes, pid) {
        Ok(r) => r,
        Err(e @ CheckpointError::PidUnavailable { .. }) => {
            let hint = match pid {
                PidMode::Same => "\n  --new-pidns restores it with its pid in a new pid namespace (as root); \
                                  --any-pid lets it run with another pid (a program that checks its pid may notice)",
                _ => "",
            };
            return Err(anyhow::anyhow!("{e}{hint}")).with_context(|| format!("cannot restart {}", image.display()));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot restart {}", image.display())),
    };
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
    let exit = match restored.init {
        Some(init) => init.wait()?,
        None => task::reap(restored.pid)?,
    };
    match exit {
        Exit::Code(c) => Ok(c),
        Exit::Signal(s) => task::die_by_signal(s),
    }
}
