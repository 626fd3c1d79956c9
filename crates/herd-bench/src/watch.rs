//! `herd-bench watch`: what watching the cluster costs herdd.
//!
//! The local cluster (2 nodes) with `--procs` migratable processes on n1: one job, a shell
//! that starts them with `&` (sleeps, locked at home, so that only watching costs). Then,
//! alternated, windows of `--window` seconds with no one watching and with a dashboard page
//! and `herd top` watching n1: the page is an SSE client of `/api/events` in n1's network
//! namespace (what a browser gets, counted on the wire), `herd top` its plain mode (the
//! same two requests a second as on a terminal). For each window: the CPU time herdd of n1
//! and of n2 used (from /proc, utime + stime), as a share of one CPU, and the bytes a
//! second sent to the page. Medians and spreads over `--reps` pairs of windows.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use herd_daemon::control::{Client, Request, Response};

use crate::migrate::{nobody_args, Lab};

pub struct Config {
    pub procs: usize,
    pub window: f64,
    pub reps: usize,
    pub keep: bool,
}

pub fn run(cfg: Config) -> Result<bool> {
    if !(1..=5000).contains(&cfg.procs) || !(2.0..=600.0).contains(&cfg.window) || cfg.reps == 0 {
        bail!("--procs 1..5000, --window 2..600 s, --reps at least 1");
    }
    if herd_kernel::task::euid() != 0 {
        bail!("herd-bench watch must run as root: it brings up a local cluster");
    }
    if cfg!(debug_assertions) {
        eprintln!("herd-bench: warning: this is a debug build; build with --release for numbers to compare");
    }
    let lab = Lab::up(cfg.keep)?;
    let result = measure(&lab, &cfg);
    if let Err(e) = &result {
        eprintln!("herd-bench watch: {e:#}\n{}", lab.logs());
    }
    let ok = result.is_ok();
    lab.finish(ok)?;
    result
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_secs(pid: i32) -> Result<f64> {
    let stat = procfs::process::Process::new(pid)?.stat()?;
    Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

fn migratable(lab: &Lab, node: &str) -> usize {
    match Client::connect(&lab.cluster.node_socket(node)).and_then(|mut c| c.call(&Request::Processes)) {
        Ok(Response::Processes(rows)) => rows.len(),
        _ => 0,
    }
}

/// A page of the dashboard: reads `/api/events` from n1's herdd (in n1's network
/// namespace) and counts the bytes, until stopped. A plain GET on a socket: the bytes on
/// the wire are what is measured.
struct Page {
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Result<String>>,
}

impl Page {
    fn open(netns: &std::path::Path) -> Result<Page> {
        let netns = std::fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
        let (stop, bytes) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (s, b) = (stop.clone(), bytes.clone());
        let thread = std::thread::spawn(move || -> Result<String> {
            nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).context("setns into n1's network namespace")?;
            let mut tcp = TcpStream::connect("127.0.0.1:4780").context("connecting to n1's herdd HTTP")?;
            tcp.set_read_timeout(Some(Duration::from_millis(200)))?;
            tcp.write_all(b"GET /api/events HTTP/1.0\r\nHost: 127.0.0.1:4780\r\nAccept: text/event-stream\r\n\r\n")?;
            let mut buf = vec![0u8; 1 << 20];
            let mut last = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match tcp.read(&mut buf) {
                    Ok(0) => bail!("herdd closed the event stream"),
                    Ok(n) => {
                        b.fetch_add(n as u64, Ordering::Relaxed);
                        last.extend_from_slice(&buf[..n]);
                        if last.len() > 8 << 20 {
                            last.drain(..last.len() - (4 << 20));
                        }
                    }
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            // The last whole view, to check what the page was shown (HTTP/1.0: no chunks
            // between the events).
            let text = String::from_utf8_lossy(&last).into_owned();
            let views = text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).filter(|v| serde_json::from_str::<serde_json::Value>(v).is_ok());
            Ok(views.last().unwrap_or_default().to_string())
        });
        Ok(Page { stop, bytes, thread })
    }

    fn close(self) -> Result<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| anyhow::anyhow!("the page's thread panicked"))?
    }
}

struct Window {
    n1: f64,
    n2: f64,
    page_bytes_per_sec: Option<f64>,
}

fn measure(lab: &Lab, cfg: &Config) -> Result<bool> {
    lab.print_header("herd-bench watch");
    let script = format!("i=0; while [ $i -lt {} ]; do sleep 3600 & i=$((i+1)); done; wait", cfg.procs);
    let mut argv: Vec<OsString> = vec![lab.setpriv.clone().into()];
    argv.extend(nobody_args().map(OsString::from));
    argv.extend([lab.herd.clone().into(), "run".into(), "--lock".into(), "--".into(), "/bin/sh".into(), "-c".into(), script.into()]);
    let mut job = lab.node_cmd("n1", argv)?.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let result = (|| -> Result<bool> {
        let start = Instant::now();
        let want = cfg.procs + 1;
        while migratable(lab, "n1") < want {
            if start.elapsed() > Duration::from_secs(300) {
                bail!("n1 lists {} migratable processes after 300 s, not {want}", migratable(lab, "n1"));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        println!("{want} migratable processes on n1 (one job: a shell and its {} sleeps, locked) after {:.1} s", cfg.procs, start.elapsed().as_secs_f64());
        let status = lab.cluster.status()?;
        let pid = |n: &str| status.iter().find(|s| s.name == n).and_then(|s| s.pid).with_context(|| format!("{n}'s herdd does not run"));
        let (p1, p2) = (pid("n1")?, pid("n2")?);
        let netns = std::path::PathBuf::from(format!("/proc/{p1}/ns/net"));
        let window = Duration::from_secs_f64(cfg.window);
        let mut idle = Vec::new();
        let mut watched = Vec::new();
        let mut shown = 0usize;
        for rep in 0..cfg.reps {
            // No one watching.
            let (a1, a2, t) = (cpu_secs(p1)?, cpu_secs(p2)?, Instant::now());
            std::thread::sleep(window);
            let secs = t.elapsed().as_secs_f64();
            idle.push(Window { n1: (cpu_secs(p1)? - a1) / secs, n2: (cpu_secs(p2)? - a2) / secs, page_bytes_per_sec: None });
            // A dashboard page and herd top.
            let page = Page::open(&netns)?;
            let mut top = lab
                .node_cmd("n1", vec![lab.herd.clone().into(), "top".into(), "--delay".into(), "1".into()])?
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            std::thread::sleep(Duration::from_secs(2));
            let (a1, a2, b, t) = (cpu_secs(p1)?, cpu_secs(p2)?, page.bytes.load(Ordering::Relaxed), Instant::now());
            std::thread::sleep(window);
            let secs = t.elapsed().as_secs_f64();
            let sent = page.bytes.load(Ordering::Relaxed) - b;
            watched.push(Window {
                n1: (cpu_secs(p1)? - a1) / secs,
                n2: (cpu_secs(p2)? - a2) / secs,
                page_bytes_per_sec: Some(sent as f64 / secs),
            });
            let _ = top.kill();
            let _ = top.wait();
            let last = page.close()?;
            let view: serde_json::Value = serde_json::from_str(&last).context("the page's last view is not JSON")?;
            shown = view["processes"]["rows"].as_array().map_or(0, Vec::len);
            eprintln!("rep {}: idle n1 {:.2} %, watched n1 {:.2} %", rep + 1, idle[rep].n1 * 100.0, watched[rep].n1 * 100.0);
        }
        println!("the page was shown {shown} processes a second; windows of {:.0} s, {} pairs, alternated", cfg.window, cfg.reps);
        println!();
        let pct = |v: Vec<f64>| -> String {
            let mut v: Vec<f64> = v.into_iter().map(|x| x * 100.0).collect();
            v.sort_by(f64::total_cmp);
            let med = v[v.len() / 2];
            format!("{med:.2} % ({:.2}-{:.2})", v[0], v[v.len() - 1])
        };
        println!("| herdd's CPU (share of one CPU) | n1 (serves the page and herd top) | n2 (asked by n1 for its processes) | to the page |");
        println!("|---|---|---|---|");
        println!("| no one watching | {} | {} | — |", pct(idle.iter().map(|w| w.n1).collect()), pct(idle.iter().map(|w| w.n2).collect()));
        let mut rates: Vec<f64> = watched.iter().filter_map(|w| w.page_bytes_per_sec).collect();
        rates.sort_by(f64::total_cmp);
        println!(
            "| a dashboard page and herd top | {} | {} | {:.0} KB/s |",
            pct(watched.iter().map(|w| w.n1).collect()),
            pct(watched.iter().map(|w| w.n2).collect()),
            rates[rates.len() / 2] / 1000.0
        );
        let mut n1: Vec<f64> = watched.iter().map(|w| w.n1).collect();
        n1.sort_by(f64::total_cmp);
        let median = n1[n1.len() / 2] * 100.0;
        println!();
        println!("goal: herdd under 2 % of one CPU while watched, with {} processes: {median:.2} %, {}", want, if median < 2.0 { "met" } else { "not met" });
        Ok(true)
    })();
    let _ = job.kill();
    let _ = job.wait();
    result
}
