//! `herd-bench hold MIB`: the process that is checkpointed and restarted.
//!
//! It must stay checkpointable: fds 0-2 only, no children. With `--threads N`
//! it runs N-1 threads besides the main one, each asleep most of the time.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};

/// How often the holder wakes up to see whether herd-bench is still there.
const NAP: Duration = Duration::from_millis(200);

/// Byte `i` of the held memory: no page is all zeroes, and neighbouring
/// pages differ, so nothing can be skipped or deduplicated.
pub fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(7).wrapping_add(i >> 12).wrapping_add(i >> 20)) as u8
}

pub fn run(mib: u64, threads: usize) -> Result<()> {
    let len = usize::try_from(mib.checked_mul(1 << 20).context("size overflows")?).context("size overflows")?;
    let parent = std::os::unix::process::parent_id();
    // Every byte is written (collect from an exact-size iterator).
    let mem: Vec<u8> = (0..len).map(pattern).collect();
    for i in 1..threads {
        std::thread::Builder::new()
            .name(format!("hold-{i}"))
            .spawn(|| loop {
                std::thread::sleep(NAP);
            })
            .context("starting a thread")?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {:#x} {}", mem.as_ptr() as usize, mem.len())?;
    out.flush()?;
    drop(out);
    loop {
        std::thread::sleep(NAP);
        std::hint::black_box(&mem);
        // herd-bench is our parent, also after a restart (the restored
        // process is its child). If it is gone, we are not needed.
        if std::os::unix::process::parent_id() != parent {
            return Ok(());
        }
    }
}
