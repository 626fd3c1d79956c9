//! The multi-node lab the migration and families tests share: a local cluster of three
//! nodes (real herdd daemons in namespaces of their own), programs started in n1 directly
//! or under `herd run`, `herd` commands run from the host, and the checks on what they
//! printed. See migrate.rs for the method.
#![allow(dead_code)] // each test file uses its own part

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use herd_lab::{LocalCluster, UpOptions};
use serde_json::Value;

use crate::collector::Collector;
use crate::gobuild;
use crate::nodes::{build_c, c_compiler, cluster_dir, describe, herdd, nobody_can_run, prerequisites_or_skip, python_for_nobody, HERD, NOBODY, PROGRAMS};

// ---------------------------------------------------------------------------
// Checks on outputs
// ---------------------------------------------------------------------------

pub const NODES: [&str; 3] = ["n1", "n2", "n3"];

/// How long a program may take to print a line the test waits for.
pub const EVENT: Duration = Duration::from_secs(30);
/// How long one `herd migrate` (or `herd ps`) may take.
pub const MIGRATE_LIMIT: Duration = Duration::from_secs(120);
/// How long a program may take to end once it has had all its input.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);
/// After a move, how long `herd ps` and /proc may take to agree with it.
pub const SETTLE: Duration = Duration::from_secs(5);
/// How long the pieces of a process that ended or left may linger on a node.
pub const GONE: Duration = Duration::from_secs(2);
pub const POLL: Duration = Duration::from_millis(10);


/// A program run to its end.
pub struct Finished {
    pub label: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub logs: String,
}

impl Finished {
    pub fn describe(&self) -> String {
        format!(
            "{}: {}\n--- stdout\n{}--- stderr\n{}--- end",
            self.label,
            describe(&self.status),
            tail(&self.stdout, 40),
            tail(&self.stderr, 40)
        )
    }
}

pub fn same(s: &str) -> String {
    s.to_string()
}

/// Same stdout (after `normalize`) and the same exit: code, or signal.
pub fn same_result(direct: &Finished, moved: &Finished, normalize: fn(&str) -> String) {
    let (a, b) = (normalize(&direct.stdout), normalize(&moved.stdout));
    if a != b {
        let first = a.lines().zip(b.lines()).position(|(x, y)| x != y).unwrap_or(a.lines().count().min(b.lines().count()));
        panic!(
            "{}: stdout differs from the uninterrupted run's, first at line {} ({} lines uninterrupted, {} migrated)\n\
             === uninterrupted, around there\n{}=== migrated, around there\n{}=== migrated: {}; stderr\n{}=== end\n{}",
            moved.label,
            first + 1,
            a.lines().count(),
            b.lines().count(),
            excerpt(&a, first),
            excerpt(&b, first),
            describe(&moved.status),
            tail(&moved.stderr, 40),
            moved.logs
        );
    }
    let how = |s: &ExitStatus| (s.code(), s.signal());
    if how(&direct.status) != how(&moved.status) {
        panic!(
            "the migrated run ended differently: {} (uninterrupted: {})\n=== migrated\n{}\n{}",
            describe(&moved.status),
            describe(&direct.status),
            moved.describe(),
            moved.logs
        );
    }
}

/// Lines `line`-5 .. `line`+10 of `text`, numbered from 1.
pub fn excerpt(text: &str, line: usize) -> String {
    text.lines().enumerate().skip(line.saturating_sub(5)).take(15).map(|(i, l)| format!("{:>5}| {l}\n", i + 1)).collect()
}

/// The last `n` lines of `text`, with a note of how many came before.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = if skip > 0 { format!("({skip} earlier lines)\n") } else { String::new() };
    out.extend(lines[skip..].iter().copied());
    if !out.is_empty() && !out.ends_with('\n') {
        out.push_str("(no newline yet)\n");
    }
    out
}

pub fn expect_status(f: &Finished, code: Option<i32>, signal: Option<i32>) {
    assert!(
        f.status.code() == code && f.status.signal() == signal,
        "expected {}, got:\n{}\n{}",
        match (code, signal) {
            (Some(c), _) => format!("exit code {c}"),
            (_, Some(s)) => format!("death by signal {s}"),
            _ => "?".into(),
        },
        f.describe(),
        f.logs
    );
}


// ---------------------------------------------------------------------------
// The lab: cluster, programs, herd commands
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
pub enum How<'a> {
    /// The program itself, in n1.
    Direct,
    /// `herd run -- program`, in n1.
    Herd,
    /// `herd run --node NODE -- program`, in n1.
    HerdOn(&'a str),
    /// `herd run --lock -- program`, in n1: only the test moves it (and its children).
    HerdLocked,
    /// `herd run ARGS -- program`, in n1.
    HerdWith(&'a [&'a str]),
}

/// A point where a program waits for a trigger: the line it prints there (whole, or how
/// it starts). The test answers it with a line "go".
#[derive(Clone, Copy)]
pub enum Gate<'a> {
    Line(&'a str),
    Prefix(&'a str),
}

/// A command line to run, and how to find its processes in a node's /proc.
#[derive(Clone)]
pub struct Program {
    pub argv: Vec<OsString>,
    /// An argument that only this program's processes have: its path.
    pub marker: String,
    /// Its name in /proc/PID/comm (None for a script: python3's name is not its own).
    pub comm: Option<String>,
}

impl Program {
    pub fn with_args<S: AsRef<str>>(&self, args: &[S]) -> Program {
        let mut p = self.clone();
        p.argv.extend(args.iter().map(|a| OsString::from(a.as_ref())));
        p
    }
}

/// What a test file's lab is made of.
pub struct Spec {
    /// The cluster directory's prefix (target/tmp/NAME-*).
    pub name: &'static str,
    /// C programs of tests/programs (`<name>.c`, with mig_common.h), built into DIR/bin.
    pub c_programs: &'static [&'static str],
    /// Python programs of tests/programs, copied (mode 0644: run by python3).
    pub py_programs: &'static [&'static str],
    /// Scripts of tests/programs, copied executable.
    pub scripts: &'static [&'static str],
    /// n1 takes no part in automatic balancing (every move is the test's).
    pub quiet_n1: bool,
    /// Each node its own cpuset of this many CPUs.
    pub cpus_per_node: Option<u32>,
    /// Every node offers DIR/shared (one directory on the machine's file system: verified
    /// shared) and [`LOOKALIKE`] (each node's own, under its private /tmp: never shared)
    /// for direct file access.
    pub shared: bool,
}

/// A directory every node of a lab with [`Spec::shared`] offers, each its own.
pub const LOOKALIKE: &str = "/tmp/herd-lookalike";

pub struct Lab {
    pub cluster: LocalCluster,
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub python: PathBuf,
    pub setpriv: PathBuf,
}

impl Lab {
    /// Builds the programs into DIR/bin and brings a three-node cluster up in DIR; None
    /// (after a SKIP line) when something it needs is missing.
    pub fn new(spec: &Spec) -> Option<Lab> {
        let setpriv = prerequisites_or_skip()?;
        let (dir, bin) = cluster_dir(spec.name);
        let skip = |reason: String| {
            println!("SKIP: {reason}");
            let _ = fs::remove_dir_all(&dir);
        };
        let cc = match c_compiler() {
            Some(cc) => cc,
            None => {
                skip("no C compiler (gcc or cc) for the test programs".into());
                return None;
            }
        };
        for name in spec.c_programs {
            build_c(cc, &bin, name);
        }
        for name in spec.py_programs.iter().chain(spec.scripts) {
            let to = bin.join(name);
            fs::copy(Path::new(PROGRAMS).join(name), &to).unwrap_or_else(|e| panic!("copying {name}: {e}"));
            fs::set_permissions(&to, fs::Permissions::from_mode(0o644)).unwrap();
        }
        for name in spec.scripts {
            fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut needed: Vec<PathBuf> = spec.c_programs.iter().chain(spec.scripts).map(|n| bin.join(n)).collect();
        needed.push(PathBuf::from(HERD));
        let readable = spec.py_programs.first().or(spec.scripts.first()).map(|n| bin.join(n)).unwrap_or_else(|| PathBuf::from(HERD));
        if let Err(reason) = nobody_can_run(&setpriv, &needed, &readable) {
            skip(reason);
            return None;
        }
        let Some(python) = python_for_nobody(&setpriv) else {
            skip("no python3 that uid 65534 may run (tried the one on PATH, /usr/bin/python3, /usr/local/bin/python3)".into());
            return None;
        };

        let mut opts = UpOptions::new(3);
        opts.cpus_per_node = spec.cpus_per_node;
        if spec.shared {
            opts.shared = vec![dir.join("shared"), LOOKALIKE.into()];
        }
        opts.dir = Some(dir.clone());
        opts.herd_exe = Some(HERD.into());
        opts.daemon = Some(herdd());
        opts.timeout = Duration::from_secs(60);
        let cluster = match LocalCluster::up(&opts) {
            Ok(c) => c,
            Err(e) if e.to_string().contains("user namespaces are disabled") => {
                skip(e.to_string());
                return None;
            }
            Err(e) => panic!("herd cluster up failed: {e}"),
        };
        let lab = Lab { cluster, dir, bin, python, setpriv };
        // No core files from what dies by a signal here (SIGSEGV is reproduced by herd run and
        // by node_exec's waiter, whose cwd is a directory of the host).
        let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).expect("getrlimit");
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, hard).expect("setrlimit RLIMIT_CORE");
        // Every node must know every other before anything moves.
        for viewer in NODES {
            lab.wait_all_up(viewer, Duration::from_secs(60));
        }
        if spec.quiet_n1 {
            // The scenarios move processes by hand: n1, the home of every process here,
            // takes no part in automatic balancing (balance.rs tests that).
            let mut c = herd_daemon::control::Client::connect(&lab.cluster.node_socket("n1")).expect("n1's control socket");
            c.call(&herd_daemon::control::Request::Ctl { op: herd_daemon::control::CtlOp::Quiet }).expect("herd ctl quiet on n1");
        }
        Some(lab)
    }

    /// Takes the cluster down; removes its directory when `clean`. Returns the directory.
    pub fn finish(self, clean: bool) -> PathBuf {
        let Lab { cluster, dir, .. } = self;
        if let Err(e) = cluster.down() {
            eprintln!("taking the cluster at {} down: {e}", dir.display());
        }
        if clean {
            let _ = fs::remove_dir_all(&dir);
        }
        dir
    }

    pub fn program(&self, name: &str) -> Program {
        let path = self.bin.join(name);
        Program {
            argv: vec![path.clone().into_os_string()],
            marker: path.to_string_lossy().into_owned(),
            comm: Some(name.chars().take(15).collect()),
        }
    }

    /// A Go program of tests/programs (`<name>.go`), built into DIR/bin with the `go` on
    /// PATH; Err (why not) without a Go toolchain.
    pub fn go_program(&self, name: &str) -> Result<Program, String> {
        let version = gobuild::go_version().ok_or("no Go toolchain (`go`, Debian's golang-go)")?;
        let exe = self.bin.join(name);
        if !exe.exists() {
            gobuild::build_go(&Path::new(PROGRAMS).join(format!("{name}.go")), &exe, &self.dir).map_err(|e| format!("{version}: {e}"))?;
            fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        }
        Ok(self.program(name))
    }

    /// A Java program of tests/programs (`<class>.java`), compiled into DIR/bin/java with
    /// the `javac` on PATH and run by `java -XX:-UsePerfData` (no shared writable perf-data
    /// mapping); Err (why not) without a JDK.
    pub fn java_program(&self, class: &str) -> Result<Program, String> {
        let classes = self.bin.join("java");
        if !classes.join(format!("{class}.class")).exists() {
            fs::create_dir_all(&classes).map_err(|e| e.to_string())?;
            fs::set_permissions(&classes, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
            let out = Command::new("javac")
                .arg("-d")
                .arg(&classes)
                .arg(Path::new(PROGRAMS).join(format!("{class}.java")))
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("no JDK (`javac`): {e}"))?;
            if !out.status.success() {
                return Err(format!("javac {class}.java: {}\n{}", describe(&out.status), String::from_utf8_lossy(&out.stderr)));
            }
        }
        let marker = classes.to_string_lossy().into_owned();
        Ok(Program {
            argv: ["java", "-XX:-UsePerfData", "-cp", &marker, class].iter().map(OsString::from).collect(),
            marker,
            comm: Some("java".into()),
        })
    }

    /// A JavaScript program of tests/programs run by the `node` on PATH (copied into
    /// DIR/bin, mode 0644); Err (why not) without node.
    pub fn node_program(&self, name: &str) -> Result<Program, String> {
        let node = crate::nodes::find_in_path("node").ok_or("no node (Debian's nodejs)")?;
        let path = self.bin.join(name);
        if !path.exists() {
            fs::copy(Path::new(PROGRAMS).join(name), &path).map_err(|e| format!("copying {name}: {e}"))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).map_err(|e| e.to_string())?;
        }
        Ok(Program { argv: vec![node.into_os_string(), path.clone().into_os_string()], marker: path.to_string_lossy().into_owned(), comm: None })
    }

    /// A script of tests/programs run by bash (its processes have the script's path
    /// as an argument).
    pub fn script(&self, name: &str) -> Program {
        let path = self.bin.join(name);
        Program { argv: vec!["/bin/bash".into(), path.clone().into_os_string()], marker: path.to_string_lossy().into_owned(), comm: None }
    }

    pub fn python_program(&self, name: &str) -> Program {
        let path = self.bin.join(name);
        Program {
            argv: vec![self.python.clone().into_os_string(), "-I".into(), "-S".into(), path.clone().into_os_string()],
            marker: path.to_string_lossy().into_owned(),
            comm: None,
        }
    }

    /// A clean environment for what runs inside a node, `herd` there talking to its herdd.
    pub fn node_env(&self, cmd: &mut Command, node: &str) {
        cmd.env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/")
            .env("LC_ALL", "C")
            .env("HERD_SOCKET", self.cluster.node_socket(node));
        for (k, v) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("RUST_")) {
                cmd.env(k, v);
            }
        }
    }

    /// Runs `prog` directly in n1 (the uninterrupted run), through its gates, to its end.
    pub fn run_direct(&self, label: &str, prog: &Program, gates: &[Gate]) -> Finished {
        let mut d = self.start(label, How::Direct, prog);
        d.through(self, gates);
        d.finish(self)
    }

    /// Starts `prog` in n1 as nobody, directly or under `herd run`; stdin, stdout and
    /// stderr are pipes of the test.
    pub fn start(&self, label: &str, how: How, prog: &Program) -> Proc {
        let mut argv: Vec<OsString> = vec![
            self.setpriv.clone().into_os_string(),
            format!("--reuid={NOBODY}").into(),
            format!("--regid={NOBODY}").into(),
            "--clear-groups".into(),
            "--".into(),
        ];
        match how {
            How::Direct => {}
            How::Herd => argv.extend([HERD.into(), "run".into(), "--".into()]),
            How::HerdOn(node) => argv.extend([HERD.into(), "run".into(), "--node".into(), node.into(), "--".into()]),
            How::HerdLocked => argv.extend([HERD.into(), "run".into(), "--lock".into(), "--".into()]),
            How::HerdWith(args) => {
                argv.extend([HERD.into(), "run".into()]);
                argv.extend(args.iter().map(OsString::from));
                argv.push("--".into());
            }
        }
        argv.extend(prog.argv.iter().cloned());
        let mut cmd = self.cluster.node_exec("n1", &argv).unwrap_or_else(|e| panic!("{label}: node_exec in n1: {e}"));
        self.node_env(&mut cmd, "n1");
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{label}: starting {argv:?} in n1: {e}"));
        let stdin = child.stdin.take();
        let out = Collector::start(child.stdout.take().unwrap());
        let err = Collector::start(child.stderr.take().unwrap());
        println!("started {label}: {argv:?}");
        Proc {
            label: label.to_string(),
            cluster_dir: self.dir.clone(),
            child,
            stdin,
            out,
            err,
            status: None,
            pid: None,
            prog: prog.clone(),
        }
    }

    /// The end of every node's herdd.log.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for node in NODES {
            let path = self.dir.join(node).join("herdd.log");
            let text = fs::read_to_string(&path).unwrap_or_else(|e| format!("({e})"));
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            s.push_str(&format!("--- end of {}\n{tail}\n", path.display()));
        }
        s
    }

    pub fn herd_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(HERD);
        cmd.arg("--cluster").arg(&self.dir).args(["--node", "n1"]).args(args);
        cmd
    }

    /// Sets failpoint `name` of `node`'s herdd to `actions` (`off` clears it); herdd's
    /// refusal otherwise (a herdd built without failpoints says so).
    #[allow(dead_code)] // not every test file injects faults
    pub fn failpoint(&self, node: &str, name: &str, actions: &str) -> Result<(), String> {
        use herd_daemon::control::{Client, ClientError, Request};
        let request = Request::Failpoint { name: name.into(), actions: actions.into() };
        match Client::connect(&self.cluster.node_socket(node)).and_then(|mut c| c.call(&request)) {
            Ok(_) => Ok(()),
            Err(ClientError::Daemon(e)) => Err(e.message),
            Err(e) => panic!("failpoint {name} of {node}: {e}"),
        }
    }

    pub fn migrate(&self, pid: i32, target: &str) -> Output {
        self.migrate_with(pid, target, &[])
    }

    /// `herd migrate [FLAGS] PID TARGET`.
    pub fn migrate_with(&self, pid: i32, target: &str, flags: &[&str]) -> Output {
        let pid = pid.to_string();
        let args: Vec<&str> = ["migrate"].into_iter().chain(flags.iter().copied()).chain([pid.as_str(), target]).collect();
        run_bounded(self.herd_cmd(&args), &format!("herd migrate {flags:?} {pid} {target}"), MIGRATE_LIMIT)
    }

    /// `herd migrate PID TARGET` must succeed.
    pub fn expect_migrate(&self, p: &Proc, pid: i32, target: &str) {
        self.expect_migrate_with(p, pid, target, &[]);
    }

    /// `herd migrate [FLAGS] PID TARGET` must succeed; returns what it printed.
    pub fn expect_migrate_with(&self, p: &Proc, pid: i32, target: &str, flags: &[&str]) -> String {
        let start = Instant::now();
        let out = self.migrate_with(pid, target, flags);
        if !out.status.success() {
            p.fail(
                self,
                &format!(
                    "herd migrate {pid} {target} failed ({}): stdout {:?}, stderr {:?}",
                    describe(&out.status),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("{}: herd migrate {flags:?} {pid} {target}: {:.1?} {said}", p.label, start.elapsed());
        said
    }

    pub fn ps(&self) -> Vec<Value> {
        let out = run_bounded(self.herd_cmd(&["ps", "--json"]), "herd ps --json", MIGRATE_LIMIT);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "herd --node n1 ps --json: {}: {}", describe(&out.status), String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("herd ps --json is not a JSON array ({e}): {text}"))
    }

    /// Moves `pid` (of `p`) at lines it prints: for each step, once a line starts with
    /// `prefix`, `herd migrate` to `target`; then it must run on `node`, moved `nmigs`
    /// times in all.
    /// The home pid of `p`, a program that does not print it: the row of `herd ps` whose
    /// command has `marker` (within 10 s; it is also set in `p`).
    pub fn pid_listed(&self, p: &mut Proc, marker: &str) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            let row = self.ps().into_iter().find(|r| r["cmd"].as_str().is_some_and(|c| c.contains(marker)));
            if let Some(pid) = row.and_then(|r| r["pid"].as_i64()) {
                break pid as i32;
            }
            if Instant::now() > deadline {
                p.fail(self, "herd ps does not list it");
            }
            thread::sleep(Duration::from_millis(20));
        };
        p.pid = Some(pid);
        pid
    }

    /// How many threads process `pid` of n1 has now (0 when it is gone).
    pub fn threads_in_n1(&self, pid: i32) -> usize {
        let out = self.node_sh("n1", &format!("ls /proc/{pid}/task | wc -l"));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    }

    pub fn moves_at_lines(&self, p: &mut Proc, pid: i32, steps: &[(&str, &str, &str, u64)]) {
        for &(prefix, target, node, nmigs) in steps {
            p.wait_for_prefix(self, prefix);
            self.expect_migrate(p, pid, target);
            self.expect_where(p, pid, node, Some(nmigs));
        }
    }

    /// Runs `prog` under `herd run`, moves it to n2 when it says "ready" and lets it go on
    /// there (a line "go") until it says `until`; returns it, running there, and its pid.
    pub fn on_n2_until(&self, label: &str, prog: &Program, until: &str) -> (Proc, i32) {
        let mut p = self.start(label, How::Herd, prog);
        let pid = p.home_pid(self);
        p.wait_for_line(self, "ready");
        self.expect_migrate(&p, pid, "n2");
        self.expect_where(&p, pid, "n2", Some(1));
        p.send(self, "go\n");
        p.wait_for_line(self, until);
        (p, pid)
    }

    /// Polls `herd ps` until the row of `pid` says it is on `node` (state "home" on n1,
    /// "remote" elsewhere) and, when given, has moved `nmigs` times.
    pub fn expect_where(&self, p: &Proc, pid: i32, node: &str, nmigs: Option<u64>) -> Value {
        let state = if node == "n1" { "home" } else { "remote" };
        let start = Instant::now();
        loop {
            let rows = self.ps();
            let row = rows.iter().find(|r| r["pid"].as_i64() == Some(i64::from(pid))).cloned();
            if let Some(r) = &row {
                if r["where"] == node && r["state"] == state && nmigs.is_none_or(|n| r["nmigs"].as_u64() == Some(n)) {
                    return r.clone();
                }
            }
            if start.elapsed() > SETTLE {
                let want = match nmigs {
                    Some(n) => format!("where={node} state={state} nmigs={n}"),
                    None => format!("where={node} state={state}"),
                };
                let got = match row {
                    Some(r) => format!("its row is {r}"),
                    None => format!("it is not listed; herd ps lists {}", Value::Array(rows)),
                };
                p.fail(self, &format!("herd ps does not show pid {pid} with {want} within {SETTLE:?}: {got}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -s SIG PID` as root inside n1 (PID in n1's pid namespace).
    pub fn kill_in_n1(&self, pid: i32, sig: &str) {
        let out = self.node_sh("n1", &format!("kill -s {sig} {pid}"));
        assert!(out.status.success(), "kill -s {sig} {pid} in n1: {} {}", describe(&out.status), String::from_utf8_lossy(&out.stderr));
    }

    /// `sh -c SCRIPT` as root inside `node`.
    pub fn node_sh(&self, node: &str, script: &str) -> Output {
        let mut cmd = self.cluster.node_exec(node, &["sh", "-c", script]).unwrap_or_else(|e| panic!("node_exec in {node}: {e}"));
        self.node_env(&mut cmd, node);
        run_bounded(cmd, &format!("sh -c {script:?} in {node}"), EVENT)
    }

    pub fn node_sh_ok(&self, node: &str, script: &str) {
        let out = self.node_sh(node, script);
        assert!(out.status.success(), "sh -c {script:?} in {node}: {}: {}", describe(&out.status), String::from_utf8_lossy(&out.stderr));
    }

    /// Waits until `pid` (in n1) is blocked in read(2), so that it is moved in there.
    pub fn wait_blocked_in_read(&self, p: &Proc, pid: i32) {
        let start = Instant::now();
        loop {
            let out = self.node_sh("n1", &format!("cat /proc/{pid}/syscall"));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.split_whitespace().next() == Some("0") {
                return;
            }
            if start.elapsed() > EVENT {
                p.fail(self, &format!("pid {pid} is not blocked in read(2) in n1 within {EVENT:?}: /proc/{pid}/syscall says {text:?}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn nodes(&self, viewer: &str) -> Vec<Value> {
        let mut cmd = Command::new(HERD);
        cmd.arg("--cluster").arg(&self.dir).args(["--node", viewer, "nodes", "--json"]);
        let out = run_bounded(cmd, &format!("herd --node {viewer} nodes --json"), EVENT);
        if !out.status.success() {
            return Vec::new();
        }
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    pub fn wait_all_up(&self, viewer: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            let rows = self.nodes(viewer);
            if rows.len() == NODES.len() && NODES.iter().all(|n| rows.iter().any(|r| r["name"] == *n && r["state"] == "up")) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "{viewer} does not list n1, n2 and n3 up within {limit:?}: {}\n{}",
                Value::Array(rows),
                self.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Before each scenario: n1 sees every node up.
    pub fn wait_healthy(&self) {
        self.wait_all_up("n1", Duration::from_secs(60));
    }

    pub fn boot_of(&self, viewer: &str, node: &str) -> u64 {
        let rows = self.nodes(viewer);
        rows.iter()
            .find(|r| r["name"] == node)
            .and_then(|r| r["boot"].as_u64())
            .unwrap_or_else(|| panic!("{viewer} lists no boot for {node}: {}", Value::Array(rows.clone())))
    }

    /// Waits until `node` was started again and n1 and n3 list it up with a new boot.
    pub fn wait_node_back(&self, node: &str, boot_before: u64) {
        let start = Instant::now();
        let limit = Duration::from_secs(60);
        loop {
            let back = ["n1", "n3"]
                .iter()
                .all(|v| self.nodes(v).iter().any(|r| r["name"] == node && r["state"] == "up" && r["boot"].as_u64() > Some(boot_before)));
            if back {
                return;
            }
            assert!(start.elapsed() < limit, "{node} is not back up (new boot) within {limit:?}\n{}", self.logs());
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills `node` whole (`herd_lab::kill_node`); [`Lab::revive`] makes it again.
    pub fn kill_node(&self, node: &str) -> u64 {
        let boot = self.boot_of("n1", node);
        assert!(self.cluster.kill_node(node).unwrap(), "{node} was running");
        boot
    }

    /// Makes `node`, killed by [`Lab::kill_node`] (its boot then was `boot_before`),
    /// again, and waits until every node lists it up with a new boot.
    pub fn revive(&self, node: &str, boot_before: u64) {
        assert!(self.cluster.revive_node(node).unwrap_or_else(|e| panic!("making {node} again: {e}")), "{node} was alive");
        self.wait_node_back(node, boot_before);
    }

    pub fn daemon_host_pid(&self, node: &str) -> i32 {
        let nodes = self.cluster.status().expect("cluster status");
        nodes.iter().find(|n| n.name == node).and_then(|n| n.pid).unwrap_or_else(|| panic!("{node}'s herdd does not run"))
    }

    pub fn procs_on(&self, node: &str, prog: &Program) -> Vec<(i32, String)> {
        procs_in(&self.dir, node, prog)
    }

    /// Exactly one process of `prog` runs in `node`, as nobody.
    pub fn expect_runs_on(&self, p: &Proc, node: &str, prog: &Program) {
        let start = Instant::now();
        loop {
            let found = self.procs_on(node, prog);
            let nobody = format!("uid {NOBODY} {NOBODY} {NOBODY} {NOBODY} ");
            if found.len() == 1 && found[0].1.contains(&nobody) {
                return;
            }
            if start.elapsed() > SETTLE {
                p.fail(
                    self,
                    &format!(
                        "expected one process of {} in {node}'s pid namespace, running as uid {NOBODY}; found {found:#?}",
                        prog.marker
                    ),
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// No process of `prog` (zombies included) is left in `node` within GONE.
    pub fn expect_gone_from(&self, p: Option<&Proc>, node: &str, prog: &Program) {
        let start = Instant::now();
        loop {
            let found = self.procs_on(node, prog);
            if found.is_empty() {
                return;
            }
            if start.elapsed() > GONE {
                kill_leftovers(&self.dir, prog);
                let msg = format!(
                    "processes of {} are still in {node} {GONE:?} after it left or ended (now killed, so that the next \
                     scenarios start clean): {found:#?}",
                    prog.marker
                );
                match p {
                    Some(p) => p.fail(self, &msg),
                    None => panic!("{msg}\n{}", self.logs()),
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The processes of `prog` in `node`'s pid namespace (node-init's), seen from the host's
/// /proc: host pid, and a description (state, uids, cmdline). Empty when the cluster's
/// state cannot be read.
pub fn procs_in(dir: &Path, node: &str, prog: &Program) -> Vec<(i32, String)> {
    let Some(init) = herd_lab::status(dir).ok().and_then(|st| st.nodes.into_iter().find(|n| n.name == node)).map(|n| n.init_pid) else {
        return Vec::new();
    };
    let Ok(ns) = fs::read_link(format!("/proc/{init}/ns/pid")) else { return Vec::new() };
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if fs::read_link(entry.path().join("ns/pid")).ok().as_ref() != Some(&ns) {
            continue;
        }
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let by_arg = args.contains(&prog.marker);
        let by_comm = prog.comm.as_deref().is_some_and(|c| comm.trim_end() == c);
        if by_arg || by_comm {
            let status = fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let field =
                |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).unwrap_or("?").split_whitespace().collect::<Vec<_>>().join(" ");
            found.push((pid, format!("host pid {pid}: {} uid {} cmdline {:?}", field("State:"), field("Uid:"), args.join(" ").trim_end())));
        }
    }
    found
}

/// Start time of a host pid (field 22 of /proc/PID/stat).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split_whitespace().nth(19)?.parse().ok()
}

/// SIGKILL to every process of `prog` on every node (by host pid): what a failed
/// scenario left must not disturb the next ones.
pub fn kill_leftovers(dir: &Path, prog: &Program) {
    for node in NODES {
        for (pid, _) in procs_in(dir, node, prog) {
            let _ = herd_kernel::task::kill(pid, libc::SIGKILL);
        }
    }
}

/// A stopped or killed herdd is started again, whatever happens in the scenario.
pub struct DaemonGuard<'a> {
    pub lab: &'a Lab,
    pub node: &'a str,
    pub host_pid: i32,
    /// Its start time: a reused pid is never signalled.
    pub started: Option<u64>,
    pub restarted: bool,
}

impl DaemonGuard<'_> {
    /// Kills what is left of the daemon and starts a new one; Err says why not.
    pub fn try_restart(&mut self) -> Result<(), String> {
        if self.restarted {
            return Ok(());
        }
        // SIGKILL works on a stopped process too.
        if self.started.is_some() && start_time(self.host_pid) == self.started {
            let _ = herd_kernel::task::kill(self.host_pid, libc::SIGKILL);
        }
        let start = Instant::now();
        loop {
            // Ok(false) while node-init has not yet reaped the old one.
            match self.lab.cluster.start_node(self.node) {
                Ok(true) => {
                    self.restarted = true;
                    return Ok(());
                }
                Ok(false) if start.elapsed() < Duration::from_secs(15) => thread::sleep(Duration::from_millis(50)),
                Ok(false) => return Err(format!("{}'s old herdd is still there after 15 s", self.node)),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    pub fn restart(&mut self) {
        if let Err(e) = self.try_restart() {
            panic!("starting {}'s herdd again: {e}\n{}", self.node, self.lab.logs());
        }
    }
}

impl Drop for DaemonGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.try_restart() {
            eprintln!("starting {}'s herdd again: {e}", self.node);
        }
    }
}

// ---------------------------------------------------------------------------
// Processes under test
// ---------------------------------------------------------------------------

/// A program started in n1 (directly or under herd run), with the test's pipes. Its
/// process is killed on drop if it has not ended.
pub struct Proc {
    pub label: String,
    pub cluster_dir: PathBuf,
    /// node_exec's waiter: ends exactly like the program (or herd run).
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub out: Collector,
    pub err: Collector,
    pub status: Option<ExitStatus>,
    /// Its home pid, once read from its stderr.
    pub pid: Option<i32>,
    pub prog: Program,
}

impl Proc {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.snapshot()).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.snapshot()).into_owned()
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waitpid");
        }
        self.status
    }

    /// Panics with `what`, the program's output so far and the daemons' logs.
    pub fn fail(&self, lab: &Lab, what: &str) -> ! {
        let status = match self.status {
            Some(s) => describe(&s),
            None => "still running".into(),
        };
        panic!(
            "{}: {what}\n--- it is {status}; stdout so far\n{}--- stderr so far\n{}--- end\n{}",
            self.label,
            tail(&self.stdout(), 30),
            tail(&self.stderr(), 30),
            lab.logs()
        );
    }

    /// Waits until `cond(stdout, stderr)` holds; fails if the program ends first.
    pub fn wait_for(&mut self, lab: &Lab, what: &str, cond: impl Fn(&str, &str) -> bool) {
        let start = Instant::now();
        loop {
            if cond(&self.stdout(), &self.stderr()) {
                return;
            }
            if self.exited().is_some() {
                // Whatever it wrote last may still be in the pipes.
                self.out.finish(EVENT);
                self.err.finish(EVENT);
                if cond(&self.stdout(), &self.stderr()) {
                    return;
                }
                self.fail(lab, &format!("it ended before {what}"));
            }
            if start.elapsed() > EVENT {
                self.fail(lab, &format!("not {what} within {EVENT:?}"));
            }
            thread::sleep(POLL);
        }
    }

    pub fn wait_for_line(&mut self, lab: &Lab, line: &str) {
        let whole = format!("{line}\n");
        self.wait_for(lab, &format!("it printed the line {line:?}"), |out, _| out.split_inclusive('\n').any(|l| l == whole));
    }

    pub fn wait_for_prefix(&mut self, lab: &Lab, prefix: &str) {
        self.wait_for(lab, &format!("it printed a line starting {prefix:?}"), |out, _| {
            out.split_inclusive('\n').any(|l| l.ends_with('\n') && l.starts_with(prefix))
        });
    }

    pub fn wait_for_lines(&mut self, lab: &Lab, n: usize) {
        self.wait_for(lab, &format!("it printed {n} lines"), |out, _| out.matches('\n').count() >= n);
    }

    /// Waits for each gate in turn and answers it with "go".
    pub fn through(&mut self, lab: &Lab, gates: &[Gate]) {
        for gate in gates {
            match *gate {
                Gate::Line(line) => self.wait_for_line(lab, line),
                Gate::Prefix(prefix) => self.wait_for_prefix(lab, prefix),
            }
            self.send(lab, "go\n");
        }
    }

    /// Its home pid: the "mig-pid: N" line of its stderr.
    pub fn home_pid(&mut self, lab: &Lab) -> i32 {
        let parse = |err: &str| err.lines().find_map(|l| l.strip_prefix("mig-pid: ")?.trim().parse::<i32>().ok());
        self.wait_for(lab, "it printed its pid (\"mig-pid: N\" on stderr)", |_, err| parse(err).is_some());
        let pid = parse(&self.stderr()).unwrap();
        self.pid = Some(pid);
        pid
    }

    pub fn send(&mut self, lab: &Lab, text: &str) {
        let result = match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(text.as_bytes()).and_then(|()| stdin.flush()),
            None => Err(std::io::Error::other("its stdin is closed")),
        };
        if let Err(e) = result {
            let _ = self.exited();
            self.fail(lab, &format!("writing {text:?} to its stdin: {e}"));
        }
    }

    /// Closes stdin, waits for the end, and collects everything it wrote.
    pub fn finish(mut self, lab: &Lab) -> Finished {
        self.stdin = None;
        let start = Instant::now();
        while self.exited().is_none() {
            if start.elapsed() > RUN_LIMIT {
                self.fail(lab, &format!("it did not end within {RUN_LIMIT:?} of its last input"));
            }
            thread::sleep(POLL);
        }
        if !self.out.finish(EVENT) || !self.err.finish(EVENT) {
            self.fail(lab, &format!("its stdout or stderr is still open {EVENT:?} after it ended (some process holds it)"));
        }
        let status = self.status.unwrap();
        println!("{}: {}", self.label, describe(&status));
        Finished { label: self.label.clone(), status, stdout: self.stdout(), stderr: self.stderr(), logs: lab.logs() }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // The program runs as nobody, so the waiter's death signal (cleared by setpriv's
        // change of credentials) does not reach it: kill its home pid in n1.
        if let Some(pid) = self.pid {
            if let Ok(mut cmd) = herd_lab::node_exec(&self.cluster_dir, "n1", &["kill", "-s", "KILL", &pid.to_string()]) {
                let _ = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // And whatever of it runs elsewhere, should killing the home pid not reach it.
        kill_leftovers(&self.cluster_dir, &self.prog);
    }
}

/// A herd command running in the background (the move that the test interrupts).
pub struct Background {
    pub child: Child,
    pub out: Collector,
    pub err: Collector,
    pub status: Option<ExitStatus>,
}

impl Background {
    pub fn start(mut cmd: Command) -> Background {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting herd");
        let out = Collector::start(child.stdout.take().unwrap());
        let err = Collector::start(child.stderr.take().unwrap());
        Background { child, out, err, status: None }
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waitpid");
        }
        self.status
    }

    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while self.exited().is_none() && start.elapsed() < limit {
            thread::sleep(POLL);
        }
        self.status
    }

    pub fn output(&mut self) -> (String, String) {
        if self.status.is_some() {
            self.out.finish(EVENT);
            self.err.finish(EVENT);
        }
        (String::from_utf8_lossy(&self.out.snapshot()).into_owned(), String::from_utf8_lossy(&self.err.snapshot()).into_owned())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd` (stdin /dev/null) to its end within `limit`, or kills it and panics.
pub fn run_bounded(cmd: Command, what: &str, limit: Duration) -> Output {
    let mut bg = Background::start(cmd);
    let Some(status) = bg.wait(limit) else {
        let (out, err) = bg.output();
        panic!("{what} did not end within {limit:?} (stdout so far {out:?}, stderr {err:?})");
    };
    let (out, err) = bg.output();
    Output { status, stdout: out.into_bytes(), stderr: err.into_bytes() }
}
