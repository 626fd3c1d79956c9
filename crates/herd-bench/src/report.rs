//! The table and the lines around it.

use std::path::PathBuf;

use crate::sys::{self, MIB};

/// One repetition at one size, in seconds (and bytes for the image).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub write: f64,
    pub touch: f64,
    pub ckpt: f64,
    pub image_bytes: u64,
    pub restart: f64,
}

pub struct SizeResult {
    pub mib: u64,
    /// Threads of the checkpointed process.
    pub threads: usize,
    pub reps: usize,
    /// Successful repetitions only.
    pub samples: Vec<Sample>,
}

pub struct Run {
    pub dir: PathBuf,
    pub fstype: String,
    pub results: Vec<SizeResult>,
    pub failures: Vec<String>,
}

/// CRIU 4.2 dump and restore seconds on these machines, from the project's
/// design notes (quoted, not measured: CRIU is not installed here).
pub fn criu_reference(mib: u64) -> Option<(f64, f64)> {
    match mib {
        512 => Some((0.28, 0.27)),
        2048 => Some((1.0, 1.05)),
        _ => None,
    }
}

pub fn size_label(mib: u64) -> String {
    if mib >= 1024 && (mib / 1024) * 1024 == mib {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

impl SizeResult {
    /// The size, and the threads when more than one ("2 GiB, 8 thr").
    pub fn label(&self) -> String {
        match self.threads {
            1 => size_label(self.mib),
            n => format!("{}, {n} thr", size_label(self.mib)),
        }
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

/// Medians of one size: (ckpt, write, ckpt/write, image MiB, restart, touch, restart/touch).
struct Medians {
    ckpt: f64,
    write: f64,
    ckpt_per_write: f64,
    image_mib: f64,
    restart: f64,
    touch: f64,
    restart_per_touch: f64,
}

fn medians(s: &[Sample]) -> Option<Medians> {
    let m = |f: &dyn Fn(&Sample) -> f64| median(s.iter().map(f).collect());
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
    })
}

const COLUMNS: [&str; 10] = [
    "size", "ckpt s", "ckpt MB/s", "write s", "ckpt/write", "image MiB", "restart s", "restart MB/s", "touch s", "restart/touch",
];
const SIZE_WIDTH: usize = 17;

fn line(cells: &[String]) -> String {
    let mut out = format!("{:<SIZE_WIDTH$}", cells[0]);
    for (cell, head) in cells[1..].iter().zip(&COLUMNS[1..]) {
        out.push_str(&format!("  {cell:>w$}", w = head.len()));
    }
    out.trim_end().to_string()
}

fn mb_per_s(mib: u64, secs: f64) -> f64 {
    (mib * MIB) as f64 / 1e6 / secs
}

pub fn print(run: &Run) {
    println!("herd-bench checkpoint");
    print_machine();
    println!("images in: {} ({})", run.dir.display(), run.fstype);
    println!();
    println!("{}", line(&COLUMNS.map(String::from)));
    for r in &run.results {
        let label = r.label();
        let Some(m) = medians(&r.samples) else {
            println!("{label:<SIZE_WIDTH$}  (all {} repetitions failed)", r.reps);
            continue;
        };
        println!(
            "{}",
            line(&[
                label,
                format!("{:.3}", m.ckpt),
                format!("{:.0}", mb_per_s(r.mib, m.ckpt)),
                format!("{:.3}", m.write),
                format!("{:.2}", m.ckpt_per_write),
                format!("{:.1}", m.image_mib),
                format!("{:.3}", m.restart),
                format!("{:.0}", mb_per_s(r.mib, m.restart)),
                format!("{:.3}", m.touch),
                format!("{:.2}", m.restart_per_touch),
            ])
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
    println!("Values are medians over repetitions ({}).", reps.join(", "));
    println!("Ratios are medians of the per-repetition ratios. MB/s = working size in 10^6 bytes / median seconds.");
    let warm: Vec<String> = run
        .results
        .iter()
        .map(|r| format!("{:.0} MiB", sys::warm_bytes(r.mib * MIB) as f64 / MIB as f64))
        .collect();
    println!(
        "Each timed step was preceded by touching and freeing {} of fresh memory; steps interleaved write, touch, checkpoint, restart.",
        warm.join(" / ")
    );
    println!();
    println!("Spread (min-max over repetitions, seconds):");
    for r in &run.results {
        if r.samples.is_empty() {
            continue;
        }
        let range = |f: &dyn Fn(&Sample) -> f64| {
            let v: Vec<f64> = r.samples.iter().map(f).collect();
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{lo:.3}-{hi:.3}")
        };
        println!(
            "  {:<SIZE_WIDTH$} ckpt {}  write {}  restart {}  touch {}",
            r.label(),
            range(&|x| x.ckpt),
            range(&|x| x.write),
            range(&|x| x.restart),
            range(&|x| x.touch)
        );
    }
    println!();
    println!("CRIU 4.2 reference (quoted from the project design notes; CRIU is not installed here, not measured):");
    for r in &run.results {
        let label = r.label();
        match (criu_reference(r.mib).filter(|_| r.threads == 1), medians(&r.samples)) {
            (None, _) => println!("  {label:<SIZE_WIDTH$} no CRIU figure for this size"),
            (Some((dump, rest)), None) => println!("  {label:<SIZE_WIDTH$} CRIU dump {dump:.2} s, restore {rest:.2} s"),
            (Some((dump, rest)), Some(m)) => println!(
                "  {label:<SIZE_WIDTH$} CRIU dump {dump:.2} s, restore {rest:.2} s; herd ckpt {:.3} s = {:.2}x CRIU, restart {:.3} s = {:.2}x CRIU",
                m.ckpt,
                m.ckpt / dump,
                m.restart,
                m.restart / rest
            ),
        }
    }
    if !run.failures.is_empty() {
        println!();
        println!("FAILED repetitions ({}), left out of the medians:", run.failures.len());
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
        let r = |threads| SizeResult { mib: 2048, threads, reps: 1, samples: Vec::new() };
        assert_eq!(r(1).label(), "2 GiB");
        assert_eq!(r(64).label(), "2 GiB, 64 thr");
        assert!(r(256).label().len() <= SIZE_WIDTH);
    }

    #[test]
    fn columns_line_up() {
        let head = line(&COLUMNS.map(String::from));
        assert!(head.starts_with(&format!("{:<SIZE_WIDTH$}  ckpt s", "size")), "{head}");
        let row = line(&COLUMNS.map(|_| "1".to_string()));
        assert_eq!(row.len(), head.len());
    }
}
