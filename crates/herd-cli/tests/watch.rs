//! `herd top` and `herd mon` on a local cluster of three nodes, run in a pseudo-terminal
//! and read back as a terminal would show them (vt100): every node on the screen, a move
//! made meanwhile shown within 2 s, keys that move, signal and switch views, a user who
//! may not act on another's process told so; and both tools' plain output when stdout is
//! not a terminal. Then /proc/hpc, the FUSE view each herdd mounts in its node: every file
//! read, the node blocked and a process moved by writing to them, a user refused. Then the
//! web dashboard in headless Chromium (chromedriver, in n1's network namespace): every
//! node shown, another user's process not movable, a request without the CSRF token
//! refused, a process dragged onto n2 running on n2.
//! `HERD_WATCH_ONLY=name` runs only the scenarios named.
//!
//! Prerequisites missing: `SKIP: <reason>` and return (see common/lab.rs).

#[path = "common/collector.rs"]
mod collector;
#[path = "common/nodes.rs"]
mod nodes;
#[path = "common/gobuild.rs"]
mod gobuild;
#[path = "common/lab.rs"]
mod lab;
#[path = "common/scenarios.rs"]
mod scenarios;
use lab::*;
use nodes::{describe, HERD, NOBODY};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

type Scenario = scenarios::Scenario<Lab>;

const SCENARIOS: &[(&str, Scenario)] = &[
    ("top_follows_moves_and_moves_by_key", top_follows_moves_and_moves_by_key),
    ("top_refuses_another_users_process", top_refuses_another_users_process),
    ("mon_shows_every_node_and_switches_views", mon_shows_every_node_and_switches_views),
    ("plain_output_when_not_a_terminal", plain_output_when_not_a_terminal),
    ("proc_hpc_reads_and_steers", proc_hpc_reads_and_steers),
    ("dashboard_in_chromium", dashboard_in_chromium),
];

#[test]
fn watch_scenarios() {
    let spec = Spec { name: "watch", c_programs: &[], py_programs: &[], scripts: &[], quiet_n1: true, cpus_per_node: None, shared: false };
    let Some(lab) = Lab::new(&spec) else { return };
    let (ran, failed) = scenarios::run(SCENARIOS, "HERD_WATCH_ONLY", &lab, Lab::wait_healthy, |_| {});
    let dir = lab.finish(failed.is_empty());
    scenarios::report("herd top / herd mon scenarios", ran, &failed, &dir);
}

/// A process that waits, and says its pid first (`mig-pid: N`).
fn sleeper() -> Program {
    Program {
        argv: ["/bin/sh", "-c", "echo mig-pid: $$ >&2; exec sleep 300"].iter().map(OsString::from).collect(),
        marker: "sleep 300".into(),
        comm: Some("sleep".into()),
    }
}

const ROWS: u16 = 30;
const COLS: u16 = 140;

/// A program in a pseudo-terminal of its own (its controlling terminal), and the screen
/// it draws, as a terminal emulator would keep it.
struct Tty {
    what: String,
    child: Child,
    master: std::fs::File,
    screen: Arc<Mutex<vt100::Parser>>,
}

impl Tty {
    fn start(what: &str, mut cmd: Command) -> Tty {
        let size = nix::pty::Winsize { ws_row: ROWS, ws_col: COLS, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .env("TERM", "xterm-256color");
        // SAFETY: between fork and exec only async-signal-safe calls: setsid, ioctl,
        // close_range.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Nothing the test harness leaked (fds 250/251 here).
                libc::syscall(libc::SYS_close_range, 3, u32::MAX, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
        let master = std::fs::File::from(pty.master);
        let screen = Arc::new(Mutex::new(vt100::Parser::new(ROWS.try_into().unwrap(), COLS.try_into().unwrap(), 0)));
        let mut reader = master.try_clone().unwrap();
        let feed = screen.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 65536];
            // EIO once the program has ended and the slave is closed.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                feed.lock().unwrap().process(&buf[..n]);
            }
        });
        println!("started {what} in a pseudo-terminal (pid {})", child.id());
        Tty { what: what.into(), child, master, screen }
    }

    fn text(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Waits until the screen satisfies `cond`; returns the screen then.
    fn wait_for(&mut self, what: &str, limit: Duration, cond: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if cond(&text) {
                return text;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{}: it ended ({status}) before {what}; the screen:\n{text}", self.what);
            }
            if start.elapsed() > limit {
                panic!("{}: not {what} within {limit:?}; the screen:\n{text}", self.what);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("writing to the pseudo-terminal");
        println!("{}: pressed {keys:?}", self.what);
    }

    /// Presses q; it must end, with status 0, and leave the terminal as it found it.
    fn quit(mut self) {
        self.keys("q");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{}: ended with {status} after q", self.what);
                thread::sleep(Duration::from_millis(100));
                let p = self.screen.lock().unwrap();
                assert!(!p.screen().alternate_screen(), "{}: still on the alternate screen after q", self.what);
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{}: still running 10 s after q:\n{}", self.what, self.text());
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `herd --cluster DIR --node NODE ARGS` (as root), with fds above 2 closed.
fn herd_on(lab: &Lab, node: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(HERD);
    cmd.arg("--cluster").arg(&lab.dir).args(["--node", node]).args(args);
    cmd
}

/// The screen line that shows process `pid` of home `home` (`PID HOME WHERE ...`).
fn row_of<'a>(screen: &'a str, pid: i32, home: &str) -> Option<Vec<&'a str>> {
    screen.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|w| w.len() > 3 && w[0] == pid.to_string() && w[1] == home && w.contains(&"sleep"))
}

/// The number a popup gives `entry` (`│3 n3 │` → 3).
fn number_of(screen: &str, entry: &str) -> Option<char> {
    screen.lines().find_map(|l| {
        let inner = l.trim().trim_matches('│').trim();
        let (n, rest) = inner.split_once(' ')?;
        (rest.trim() == entry && n.len() == 1).then(|| n.chars().next().unwrap())
    })
}

fn top_follows_moves_and_moves_by_key(lab: &Lab) {
    let mut p = lab.start("sleeper", How::HerdLocked, &sleeper());
    let pid = p.home_pid(lab);
    lab.expect_where(&p, pid, "n1", Some(0));
    // Asked of n3: its herdd asks n1, the process's home.
    let mut top = Tty::start("herd top on n3", herd_on(lab, "n3", &["top", "--delay", "0.5"]));
    let screen = top.wait_for("every node and the process on n1", EVENT, |s| {
        let first = s.lines().next().unwrap_or("");
        NODES.iter().all(|n| first.contains(n)) && row_of(s, pid, "n1").is_some_and(|w| w[2] == "n1")
    });
    println!("{screen}");

    // Moved meanwhile (not by herd top): the screen follows within 2 s.
    lab.expect_migrate(&p, pid, "n2");
    let moved = Instant::now();
    top.wait_for("the process shown on n2", Duration::from_secs(2), |s| row_of(s, pid, "n1").is_some_and(|w| w[2] == "n2" && w[3] == "remote"));
    println!("herd top showed the move after {:.2?}", moved.elapsed());

    // m, then the number of n3: moved there by n1.
    top.keys("m");
    let popup = top.wait_for("the list of places to move to", Duration::from_secs(5), |s| number_of(s, "n3").is_some());
    let n3 = number_of(&popup, "n3").unwrap();
    assert!(number_of(&popup, "home").is_some() && number_of(&popup, "balance").is_some(), "home and balance offered:\n{popup}");
    top.keys(&n3.to_string());
    let done = top.wait_for("the move done", MIGRATE_LIMIT, |s| s.contains(&format!("moved {pid} to n3")));
    assert!(done.contains("stopped"), "it says how long the process was stopped:\n{done}");
    lab.expect_where(&p, pid, "n3", Some(2));

    // k, TERM: the process ends by it, where it runs (its deputy passes it on).
    top.keys("k");
    let popup = top.wait_for("the list of signals", Duration::from_secs(5), |s| number_of(s, "TERM").is_some());
    top.keys(&number_of(&popup, "TERM").unwrap().to_string());
    top.wait_for("the signal sent", Duration::from_secs(10), |s| s.contains(&format!("sent SIGTERM to {pid}")));
    let f = p.finish(lab);
    expect_status(&f, None, Some(libc::SIGTERM));
    top.wait_for("the process gone from the screen", Duration::from_secs(5), |s| row_of(s, pid, "n1").is_none());
    top.quit();
}

fn top_refuses_another_users_process(lab: &Lab) {
    let mut p = lab.start("sleeper", How::HerdLocked, &sleeper());
    let pid = p.home_pid(lab);
    // Another user (uid 65533), on n2: sees the process, may not move it.
    let mut cmd = Command::new(&lab.setpriv);
    cmd.args(["--reuid=65533", "--regid=65533", "--clear-groups", "--", HERD, "--cluster"]).arg(&lab.dir).args(["--node", "n2", "top", "--delay", "0.5"]);
    let mut top = Tty::start("herd top on n2 as uid 65533", cmd);
    top.wait_for("the process", EVENT, |s| row_of(s, pid, "n1").is_some());
    top.keys("m");
    let popup = top.wait_for("the list of places to move to", Duration::from_secs(5), |s| number_of(s, "n2").is_some());
    top.keys(&number_of(&popup, "n2").unwrap().to_string());
    let said = top.wait_for("the refusal", Duration::from_secs(20), |s| s.contains(&format!("cannot move {pid} to n2")));
    assert!(said.contains(&format!("belongs to uid {NOBODY}, not to you")), "the refusal names the owner:\n{said}");
    // It is locked: l unlocks, which is refused too.
    top.keys("l");
    let said = top.wait_for("the unlock refused", Duration::from_secs(20), |s| s.contains(&format!("cannot unlock {pid}")));
    assert!(said.contains("not to you"), "{said}");
    top.quit();
    lab.expect_where(&p, pid, "n1", Some(0));
    let row = lab.ps().into_iter().find(|r| r["pid"].as_i64() == Some(i64::from(pid))).expect("still listed");
    assert_eq!(row["lock"], true, "still locked: {row}");
    lab.kill_in_n1(pid, "TERM");
    let f = p.finish(lab);
    expect_status(&f, None, Some(libc::SIGTERM));
}

fn mon_shows_every_node_and_switches_views(lab: &Lab) {
    let mut mon = Tty::start("herd mon on n2", herd_on(lab, "n2", &["mon", "--delay", "0.5"]));
    let screen = mon.wait_for("a bar for every node", EVENT, |s| {
        s.contains("3 of 3 nodes up") && s.lines().any(|l| NODES.iter().all(|n| l.split_whitespace().any(|w| w == *n)))
    });
    assert!(screen.contains("load"), "the load view first:\n{screen}");
    mon.keys("m");
    mon.wait_for("the memory view", Duration::from_secs(5), |s| s.contains("memory in use"));
    mon.keys("p");
    mon.wait_for("the processes view", Duration::from_secs(5), |s| s.contains("migratable processes running there"));
    mon.keys("h");
    // History: a box per node titled with its name and figure.
    mon.wait_for("a history line per node", Duration::from_secs(5), |s| NODES.iter().all(|n| s.contains(&format!("{n}: "))));
    mon.quit();
}

fn plain_output_when_not_a_terminal(lab: &Lab) {
    let mut p = lab.start("sleeper", How::HerdLocked, &sleeper());
    let pid = p.home_pid(lab);
    let out = run_bounded(herd_on(lab, "n3", &["top", "-n", "2", "--delay", "0.2"]), "herd top -n 2", MIGRATE_LIMIT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "herd top -n 2: {}: {}", describe(&out.status), String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.matches("    PID HOME").count(), 2, "two tables:\n{text}");
    assert!(text.lines().any(|l| l.split_whitespace().take(2).eq([pid.to_string().as_str(), "n1"])), "the process, home n1:\n{text}");
    let out = run_bounded(herd_on(lab, "n1", &["mon", "-n", "1"]), "herd mon -n 1", MIGRATE_LIMIT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "herd mon -n 1: {}", describe(&out.status));
    assert_eq!(text.lines().count(), 1, "one line:\n{text}");
    for n in NODES {
        assert!(text.contains(&format!("{n} load ")), "{n} in:\n{text}");
    }
    let n1 = text.split(" | ").find(|part| part.starts_with("n1 load")).unwrap_or("");
    assert!(n1.trim_end().ends_with("procs 1"), "the process counted on n1:\n{text}");
    let out = run_bounded(herd_on(lab, "n2", &["ps", "--all", "--json"]), "herd ps --all --json", MIGRATE_LIMIT);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("herd ps --all --json is JSON");
    let row = rows.as_array().unwrap().iter().find(|r| r["pid"].as_i64() == Some(i64::from(pid)) && r["home"] == "n1");
    assert!(row.is_some_and(|r| r["where"] == "n1"), "n2 lists n1's process: {rows}");
    lab.kill_in_n1(pid, "TERM");
    let f = p.finish(lab);
    expect_status(&f, None, Some(libc::SIGTERM));
}

const HPC: &str = "/run/herd/hpc";

/// `sh -c SCRIPT` in `node` as uid `uid` (root: 0); its stdout, and whether it succeeded.
fn sh_as(lab: &Lab, node: &str, uid: u32, script: &str) -> (bool, String, String) {
    let wrapped = if uid == 0 {
        script.to_string()
    } else {
        format!("exec {} --reuid={uid} --regid={uid} --clear-groups -- sh -c '{}'", lab.setpriv.display(), script.replace('\'', "'\\''"))
    };
    let out = lab.node_sh(node, &wrapped);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn proc_hpc_reads_and_steers(lab: &Lab) {
    let (mounted, _, _) = sh_as(lab, "n1", 0, &format!("test -d {HPC}/admin"));
    if !mounted {
        if !std::path::Path::new("/dev/fuse").exists() {
            println!("SKIP: proc_hpc_reads_and_steers: no /dev/fuse on this machine, so herdd mounts no /proc/hpc view");
            return;
        }
        panic!("herdd mounted no {HPC} in n1 although /dev/fuse exists:\n{}", lab.logs());
    }
    let mut p = lab.start("sleeper", How::Herd, &sleeper());
    let pid = p.home_pid(lab);
    // Every file of every directory reads, on every node.
    for node in NODES {
        let (ok, out, err) = sh_as(lab, node, 0, &format!("cd {HPC} && for f in admin/* nodes/*/* procs/*/*; do [ -f \"$f\" ] && printf \"%s=%s\\n\" \"$f\" \"$(cat \"$f\" | tr \"\\n\" \";\")\"; done; true"));
        assert!(ok, "reading {HPC} in {node}: {err}");
        let files: std::collections::BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
        for f in ["admin/block", "admin/speed", "admin/quiet", "admin/expel"] {
            assert!(files.contains_key(f), "{node}: no {f} in\n{out}");
        }
        for n in NODES {
            for f in ["cpus", "freemem", "load", "mem", "speed", "status"] {
                let v = files.get(format!("nodes/{n}/{f}").as_str()).unwrap_or_else(|| panic!("{node}: no nodes/{n}/{f} in\n{out}"));
                assert!(!v.is_empty(), "{node}: nodes/{n}/{f} is empty");
            }
            // n1 is quiet here (the lab's n1 takes no part in balancing): `up quiet` once
            // gossip has told.
            let status = files[format!("nodes/{n}/status").as_str()];
            assert!(status == "up;" || (n == "n1" && status == "up quiet;"), "{node} sees {n} {status}");
        }
        if node == "n1" {
            assert_eq!(files[format!("procs/{pid}/where").as_str()], "n1;", "{out}");
            assert_eq!(files[format!("procs/{pid}/nmigs").as_str()], "0;", "{out}");
            assert_eq!(files[format!("procs/{pid}/lock").as_str()], "0;", "{out}");
        } else {
            assert!(!files.keys().any(|k| k.starts_with("procs/")), "{node} lists only its own home's processes:\n{out}");
        }
    }
    // A user may not block the node, nor move another's process; the owner may move hers.
    let (ok, _, err) = sh_as(lab, "n1", NOBODY, &format!("echo 1 > {HPC}/admin/block"));
    assert!(!ok && err.contains("Permission denied"), "nobody blocked n1: {err}");
    let (ok, _, err) = sh_as(lab, "n1", 65533, &format!("echo n2 > {HPC}/procs/{pid}/goto"));
    assert!(!ok && err.contains("Permission denied"), "uid 65533 moved nobody's process: {err}");
    let (ok, _, err) = sh_as(lab, "n1", NOBODY, &format!("echo n2 > {HPC}/procs/{pid}/goto"));
    assert!(ok, "its owner writing n2 to goto: {err}");
    lab.expect_where(&p, pid, "n2", Some(1));
    let (_, out, _) = sh_as(lab, "n1", NOBODY, &format!("cat {HPC}/procs/{pid}/where {HPC}/procs/{pid}/nmigs"));
    assert_eq!(out, "n2\n1\n");
    // Root blocks n1 through admin/block: the others see it blocked.
    let (ok, _, err) = sh_as(lab, "n1", 0, &format!("echo 1 > {HPC}/admin/block && cat {HPC}/admin/block"));
    assert!(ok, "root writing admin/block: {err}");
    let start = Instant::now();
    while !lab.nodes("n2").iter().any(|r| r["name"] == "n1" && r["state"] == "blocked") {
        assert!(start.elapsed() < Duration::from_secs(10), "n2 does not see n1 blocked: {:?}", lab.nodes("n2"));
        thread::sleep(Duration::from_millis(100));
    }
    let (_, out, _) = sh_as(lab, "n2", 0, &format!("cat {HPC}/nodes/n1/status"));
    assert!(out.starts_with("blocked block"), "n2's nodes/n1/status: {out}");
    sh_as(lab, "n1", 0, &format!("echo 0 > {HPC}/admin/block"));
    lab.kill_in_n1(pid, "TERM");
    let f = p.finish(lab);
    expect_status(&f, None, Some(libc::SIGTERM));
}

/// Runs `f` on a thread of its own whose network namespace is `node`'s: the sockets it
/// makes reach that node's 127.0.0.1 (its herdd's HTTP, a chromedriver started there).
fn in_netns_of<T: Send>(lab: &Lab, node: &str, f: impl FnOnce() -> T + Send) -> T {
    let netns = std::fs::File::open(format!("/proc/{}/ns/net", lab.daemon_host_pid(node))).expect("the node's network namespace");
    thread::scope(|s| {
        let t = s.spawn(move || {
            nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the node's network namespace");
            f()
        });
        t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// `herd dashboard` in n1 as `uid`: the login link.
fn login_link(lab: &Lab, uid: u32) -> String {
    let (ok, out, err) = sh_as(lab, "n1", uid, &format!("{HERD} dashboard"));
    assert!(ok && out.starts_with("http://127.0.0.1:4780/login?token="), "herd dashboard as uid {uid}: {out} {err}");
    out.trim().to_string()
}

fn dashboard_in_chromium(lab: &Lab) {
    let (Some(chromium), Some(driver)) = (which("chromium"), which("chromedriver")) else {
        println!("SKIP: dashboard_in_chromium: no chromium and chromedriver (apt-get install chromium chromium-driver)");
        return;
    };
    let mut p = lab.start("sleeper", How::HerdLocked, &sleeper());
    let pid = p.home_pid(lab);
    let log = lab.dir.join("chromedriver.log");
    let mut cmd = lab.cluster.node_exec("n1", &[driver.as_os_str(), "--port=9515".as_ref()]).expect("node_exec chromedriver");
    cmd.stdout(std::fs::File::create(&log).unwrap()).stderr(Stdio::null()).stdin(Stdio::null());
    let mut chromedriver = cmd.spawn().expect("starting chromedriver in n1");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        in_netns_of(lab, "n1", || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(browse(lab, &chromium, pid))
        })
    }));
    let _ = chromedriver.kill();
    let _ = chromedriver.wait();
    if let Err(e) = result {
        println!("--- chromedriver's log\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        std::panic::resume_unwind(e);
    }
    lab.expect_where(&p, pid, "n2", Some(1));
    lab.kill_in_n1(pid, "TERM");
    let f = p.finish(lab);
    expect_status(&f, None, Some(libc::SIGTERM));
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/bin", "/usr/local/bin", "/bin"].iter().map(|d| std::path::Path::new(d).join(name)).find(|p| p.is_file())
}

async fn browse(lab: &Lab, chromium: &std::path::Path, pid: i32) {
    use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
    use fantoccini::Locator;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                     "--user-data-dir=/tmp/herd-dashboard-test"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let mut client = None;
    let start = Instant::now();
    // chromedriver takes a moment to listen.
    while client.is_none() {
        match fantoccini::ClientBuilder::new(connector.clone()).capabilities(caps.clone()).connect("http://127.0.0.1:9515").await {
            Ok(c) => client = Some(c),
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                println!("chromedriver not ready: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("no WebDriver session: {e}"),
        }
    }
    let c = client.unwrap();
    let text = |sel: &'static str| {
        let c = c.clone();
        async move { c.find(Locator::Css(sel)).await.unwrap().text().await.unwrap() }
    };
    let wait_text = |sel: &'static str, want: String| {
        let c = c.clone();
        async move {
            let start = Instant::now();
            loop {
                let got = match c.find(Locator::Css(sel)).await {
                    Ok(e) => e.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                if got.contains(&want) {
                    return got;
                }
                assert!(start.elapsed() < Duration::from_secs(30), "{sel} does not say {want:?} within 30 s: {got:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let chip_css = format!(r#".proc[data-home="n1"][data-pid="{pid}"]"#);
    let drag_to = |to: &'static str| {
        let (c, chip_css) = (c.clone(), chip_css.clone());
        async move {
            let chip = c.find(Locator::Css(&chip_css)).await.expect("the process on the page");
            let card = c.find(Locator::Css(&format!(r#"section[data-node="{to}"]"#))).await.expect("the node's card");
            let mouse = MouseActions::new("mouse".into())
                .then(PointerAction::MoveToElement { element: chip, duration: None, x: -40.0, y: 0.0 })
                .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
                .then(PointerAction::MoveToElement { element: card.clone(), duration: Some(Duration::from_millis(200)), x: 0.0, y: -20.0 })
                .then(PointerAction::MoveToElement { element: card, duration: Some(Duration::from_millis(100)), x: 0.0, y: 0.0 })
                .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
            c.perform_actions(mouse).await.expect("dragging");
        }
    };

    // Looking needs nothing: every node, and the process where it runs.
    c.goto("http://127.0.0.1:4780/").await.expect("the dashboard");
    wait_text("#cluster", "3 of 3 nodes up".into()).await;
    for n in NODES {
        c.wait().for_element(Locator::Css(&format!(r#"section[data-node="{n}"]"#))).await.expect("a card per node");
    }
    c.wait().for_element(Locator::Css(&format!(r#"section[data-node="n1"] {chip_css}"#))).await.expect("the process on n1");
    assert!(text("#who").await.contains("looking only"));

    // Another user (uid 65533) may not move nobody's process.
    c.goto(&login_link(lab, 65533)).await.expect("the login link");
    wait_text("#who", "uid 65533".into()).await;
    wait_text("#cluster", "3 of 3 nodes up".into()).await;
    c.wait().for_element(Locator::Css(&chip_css)).await.unwrap();
    drag_to("n2").await;
    let said = wait_text("#status", "not to you".into()).await;
    assert!(said.contains(&format!("belongs to uid {NOBODY}")), "{said}");
    // A request without the session's CSRF token (what another site could send) is refused.
    let status = c
        .execute(
            &format!(
                "return fetch('/api/act', {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, \
                 body: JSON.stringify({{act: 'move', home: 'n1', pid: {pid}, target: 'n2'}})}}).then(r => r.status)"
            ),
            vec![],
        )
        .await
        .expect("fetch");
    assert_eq!(status, serde_json::json!(403), "a move without the CSRF token");
    // A login link works once.
    let link = login_link(lab, NOBODY);
    c.goto(&link).await.unwrap();
    wait_text("#who", format!("uid {NOBODY}")).await;
    let reused = c.execute("return fetch(arguments[0]).then(r => r.status)", vec![serde_json::json!(link)]).await.unwrap();
    assert_eq!(reused, serde_json::json!(403), "a used login link");

    // Its owner drags it onto n2: it runs there.
    wait_text("#cluster", "3 of 3 nodes up".into()).await;
    c.wait().for_element(Locator::Css(&chip_css)).await.unwrap();
    drag_to("n2").await;
    wait_text("#status", format!("moved {pid} to n2")).await;
    c.wait().for_element(Locator::Css(&format!(r#"section[data-node="n2"] {chip_css}"#))).await.expect("the process shown on n2");
    if let Ok(path) = std::env::var("HERD_DASHBOARD_SCREENSHOT") {
        tokio::time::sleep(Duration::from_secs(2)).await;
        std::fs::write(&path, c.screenshot().await.unwrap()).unwrap();
        println!("screenshot: {path}");
    }
    c.close().await.expect("closing the browser");
}
