//! herdd's configuration: `/etc/herd/herd.toml`, every key optional.
//!
//! ```toml
//! name = "node7"                      # default: the hostname
//! key_file = "/etc/herd/cluster.key"  # the cluster key (`herd keygen`)
//! listen = "0.0.0.0:4700"             # gossip (UDP) and node streams (TCP)
//! advertise = "192.168.1.7"           # the address other nodes reach us at (default: guessed)
//! discovery = true                    # authenticated multicast beacon
//! beacon = "239.255.47.47:4701"       # its group and port
//! peers = ["192.168.1.8", "node9:4700"]
//! map_file = "/etc/openmosix.map"     # classic `ID host count` peer list
//! control_socket = "/run/herd/herdd.sock"
//! http = "127.0.0.1:4780"             # "off" disables /metrics and /api
//! hpc = "/run/herd/hpc"               # openMosix's /proc/hpc, as a FUSE file system; "off" disables
//! speed = 12000                       # skip the start-up calibration
//! allow_root_guests = false           # root's processes do not migrate
//! balance = true                      # move processes automatically (openMosix did)
//! checkpoint_every = "10m"            # checkpoint every process away this often (default: off;
//!                                     # `herd run --checkpoint-every` sets it per job)
//! checkpoint_dir = "/var/lib/herd/checkpoints"  # where the images of processes away are kept
//!
//! [policy]                            # the balancing policy; every key optional
//! stability = 1.3                     # target load + 1.3 × the process < source load
//! min_residence = 2.0                 # seconds a process stays after it arrives
//! birth_placement = true              # a process never moved yet is not held by min_residence
//! pay_factor = 1.0                    # runs ≥ pay_factor × size/transfer rate before a move
//! min_demand = 0.25                   # wants less of a CPU than this: not moved for load
//! io_calls = 200.0                    # forwarded calls/s from which a process comes home
//! mem_low = 0.10                      # ushering below this fraction of memory free
//! mem_target_free = 0.20              # ushering targets keep this fraction free
//! usher_horizon = 5.0                 # ushering looks this many seconds ahead
//! max_moves = 4                       # moves per round per home
//! settle = 6.0                        # seconds a move counts before gossip shows it
//! decay = 0.5                         # per-second weight of the past in CPU demand
//! default_rate = 104857600.0          # bytes/s assumed before a move is measured
//! interval = 1.0                      # seconds between rounds
//!
//! [dfsa]                              # direct file access on shared file systems
//! paths = ["/home", "/scratch"]       # offered, each verified with every node (default none)
//! auto = true                         # also offer mounted network file systems (nfs, ceph, …)
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_CONFIG: &str = "/etc/herd/herd.toml";
pub const DEFAULT_KEY: &str = "/etc/herd/cluster.key";
pub const DEFAULT_SOCKET: &str = "/run/herd/herdd.sock";
pub const DEFAULT_PORT: u16 = 4700;
pub const DEFAULT_HTTP: &str = "127.0.0.1:4780";
pub const DEFAULT_HPC: &str = "/run/herd/hpc";
pub const DEFAULT_CHECKPOINT_DIR: &str = "/var/lib/herd/checkpoints";

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    key_file: Option<PathBuf>,
    listen: Option<String>,
    advertise: Option<String>,
    discovery: Option<bool>,
    beacon: Option<String>,
    #[serde(default)]
    peers: Vec<String>,
    map_file: Option<PathBuf>,
    control_socket: Option<PathBuf>,
    http: Option<String>,
    hpc: Option<String>,
    speed: Option<u32>,
    allow_root_guests: Option<bool>,
    balance: Option<bool>,
    policy: Option<herd_balance::Params>,
    dfsa: Option<DfsaFile>,
    checkpoint_every: Option<String>,
    checkpoint_dir: Option<PathBuf>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct DfsaFile {
    #[serde(default)]
    paths: Vec<PathBuf>,
    auto: Option<bool>,
}

/// The configuration herdd runs with, every default filled in.
#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub key_file: PathBuf,
    pub listen: SocketAddr,
    pub advertise: Option<IpAddr>,
    pub discovery: bool,
    pub beacon: SocketAddr,
    /// Static peers as written (resolved when used: a peer may not be up yet).
    pub peers: Vec<String>,
    pub control_socket: PathBuf,
    pub http: Option<SocketAddr>,
    /// Where herdd mounts its /proc/hpc view (`hpc`; None: not at all).
    pub hpc: Option<PathBuf>,
    pub speed: Option<u32>,
    /// Whether processes of root may run here as guests (and leave from here).
    /// Off by default: a migrated process runs as its owner, never as root.
    pub allow_root_guests: bool,
    /// Whether herdd moves processes by itself.
    pub balance: bool,
    pub policy: herd_balance::Params,
    /// Directories offered for direct file access (`[dfsa] paths`).
    pub dfsa_paths: Vec<PathBuf>,
    /// Whether mounted network file systems are offered too (`[dfsa] auto`, default true).
    pub dfsa_auto: bool,
    /// How often each process away is checkpointed when its job does not say
    /// (`checkpoint_every`; None: never).
    pub checkpoint_every: Option<std::time::Duration>,
    /// Where the checkpoints of this home's processes are kept (`checkpoint_dir`).
    pub checkpoint_dir: PathBuf,
    /// Where it came from, for messages.
    pub source: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Value { path: PathBuf, key: &'static str, message: String },
    #[error("{path}:{line}: {message}")]
    MapLine { path: PathBuf, line: usize, message: String },
}

impl Config {
    /// Reads `path`; with `explicit == false` a missing file means "all defaults"
    /// (zero configuration), with `explicit == true` it is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Self::from_file(File::default(), None);
            }
            Err(source) => return Err(ConfigError::Read { path: path.into(), source }),
        };
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        // toml's message names the line and column and quotes the offending key.
        let file: File =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        Self::from_file(file, Some(path))
    }

    fn from_file(f: File, path: Option<&Path>) -> Result<Self, ConfigError> {
        let shown = path.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("(defaults)"));
        let value_err = |key: &'static str, message: String| ConfigError::Value { path: shown.clone(), key, message };
        let name = f.name.unwrap_or_else(herd_kernel::host::hostname);
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(value_err("name", format!("{name:?} is not a usable node name (1-64 characters, no spaces)")));
        }
        let listen = match f.listen {
            None => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
            Some(s) => parse_addr(&s, DEFAULT_PORT).map_err(|m| value_err("listen", m))?,
        };
        let advertise = match f.advertise {
            None => None,
            Some(s) => Some(s.parse::<IpAddr>().map_err(|_| value_err("advertise", format!("{s:?} is not an IP address")))?),
        };
        let beacon = parse_addr(f.beacon.as_deref().unwrap_or(herd_cluster::beacon::DEFAULT_GROUP), 4701)
            .map_err(|m| value_err("beacon", m))?;
        if !beacon.ip().is_multicast() {
            return Err(value_err("beacon", format!("{} is not a multicast address", beacon.ip())));
        }
        let http = match f.http.as_deref() {
            Some("off") | Some("") => None,
            None => Some(DEFAULT_HTTP.parse().expect("valid default")),
            Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| value_err("http", format!("{s:?} is not ADDRESS:PORT or \"off\"")))?),
        };
        let hpc = match f.hpc.as_deref() {
            Some("off") | Some("") => None,
            None => Some(PathBuf::from(DEFAULT_HPC)),
            Some(s) if Path::new(s).is_absolute() => Some(PathBuf::from(s)),
            Some(s) => return Err(value_err("hpc", format!("{s:?} is not an absolute path or \"off\""))),
        };
        if f.speed == Some(0) {
            return Err(value_err("speed", "must be a positive number (10000 = the reference CPU)".into()));
        }
        let mut peers = f.peers;
        for p in &peers {
            if p.trim().is_empty() {
                return Err(value_err("peers", "an empty peer".into()));
            }
        }
        if let Some(map) = &f.map_file {
            peers.extend(read_map_file(map)?);
        }
        let policy = f.policy.unwrap_or_default();
        policy.validate().map_err(|e| value_err("policy", e.to_string()))?;
        let dfsa = f.dfsa.unwrap_or_default();
        for p in &dfsa.paths {
            if !p.is_absolute() {
                return Err(value_err("dfsa.paths", format!("{} is not an absolute path", p.display())));
            }
        }
        let checkpoint_every = match f.checkpoint_every.as_deref() {
            None | Some("off") | Some("") => None,
            Some(s) => Some(parse_every(s).map_err(|m| value_err("checkpoint_every", m))?),
        };
        let checkpoint_dir = f.checkpoint_dir.unwrap_or_else(|| DEFAULT_CHECKPOINT_DIR.into());
        if !checkpoint_dir.is_absolute() {
            return Err(value_err("checkpoint_dir", format!("{} is not an absolute path", checkpoint_dir.display())));
        }
        Ok(Config {
            checkpoint_every,
            checkpoint_dir,
            dfsa_paths: dfsa.paths,
            dfsa_auto: dfsa.auto.unwrap_or(true),
            balance: f.balance.unwrap_or(true),
            policy,
            name,
            key_file: f.key_file.unwrap_or_else(|| DEFAULT_KEY.into()),
            listen,
            advertise,
            discovery: f.discovery.unwrap_or(true),
            allow_root_guests: f.allow_root_guests.unwrap_or(false),
            beacon,
            peers,
            control_socket: f.control_socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
            http,
            hpc,
            speed: f.speed,
            source: path.map(Path::to_path_buf),
        })
    }

    /// Resolves the static peers: the addresses of those that resolve now, and the names
    /// of those that do not (a peer's name may not be in DNS yet; herdd tries again).
    pub fn resolve_peers(&self) -> (Vec<SocketAddr>, Vec<String>) {
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        for p in &self.peers {
            let resolved = match p.parse::<IpAddr>() {
                Ok(ip) => Some(SocketAddr::new(ip, DEFAULT_PORT)),
                Err(_) => {
                    let with_port = if p.contains(':') { p.clone() } else { format!("{p}:{DEFAULT_PORT}") };
                    with_port.to_socket_addrs().ok().and_then(|mut a| a.next())
                }
            };
            match resolved {
                Some(a) => ok.push(a),
                None => failed.push(p.clone()),
            }
        }
        (ok, failed)
    }
}

/// A checkpoint interval: `30s`, `10m`, `1h 30m` (humantime), at least one second.
pub fn parse_every(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration like 30s or 10m: {e}"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("{s:?} is shorter than a second"));
    }
    Ok(d)
}

fn parse_addr(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(format!("{s:?} is not an IP address or ADDRESS:PORT"))
}

/// Reads an openMosix map file: lines `first-ID host-or-IP count`, `#` comments. A line
/// with count > 1 names `count` consecutive IPv4 addresses starting at the given one.
/// Node IDs are accepted and ignored: herd names nodes, it does not number them.
pub fn read_map_file(path: &Path) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    parse_map(&text, path)
}

pub fn parse_map(text: &str, path: &Path) -> Result<Vec<String>, ConfigError> {
    let mut peers = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |message: String| ConfigError::MapLine { path: path.into(), line: n + 1, message };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [id, host, count] = fields[..] else {
            return Err(err(format!("expected `ID HOST COUNT`, found {line:?}")));
        };
        id.parse::<u32>().map_err(|_| err(format!("node ID {id:?} is not a number")))?;
        let count: u32 = count.parse().ok().filter(|&c| (1..=65536).contains(&c)).ok_or_else(|| err(format!("count {count:?} is not a number from 1 to 65536")))?;
        match host.parse::<Ipv4Addr>() {
            Ok(ip) => {
                let base = u32::from(ip);
                let last = base.checked_add(count - 1).ok_or_else(|| err(format!("{count} addresses from {ip} run past 255.255.255.255")))?;
                peers.extend((base..=last).map(|a| Ipv4Addr::from(a).to_string()));
            }
            Err(_) if count == 1 => {
                if host.is_empty() || host.chars().any(|c| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == ':')) {
                    return Err(err(format!("{host:?} is not a host name or IPv4 address")));
                }
                peers.push(host.to_string());
            }
            Err(_) => return Err(err(format!("a range of {count} nodes needs an IPv4 address, not {host:?}"))),
        }
        if peers.len() > 65536 {
            return Err(err("more than 65536 nodes".into()));
        }
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balancing_is_on_by_default_and_its_policy_is_checked() {
        let path = Path::new("/x/herd.toml");
        let c = Config::parse("name = \"a\"\n", path).unwrap();
        assert!(c.balance);
        assert_eq!(c.policy, herd_balance::Params::default());
        let c = Config::parse("balance = false\n[policy]\nstability = 1.5\ninterval = 2.0\n", path).unwrap();
        assert!(!c.balance);
        assert_eq!((c.policy.stability, c.policy.interval, c.policy.mem_low), (1.5, 2.0, herd_balance::Params::default().mem_low));
        let e = Config::parse("[policy]\nstabilty = 2.0\n", path).unwrap_err().to_string();
        assert!(e.contains("stabilty"), "{e}");
        let e = Config::parse("[policy]\nstability = 0.5\n", path).unwrap_err().to_string();
        assert!(e.contains("policy.stability"), "{e}");
        let e = Config::parse("[policy]\nmem_low = 0.5\nmem_target_free = 0.2\n", path).unwrap_err().to_string();
        assert!(e.contains("mem_target_free"), "{e}");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = Config::parse("name = \"a\"\nlisten_port = 5\n", Path::new("/x/herd.toml")).unwrap_err().to_string();
        assert!(e.contains("/x/herd.toml"), "{e}");
        assert!(e.contains("listen_port"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn map_file_ranges_and_errors() {
        let p = Path::new("/etc/openmosix.map");
        let peers = parse_map("# cluster\n1 10.0.0.1 3\n4 node4 1 # comment\n", p).unwrap();
        assert_eq!(peers, ["10.0.0.1", "10.0.0.2", "10.0.0.3", "node4"]);
        let e = parse_map("1 10.0.0.1 1\n2 10.0.0.2\n", p).unwrap_err().to_string();
        assert!(e.starts_with("/etc/openmosix.map:2: expected"), "{e}");
        let e = parse_map("x 10.0.0.1 1\n", p).unwrap_err().to_string();
        assert!(e.contains(":1: node ID"), "{e}");
        let e = parse_map("1 host 2\n", p).unwrap_err().to_string();
        assert!(e.contains("needs an IPv4 address"), "{e}");
        let e = parse_map("1 255.255.255.255 2\n", p).unwrap_err().to_string();
        assert!(e.contains("run past"), "{e}");
    }

    #[test]
    fn defaults_and_values() {
        let c = Config::parse("name = \"n1\"\nlisten = \"10.1.2.3\"\nhttp = \"off\"\n", Path::new("f")).unwrap();
        assert_eq!(c.listen, "10.1.2.3:4700".parse().unwrap());
        assert!(c.http.is_none());
        assert_eq!(c.hpc.as_deref(), Some(Path::new(DEFAULT_HPC)));
        let c = Config::parse("hpc = \"off\"\n", Path::new("f")).unwrap();
        assert!(c.hpc.is_none());
        assert!(Config::parse("hpc = \"relative/dir\"\n", Path::new("f")).is_err());
        assert!(c.discovery);
        let e = Config::parse("beacon = \"10.0.0.1:1\"\n", Path::new("f")).unwrap_err().to_string();
        assert!(e.contains("not a multicast"), "{e}");
        let e = Config::parse("speed = 0\n", Path::new("f")).unwrap_err().to_string();
        assert!(e.contains("speed"), "{e}");
    }

    #[test]
    fn dfsa_paths_are_absolute_and_auto_is_on_by_default() {
        let path = Path::new("/x/herd.toml");
        let c = Config::parse("name = \"a\"\n", path).unwrap();
        assert!(c.dfsa_auto && c.dfsa_paths.is_empty());
        let c = Config::parse("[dfsa]\npaths = [\"/home\", \"/scratch\"]\nauto = false\n", path).unwrap();
        assert_eq!(c.dfsa_paths, [PathBuf::from("/home"), PathBuf::from("/scratch")]);
        assert!(!c.dfsa_auto);
        let e = Config::parse("[dfsa]\npaths = [\"home\"]\n", path).unwrap_err().to_string();
        assert!(e.contains("dfsa.paths") && e.contains("absolute"), "{e}");
        let e = Config::parse("[dfsa]\npath = [\"/home\"]\n", path).unwrap_err().to_string();
        assert!(e.contains("path"), "{e}");
    }

    #[test]
    fn checkpoints_are_off_unless_set_and_intervals_are_durations() {
        let path = Path::new("/x/herd.toml");
        let c = Config::parse("name = \"a\"\n", path).unwrap();
        assert_eq!(c.checkpoint_every, None);
        assert_eq!(c.checkpoint_dir, Path::new(DEFAULT_CHECKPOINT_DIR));
        let c = Config::parse("checkpoint_every = \"1m 30s\"\ncheckpoint_dir = \"/srv/ckpt\"\n", path).unwrap();
        assert_eq!(c.checkpoint_every, Some(std::time::Duration::from_secs(90)));
        assert_eq!(c.checkpoint_dir, Path::new("/srv/ckpt"));
        for bad in ["checkpoint_every = \"soon\"", "checkpoint_every = \"10ms\"", "checkpoint_dir = \"rel\""] {
            let e = Config::parse(bad, path).unwrap_err().to_string();
            assert!(e.contains("checkpoint_"), "{bad}: {e}");
        }
    }
}
