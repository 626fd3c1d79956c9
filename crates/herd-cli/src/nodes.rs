//! `herd nodes`, `herd status`, `herd keygen`: talking to herdd, and the cluster key.

use std::path::{Path, PathBuf};

use anyhow::Context;
use herd_daemon::control::{Client, ClientError, NodeRow, NodeStatus, Request, Response};
use herd_wire::ClusterKey;

/// Where the CLI finds a daemon: `--socket`, else `--node` in the local cluster,
/// else this machine's herdd.
#[derive(Clone)]
pub struct Target {
    pub socket: PathBuf,
}

impl Target {
    pub fn resolve(socket: Option<PathBuf>, node: Option<&str>, cluster: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(s) = socket {
            return Ok(Self { socket: s });
        }
        if let Some(name) = node {
            let dir = cluster.unwrap_or_else(herd_lab::default_dir);
            let socket = herd_lab::node_socket(&dir, name);
            if !dir.join("cluster.json").exists() {
                anyhow::bail!("no local cluster at {} (start one with `herd cluster up --nodes 3`, or give --cluster DIR)", dir.display());
            }
            if !dir.join(name).is_dir() {
                anyhow::bail!("the local cluster at {} has no node {name:?} (see `herd cluster status`)", dir.display());
            }
            return Ok(Self { socket });
        }
        Ok(Self { socket: herd_daemon::config::DEFAULT_SOCKET.into() })
    }

    /// A connection to the daemon, with the typed error (callers tell "not running" apart).
    pub(crate) fn connect(&self) -> Result<Client, ClientError> {
        Client::connect(&self.socket)
    }

    pub(crate) fn call(&self, request: &Request) -> anyhow::Result<Response> {
        Ok(self.connect()?.call(request)?)
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1}G", bytes as f64 / (1u64 << 30) as f64)
}

/// `herd dashboard`: a login link for the web dashboard.
pub fn dashboard(target: &Target) -> anyhow::Result<i32> {
    let Response::DashboardLogin { url, valid_secs } = target.call(&Request::DashboardLogin)? else {
        anyhow::bail!("herdd answered the dashboard request with something else");
    };
    println!("{url}");
    eprintln!("Open this link in a browser on this machine: it works once, within {} minutes, and the browser then acts as you.", valid_secs / 60);
    Ok(0)
}

/// Every node herdd knows (`herd nodes`, `herd top`, `herd mon`).
pub fn rows(target: &Target) -> anyhow::Result<Vec<NodeRow>> {
    let Response::Nodes(rows) = target.call(&Request::Nodes)? else {
        anyhow::bail!("herdd answered the nodes request with something else");
    };
    Ok(rows)
}

pub fn nodes(target: &Target, json: bool) -> anyhow::Result<i32> {
    let rows = rows(target)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    print_nodes(&rows);
    Ok(0)
}

/// A node's flags as `herd nodes` and `herd ctl` show them: `block,quiet,stay,lstay`,
/// those set, or `-`.
pub fn flags(s: &NodeStatus) -> String {
    let set: Vec<&str> = [(s.blocked, "block"), (s.quiet, "quiet"), (s.stay, "stay"), (s.lstay, "lstay")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    if set.is_empty() {
        "-".into()
    } else {
        set.join(",")
    }
}

fn print_nodes(rows: &[NodeRow]) {
    print!("{}", nodes_table(rows));
}

fn nodes_table(rows: &[NodeRow]) -> String {
    let line = |name: &str, addr: &str, state: &str, cpus: &str, speed: &str, load: &str, mem: &str, flags: &str| {
        format!("{name:<16} {addr:<22} {state:<8} {cpus:>4} {speed:>6} {load:>6} {mem:>14}  {flags}\n")
    };
    let mut out = line("NODE", "ADDRESS", "STATE", "CPUS", "SPEED", "LOAD", "MEM FREE/TOTAL", "FLAGS");
    for r in rows {
        let mark = if r.is_self { "*" } else { "" };
        let (cpus, speed, load, mem) = if r.mem_total == 0 {
            ("-".into(), "-".into(), "-".into(), "-".into())
        } else {
            (r.cpus.to_string(), r.speed.to_string(), format!("{:.2}", r.load), format!("{}/{}", gib(r.mem_free), gib(r.mem_total)))
        };
        out += &line(&format!("{}{mark}", r.name), &r.address, &r.state, &cpus, &speed, &load, &mem, &flags(&r.status));
    }
    out
}

pub fn status(target: &Target, json: bool) -> anyhow::Result<i32> {
    let Response::Status(s) = target.call(&Request::Status)? else {
        anyhow::bail!("herdd answered the status request with something else");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(0);
    }
    println!("herdd {} on node {} (pid {}), up {} s", s.version, s.name, s.pid, s.uptime_secs);
    println!("  address:      {}", s.address);
    println!("  cluster key:  {} (fingerprint)", s.key_fingerprint);
    println!("  peers:        {} up of {} known", s.peers_up, s.peers_known);
    println!("  status:       {}", match (s.status.blocked, s.status.quiet) {
        (false, false) => "accepting processes".to_string(),
        (b, q) => [b.then_some("blocked"), q.then_some("quiet")].into_iter().flatten().collect::<Vec<_>>().join(", "),
    });
    println!("  discovery:    {}", if s.discovery { "multicast beacon" } else { "static peers only" });
    println!("  config:       {}", s.config.as_deref().unwrap_or("(defaults)"));
    println!("  http:         {}", s.http.as_deref().unwrap_or("off"));
    println!("  socket:       {}", target.socket.display());
    Ok(0)
}

pub fn keygen(path: &Path) -> anyhow::Result<i32> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let key = ClusterKey::generate()?;
    key.write_new(path)?;
    println!("wrote a new cluster key to {} (fingerprint {})", path.display(), key.fingerprint());
    println!("copy it, mode 0600, to /etc/herd/cluster.key on every node of the cluster");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, status: NodeStatus) -> NodeRow {
        NodeRow {
            name: name.into(),
            address: "10.47.0.1:4700".into(),
            state: "up".into(),
            cpus: 1,
            speed: 10000,
            load: 1.5,
            mem_free: 1 << 30,
            mem_total: 4 << 30,
            is_self: name == "n1",
            boot: 1,
            info_age_secs: Some(0.0),
            kernel: None,
            version: None,
            status,
            shared: vec![],
            shared_with_this_node: vec![],
        }
    }

    #[test]
    fn flags_column() {
        assert_eq!(flags(&NodeStatus::default()), "-");
        assert_eq!(flags(&NodeStatus { blocked: true, quiet: true, stay: true, lstay: true }), "block,quiet,stay,lstay");
        assert_eq!(flags(&NodeStatus { quiet: true, lstay: true, ..Default::default() }), "quiet,lstay");
        let t = nodes_table(&[row("n1", NodeStatus::default()), row("n2", NodeStatus { blocked: true, ..Default::default() })]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("MEM FREE/TOTAL  FLAGS"), "{t}");
        assert!(lines[1].starts_with("n1* ") && lines[1].ends_with("1.0G/4.0G  -"), "{t}");
        assert!(lines[2].ends_with("  block"), "{t}");
    }
}
