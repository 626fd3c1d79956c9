//! The table and the lines around it.

use std::path::PathBuf;

use crate::sys::{self, MIB};

/// One repetition at one size, in seconds (and bytes for the images).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub write: f64,
    pub touch: f64,
    pub ckpt: f64,
    pub image_bytes: u64,
    pub restart: f64,
    /// CRIU's dump and restore of the same process in the same repetition;
    /// None when CRIU is not measured or its step failed.
    pub criu: Option<CriuSample>,
}

/// `criu-4 dump` and `criu-4 restore -d` wall times, and the size of its images.
#[derive(Clone, Copy, Debug)]
pub struct CriuSample {
    pub dump: f64,
    pub restore: f64,
    pub image_bytes: u64,
}

pub struct SizeResult {
    /// MiB held by each process.
    pub mib: u64,
    /// Threads of each checkpointed process.
    pub threads: usize,
    /// Processes of the checkpointed tree.
    pub procs: usize,
    pub reps: usize,
    /// Successful repetitions only.
    pub samples: Vec<Sample>,
}

/// Whether CRIU was measured: its version, or why not.
pub enum Criu {
    Measured { version: String },
    NotMeasured { why: String },
}

pub struct Run {
    pub dir: PathBuf,
    pub fstype: String,
    pub criu: Criu,
    pub results: Vec<SizeResult>,
    pub failures: Vec<String>,
}

pub fn size_label(mib: u64) -> String {
    if mib >= 1024 && (mib / 1024) * 1024 == mib {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

impl SizeResult {
    /// The size, the processes and the threads when more than one
    /// ("128 MiB × 16 proc", "2 GiB, 8 thr", "64 MiB × 4 proc, 8 thr").
    pub fn label(&self) -> String {
        let mut s = size_label(self.mib);
        if self.procs > 1 {
            s.push_str(&format!(" × {} proc", self.procs));
        }
        if self.threads > 1 {
            s.push_str(&format!(", {} thr", self.threads));
        }
        s
    }

    /// MiB held by the whole tree (the working size of the baselines).
    pub fn total_mib(&self) -> u64 {
        self.mib * self.procs as u64
    }
}

/// The median; the mean of the middle two for an even count.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// Medians of one size.
struct Medians {
    ckpt: f64,
    write: f64,
    ckpt_per_write: f64,
    image_mib: f64,
    restart: f64,
    touch: f64,
    restart_per_touch: f64,
    /// Over the repetitions in which CRIU was measured.
    criu: Option<CriuMedians>,
}

struct CriuMedians {
    dump: f64,
    ckpt_per_dump: f64,
    restore: f64,
    restart_per_restore: f64,
    image_mib: f64,
}

fn medians(s: &[Sample]) -> Option<Medians> {
    let m = |f: &dyn Fn(&Sample) -> f64| median(s.iter().map(f).collect());
    // Only the repetitions with a CRIU sample; ratios within each of them.
    let c = |f: &dyn Fn(&Sample, &CriuSample) -> f64| median(s.iter().filter_map(|x| x.criu.as_ref().map(|c| f(x, c))).collect());
    let criu = (|| {
        Some(CriuMedians {
            dump: c(&|_, c| c.dump)?,
            ckpt_per_dump: c(&|x, c| x.ckpt / c.dump)?,
            restore: c(&|_, c| c.restore)?,
            restart_per_restore: c(&|x, c| x.restart / c.restore)?,
            image_mib: c(&|_, c| c.image_bytes as f64 / MIB as f64)?,
        })
    })();
    Some(Medians {
        ckpt: m(&|x| x.ckpt)?,
        write: m(&|x| x.write)?,
        // Ratios are taken within each repetition (the steps of one
        // repetition ran seconds apart), then the median of those.
        ckpt_per_write: m(&|x| x.ckpt / x.write)?,
        image_mib: m(&|x| x.image_bytes as f64 / MIB as f64)?,
        restart: m(&|x| x.restart)?,
        touch: m(&|x| x.touch)?,
        restart_per_touch: m(&|x| x.restart / x.touch)?,
        criu,
    })
}

const COLUMNS: [&str; 14] = [
    "size",
    "ckpt s",
    "ckpt MB/s",
    "write s",
    "ckpt/write",
    "CRIU dump s",
    "ckpt/CRIU",
    "image MiB",
    "restart s",
    "restart MB/s",
    "touch s",
    "restart/touch",
    "CRIU restore s",
    "restart/CRIU",
];
/// The narrowest the size column gets (it widens for longer labels).
const SIZE_WIDTH: usize = 8;

/// One line of the table; `width` is the size column's, in characters.
fn line(width: usize, cells: &[String]) -> String {
    let mut out = format!("{:<width$}", cells[0]);
    for (cell, head) in cells[1..].iter().zip(&COLUMNS[1..]) {
        out.push_str(&format!("  {cell:>w$}", w = head.len()));
    }
    out.trim_end().to_string()
}

fn mb_per_s(mib: u64, secs: f64) -> f64 {
    (mib * MIB) as f64 / 1e6 / secs
}

/// A column of seconds, or "-" when CRIU was not measured.
fn or_dash(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

pub fn print(run: &Run) {
    println!("herd-bench checkpoint");
    print_machine();
    println!("images in: {} ({})", run.dir.display(), run.fstype);
    println!();
    let width = run.results.iter().map(|r| r.label().chars().count()).max().unwrap_or(0).max(SIZE_WIDTH);
    println!("{}", line(width, &COLUMNS.map(String::from)));
    for r in &run.results {
        let label = r.label();
        let Some(m) = medians(&r.samples) else {
            println!("{label:<width$}  (all {} repetitions failed)", r.reps);
            continue;
        };
        let c = m.criu.as_ref();
        println!(
            "{}",
            line(
                width,
                &[
                    label,
                    format!("{:.3}", m.ckpt),
                    format!("{:.0}", mb_per_s(r.total_mib(), m.ckpt)),
                    format!("{:.3}", m.write),
                    format!("{:.2}", m.ckpt_per_write),
                    or_dash(c.map(|c| c.dump), 3),
                    or_dash(c.map(|c| c.ckpt_per_dump), 2),
                    format!("{:.1}", m.image_mib),
                    format!("{:.3}", m.restart),
                    format!("{:.0}", mb_per_s(r.total_mib(), m.restart)),
                    format!("{:.3}", m.touch),
                    format!("{:.2}", m.restart_per_touch),
                    or_dash(c.map(|c| c.restore), 3),
                    or_dash(c.map(|c| c.restart_per_restore), 2),
                ]
            )
        );
    }
    println!();
    let reps: Vec<String> = run
        .results
        .iter()
        .map(|r| {
            if r.samples.len() == r.reps {
                format!("{} for {}", r.reps, r.label())
            } else {
                format!("{} of {} for {}", r.samples.len(), r.reps, r.label())
            }
        })
        .collect();
    println!("Values are medians over repetitions ({}).", reps.join("; "));
    println!(
        "Ratios are medians of the per-repetition ratios (herd/CRIU below 1: herd is faster). \
         MB/s = working size in 10^6 bytes / median seconds."
    );
    if run.results.iter().any(|r| r.procs > 1) {
        println!("With \"× N proc\" every process of the tree holds the size: the working size (baselines, MB/s) is N times it.");
    }
    let warm: Vec<String> = run
        .results
        .iter()
        .map(|r| format!("{:.0} MiB", sys::warm_bytes(r.total_mib() * MIB) as f64 / MIB as f64))
        .collect();
    let steps = match run.criu {
        Criu::Measured { .. } => "write, touch, herd checkpoint, herd restart, CRIU dump, CRIU restore",
        Criu::NotMeasured { .. } => "write, touch, checkpoint, restart",
    };
    println!("Each timed step was preceded by touching and freeing {} of fresh memory; steps interleaved {steps}.", warm.join(" / "));
    match &run.criu {
        Criu::Measured { version } => {
            println!(
                "CRIU: {version}, measured in the same run on a fresh process each repetition: `criu-4 dump --shell-job` \
                 and `criu-4 restore --shell-job -d` (-v4 logs), wall time of each command, images next to herd's."
            );
            let missing: usize = run.results.iter().map(|r| r.samples.iter().filter(|s| s.criu.is_none()).count()).sum();
            if missing > 0 {
                println!("CRIU failed in {missing} repetition(s) where herd did not (listed below); its columns leave them out.");
            }
        }
        Criu::NotMeasured { why } => println!("CRIU columns \"-\": not measured, {why}."),
    }
    println!();
    println!("Spread (min-max over repetitions, seconds):");
    for r in &run.results {
        if r.samples.is_empty() {
            continue;
        }
        let range = |v: Vec<f64>| {
            if v.is_empty() {
                return "-".to_string();
            }
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{lo:.3}-{hi:.3}")
        };
        let of = |f: &dyn Fn(&Sample) -> Option<f64>| range(r.samples.iter().filter_map(f).collect());
        let mut text = format!(
            "  {:<width$}  ckpt {}  write {}  restart {}  touch {}",
            r.label(),
            of(&|x| Some(x.ckpt)),
            of(&|x| Some(x.write)),
            of(&|x| Some(x.restart)),
            of(&|x| Some(x.touch)),
        );
        if matches!(run.criu, Criu::Measured { .. }) {
            text.push_str(&format!(
                "  CRIU dump {}  CRIU restore {}",
                of(&|x| x.criu.map(|c| c.dump)),
                of(&|x| x.criu.map(|c| c.restore))
            ));
        }
        println!("{text}");
    }
    if matches!(run.criu, Criu::Measured { .. }) {
        println!();
        println!("Image sizes (median MiB): herd / CRIU");
        for r in &run.results {
            if let Some(m) = medians(&r.samples) {
                println!("  {:<width$}  {:.1} / {}", r.label(), m.image_mib, or_dash(m.criu.map(|c| c.image_mib), 1));
            }
        }
    }
    if !run.failures.is_empty() {
        println!();
        println!("FAILED steps ({}), left out of the medians:", run.failures.len());
        for f in &run.failures {
            println!("  {f}");
        }
    }
}

/// The "machine:" line every table starts with.
pub fn print_machine() {
    println!(
        "machine: {}, {} CPUs, {:.1} GiB RAM, Linux {}, transparent huge pages: {}",
        sys::cpu_model(),
        sys::cpus(),
        sys::meminfo("MemTotal").unwrap_or(0) as f64 / (1u64 << 30) as f64,
        sys::kernel_release(),
        sys::thp_mode()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn labels() {
        assert_eq!(size_label(64), "64 MiB");
        assert_eq!(size_label(2048), "2 GiB");
        assert_eq!(size_label(1536), "1536 MiB");
        let r = |threads, procs| SizeResult { mib: 2048, threads, procs, reps: 1, samples: Vec::new() };
        assert_eq!(r(1, 1).label(), "2 GiB");
        assert_eq!(r(64, 1).label(), "2 GiB, 64 thr");
        assert_eq!(r(1, 16).label(), "2 GiB × 16 proc");
        assert_eq!(r(8, 4).label(), "2 GiB × 4 proc, 8 thr");
        assert_eq!(r(1, 16).total_mib(), 32 * 1024);
    }

    #[test]
    fn columns_line_up() {
        let head = line(SIZE_WIDTH, &COLUMNS.map(String::from));
        assert!(head.starts_with(&format!("{:<SIZE_WIDTH$}  ckpt s", "size")), "{head}");
        let row = line(SIZE_WIDTH, &COLUMNS.map(|_| "1".to_string()));
        assert_eq!(row.len(), head.len());
        // A label with a multi-byte character is padded by characters.
        let wide = line(15, &["128 MiB × 16 p".to_string()].into_iter().chain(COLUMNS[1..].iter().map(|_| "1".to_string())).collect::<Vec<_>>());
        assert_eq!(wide.chars().count(), line(15, &COLUMNS.map(|_| "1".to_string())).chars().count());
    }

    #[test]
    fn criu_medians_only_where_measured() {
        let s = |ckpt, criu: Option<f64>| Sample {
            write: 1.0,
            touch: 1.0,
            ckpt,
            image_bytes: MIB,
            restart: 1.0,
            criu: criu.map(|d| CriuSample { dump: d, restore: 2.0, image_bytes: MIB }),
        };
        let m = medians(&[s(1.0, Some(2.0)), s(3.0, None), s(1.0, Some(4.0))]).unwrap();
        let c = m.criu.unwrap();
        assert_eq!((m.ckpt, c.dump, c.ckpt_per_dump, c.restart_per_restore), (1.0, 3.0, 0.375, 0.5));
        assert!(medians(&[s(1.0, None)]).unwrap().criu.is_none());
    }
}
