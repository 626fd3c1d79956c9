//! Automatic balancing end to end, on a local cluster of two nodes with one CPU and a
//! memory limit each (real herdd daemons in namespaces of their own). Nothing here calls
//! `herd migrate`: every move is the balancer's.
//!
//! Scenarios, in sequence on one cluster (`HERD_BALANCE_ONLY=word,word` runs some):
//! - six CPU-bound jobs started on n1 end up split between the nodes, a locked seventh
//!   stays home, and every job prints what it prints when run alone;
//! - an I/O-bound job stays home while CPU-bound jobs around it are sent out, and one
//!   started on n2 is brought home;
//! - `herd ctl expel` on n2 sends its guests home; `herd ctl bring` on n1 calls its
//!   processes home and keeps them there (lstay);
//! - memory ushering: three processes grow in n1 past its memory limit together; they are
//!   moved before the kernel's OOM killer ends any, and each checks all its memory.
//!
//! The jobs run as nobody (herdd does not move root's processes by default). Missing
//! prerequisites (root, cgroups, a C compiler…): `SKIP: <reason>` and return.

#[path = "common/collector.rs"]
mod collector;
#[path = "common/nodes.rs"]
mod nodes;
#[path = "common/scenarios.rs"]
mod scenarios;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use collector::Collector;
use herd_lab::{LocalCluster, UpOptions};
use nodes::{build_c, c_compiler, cluster_dir, describe, herdd, prerequisites_or_skip, HERD, NOBODY};
use serde_json::Value;

const PROGRAMS: &[&str] = &["bal_spin", "bal_grow", "bal_io"];
/// Each node's memory limit (the ushering scenario fills n1 past it).
const NODE_MEM: u64 = 512 << 20;
/// bal_spin rounds for a job of a few seconds of CPU.
const SPIN: &str = "1800";
const JOB_LIMIT: Duration = Duration::from_secs(240);
/// The two bal_io jobs; each reads its own data file `<label>-data`, by which `herd ps`
/// rows are matched to them.
const IO_LABELS: &[&str] = &["io-home", "io-away"];
const IO_DATA_SUFFIX: &str = "-data";

type Scenario = scenarios::Scenario<Lab>;
const SCENARIOS: &[(&str, Scenario)] = &[
    ("cpu_jobs_split_between_the_nodes", cpu_jobs_split_between_the_nodes),
    ("io_bound_stays_home_or_comes_back", io_bound_stays_home_or_comes_back),
    ("expel_and_bring", expel_and_bring),
    ("memory_ushering_before_the_oom_killer", memory_ushering_before_the_oom_killer),
];

#[test]
fn balancing_scenarios() {
    let Some(lab) = Lab::new() else { return };
    let (ran, failed) = scenarios::run(SCENARIOS, "HERD_BALANCE_ONLY", &lab, Lab::quiet_down, |lab| println!("{}", lab.logs()));
    let dir = lab.finish(failed.is_empty());
    scenarios::report("balancing scenarios", ran, &failed, &dir);
}

/// Six CPU-bound jobs (and a locked one) on n1: the balancer splits them 3/3 or so.
fn cpu_jobs_split_between_the_nodes(lab: &Lab) {
    let expected = lab.direct_spin();
    let mut jobs: Vec<Job> = (0..6).map(|i| lab.start(&format!("spin{i}"), &["run", "--"], &[&lab.exe("bal_spin"), SPIN])).collect();
    let locked = lab.start("locked", &["run", "--lock", "--"], &[&lab.exe("bal_spin"), SPIN]);
    let mut watch = Watch::default();
    while jobs.iter_mut().any(|j| !j.done()) {
        watch.look(lab);
        thread::sleep(Duration::from_millis(500));
    }
    let mut locked = locked;
    for j in jobs.iter_mut().chain(std::iter::once(&mut locked)) {
        let (status, out) = j.finish();
        assert!(status.success(), "{}: {} ({out})", j.label, describe(&status));
        assert_eq!(out.trim(), expected, "{}: output differs from the uninterrupted run", j.label);
    }
    println!("most jobs on n2 at once: {}; moves per process: {:?}", watch.most_away, watch.nmigs);
    assert!(watch.most_away >= 2, "the balancer never had more than {} of 6 jobs on n2", watch.most_away);
    let locked_pid = watch.pid_of_cmd_marker.get("locked").copied();
    for (pid, n) in &watch.nmigs {
        assert!(*n <= 3, "process {pid} moved {n} times: ping-pong");
        if Some(*pid) == locked_pid {
            assert_eq!(*n, 0, "the locked process moved");
        }
    }
    assert!(watch.locked_seen, "herd ps never showed the locked process");
}

/// An I/O-bound job at home stays there among CPU-bound ones that are sent out; one
/// started on n2 is brought home.
fn io_bound_stays_home_or_comes_back(lab: &Lab) {
    // One data file per job (same content): the file name on each command line tells
    // the two bal_io processes apart in `herd ps` (see Watch::look).
    let data = |label: &str| {
        let file = lab.dir.join(format!("{label}{IO_DATA_SUFFIX}"));
        fs::write(&file, [b'x'; 4096]).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        file.to_string_lossy().into_owned()
    };
    let (home_file, away_file) = (data("io-home"), data("io-away"));
    let mut hogs: Vec<Job> = (0..3).map(|i| lab.start(&format!("hog{i}"), &["run", "--"], &[&lab.exe("bal_spin"), SPIN])).collect();
    let mut home_io = lab.start("io-home", &["run", "--"], &[&lab.exe("bal_io"), &home_file, "12"]);
    let mut away_io = lab.start("io-away", &["run", "--node", "n2", "--"], &[&lab.exe("bal_io"), &away_file, "12"]);
    let mut watch = Watch::default();
    let mut away_came_home = false;
    while !home_io.done() || !away_io.done() {
        watch.look(lab);
        if let Some(r) = watch.row_of("io-away") {
            away_came_home |= r["where"] == "n1" && r["nmigs"].as_u64().unwrap_or(0) >= 2;
        }
        thread::sleep(Duration::from_millis(500));
    }
    for j in [&mut home_io, &mut away_io] {
        let (status, out) = j.finish();
        assert!(status.success() && out.trim() == "io ok", "{}: {} ({out})", j.label, describe(&status));
    }
    for j in &mut hogs {
        let (status, _) = j.finish();
        assert!(status.success(), "{}: {}", j.label, describe(&status));
    }
    let io_home_pid = watch.pid_of_cmd_marker.get("io-home").copied().expect("herd ps showed the I/O job at home");
    assert_eq!(watch.nmigs.get(&io_home_pid).copied().unwrap_or(0), 0, "the I/O-bound job at home was sent away");
    assert!(away_came_home, "the I/O-bound job started on n2 was not brought home (seen: {:?})", watch.last_rows);
}

/// Guests leave an expelling node; `bring` calls a home's processes back and keeps them.
fn expel_and_bring(lab: &Lab) {
    // Four long jobs on n1: the balancer sends two of them to n2.
    let mut jobs: Vec<Job> = (0..4).map(|i| lab.start(&format!("long{i}"), &["run", "--"], &[&lab.exe("bal_spin"), "40000"])).collect();
    let rows = lab.wait_rows(|rows| rows.len() == 4 && rows.iter().filter(|r| r["where"] == "n2").count() == 2, "two of four jobs sent to n2");
    let guests: Vec<i64> = rows.iter().filter(|r| r["where"] == "n2").filter_map(|r| r["pid"].as_i64()).collect();
    let said = lab.herd("n2", &["ctl", "expel"]);
    println!("n2: herd ctl expel: {said}");
    lab.wait_rows(
        |rows| guests.iter().all(|p| rows.iter().any(|r| r["pid"].as_i64() == Some(*p) && r["where"] == "n1" && r["state"] == "home")),
        "both expelled guests home",
    );
    assert!(lab.node_status("n2")["blocked"].as_bool().unwrap_or(false), "expel did not block n2");
    // Blocked, n2 gets nothing back while n1 runs all four.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        assert!(lab.ps().iter().all(|r| r["where"] == "n1"), "a process went to n2 although it is blocked");
        thread::sleep(Duration::from_millis(500));
    }
    lab.herd("n2", &["ctl", "noblock"]);
    lab.wait_rows(|rows| rows.iter().filter(|r| r["where"] == "n2").count() == 2, "two jobs on n2 again after noblock");
    let said = lab.herd("n1", &["ctl", "bring"]);
    println!("n1: herd ctl bring: {said}");
    lab.wait_rows(|rows| rows.iter().all(|r| r["where"] == "n1" && r["state"] == "home"), "every process home after bring");
    assert!(lab.node_status("n1")["lstay"].as_bool().unwrap_or(false), "bring did not set lstay on n1");
    // lstay: they stay home although n2 is idle.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(6) {
        assert!(lab.ps().iter().all(|r| r["where"] == "n1"), "a process left n1 after bring (lstay)");
        thread::sleep(Duration::from_millis(500));
    }
    lab.herd("n1", &["ctl", "nolstay"]);
    for j in &mut jobs {
        j.kill_job(lab);
    }
}

/// Three processes grow together past n1's memory limit: ushering moves them in time.
fn memory_ushering_before_the_oom_killer(lab: &Lab) {
    if !lab.mem_limited {
        println!("SKIP: memory_ushering_before_the_oom_killer: the nodes have no memory limit (no memory cgroup)");
        return;
    }
    // 3 × 192 MiB > 512 MiB: without ushering the OOM killer must end one.
    let grow = |label: &str| lab.start(label, &["run", "--"], &[&lab.exe("bal_grow"), "192", "4", "500", "3000"]);
    let mut jobs = vec![grow("grow-a"), grow("grow-b"), grow("grow-c")];
    let mut watch = Watch::default();
    while jobs.iter_mut().any(|j| !j.done()) {
        watch.look(lab);
        thread::sleep(Duration::from_millis(500));
    }
    for j in &mut jobs {
        let (status, out) = j.finish();
        assert!(status.success(), "{}: {} — OOM-killed? ({out})", j.label, describe(&status));
        assert!(out.starts_with("grow 192 MiB ok "), "{}: {out}", j.label);
    }
    let moved = watch.nmigs.values().filter(|n| **n > 0).count();
    assert!(moved >= 1, "no growing process was moved (moves: {:?})", watch.nmigs);
}

// ---------------------------------------------------------------------------

/// What `herd ps` on n1 showed over a scenario.
#[derive(Default)]
struct Watch {
    most_away: usize,
    nmigs: HashMap<i64, u64>,
    pid_of_cmd_marker: HashMap<String, i64>,
    locked_seen: bool,
    last_rows: Vec<Value>,
}

impl Watch {
    fn look(&mut self, lab: &Lab) {
        let rows = lab.ps();
        self.most_away = self.most_away.max(rows.iter().filter(|r| r["where"] != "n1").count());
        for r in &rows {
            let pid = r["pid"].as_i64().unwrap_or(0);
            let n = self.nmigs.entry(pid).or_default();
            *n = (*n).max(r["nmigs"].as_u64().unwrap_or(0));
            self.locked_seen |= r["lock"].as_bool().unwrap_or(false);
            if r["lock"].as_bool().unwrap_or(false) {
                self.pid_of_cmd_marker.insert("locked".into(), pid);
            }
            // The bal_io jobs are named by their data file (`<label>-data`) on the command line.
            let cmd = r["cmd"].as_str().unwrap_or_default();
            for label in IO_LABELS {
                if cmd.contains(&format!("/{label}{IO_DATA_SUFFIX}")) {
                    self.pid_of_cmd_marker.insert((*label).into(), pid);
                }
            }
        }
        self.last_rows = rows;
    }

    fn row_of(&self, marker: &str) -> Option<&Value> {
        let pid = self.pid_of_cmd_marker.get(marker)?;
        self.last_rows.iter().find(|r| r["pid"].as_i64() == Some(*pid))
    }
}

struct Lab {
    cluster: LocalCluster,
    dir: PathBuf,
    bin: PathBuf,
    setpriv: PathBuf,
    mem_limited: bool,
}

struct Job {
    label: String,
    child: Child,
    out: Collector,
    err: Collector,
    status: Option<ExitStatus>,
    started: Instant,
}

impl Job {
    fn done(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
            assert!(self.status.is_some() || self.started.elapsed() < JOB_LIMIT, "{} still runs after {JOB_LIMIT:?}", self.label);
        }
        self.status.is_some()
    }

    fn finish(&mut self) -> (ExitStatus, String) {
        while !self.done() {
            thread::sleep(Duration::from_millis(100));
        }
        let out = String::from_utf8_lossy(&self.out.collect(&self.label, Duration::from_secs(10))).into_owned();
        let err = String::from_utf8_lossy(&self.err.collect(&self.label, Duration::from_secs(10))).into_owned();
        if !self.status.expect("status").success() {
            println!("{} stderr: {err}", self.label);
        }
        (self.status.expect("status"), out)
    }

    /// Ends the scenario's jobs through their home pids in n1, then waits for this one.
    fn kill_job(&mut self, lab: &Lab) {
        lab.kill_all();
        let _ = self.finish();
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Lab {
    fn new() -> Option<Lab> {
        let setpriv = prerequisites_or_skip()?;
        let Some(cc) = c_compiler() else {
            println!("SKIP: no C compiler (gcc or cc) for the test programs");
            return None;
        };
        let (dir, bin) = cluster_dir("bal");
        for name in PROGRAMS {
            build_c(cc, &bin, name);
        }
        let mut opts = UpOptions::new(2);
        opts.dir = Some(dir.clone());
        opts.herd_exe = Some(HERD.into());
        opts.daemon = Some(herdd());
        opts.timeout = Duration::from_secs(60);
        opts.cpus_per_node = Some(1);
        opts.mem_per_node = Some(NODE_MEM);
        let (cluster, mem_limited) = match LocalCluster::up(&opts) {
            Ok(c) => (c, true),
            Err(e) => {
                // No cgroups for memory or cpusets here: the CPU scenarios still make sense
                // (each herdd counts the runnable processes of its own pid namespace).
                println!("note: cluster with cpusets and memory limits failed ({e}); trying without");
                opts.cpus_per_node = None;
                opts.mem_per_node = None;
                match LocalCluster::up(&opts) {
                    Ok(c) => (c, false),
                    Err(e) => {
                        println!("SKIP: herd cluster up failed: {e}");
                        return None;
                    }
                }
            }
        };
        let lab = Lab { cluster, dir, bin, setpriv, mem_limited };
        lab.wait_rows_nodes();
        Some(lab)
    }

    fn finish(self, clean: bool) -> PathBuf {
        let Lab { cluster, dir, .. } = self;
        if let Err(e) = cluster.down() {
            eprintln!("taking the cluster down: {e}");
        }
        if clean {
            let _ = fs::remove_dir_all(&dir);
        }
        dir
    }

    fn exe(&self, name: &str) -> String {
        self.bin.join(name).to_string_lossy().into_owned()
    }

    /// The uninterrupted result of one spin job, run on the host.
    fn direct_spin(&self) -> String {
        let out = Command::new(self.exe("bal_spin")).arg(SPIN).output().expect("bal_spin");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `herd ARGS… PROGRAM…` in n1 as nobody.
    fn start(&self, label: &str, herd_args: &[&str], program: &[&str]) -> Job {
        let mut argv: Vec<OsString> =
            vec![self.setpriv.clone().into(), format!("--reuid={NOBODY}").into(), format!("--regid={NOBODY}").into(), "--clear-groups".into(), "--".into(), HERD.into()];
        argv.extend(herd_args.iter().map(OsString::from));
        argv.extend(program.iter().map(OsString::from));
        let mut cmd = self.cluster.node_exec("n1", &argv).expect("node_exec");
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("HERD_SOCKET", self.cluster.node_socket("n1"));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting a job in n1");
        let out = Collector::start(child.stdout.take().unwrap());
        let err = Collector::start(child.stderr.take().unwrap());
        Job { label: label.into(), child, out, err, status: None, started: Instant::now() }
    }

    fn exec_in_n1(&self, argv: &[&str]) {
        let mut cmd = self.cluster.node_exec("n1", argv).expect("node_exec");
        let _ = cmd.stdin(Stdio::null()).stdout(Stdio::null()).status();
    }

    /// `herd --node NODE ARGS` from the host; its stdout (it must succeed).
    fn herd(&self, node: &str, args: &[&str]) -> String {
        let out = Command::new(HERD)
            .arg("--cluster")
            .arg(&self.dir)
            .args(["--node", node])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running herd");
        assert!(out.status.success(), "herd --node {node} {args:?}: {}: {}", describe(&out.status), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ps(&self) -> Vec<Value> {
        serde_json::from_str(&self.herd("n1", &["ps", "--json"])).expect("herd ps --json")
    }

    /// The node's flags, as it publishes them (asked of the node itself).
    fn node_status(&self, node: &str) -> Value {
        let rows: Vec<Value> = serde_json::from_str(&self.herd(node, &["nodes", "--json"])).expect("herd nodes --json");
        let row = rows.into_iter().find(|r| r["is_self"] == true).unwrap_or_else(|| panic!("{node} does not list itself"));
        row["status"].clone()
    }

    /// Polls `herd ps` on n1 (up to 30 s) until `ok`; returns those rows.
    fn wait_rows(&self, ok: impl Fn(&[Value]) -> bool, what: &str) -> Vec<Value> {
        let t = Instant::now();
        loop {
            let rows = self.ps();
            if ok(&rows) {
                return rows;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "waited 30 s for {what}; herd ps: {rows:?}");
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Until each node lists the other up.
    fn wait_rows_nodes(&self) {
        let t = Instant::now();
        for node in ["n1", "n2"] {
            loop {
                let rows: Vec<Value> = serde_json::from_str(&self.herd(node, &["nodes", "--json"])).expect("herd nodes --json");
                if rows.iter().filter(|r| r["state"] == "up").count() == 2 && rows.iter().all(|r| r["mem_total"].as_u64().unwrap_or(0) > 0) {
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(60), "the nodes did not see each other in 60 s: {rows:?}");
                thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Before each scenario: no process of the last one left, flags cleared.
    fn quiet_down(&self) {
        for node in ["n1", "n2"] {
            for op in ["noblock", "nolstay", "nostay", "noquiet"] {
                self.herd(node, &["ctl", op]);
            }
        }
        // What a failed scenario left running would load the nodes under the next one.
        self.kill_all();
        let t = Instant::now();
        while !self.ps().is_empty() {
            assert!(t.elapsed() < Duration::from_secs(20), "processes of an earlier scenario are still there: {:?}", self.ps());
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Ends every process of the tests (nobody's) that n1 is home to, wherever it runs:
    /// SIGKILL to its home pid reaches it through its deputy.
    fn kill_all(&self) {
        for r in self.ps() {
            if r["uid"].as_u64() == Some(u64::from(NOBODY)) {
                let pid = r["pid"].as_i64().unwrap_or(0).to_string();
                self.exec_in_n1(&["kill", "-KILL", &pid]);
            }
        }
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for node in ["n1", "n2"] {
            let log = fs::read_to_string(self.dir.join(node).join("herdd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            s.push_str(&format!("--- {node} herdd.log (end)\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
        s
    }
}
