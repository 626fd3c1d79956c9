//! The local cluster with real namespaces, a stand-in daemon, and (where
//! the machine allows) cpusets and an unprivileged user.
//!
//! The stand-in daemon is a small Python program: it records what it sees
//! (hostname, pids, /tmp, addresses, routes, CPUs) in DIR/nK/probe, then
//! answers with its node name on its control socket, on 0.0.0.0:4700 and on
//! 127.0.0.1:4780.
//!
//! A test whose prerequisites are missing prints `SKIP: <reason>` and
//! returns.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use herd_lab::proc::{ns_pids, ProcRef};
use herd_lab::{Down, LabError, LocalCluster, NodeState, UpOptions};

const PYTHON: &str = "/usr/bin/python3";
const HERD_LAB: &str = env!("CARGO_BIN_EXE_herd-lab");

const STAND_IN: &str = r#"#!/usr/bin/python3
import os, select, socket, subprocess, sys
cfg = sys.argv[sys.argv.index("--config") + 1]
d = os.path.dirname(cfg)
name = os.path.basename(d)
def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True).stdout
with open(os.path.join(d, "probe.tmp"), "w") as f:
    f.write("hostname=%s\n" % socket.gethostname())
    f.write("pid=%d\n" % os.getpid())
    f.write("tmp=%s\n" % ",".join(sorted(os.listdir("/tmp"))))
    f.write("nproc=%d\n" % len(os.sched_getaffinity(0)))
    f.write("config=%s\n" % open(cfg).read().replace("\n", "|"))
    f.write("addr=%s\n" % run("ip", "-4", "-o", "addr", "show", "dev", "eth0").split()[3])
    f.write("routes=%s\n" % run("ip", "-4", "route").strip().replace("\n", "|"))
os.rename(os.path.join(d, "probe.tmp"), os.path.join(d, "probe"))
listeners = []
u = socket.socket(socket.AF_UNIX)
u.bind(os.path.join(d, "herdd.sock"))
listeners.append(u)
for addr in [("0.0.0.0", 4700), ("127.0.0.1", 4780)]:
    t = socket.socket()
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(addr)
    listeners.append(t)
for s in listeners:
    s.listen()
print("stand-in herdd", name, "up", flush=True)
while True:
    ready, _, _ = select.select(listeners, [], [])
    for s in ready:
        c, _ = s.accept()
        try:
            c.sendall(name.encode())
        except OSError:
            pass
        c.close()
"#;

fn skip(reason: &str) {
    println!("SKIP: {reason}");
}

fn is_root() -> bool {
    herd_kernel::task::euid() == 0
}

/// What every test needs, or why it cannot run.
fn missing_prerequisite() -> Option<String> {
    if !Path::new(PYTHON).is_file() {
        return Some(format!("{PYTHON} (the stand-in daemon) is not installed"));
    }
    if herd_lab::net::ip_command().is_none() {
        return Some("the ip command (iproute2) is not installed".into());
    }
    if !is_root() {
        if let Some(why) = herd_lab::supervisor::userns_disabled() {
            return Some(format!("not root, and {why}"));
        }
    }
    None
}

/// A directory for the stand-in daemon, outside /tmp (so the node's
/// private /tmp does not hide it; the cluster directory itself lies in /tmp
/// in some tests, which the cluster must cope with).
fn scratch(name: &str) -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new().prefix(name).tempdir_in(base).unwrap()
}

fn write_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn options(nodes: u32, dir: &Path, daemon: &Path) -> UpOptions {
    UpOptions {
        dir: Some(dir.to_path_buf()),
        daemon: Some(daemon.to_path_buf()),
        herd_exe: Some(HERD_LAB.into()),
        timeout: Duration::from_secs(20),
        ..UpOptions::new(nodes)
    }
}

/// The stand-in's probe of node `name`, as key -> value.
fn probe(dir: &Path, name: &str) -> std::collections::HashMap<String, String> {
    let text = std::fs::read_to_string(dir.join(name).join("probe")).unwrap();
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn run_in(c: &LocalCluster, node: &str, argv: &[&str]) -> (bool, String) {
    let out = c.node_exec(node, argv).unwrap().output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_string() + &String::from_utf8_lossy(&out.stderr))
}

/// Connects from inside `from` to host:port and returns what the stand-in says.
fn ask(c: &LocalCluster, from: &str, host: &str, port: u16) -> String {
    let code = format!("import socket; print(socket.create_connection(('{host}', {port}), timeout=5).recv(16).decode())");
    let (ok, out) = run_in(c, from, &[PYTHON, "-c", &code]);
    assert!(ok, "{from} -> {host}:{port}: {out}");
    out
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nodes_have_their_own_namespaces_and_reach_each_other() {
    if let Some(why) = missing_prerequisite() {
        return skip(&why);
    }
    let t0 = Instant::now();
    let bin = scratch("stand-in");
    let daemon = write_script(bin.path(), "herdd", STAND_IN);
    // The cluster directory in /tmp: node-init must keep it visible under
    // the node's private /tmp.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let c = LocalCluster::up(&options(3, &dir, &daemon)).unwrap();
    let dir = c.dir().to_path_buf();
    println!("up in {:?}", t0.elapsed());

    // A second cluster in the same place is refused.
    match LocalCluster::up(&options(1, &dir, &daemon)) {
        Err(LabError::AlreadyRunning { pid, .. }) => assert_eq!(pid, c.state().unwrap().supervisor.pid),
        other => panic!("a second up: {:?}", other.map(|c| c.dir().to_path_buf())),
    }

    let status = c.status().unwrap();
    assert_eq!(status.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["n1", "n2", "n3"]);
    for (k, node) in status.iter().enumerate() {
        let k = k + 1;
        assert_eq!(node.state, NodeState::Running, "{node:?}");
        assert_eq!(node.address.to_string(), format!("10.47.0.{k}"));
        assert_eq!(node.control_socket, herd_lab::node_socket(&dir, &node.name));
        let p = probe(&dir, &node.name);
        assert_eq!(p["hostname"], node.name);
        assert_eq!(p["addr"], format!("10.47.0.{k}/24"));
        assert!(!p["routes"].contains("default"), "a node has no default route: {}", p["routes"]);
        assert!(p["config"].contains(&format!("name = \"{}\"", node.name)), "{}", p["config"]);
        // Pid namespaces: node-init is pid 1 of its own, herdd is in it too;
        // the host sees both with two pids each.
        let herdd = node.pid.expect("herdd's host pid");
        let herdd_pids = ns_pids(herdd).unwrap();
        assert_eq!(herdd_pids.len(), 2, "herdd NSpid {herdd_pids:?}");
        assert_eq!(herdd_pids[1].to_string(), p["pid"], "the pid the stand-in saw for itself");
        assert_eq!(ns_pids(node.init_pid).unwrap(), vec![node.init_pid, 1]);
        let (ok, cmdline) = run_in(&c, &node.name, &["cat", "/proc/1/cmdline"]);
        assert!(ok && cmdline.contains("node-init"), "pid 1 in {}: {cmdline}", node.name);
        // Own /tmp: only the paths to the cluster directory and to the herd binaries
        // (when they live under /tmp, as in a CI checkout there) are carried in.
        let mut carried = vec![tmp.path().file_name().unwrap().to_str().unwrap().to_string()];
        if let Ok(rest) = Path::new(HERD_LAB).strip_prefix("/tmp") {
            carried.push(rest.iter().next().unwrap().to_str().unwrap().to_string());
        }
        carried.sort();
        carried.dedup();
        assert_eq!(p["tmp"], carried.join(","), "{}'s /tmp", node.name);
    }

    // Files in one node's /tmp are that node's alone.
    let mark = format!("herd-lab-test-{}", std::process::id());
    let (ok, out) = run_in(&c, "n1", &["sh", "-c", &format!("echo hello > /tmp/{mark} && cat /tmp/{mark}")]);
    assert!(ok && out == "hello", "{out}");
    let (ok, _) = run_in(&c, "n2", &["test", "-e", &format!("/tmp/{mark}")]);
    assert!(!ok, "n2 sees n1's /tmp");
    assert!(!Path::new("/tmp").join(&mark).exists(), "the host sees n1's /tmp");

    // The bridge connects every node; 127.0.0.1 is each node's own.
    assert_eq!(ask(&c, "n2", "10.47.0.1", 4700), "n1");
    assert_eq!(ask(&c, "n2", "10.47.0.3", 4700), "n3");
    assert_eq!(ask(&c, "n3", "10.47.0.2", 4700), "n2");
    assert_eq!(ask(&c, "n1", "127.0.0.1", 4780), "n1");
    assert_eq!(ask(&c, "n2", "127.0.0.1", 4780), "n2");
    println!("checks in {:?}", t0.elapsed());

    // Stop and start one node's herdd.
    let before = c.status().unwrap()[1].pid.unwrap();
    assert!(c.stop_node("n2").unwrap());
    let n2 = &c.status().unwrap()[1];
    assert_eq!((n2.state, n2.pid), (NodeState::Stopped, None));
    assert!(std::os::unix::net::UnixStream::connect(c.node_socket("n2")).is_err());
    assert!(!c.stop_node("n2").unwrap(), "stopping a stopped node");
    assert_eq!(c.status().unwrap()[0].state, NodeState::Running, "n1 is untouched");
    assert!(c.start_node("n2").unwrap());
    let n2 = &c.status().unwrap()[1];
    assert_eq!(n2.state, NodeState::Running);
    assert_ne!(n2.pid, Some(before));
    assert!(!c.start_node("n2").unwrap(), "starting a running node");
    assert_eq!(ask(&c, "n1", "10.47.0.2", 4700), "n2");
    assert!(matches!(c.stop_node("n9"), Err(LabError::UnknownNode { .. })));

    // Down removes every process, socket and the state file.
    let st = c.state().unwrap();
    let mut procs: Vec<ProcRef> = vec![st.supervisor];
    procs.extend(st.nodes.iter().map(|n| n.init));
    procs.extend(c.status().unwrap().iter().map(|n| ProcRef::of(n.pid.unwrap()).unwrap()));
    let t1 = Instant::now();
    assert_eq!(c.down().unwrap(), Down::Clean);
    println!("down in {:?}", t1.elapsed());
    for p in &procs {
        assert!(!p.is_live(), "process {} is still there", p.pid);
    }
    assert!(!dir.join("cluster.json").exists());
    for n in ["n1", "n2", "n3"] {
        assert!(!herd_lab::node_socket(&dir, n).exists());
    }
    assert_eq!(herd_lab::down(&dir).unwrap(), Down::NoCluster, "down is idempotent");
    assert!(matches!(herd_lab::status(&dir), Err(LabError::NoCluster { .. })));
    println!("total {:?}", t0.elapsed());
}

#[test]
fn cpus_per_node_gives_each_node_its_cpuset() {
    if let Some(why) = missing_prerequisite() {
        return skip(&why);
    }
    if let Err(why) = herd_lab::cgroup::find_parent() {
        return skip(&format!("no cpuset cgroup to use: {why}"));
    }
    let bin = scratch("stand-in");
    let daemon = write_script(bin.path(), "herdd", STAND_IN);
    let dir = bin.path().join("cluster");
    let opts = UpOptions { cpus_per_node: Some(1), ..options(2, &dir, &daemon) };
    let c = LocalCluster::up(&opts).unwrap();
    let st = c.state().unwrap();
    let top = st.cgroup.clone().expect("the cluster cgroup");
    assert!(top.is_dir());
    let cpus = herd_lab::cgroup::parse_cpu_list(&std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap());
    for (i, node) in st.nodes.iter().enumerate() {
        assert_eq!(probe(&dir, &node.name)["nproc"], "1", "{}: herdd's sched_getaffinity", node.name);
        let cg = node.cgroup.as_ref().unwrap();
        let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap();
        assert!(procs.split_whitespace().any(|p| p == node.init.pid.to_string()), "node-init in {}", cg.display());
        // Round-robin: with 2 or more CPUs the two nodes get different ones.
        if cpus.len() >= 2 {
            assert_eq!(node.cpus.as_deref(), Some(&[cpus[i]][..]));
        }
    }
    assert_eq!(c.status().unwrap()[0].cpus.as_deref(), Some(cpus[0].to_string().as_str()));
    c.down().unwrap();
    assert!(!top.exists(), "cgroup {} is left", top.display());
}

#[test]
fn a_node_whose_daemon_fails_fails_up_with_its_log() {
    if let Some(why) = missing_prerequisite() {
        return skip(&why);
    }
    let bin = scratch("failing");
    let daemon = write_script(
        bin.path(),
        "herdd",
        "#!/bin/sh\ncase \"$2\" in */n2/*) echo 'herdd: cannot bind 0.0.0.0:4700: the test says no' >&2; exit 3;; esac\nexec sleep 60\n",
    );
    let dir = bin.path().join("cluster");
    let t0 = Instant::now();
    let err = match LocalCluster::up(&options(2, &dir, &daemon)) {
        Err(e) => e,
        Ok(_) => panic!("up succeeded"),
    };
    let text = err.to_string();
    assert!(text.starts_with("node n2: herdd ended during start-up (exit code 3)"), "{text}");
    assert!(text.contains("the test says no"), "{text}");
    assert!(t0.elapsed() < Duration::from_secs(10), "a failing node is reported at once");
    // And nothing is left.
    assert!(!dir.join("cluster.json").exists());
    let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap();
    assert!(log.contains("cluster down"), "{log}");
}

#[test]
fn an_unprivileged_user_runs_a_cluster() {
    if let Some(why) = missing_prerequisite() {
        return skip(&why);
    }
    if !is_root() {
        return skip("needs root to become an unprivileged user (it runs as nobody via setpriv)");
    }
    let Some(setpriv) = ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().find(|p| Path::new(p).is_file()) else {
        return skip("setpriv (util-linux) is not installed");
    };
    if let Some(why) = herd_lab::supervisor::userns_disabled() {
        return skip(&format!("unprivileged users cannot make user namespaces here: {why}"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    std::os::unix::fs::chown(base, Some(65534), Some(65534)).unwrap();
    let daemon = write_script(base, "stand-in-herdd", STAND_IN);
    let dir = base.join("cluster");
    let dir_s = dir.to_str().unwrap();
    let as_nobody = |args: &[&str]| -> std::process::Output {
        Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(HERD_LAB)
            .args(args)
            .env_remove("HERD_CLUSTER")
            .env_remove("XDG_RUNTIME_DIR")
            .env(herd_lab::DAEMON_ENV, &daemon)
            .current_dir("/")
            .output()
            .unwrap()
    };
    // nobody must be able to run the herd-lab binary where it was built.
    let probe_exec = as_nobody(&["--version"]);
    if !probe_exec.status.success() {
        return skip(&format!("nobody cannot run {HERD_LAB}: {}", String::from_utf8_lossy(&probe_exec.stderr)));
    }
    /// Takes the cluster down as root if the test fails half-way.
    struct Guard(PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = herd_lab::down(&self.0);
        }
    }
    let _guard = Guard(dir.clone());

    let out = as_nobody(&["cluster", "up", "--nodes", "2", "--dir", dir_s, "--timeout", "20"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "up as nobody: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("cluster of 2 node(s) up"), "{stdout}");

    let out = as_nobody(&["cluster", "status", "--json", "--dir", dir_s]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    let st = herd_lab::status(&dir).unwrap();
    for (n, json) in st.nodes.iter().zip(nodes) {
        assert_eq!(json["name"], n.name.as_str());
        assert_eq!(json["state"], "running");
        assert_eq!(json["pid"], n.pid.unwrap());
        assert_eq!(json["init_pid"], n.init_pid);
        // Everything runs as nobody on the host, in a user namespace of its own.
        for pid in [st.supervisor_pid, n.init_pid, n.pid.unwrap()] {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
            assert_eq!(uid_line.split_whitespace().nth(1), Some("65534"), "pid {pid}: {uid_line}");
        }
        let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
        assert_ne!(std::fs::read_link(format!("/proc/{}/ns/user", n.init_pid)).unwrap(), ours);
        assert_eq!(probe(&dir, &n.name)["hostname"], n.name);
    }
    // Root can still enter a node of nobody's cluster (user namespace first).
    let out = herd_lab::node_exec(
        &dir,
        "n2",
        &[PYTHON, "-c", "import socket; print(socket.create_connection(('10.47.0.1', 4700), timeout=5).recv(16).decode())"],
    )
    .unwrap()
    .output()
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "n1", "{}", String::from_utf8_lossy(&out.stderr));

    let out = as_nobody(&["cluster", "stop", "n1", "--dir", dir_s]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = as_nobody(&["cluster", "start", "n1", "--dir", dir_s]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = as_nobody(&["cluster", "down", "--dir", dir_s]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("cluster at {dir_s} is down"));
    wait_until("every process of the cluster is gone", || {
        [st.supervisor_pid].iter().chain(st.nodes.iter().map(|n| &n.init_pid)).all(|p| !Path::new(&format!("/proc/{p}")).exists())
    });
    let out = as_nobody(&["cluster", "down", "--dir", dir_s]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("no cluster at {dir_s}"));
    let out = as_nobody(&["cluster", "status", "--dir", dir_s]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cluster at"), "{}", String::from_utf8_lossy(&out.stderr));

    // --cpus-per-node needs a cpuset cgroup nobody can write to.
    let out = as_nobody(&["cluster", "up", "--nodes", "1", "--cpus-per-node", "1", "--dir", dir_s]);
    let err = String::from_utf8_lossy(&out.stderr);
    if herd_lab::cgroup::find_parent().is_ok() {
        assert!(!out.status.success() && err.contains("--cpus-per-node:"), "{err}");
        println!("as nobody: {}", err.trim());
    }
}
