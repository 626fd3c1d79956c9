//! The cluster on the local cluster: real herdd daemons, each in its own user, network,
//! pid and mount namespaces, joined by a bridge; nothing here passes because the nodes
//! share a kernel (they share no pids, no /tmp, no addresses).
//!
//! Prerequisites (root or user namespaces, iproute2, herdd built next to herd) missing:
//! each test prints `SKIP: <reason>` and returns.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herd_lab::{LocalCluster, UpOptions};
use serde_json::Value;

const HERD: &str = env!("CARGO_BIN_EXE_herd");

fn herdd() -> PathBuf {
    Path::new(HERD).with_file_name("herdd")
}

fn prerequisites() -> Result<(), String> {
    if !herdd().exists() {
        return Err(format!("{} is not built (run the tests with --workspace)", herdd().display()));
    }
    if herd_lab::net::ip_command().is_none() {
        return Err("the `ip` command (iproute2) is not installed".into());
    }
    Ok(())
}

/// A cluster directory outside /tmp: each node has a private /tmp of its own.
fn cluster_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cluster-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn up(test: &str, nodes: u32, cpus_per_node: Option<u32>) -> Option<LocalCluster> {
    let mut opts = UpOptions::new(nodes);
    opts.cpus_per_node = cpus_per_node;
    up_with(test, opts)
}

fn up_with(test: &str, mut opts: UpOptions) -> Option<LocalCluster> {
    if let Err(reason) = prerequisites() {
        println!("SKIP: {reason}");
        return None;
    }
    opts.dir = Some(cluster_dir(test));
    opts.herd_exe = Some(HERD.into());
    opts.daemon = Some(herdd());
    opts.timeout = Duration::from_secs(60);
    match LocalCluster::up(&opts) {
        Ok(c) => Some(c),
        Err(e) if e.to_string().contains("user namespaces are disabled") => {
            println!("SKIP: {e}");
            None
        }
        Err(e) => panic!("herd cluster up failed: {e}"),
    }
}

/// Takes the cluster down and removes its directory.
fn finish(cluster: LocalCluster) {
    let dir = cluster.dir().to_path_buf();
    cluster.down().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

fn herd(cluster: &LocalCluster, node: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(HERD)
        .arg("--cluster")
        .arg(cluster.dir())
        .args(["--node", node])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run herd");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn nodes_of(cluster: &LocalCluster, node: &str) -> Vec<Value> {
    let (ok, out, err) = herd(cluster, node, &["nodes", "--json"]);
    assert!(ok, "herd --node {node} nodes --json: {err}");
    serde_json::from_str::<Vec<Value>>(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn state_of(rows: &[Value], name: &str) -> Option<String> {
    rows.iter().find(|r| r["name"] == name).map(|r| r["state"].as_str().unwrap_or("?").to_string())
}

/// Polls until `cond` holds for what `viewer` lists; returns how long it took.
fn wait_until(cluster: &LocalCluster, viewer: &str, limit: Duration, what: &str, cond: impl Fn(&[Value]) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let rows = nodes_of(cluster, viewer);
        if cond(&rows) {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{viewer}: {what} not within {limit:?}; it lists {rows:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn all_up<'a>(names: &'a [&'a str]) -> impl Fn(&[Value]) -> bool + 'a {
    move |rows| rows.len() == names.len() && names.iter().all(|n| state_of(rows, n).as_deref() == Some("up"))
}

fn status(cluster: &LocalCluster, node: &str) -> Value {
    let (ok, out, err) = herd(cluster, node, &["status", "--json"]);
    assert!(ok, "herd --node {node} status: {err}");
    serde_json::from_str(&out).unwrap()
}

/// Fetches a URL from inside a node's network namespace (its 127.0.0.1).
fn http_get(cluster: &LocalCluster, node: &str, path: &str) -> String {
    let script = format!("import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:4780{path}', timeout=10).read().decode())");
    let out = cluster.node_exec(node, &["python3", "-c", &script]).unwrap().stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "GET {path} in {node}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn three_nodes_converge_with_their_own_cpus() {
    let root = nix::unistd::geteuid().is_root();
    // cpusets need root (or a delegated cgroup); as a user the CPU count is the machine's.
    let Some(cluster) = up("converge", 3, root.then_some(1)) else { return };
    let names = ["n1", "n2", "n3"];
    for viewer in names {
        let took = wait_until(&cluster, viewer, Duration::from_secs(30), "all three up", all_up(&names));
        println!("{viewer} saw all three nodes up after a further {took:?}");
    }
    let host_cpus = std::thread::available_parallelism().unwrap().get() as u64;
    for viewer in names {
        let rows = nodes_of(&cluster, viewer);
        for r in &rows {
            let expected = if root { 1 } else { host_cpus };
            assert_eq!(r["cpus"], expected, "{viewer} lists {r}");
            assert!(r["speed"].as_u64().unwrap() > 0 && r["mem_total"].as_u64().unwrap() > 0, "{r}");
            assert!(r["mem_free"].as_u64().unwrap() <= r["mem_total"].as_u64().unwrap(), "{r}");
            assert!(r["load"].as_f64().unwrap() >= 0.0, "{r}");
        }
        assert_eq!(rows.iter().filter(|r| r["is_self"] == true).count(), 1);
        assert_eq!(rows.iter().find(|r| r["is_self"] == true).unwrap()["name"], viewer);
    }
    // Same key everywhere, shown only as a fingerprint; every node at its own address.
    let statuses: Vec<Value> = names.iter().map(|n| status(&cluster, n)).collect();
    let fp = &statuses[0]["key_fingerprint"];
    assert!(fp.as_str().unwrap().starts_with("herd:"), "{fp}");
    assert!(statuses.iter().all(|s| &s["key_fingerprint"] == fp && s["peers_up"] == 2));
    let key_text = std::fs::read_to_string(cluster.dir().join("cluster.key")).unwrap();
    let (_, human, _) = herd(&cluster, "n1", &["status"]);
    assert!(!human.contains(key_text.split_whitespace().last().unwrap()), "status shows the key");
    let host_view = cluster.status().unwrap();
    for (i, n) in names.iter().enumerate() {
        assert_eq!(statuses[i]["address"], format!("{}:4700", cluster.node_address(n).unwrap()));
        // herdd's pid inside its node is not the one the host sees: own pid namespace.
        let host_pid = host_view.iter().find(|s| s.name == *n).unwrap().pid.unwrap();
        let own_pid = statuses[i]["pid"].as_i64().unwrap();
        assert!(own_pid != i64::from(host_pid) && own_pid < 100, "{n}: pid {own_pid} inside, {host_pid} outside");
    }
    // HTTP inside the node: Prometheus metrics and the JSON API agree with the CLI.
    let metrics = http_get(&cluster, "n2", "/metrics");
    for n in names {
        assert!(metrics.contains(&format!("herd_node_up{{node=\"{n}\"")), "{metrics}");
    }
    assert!(metrics.contains("herd_cluster_nodes{state=\"up\"} 3"), "{metrics}");
    assert!(metrics.contains("herd_gossip_sent_bytes_total"), "{metrics}");
    // Every metric the Grafana dashboard of contrib/ uses is there.
    let dashboard = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../contrib/grafana-dashboard.json")).unwrap();
    let used: std::collections::BTreeSet<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("herd_"))
        .collect();
    assert!(used.len() >= 10, "the dashboard uses {used:?}");
    for m in used {
        assert!(metrics.lines().any(|l| l.starts_with(m) && l[m.len()..].starts_with(['{', ' '])), "the dashboard uses {m}, not in /metrics:\n{metrics}");
    }
    let api: Vec<Value> = serde_json::from_str(&http_get(&cluster, "n3", "/api/nodes")).unwrap();
    assert!(all_up(&names)(&api), "{api:#?}");
    // The human table.
    let (ok, table, _) = herd(&cluster, "n1", &["nodes"]);
    assert!(ok && table.lines().count() == 4 && table.contains("n1*"), "{table}");
    finish(cluster);
}

#[test]
fn a_stopped_daemon_is_marked_down_and_comes_back() {
    let Some(cluster) = up("restart", 3, None) else { return };
    let names = ["n1", "n2", "n3"];
    wait_until(&cluster, "n1", Duration::from_secs(30), "all three up", all_up(&names));
    wait_until(&cluster, "n3", Duration::from_secs(30), "all three up", all_up(&names));
    let before = nodes_of(&cluster, "n1").into_iter().find(|r| r["name"] == "n2").unwrap()["boot"].clone();
    let pid = cluster.status().unwrap().into_iter().find(|n| n.name == "n2").unwrap().pid.expect("n2's herdd runs");
    // SIGKILL: no goodbye, the others must notice by themselves.
    herd_kernel::task::kill(pid, libc::SIGKILL).unwrap();
    for viewer in ["n1", "n3"] {
        let took = wait_until(&cluster, viewer, Duration::from_secs(20), "n2 down", |rows| state_of(rows, "n2").as_deref() == Some("down"));
        println!("{viewer} listed the killed n2 as down after {took:?}");
    }
    let (ok, _, err) = herd(&cluster, "n2", &["nodes"]);
    assert!(!ok && err.contains("not running"), "{err}");
    assert!(cluster.start_node("n2").unwrap());
    for viewer in names {
        let took = wait_until(&cluster, viewer, Duration::from_secs(30), "n2 back up", all_up(&names));
        println!("{viewer} saw n2 back after {took:?}");
    }
    let after = nodes_of(&cluster, "n1").into_iter().find(|r| r["name"] == "n2").unwrap()["boot"].clone();
    assert!(after.as_u64() > before.as_u64(), "n2 came back with boot {after}, was {before}");
    finish(cluster);
}

#[test]
fn a_node_with_another_key_never_appears_and_changes_nothing() {
    let Some(cluster) = up("rogue", 3, None) else { return };
    let names = ["n1", "n2", "n3"];
    for n in names {
        wait_until(&cluster, n, Duration::from_secs(30), "all three up", all_up(&names));
    }
    // A herdd with its own key, inside n3's namespaces, beaconing on the same group and
    // announcing itself to n1 and n2 directly.
    let dir = cluster.dir().join("rogue");
    std::fs::create_dir_all(&dir).unwrap();
    herd_wire::ClusterKey::generate().unwrap().write_new(dir.join("cluster.key")).unwrap();
    let (a1, a2) = (cluster.node_address("n1").unwrap(), cluster.node_address("n2").unwrap());
    std::fs::write(
        dir.join("herd.toml"),
        format!(
            "name = \"rogue\"\nkey_file = \"{k}\"\nlisten = \"0.0.0.0:4710\"\npeers = [\"{a1}:4700\", \"{a2}:4700\"]\ncontrol_socket = \"{s}\"\nhttp = \"off\"\nhpc = \"off\"\nspeed = 10000\n",
            k = dir.join("cluster.key").display(),
            s = dir.join("herdd.sock").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("herdd.log")).unwrap();
    let mut rogue = cluster
        .node_exec("n3", &[herdd().as_os_str(), "--config".as_ref(), dir.join("herd.toml").as_os_str()])
        .unwrap()
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let socket = dir.join("herdd.sock");
    let rogue_status = || -> Option<Value> {
        let out = Command::new(HERD).args(["status", "--json", "--socket"]).arg(&socket).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    // Wait until the rogue has beaconed and gossiped, and the real nodes have dropped it.
    let start = Instant::now();
    loop {
        let r = rogue_status();
        let n1 = status(&cluster, "n1");
        let sent = r.as_ref().is_some_and(|r| r["counters"]["beacons_sent"].as_u64() >= Some(2) && r["counters"]["gossip_sent_packets"].as_u64() >= Some(2));
        let dropped = n1["counters"]["gossip_forged"].as_u64() >= Some(1) && n1["counters"]["beacons_rejected"].as_u64() >= Some(1);
        if sent && dropped {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "rogue traffic not seen: rogue {r:?}, n1 {n1}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    for n in names {
        let rows = nodes_of(&cluster, n);
        assert!(all_up(&names)(&rows), "{n} lists {rows:#?}");
        assert!(rows.iter().all(|r| r["name"] != "rogue" && !r["address"].as_str().unwrap().ends_with(":4710")), "{rows:#?}");
    }
    let r = rogue_status().expect("rogue answers");
    assert_eq!(r["peers_known"], 0, "the rogue learned of members: {r}");
    assert!(r["counters"]["beacons_rejected"].as_u64() >= Some(1), "rogue heard no real beacons: {r}");
    let _ = rogue.kill();
    let _ = rogue.wait();
    finish(cluster);
}

/// The cgroup path /proc/self/cgroup text gives for `controller`: its v1
/// line, or else the v2 one.
fn cgroup_of<'a>(proc_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    let v1 = proc_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, cs, path) = (f.next()?, f.next()?, f.next()?);
        cs.split(',').any(|c| c == controller).then_some(path)
    });
    v1.or_else(|| proc_cgroup.lines().find_map(|l| l.strip_prefix("0::")))
}

/// How many times the kernel's OOM killer struck in memory cgroup `dir`.
fn oom_kills(dir: &Path) -> u64 {
    ["memory.oom_control", "memory.events"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .find_map(|t| t.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no oom_kill count in {}", dir.display()))
}

/// A python3 that touches `mib` MiB page by page and says "survived".
fn hog(mib: u64) -> Vec<String> {
    let script = format!("b = bytearray({mib} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('survived')");
    vec!["/usr/bin/python3".into(), "-c".into(), script]
}

#[test]
fn a_node_keeps_to_its_cpuset_and_memory_and_only_its_hog_is_oom_killed() {
    use std::os::unix::process::ExitStatusExt;
    use herd_lab::cgroup::{self, CPUSET, MEMORY};
    if let Err(e) = cgroup::find_parents(&[CPUSET, MEMORY]) {
        println!("SKIP: {}: {e}", cgroup::option_of(e.controller));
        return;
    }
    if !Path::new("/usr/bin/python3").exists() {
        println!("SKIP: /usr/bin/python3 is not installed");
        return;
    }
    let mut opts = UpOptions::new(2);
    opts.cpus_per_node = Some(1);
    opts.mem_per_node = Some(cgroup::parse_size("256M").unwrap());
    let Some(cluster) = up_with("memory", opts) else { return };
    let st = cluster.state().unwrap();
    let made: Vec<PathBuf> = st.cgroups().into_iter().chain(st.nodes.iter().flat_map(|n| n.cgroups())).map(Path::to_path_buf).collect();
    assert!(st.cgroup.is_some() && st.memory_cgroup.is_some() && made.iter().all(|d| d.is_dir()), "{made:?}");
    let table: Vec<_> = cluster.status().unwrap();
    assert!(table.iter().all(|n| n.mem_limit == Some(256 << 20) && n.cpus.is_some()), "{table:?}");
    let herdd_before = table.iter().find(|n| n.name == "n1").unwrap().pid.expect("n1's herdd runs");

    // A command run in a node is in that node's cpuset and memory cgroup.
    for node in &st.nodes {
        let out = cluster
            .node_exec(&node.name, &["sh", "-c", "cat /proc/self/cgroup; grep Cpus_allowed_list /proc/self/status"])
            .unwrap()
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {}", node.name, String::from_utf8_lossy(&out.stderr));
        println!("{}:\n{text}", node.name);
        for (controller, dir) in [(CPUSET, node.cgroup.as_ref().unwrap()), (MEMORY, node.memory_cgroup.as_ref().unwrap())] {
            // The node's cgroup as /proc/self/cgroup names it: .../herd-XXXX/nK.
            let tail = dir.strip_prefix(dir.parent().unwrap().parent().unwrap()).unwrap();
            let path = cgroup_of(&text, controller).unwrap_or_else(|| panic!("no {controller} line: {text}"));
            assert!(Path::new(path).ends_with(tail), "{}: {controller} cgroup {path}, not {}", node.name, dir.display());
        }
        let allowed = text.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim();
        assert_eq!(cgroup::parse_cpu_list(allowed), *node.cpus.as_ref().unwrap(), "{}: {text}", node.name);
        assert_eq!(node.cpus.as_ref().unwrap().len(), 1);

        // And sees the node's limit the way herdd does (host::cgroup_memory).
        let out = cluster.node_exec(&node.name, &[HERD, "__lab", "cgroup-memory"]).unwrap().stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
        println!("{}: cgroup_memory() = {seen}", node.name);
        assert_eq!(seen["limit"], 256u64 << 20, "{seen}");
        assert!(seen["usage"].as_u64().unwrap() < 256 << 20, "{seen}");
        assert_eq!(seen["dir"], node.memory_cgroup.as_ref().unwrap().to_str().unwrap());
    }

    // 400 MiB in a 256 MiB node: the kernel kills it (SIGKILL), in that node only.
    let n1_mem = st.nodes[0].memory_cgroup.clone().unwrap();
    let n2_mem = st.nodes[1].memory_cgroup.clone().unwrap();
    let before = (oom_kills(&n1_mem), oom_kills(&n2_mem));
    let out = cluster.node_exec("n1", &hog(400)).unwrap().stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "the hog in n1 ended {:?}: {}", out.status, String::from_utf8_lossy(&out.stdout));
    assert!(oom_kills(&n1_mem) > before.0, "n1's cgroup counts no OOM kill");
    // 100 MiB in n2 fits.
    let out = cluster.node_exec("n2", &hog(100)).unwrap().stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("survived"), "n2: {:?}", out.status);
    assert_eq!(oom_kills(&n2_mem), before.1, "n2 had an OOM kill");
    // Only the hog went: n1's herdd runs on, the same process.
    let n1 = cluster.status().unwrap().into_iter().find(|n| n.name == "n1").unwrap();
    assert_eq!((n1.state, n1.pid), (herd_lab::NodeState::Running, Some(herdd_before)));
    assert!(status(&cluster, "n1")["pid"].as_i64().is_some());

    finish(cluster);
    let left: Vec<_> = made.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "cgroups left after down: {left:?}");
}
