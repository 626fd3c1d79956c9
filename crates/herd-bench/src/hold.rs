//! `herd-bench hold MIB`: the process (or tree of processes) that is
//! checkpointed and restarted.
//!
//! It must stay checkpointable: fds 0-2 only. With `--threads N` every
//! process runs N-1 threads besides its main one, each asleep most of the
//! time. With `--procs P` the holder (the root) starts P-1 children, each
//! `herd-bench hold MIB --member K` (K = 1..P-1, started with fork and exec:
//! the crate has no unsafe code, and a bare fork is unsafe in Rust);
//! every process fills its own MIB MiB with its own pattern ([`pattern_of`]),
//! so no two hold the same page. A child reports `ready ADDR` on a pipe to the
//! root and then puts its stderr in place of that pipe (the tree keeps no pipe
//! of its own); once all are ready, the root prints on its stdout
//! `ready ADDR LEN` followed by one `PID:K:ADDR` word per child.
//!
//! The root lives as long as herd-bench does (after a restart by CRIU it is
//! no longer herd-bench's child, so it watches herd-bench's pid); a child
//! lives as long as its parent, the root.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How often a holder wakes up to see whether it is still needed.
const NAP: Duration = Duration::from_millis(200);

/// Byte `i` of the held memory: no page is all zeroes, and neighbouring
/// pages differ, so nothing can be skipped or deduplicated.
pub fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(7).wrapping_add(i >> 12).wrapping_add(i >> 20)) as u8
}

/// Byte `i` of the memory of member `k` of a tree (the root is 0 and holds
/// [`pattern`]): every byte differs from the same byte of any other of 256
/// consecutive members.
pub fn pattern_of(k: usize, i: usize) -> u8 {
    pattern(i).wrapping_add((k as u8).wrapping_mul(151))
}

/// Where a member of the tree holds its memory, as the root reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberMem {
    pub pid: i32,
    /// Its index (0 is the root), which selects its pattern.
    pub index: usize,
    pub addr: u64,
}

/// `ready ADDR LEN [PID:K:ADDR ...]` of the root: the root's address and the
/// length every member holds, and the children.
pub fn parse_ready(line: &str) -> Result<(u64, u64, Vec<MemberMem>)> {
    let mut words = line.split_whitespace();
    let (Some("ready"), Some(addr), Some(len)) = (words.next(), words.next(), words.next()) else {
        bail!("the holder did not report ready (it said {line:?})");
    };
    let addr = hex(addr).context("holder address")?;
    let len = len.parse().context("holder length")?;
    let mut members = Vec::new();
    for w in words {
        let mut parts = w.split(':');
        let (Some(pid), Some(index), Some(a), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            bail!("the holder reported a child as {w:?}, not PID:K:ADDR");
        };
        members.push(MemberMem {
            pid: pid.parse().context("child pid")?,
            index: index.parse().context("child index")?,
            addr: hex(a).context("child address")?,
        });
    }
    Ok((addr, len, members))
}

fn hex(s: &str) -> Result<u64> {
    Ok(u64::from_str_radix(s.trim_start_matches("0x"), 16)?)
}

/// Fills memory with member `k`'s pattern and starts the extra threads.
fn fill(len: usize, k: usize, threads: usize) -> Result<Vec<u8>> {
    // Every byte is written (collect from an exact-size iterator).
    let mem: Vec<u8> = if k == 0 { (0..len).map(pattern).collect() } else { (0..len).map(|i| pattern_of(k, i)).collect() };
    for i in 1..threads {
        std::thread::Builder::new()
            .name(format!("hold-{i}"))
            .spawn(|| loop {
                std::thread::sleep(NAP);
            })
            .context("starting a thread")?;
    }
    Ok(mem)
}

/// The root of the holder (`member` is None) or child `member` of it.
pub fn run(mib: u64, threads: usize, procs: usize, member: Option<usize>) -> Result<()> {
    let len = usize::try_from(mib.checked_mul(1 << 20).context("size overflows")?).context("size overflows")?;
    let parent = std::os::unix::process::parent_id();
    if let Some(k) = member {
        return run_child(len, k, threads, parent);
    }
    // The children first, so that they fill their memory while we fill ours.
    let exe = std::env::current_exe().context("cannot find herd-bench's own executable")?;
    let mut children = Vec::new();
    for k in 1..procs {
        let child = Command::new(&exe)
            .arg("hold")
            .arg(mib.to_string())
            .arg("--threads")
            .arg(threads.to_string())
            .arg("--member")
            .arg(k.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start member {k} of the tree"))?;
        children.push((k, child));
    }
    let mem = fill(len, 0, threads)?;
    let mut report = format!("ready {:#x} {}", mem.as_ptr() as usize, mem.len());
    for (k, child) in &mut children {
        // Dropped at the end of this iteration: the pipe is closed.
        let stdout = child.stdout.take().context("no pipe from a child")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).with_context(|| format!("reading from member {k}"))?;
        let Some(addr) = line.strip_prefix("ready ").map(str::trim) else {
            bail!("member {k} of the tree did not report ready (it said {line:?})");
        };
        report.push_str(&format!(" {}:{k}:{addr}", child.id()));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{report}")?;
    out.flush()?;
    drop(out);
    // herd-bench is our parent, but not after a restart by CRIU (the restored
    // process is then adopted by init): we watch herd-bench's pid instead.
    // The children are never reaped (they only end with us).
    let bench = format!("/proc/{parent}");
    loop {
        std::thread::sleep(NAP);
        std::hint::black_box(&mem);
        if !Path::new(&bench).exists() {
            return Ok(());
        }
    }
}

fn run_child(len: usize, k: usize, threads: usize, parent: u32) -> Result<()> {
    let mem = fill(len, k, threads)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {:#x}", mem.as_ptr() as usize)?;
    out.flush()?;
    drop(out);
    // Our stdout is a pipe to the root, which closes its end now: replace it
    // with our stderr (the root's, as inherited), so that the tree holds no
    // pipe leading out of it.
    nix::unistd::dup2(2, 1).context("replacing stdout")?;
    loop {
        std::thread::sleep(NAP);
        std::hint::black_box(&mem);
        // Our parent is the root, also after a restart (same pids, same tree).
        // If it is gone, we are not needed.
        if std::os::unix::process::parent_id() != parent {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_differ_between_members() {
        for i in [0usize, 1, 4095, 4096, 1 << 20, (1 << 27) - 1] {
            assert_eq!(pattern_of(0, i), pattern(i));
            let all: std::collections::HashSet<u8> = (0..256).map(|k| pattern_of(k, i)).collect();
            assert_eq!(all.len(), 256);
        }
    }

    #[test]
    fn ready_lines() {
        let (a, l, m) = parse_ready("ready 0x7f00 16777216\n").unwrap();
        assert_eq!((a, l, m.len()), (0x7f00, 16 << 20, 0));
        let (_, _, m) = parse_ready("ready 0x10 4096 42:1:0x7f10 43:2:0x7f20").unwrap();
        assert_eq!(m, vec![MemberMem { pid: 42, index: 1, addr: 0x7f10 }, MemberMem { pid: 43, index: 2, addr: 0x7f20 }]);
        assert!(parse_ready("").is_err());
        assert!(parse_ready("ready 0x10 4096 42:1").is_err());
    }
}
