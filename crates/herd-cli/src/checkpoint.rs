//! `herd checkpoint`.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use herd_checkpoint::filehash::FileHashes;
use herd_checkpoint::Frozen;

pub fn check(pid: i32) -> Result<i32> {
    let reasons = herd_checkpoint::check(pid)?;
    if reasons.is_empty() {
        println!("process {pid} can be checkpointed");
        return Ok(0);
    }
    println!("process {pid} cannot be checkpointed:");
    for r in reasons {
        println!("  - {r}");
    }
    Ok(1)
}

/// Writes the image next to `output` under a temporary name and renames it
/// into place when complete, so a failed checkpoint never leaves a partial
/// image under the requested name.
pub fn run(pid: i32, output: &Path, kill: bool) -> Result<i32> {
    let mut hashes = FileHashes::load();
    let mut frozen = Frozen::freeze(pid, &mut hashes)?;
    hashes.save();
    let name = output.file_name().context("--output must name a file")?.to_string_lossy();
    let tmp = output.with_file_name(format!(".{name}.herd-tmp.{}", std::process::id()));
    let written = (|| -> Result<_> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600) // the image holds the process's memory
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let (out, stats) = frozen.write(BufWriter::with_capacity(1 << 20, file))?;
        let file = out.into_inner().map_err(|e| e.into_error()).context("writing the image")?;
        if kill {
            file.sync_all().context("syncing the image")?;
        }
        std::fs::rename(&tmp, output).with_context(|| format!("cannot rename image to {}", output.display()))?;
        if kill {
            if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir).and_then(|d| d.sync_all()).context("syncing the image's directory")?;
            }
        }
        Ok(stats)
    })();
    let stats = match written {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e); // `frozen` is dropped: the process runs on
        }
    };
    let comm = match frozen.image().threads.len() {
        0 => frozen.image().task.comm.clone(),
        n => format!("{}, {} threads", frozen.image().task.comm, n + 1),
    };
    if kill {
        frozen.kill();
    } else {
        frozen.release()?;
    }
    println!(
        "checkpointed process {pid} ({comm}) to {}: {:.1} MiB of memory, stopped for {:.0} ms{}",
        output.display(),
        stats.page_bytes as f64 / (1 << 20) as f64,
        stats.frozen_for.as_secs_f64() * 1e3,
        if kill { ", then ended" } else { "" }
    );
    Ok(0)
}
