//! `herd-bench build`: a `make -j` build on the local cluster (2 nodes × 1 CPU).
//!
//! A generated C project of `--units` translation units (each about 1.5-2 s of `cc -O2`
//! alone) and a main is built in n1 three ways, interleaved, `--reps` times: confined to
//! n1 (`make -jJ`, herd not involved); `herd run make -jJ` with the sources in a directory
//! both nodes share (verified by herdd: direct file access); and `herd run make -jJ` with
//! the sources in a directory only home offers (every file call of a moved compiler is
//! forwarded). Every build's program must print the same line. The table gives wall-clock
//! medians and spreads, the speed-up over confined, and the moves herdd made. Side by
//! side, when distcc is installed, the same build with distcc (`make CC="distcc cc"`,
//! `DISTCC_HOSTS` naming n1 and n2, where distccd runs as uid 65534): what a build farm
//! gets today by configuring each host.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::migrate::{nobody_args, spread, Lab, NOBODY};
use crate::report::median;

pub struct Config {
    pub units: usize,
    pub jobs: usize,
    pub reps: usize,
    pub keep: bool,
}

/// One way of building.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    Confined,
    Shared,
    HomeOnly,
    Distcc,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Confined => "confined to n1 (make, no herd)",
            Way::Shared => "herd run, sources shared (direct)",
            Way::HomeOnly => "herd run, sources at home only",
            Way::Distcc => "distcc (n1 and n2's distccd)",
        }
    }
}

pub fn run(cfg: Config) -> Result<bool> {
    if !(2..=64).contains(&cfg.units) || !(1..=64).contains(&cfg.jobs) || !(1..=20).contains(&cfg.reps) {
        bail!("--units must be 2-64, --jobs 1-64, --reps 1-20");
    }
    if herd_kernel::task::euid() != 0 {
        bail!("herd-bench build must run as root: it brings up a local cluster and builds as uid 65534");
    }
    if cfg!(debug_assertions) {
        eprintln!("herd-bench: warning: this is a debug build; build with --release for numbers to compare");
    }
    let lab = Lab::up(cfg.keep)?;
    let result = measure(&lab, &cfg);
    if let Err(e) = &result {
        eprintln!("herd-bench build: {e:#}\n{}", lab.logs());
    }
    let ok = result.is_ok();
    lab.finish(ok)?;
    result
}

fn measure(lab: &Lab, cfg: &Config) -> Result<bool> {
    lab.print_header("herd-bench build");
    // The directory both nodes offer (verified shared), and one only home offers.
    let shared = lab.work_dir().join("shared").join("build");
    let home_only = lab.work_dir().join("home-build");
    for dir in [&shared, &home_only] {
        write_project(dir, cfg.units)?;
    }
    // distcc, when it is installed: distccd in n2, as uid 65534, one job (one CPU).
    let distccd = match (which("distcc"), which("distccd")) {
        (Some(_), Some(d)) => {
            let n2 = lab.cluster.node_address("n2")?.to_string();
            let argv: Vec<OsString> = vec![
                d.into(),
                "--no-detach".into(),
                "--daemon".into(),
                "--user".into(),
                "nobody".into(),
                "--listen".into(),
                n2.clone().into(),
                "--allow".into(),
                "10.0.0.0/8".into(),
                "--jobs".into(),
                "1".into(),
                "--log-stderr".into(),
            ];
            let mut cmd = lab.node_cmd("n2", argv)?;
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            Some((cmd.spawn().context("starting distccd in n2")?, n2))
        }
        _ => {
            println!("distcc is not installed (apt-get install distcc): its row is left out");
            None
        }
    };
    let result = ways_measured(lab, cfg, &shared, &home_only, distccd.as_ref().map(|d| d.1.as_str()));
    if let Some((mut child, _)) = distccd {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

/// Where `tool` is on the PATH.
fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(tool)).find(|f| f.is_file()))
}

fn ways_measured(lab: &Lab, cfg: &Config, shared: &Path, home_only: &Path, distcc: Option<&str>) -> Result<bool> {
    let mut ways = vec![Way::Confined, Way::Shared, Way::HomeOnly];
    if distcc.is_some() {
        ways.push(Way::Distcc);
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    let mut moves: Vec<Vec<u64>> = vec![Vec::new(); ways.len()];
    let mut printed: Option<String> = None;
    let log = lab.work_dir().join("n1").join("herdd.log");
    // A warm-up build (page cache, the compiler's files), not counted.
    build(lab, shared, cfg.jobs, Way::Confined, distcc)?;
    for rep in 0..cfg.reps {
        // Interleaved, starting each rep at another way.
        for k in 0..ways.len() {
            let i = (k + rep) % ways.len();
            let way = ways[i];
            let dir = if way == Way::HomeOnly { home_only } else { shared };
            let before = moves_in(&log);
            let secs = build(lab, dir, cfg.jobs, way, distcc)?;
            moves[i].push(moves_in(&log) - before);
            times[i].push(secs);
            let out = run_prog(lab, dir)?;
            match &printed {
                None => printed = Some(out),
                Some(p) if *p != out => bail!("the program built {} prints {out:?}, another build {p:?}", way.label()),
                Some(_) => {}
            }
        }
    }
    println!(
        "a C project of {} units (cc -O2, each about 1.5-2 s alone) and a main, built with make -j{} in n1 as uid 65534; {} reps, interleaved, after a warm-up build",
        cfg.units, cfg.jobs, cfg.reps
    );
    println!();
    let mut table = String::new();
    writeln!(table, "{:<36} {:>10} {:>14} {:>12} {:>12}", "build", "median s", "spread", "vs confined", "moves/build")?;
    let confined = median(times[0].clone()).unwrap_or(f64::NAN);
    for (i, way) in ways.iter().enumerate() {
        let m = median(times[i].clone()).unwrap_or(f64::NAN);
        let mv = median(moves[i].iter().map(|&x| x as f64).collect()).unwrap_or(0.0);
        writeln!(table, "{:<36} {:>10.2} {:>14} {:>11.2}x {:>12.0}", way.label(), m, spread(times[i].iter().copied(), 2), confined / m, mv)?;
    }
    print!("{table}");
    println!();
    println!("ideal with 2 CPUs: about {:.2} s (the confined median / 2)", confined / 2.0);
    println!("every build's program printed {}", printed.unwrap_or_default().trim());
    Ok(true)
}

/// `units` files u0.c .. of 120 functions of 40 multiply-xorshift steps each, a main
/// calling every unit, a Makefile; owned by uid 65534.
fn write_project(dir: &Path, units: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for i in 0..units {
        let mut s = String::from("#include <stdint.h>\n");
        for k in 0..120 {
            writeln!(s, "uint64_t f{i}_{k}(uint64_t x) {{")?;
            for j in 0..40u64 {
                let mul = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 * 7919 + k * 31 + j);
                writeln!(s, "  x = (x ^ (x >> {})) * {mul}ULL + {j};", j % 31 + 1)?;
            }
            writeln!(s, "  return x;\n}}")?;
        }
        writeln!(s, "uint64_t unit{i}(uint64_t x) {{\n  uint64_t s = 0;")?;
        for k in 0..120 {
            writeln!(s, "  s += f{i}_{k}(x + {k});")?;
        }
        writeln!(s, "  return s;\n}}")?;
        std::fs::write(dir.join(format!("u{i}.c")), s)?;
    }
    let mut main = String::from("#include <stdio.h>\n#include <stdint.h>\n");
    for i in 0..units {
        writeln!(main, "uint64_t unit{i}(uint64_t);")?;
    }
    main.push_str("int main(void) {\n  uint64_t s = 0;\n");
    for i in 0..units {
        writeln!(main, "  s ^= unit{i}({i});")?;
    }
    main.push_str("  printf(\"%016llx\\n\", (unsigned long long)s);\n  return 0;\n}\n");
    std::fs::write(dir.join("main.c"), main)?;
    let objs: Vec<String> = (0..units).map(|i| format!("u{i}.o")).collect();
    std::fs::write(
        dir.join("Makefile"),
        format!("CC ?= cc\nprog: main.o {}\n\tcc -o $@ $^\n%.o: %.c\n\t$(CC) -O2 -c -o $@ $<\nclean:\n\trm -f *.o prog\n", objs.join(" ")),
    )?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let nobody = nix::unistd::Uid::from_raw(NOBODY);
    let nogroup = nix::unistd::Gid::from_raw(NOBODY);
    for e in std::fs::read_dir(dir)? {
        nix::unistd::chown(&e?.path(), Some(nobody), Some(nogroup))?;
    }
    nix::unistd::chown(dir, Some(nobody), Some(nogroup))?;
    Ok(())
}

/// `make clean`, then the build `way` (distcc's: with distccd at `distcc`): its
/// wall-clock seconds.
fn build(lab: &Lab, dir: &Path, jobs: usize, way: Way, distcc: Option<&str>) -> Result<f64> {
    let d = dir.to_str().context("a path that is not UTF-8")?;
    run_in_n1(lab, false, &["make", "-s", "-C", d, "clean"])?;
    let j = format!("-j{jobs}");
    let start = Instant::now();
    match (way, distcc) {
        (Way::Distcc, Some(n2)) => {
            // One job here, one on n2 (each node has one CPU), as a distcc user writes it.
            let hosts = format!("DISTCC_HOSTS=localhost/1 {n2}/1");
            // Its state directory, which distcc does not make itself.
            let state = dir.with_file_name("distcc-state");
            std::fs::create_dir_all(&state)?;
            nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(NOBODY)), Some(nix::unistd::Gid::from_raw(NOBODY)))?;
            let state = format!("DISTCC_DIR={}", state.display());
            run_in_n1(lab, false, &["env", &hosts, &state, "DISTCC_FALLBACK=0", "make", "-s", "-C", d, &j, "CC=distcc cc"])?;
        }
        _ => {
            run_in_n1(lab, way != Way::Confined && way != Way::Distcc, &["make", "-s", "-C", d, &j])?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

fn run_prog(lab: &Lab, dir: &Path) -> Result<String> {
    let prog = dir.join("prog");
    run_in_n1(lab, false, &[prog.to_str().context("a path that is not UTF-8")?])
}

/// `argv` inside n1 as uid 65534 (under `herd run` when `herd`): its stdout.
fn run_in_n1(lab: &Lab, herd: bool, argv: &[&str]) -> Result<String> {
    let mut full: Vec<OsString> = vec![lab.setpriv.clone().into()];
    full.extend(nobody_args().map(OsString::from));
    if herd {
        full.extend([lab.herd.clone().into_os_string(), "run".into(), "--".into()]);
    }
    full.extend(argv.iter().map(OsString::from));
    let mut cmd = lab.node_cmd("n1", full)?;
    cmd.stdin(Stdio::null());
    let out = cmd.output().with_context(|| format!("running {argv:?} in n1"))?;
    if !out.status.success() {
        bail!("{argv:?} in n1 failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Moves n1's herdd has logged so far.
fn moves_in(log: &Path) -> u64 {
    std::fs::read_to_string(log).map_or(0, |t| t.lines().filter(|l| l.contains("herd_daemon::migrate: moved to")).count() as u64)
}
