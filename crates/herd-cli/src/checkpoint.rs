//! `herd checkpoint`.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use herd_checkpoint::filehash::FileHashes;
use herd_checkpoint::FrozenTree;

pub fn check(pid: i32, tcp: bool) -> Result<i32> {
    let reasons = herd_checkpoint::check_tree(pid, tcp)?;
    let kids = herd_checkpoint::children(pid).len();
    let with = if kids > 0 { " with its descendants" } else { "" };
    if reasons.is_empty() {
        println!("process {pid} can be checkpointed{with}");
        return Ok(0);
    }
    println!("process {pid} cannot be checkpointed{with}:");
    for (p, r) in reasons {
        if p == pid {
            println!("  - {r}");
        } else {
            println!("  - process {p} {r}");
        }
    }
    Ok(1)
}

/// Writes the image next to `output` under a temporary name and renames it
/// into place when complete, so a failed checkpoint never leaves a partial
/// image under the requested name.
pub fn run(pid: i32, output: &Path, kill: bool, tcp: bool) -> Result<i32> {
    let mut hashes = FileHashes::load();
    let mut frozen = FrozenTree::freeze(pid, &mut hashes, tcp)?;
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
        // On a terminal: the bytes written so far, and how fast (a large process takes seconds).
        let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(indicatif::ProgressStyle::with_template("{spinner} writing {msg}: {bytes} {bytes_per_sec}").expect("a valid template"));
            b.set_message(output.display().to_string());
            b.enable_steady_tick(std::time::Duration::from_millis(100));
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let (out, stats) = frozen.write(Counted { inner: BufWriter::with_capacity(1 << 20, file), bar: bar.clone() })?;
        bar.finish_and_clear();
        let file = out.inner.into_inner().map_err(|e| e.into_error()).context("writing the image")?;
        if kill {
            file.sync_all().context("syncing the image")?;
            // What a peer sent meanwhile is not in the image: the processes must run on.
            frozen.check_connections()?;
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
    let (members, threads) = frozen.counts();
    let comm = match (members, threads) {
        (1, 1) => frozen.root().task.comm.clone(),
        (1, n) => format!("{}, {n} threads", frozen.root().task.comm),
        (m, n) => format!("{} and its descendants: {m} processes, {n} threads", frozen.root().task.comm),
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

/// A writer that counts what passes on a progress bar.
struct Counted<W> {
    inner: W,
    bar: indicatif::ProgressBar,
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
