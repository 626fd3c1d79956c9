//! `herd-bench migrate --parts files`: a process's file I/O on n2, by direct file access
//! (the file is in a directory both nodes share, verified by their herdd) and forwarded
//! home (a directory offered by neither: read ahead and written behind), beside the
//! same at home.
//!
//! Reading is `sha256sum FILE`; writing is the program under test's `write FILE MIB`
//! (32 KiB writes, then fsync) to a file of its own per kind, removed and everything
//! synced before each write (no truncation, no dirty pages of the run before). On n2 they run as `herd run --node n2 -- …` (moved right
//! after they start, as a user would do it); the time is the command's wall time as the
//! user sees it, in n1; the same commands started in n2 without herd show what that
//! node itself does with the file (its CPU, its share of the page cache and the disk).
//! Runs of the four kinds are interleaved, every kind `reps` times,
//! after one warm-up round; medians and the spread (min–max) are printed, and the ratio
//! of each median throughput to home's.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::migrate::{nobody_args, Lab};
use crate::report::median;

/// Where a run happens.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Home,
    /// Started in n2 directly, without herd: what that node does with the same file.
    N2Native,
    Direct,
    Forwarded,
}

const KINDS: [Kind; 4] = [Kind::Home, Kind::N2Native, Kind::Direct, Kind::Forwarded];

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Home => "home (n1)",
            Kind::N2Native => "n2, native (no herd)",
            Kind::Direct => "n2, direct (shared directory)",
            Kind::Forwarded => "n2, forwarded (streamed)",
        }
    }
}

pub(crate) fn files_part(lab: &Lab, reps: usize, mib: u64, failures: &mut Vec<String>) {
    match run(lab, reps, mib) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("files part: FAILED: {e:#}");
            failures.push(format!("files part: {e:#}"));
        }
    }
}

fn run(lab: &Lab, reps: usize, mib: u64) -> Result<()> {
    let shared = lab.work_dir().join("shared");
    let plain = lab.work_dir().join("plain");
    for d in [&shared, &plain] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o1777))?;
    }
    wait_shared(lab, &shared)?;
    eprintln!("files: writing two {mib} MiB input files");
    for d in [&shared, &plain] {
        write_input(&d.join("in"), mib)?;
    }
    let input = |k: Kind| if k == Kind::Forwarded { plain.join("in") } else { shared.join("in") };
    let output = |k: Kind| match k {
        Kind::Home => shared.join("out-home"),
        Kind::N2Native => shared.join("out-n2"),
        Kind::Direct => shared.join("out-direct"),
        Kind::Forwarded => plain.join("out"),
    };
    let mut reads: Vec<Vec<f64>> = vec![Vec::new(); KINDS.len()];
    let mut writes: Vec<Vec<f64>> = vec![Vec::new(); KINDS.len()];
    let mut digest: Option<String> = None;
    // Round 0 warms up (page cache, the programs) and is not counted.
    for round in 0..=reps {
        for (i, &k) in KINDS.iter().enumerate() {
            let (secs, out) = timed(lab, k, vec!["sha256sum".into(), input(k).into_os_string()])?;
            let d = out.split_whitespace().next().unwrap_or_default().to_string();
            match &digest {
                None => digest = Some(d),
                Some(first) if *first != d => bail!("sha256sum {} ({}) says {d}, the first run said {first}", input(k).display(), k.label()),
                Some(_) => {}
            }
            // Each write starts from the same state: no old file to truncate, nothing dirty.
            let _ = std::fs::remove_file(output(k));
            let _ = std::process::Command::new("sync").status();
            let (wsecs, wout) = timed(lab, k, vec![lab.target.clone().into_os_string(), "write".into(), output(k).into_os_string(), mib.to_string().into()])?;
            if wout.trim() != format!("wrote {}", mib << 20) {
                bail!("write {} ({}) said {wout:?}", output(k).display(), k.label());
            }
            eprintln!("files round {round}/{reps}, {}: sha256sum {secs:.2} s, write {wsecs:.2} s", k.label());
            if round > 0 {
                reads[i].push(mib as f64 / secs);
                writes[i].push(mib as f64 / wsecs);
            }
        }
    }
    println!();
    println!("5. Files on n2: sha256sum of a {mib} MiB file, and writing {mib} MiB (32 KiB writes, fsync)");
    println!("   `herd run --node n2` (wall time, moved right after it starts), {reps} interleaved runs each after a warm-up; MiB/s median (min-max), ratio to home");
    let rows: Vec<Vec<String>> = std::iter::once(vec!["".to_string(), "read (sha256sum)".into(), "".into(), "write".into(), "".into()])
        .chain(KINDS.iter().enumerate().map(|(i, k)| {
            let cell = |v: &[f64], home: &[f64]| -> (String, String) {
                let (Some(m), Some(h)) = (median(v.to_vec()), median(home.to_vec())) else { return ("-".into(), "-".into()) };
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(0.0, f64::max);
                (format!("{m:.0} ({lo:.0}-{hi:.0})"), format!("{:.2}x", m / h))
            };
            let (r, rr) = cell(&reads[i], &reads[0]);
            let (w, wr) = cell(&writes[i], &writes[0]);
            vec![k.label().to_string(), r, rr, w, wr]
        }))
        .collect();
    let widths: Vec<usize> = (0..5).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    for r in &rows {
        let line: Vec<String> = r.iter().enumerate().map(|(c, v)| if c == 0 { format!("{v:<w$}", w = widths[c]) } else { format!("{v:>w$}", w = widths[c]) }).collect();
        println!("   {}", line.join("  "));
    }
    let ratio = |v: &[Vec<f64>], i: usize| Some(median(v[i].clone())? / median(v[0].clone())?);
    let verdict = |r: Option<f64>, goal: f64| match r {
        Some(r) if r >= goal => format!("{r:.2} (goal >= {goal}: met)"),
        Some(r) => format!("{r:.2} (goal >= {goal}: NOT met)"),
        None => "-".into(),
    };
    println!("   direct / home: read {}, write {}", verdict(ratio(&reads, 2), 0.9), verdict(ratio(&writes, 2), 0.9));
    let of_n2 = |v: &[Vec<f64>], i: usize| match (median(v[i].clone()), median(v[1].clone())) {
        (Some(d), Some(n)) => format!("{:.2}", d / n),
        _ => "-".to_string(),
    };
    println!("   direct / n2 native (herd's own cost on that node): read {}, write {}", of_n2(&reads, 2), of_n2(&writes, 2));
    println!("   forwarded (read ahead, written behind) / home: read {}, write {}", verdict(ratio(&reads, 3), 0.5), verdict(ratio(&writes, 3), 0.5));
    println!("   forwarded / n2 native: read {}, write {}", of_n2(&reads, 3), of_n2(&writes, 3));
    for k in KINDS {
        let _ = std::fs::remove_file(input(k));
        let _ = std::fs::remove_file(output(k));
    }
    Ok(())
}

/// Waits until n1 has verified `dir` shared with n2.
fn wait_shared(lab: &Lab, dir: &Path) -> Result<()> {
    let want = dir.to_string_lossy().into_owned();
    let start = Instant::now();
    loop {
        let rows = herd_daemon::control::Client::connect(&lab.cluster.node_socket("n1")).and_then(|mut c| c.call(&herd_daemon::control::Request::Nodes));
        if let Ok(herd_daemon::control::Response::Nodes(rows)) = rows {
            if rows.iter().any(|r| r.name == "n2" && r.shared_with_this_node.contains(&want)) {
                return Ok(());
            }
        }
        if start.elapsed().as_secs() > 20 {
            bail!("n1 does not verify {want} as shared with n2 within 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `mib` MiB of pseudo-random bytes, readable by everyone.
fn write_input(path: &Path, mib: u64) -> Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for w in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block)?;
    }
    f.flush()?;
    drop(f);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Runs `argv` as uid 65534: in n1 directly, in n2 directly, or in n1 under
/// `herd run --node n2`; its wall time and stdout.
fn timed(lab: &Lab, kind: Kind, argv: Vec<OsString>) -> Result<(f64, String)> {
    let mut full: Vec<OsString> = vec![lab.setpriv.clone().into_os_string()];
    full.extend(nobody_args().map(OsString::from));
    if matches!(kind, Kind::Direct | Kind::Forwarded) {
        full.extend([lab.herd.clone().into_os_string(), "run".into(), "--node".into(), "n2".into(), "--".into()]);
    }
    full.extend(argv);
    let shown = full.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
    let mut cmd = lab.node_cmd(if kind == Kind::N2Native { "n2" } else { "n1" }, full)?;
    cmd.stdin(Stdio::null());
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    let secs = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || err.contains("could not move") {
        bail!("{shown}: {} {err}", out.status);
    }
    Ok((secs, String::from_utf8_lossy(&out.stdout).into_owned()))
}
