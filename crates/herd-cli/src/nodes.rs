//! `herd nodes`, `herd status`, `herd keygen`: talking to herdd, and the cluster key.

use std::path::{Path, PathBuf};

use anyhow::Context;
use herd_daemon::control::{Client, ClientError, NodeRow, Request, Response};
use herd_wire::ClusterKey;

/// Where the CLI finds a daemon: `--socket`, else `--node` in the local cluster,
/// else this machine's herdd.
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

pub fn nodes(target: &Target, json: bool) -> anyhow::Result<i32> {
    let Response::Nodes(rows) = target.call(&Request::Nodes)? else {
        anyhow::bail!("herdd answered the nodes request with something else");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    print_nodes(&rows);
    Ok(0)
}

fn print_nodes(rows: &[NodeRow]) {
    println!("{:<16} {:<22} {:<8} {:>4} {:>6} {:>6} {:>14}", "NODE", "ADDRESS", "STATE", "CPUS", "SPEED", "LOAD", "MEM FREE/TOTAL");
    for r in rows {
        let mark = if r.is_self { "*" } else { "" };
        let (cpus, speed, load, mem) = if r.mem_total == 0 {
            ("-".into(), "-".into(), "-".into(), "-".into())
        } else {
            (r.cpus.to_string(), r.speed.to_string(), format!("{:.2}", r.load), format!("{}/{}", gib(r.mem_free), gib(r.mem_total)))
        };
        println!("{:<16} {:<22} {:<8} {:>4} {:>6} {:>6} {:>14}", format!("{}{mark}", r.name), r.address, r.state, cpus, speed, load, mem);
    }
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
