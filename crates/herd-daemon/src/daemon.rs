//! herdd at run time: the gossip loop that owns the membership state machine, and the
//! state it shares with the control socket, HTTP and node streams.
//!
//! ```text
//!  UDP :4700 ──open──►┐                         ┌──► watch<Snapshot> ──► control socket, HTTP
//!  beacons ──open────►│  gossip loop            │
//!  timers ───────────►│  (owns Membership)  ────┤──► sealed UDP datagrams
//!  control commands ─►│                         └──► beacons (multicast)
//!  /proc sampling ───►┘
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use herd_cluster::beacon::Beacon;
use herd_cluster::{Membership, MembershipConfig, NodeId, NodeInfo, NodeState, NodeStatus, NodeView, Output};
use herd_wire::seal::{Purpose, Sealer};
use herd_wire::ClusterKey;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::control::{CtlOp, NodeRow};
use crate::sampler::{Look, Sampler};
use crate::{net, stats};

/// Commands from the control socket to the gossip loop.
#[derive(Debug)]
pub enum Command {
    /// A `herd ctl` operation on the node's flags or speed, applied and published by the
    /// gossip loop (which owns them), then answered with the flags as published.
    Ctl { op: CtlOp, reply: oneshot::Sender<NodeStatus> },
    /// A speed measured again (`herd ctl speed 0`), from the task that measured it.
    Speed(u32),
    Shutdown,
}

/// What the rest of the daemon sees of the cluster, refreshed by the gossip loop.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub id: NodeId,
    pub nodes: Vec<NodeView>,
    pub status: NodeStatus,
    /// When it was taken: the ages of the nodes' states in `nodes` are as of then (a
    /// snapshot is taken on the load tick, status changes and membership events, not on
    /// every gossiped state).
    pub at: std::time::Instant,
}

/// Counters exported on /metrics.
pub struct Counters {
    pub gossip_sent_bytes: Counter,
    pub gossip_sent: Counter,
    pub gossip_received: Counter,
    pub gossip_forged: Counter,
    pub gossip_malformed: Counter,
    pub beacons_sent: Counter,
    pub beacons_heard: Counter,
    pub beacons_rejected: Counter,
    pub streams_accepted: Counter,
    pub streams_failed: Counter,
    pub migrations: Counter,
    pub migrations_failed: Counter,
    pub migrated_bytes: Counter,
    pub forwarded_calls: Counter,
    /// Of those, the ones herdd made itself on the deputy's files (herd_migrate::native).
    pub forwarded_calls_native: Counter,
    pub guests_received: Counter,
    pub processes_lost: Counter,
    /// Processes resumed from a checkpoint after the node running them was lost.
    pub processes_resumed: Counter,
    /// Checkpoints taken of processes away, and those that failed.
    pub checkpoints: Counter,
    pub checkpoints_failed: Counter,
    /// Resumed processes whose replay differed from their first run.
    pub replay_divergences: Counter,
    pub balancer_moves: Counter,
    /// How long each move from this home stopped the process, seconds.
    pub freeze_seconds: Histogram,
    /// Bytes each move of this home's processes sent (post-copy: with the pages that followed).
    pub move_bytes: Histogram,
    /// Guests here: how long each forwarded call took, from the call to home's answer
    /// in the process (seconds).
    pub call_seconds: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            gossip_sent_bytes: Counter::default(),
            gossip_sent: Counter::default(),
            gossip_received: Counter::default(),
            gossip_forged: Counter::default(),
            gossip_malformed: Counter::default(),
            beacons_sent: Counter::default(),
            beacons_heard: Counter::default(),
            beacons_rejected: Counter::default(),
            streams_accepted: Counter::default(),
            streams_failed: Counter::default(),
            migrations: Counter::default(),
            migrations_failed: Counter::default(),
            migrated_bytes: Counter::default(),
            forwarded_calls: Counter::default(),
            forwarded_calls_native: Counter::default(),
            guests_received: Counter::default(),
            processes_lost: Counter::default(),
            processes_resumed: Counter::default(),
            checkpoints: Counter::default(),
            checkpoints_failed: Counter::default(),
            replay_divergences: Counter::default(),
            balancer_moves: Counter::default(),
            // 1 ms .. ~16 s
            freeze_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            // 1 MiB .. 16 GiB
            move_bytes: Histogram::new(exponential_buckets(1048576.0, 2.0, 15)),
            // 25 µs .. ~0.8 s (a round trip on a LAN is ~100 µs; a read of the terminal waits)
            call_seconds: Histogram::new(exponential_buckets(0.000025, 2.0, 16)),
        }
    }
}

/// State shared by the daemon's tasks.
pub struct Shared {
    pub config: Config,
    pub key: ClusterKey,
    pub fingerprint: String,
    pub started: Instant,
    pub euid: u32,
    pub snapshot: watch::Receiver<Snapshot>,
    pub commands: mpsc::Sender<Command>,
    pub counters: Counters,
    pub http: Option<SocketAddr>,
    /// This node's identity on node streams.
    pub keypair: Arc<herd_wire::stream::NodeKeypair>,
    /// This node's migratable processes.
    pub procs: crate::migrate::Registry,
    /// The directories shared with other nodes (direct file access).
    pub dfsa: crate::dfsa::Dfsa,
    /// The web dashboard's logins, sessions, history and view.
    pub dashboard: crate::dashboard::Dashboard,
    /// The last look at this node's processes (taken by the gossip loop each second).
    pub looks: watch::Sender<Arc<Look>>,
    /// Streams kept open to the other nodes for their process lists.
    pub views: crate::peer::Views,
    /// Streams opened ahead to other nodes for the next fork there.
    pub spares: crate::peer::Spares,
    /// A new process has its first figures: the balancer may place it now rather than
    /// at its next round (placement at birth).
    pub born: tokio::sync::Notify,
}

impl Shared {
    /// The last look at this node's processes.
    pub fn look(&self) -> Arc<Look> {
        self.looks.borrow().clone()
    }

    pub fn rows(&self) -> Vec<NodeRow> {
        let mut rows = rows(&self.snapshot.borrow());
        for r in rows.iter_mut().filter(|r| !r.is_self) {
            r.shared_with_this_node = self.dfsa.shared_with(&r.name);
        }
        rows
    }
}

pub fn rows(s: &Snapshot) -> Vec<NodeRow> {
    // Ages as of now, not as of the snapshot: a state shown as fresh was received after
    // what the reader did before asking (the migrate suite waits so for a noblock).
    let taken = s.at.elapsed();
    s.nodes
        .iter()
        .map(|v| {
            let info = v.info.as_ref();
            let state = match v.state {
                NodeState::Up if info.is_some_and(|i| i.status.blocked) => "blocked",
                NodeState::Up => "up",
                NodeState::Suspect => "suspect",
                NodeState::Down => "down",
            };
            NodeRow {
                name: info.map_or_else(|| v.id.addr.to_string(), |i| i.name.clone()),
                address: v.id.addr.to_string(),
                state: state.into(),
                cpus: info.map_or(0, |i| i.cpus),
                speed: info.map_or(0, |i| i.speed),
                load: info.map_or(0.0, |i| i.load),
                mem_free: info.map_or(0, |i| i.mem_free),
                mem_total: info.map_or(0, |i| i.mem_total),
                is_self: v.is_self,
                boot: v.id.boot,
                info_age_secs: v.info_age.map(|a| (a + taken).as_secs_f64()),
                kernel: info.map(|i| i.features.kernel.clone()),
                version: info.map(|i| i.version.clone()),
                status: info.map(|i| i.status).unwrap_or_default(),
                shared: info.map(|i| i.shared.iter().map(|m| m.path.clone()).collect()).unwrap_or_default(),
                shared_with_this_node: Vec::new(),
            }
        })
        .collect()
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Everything herdd needs bound and measured before it starts serving.
pub struct Prepared {
    pub shared: Arc<Shared>,
    gossip: GossipLoop,
    control: tokio::net::UnixListener,
    http: Option<tokio::net::TcpListener>,
    streams: tokio::net::TcpListener,
    keypair: Arc<herd_wire::stream::NodeKeypair>,
}

/// Loads the key, measures the node, binds every socket. Errors here stop herdd with a
/// message that says what to fix.
pub async fn prepare(config: Config) -> anyhow::Result<Prepared> {
    let key = ClusterKey::load(&config.key_file)?;
    let fingerprint = key.fingerprint();
    let speed = match config.speed {
        Some(s) => s,
        None => tokio::task::spawn_blocking(stats::calibrate_speed).await?,
    };
    let (ip, found) = net::advertise_ip(config.advertise, config.listen);
    if !found {
        tracing::warn!("no network interface other than loopback: this node can only be a cluster of one (set `advertise`)");
    }
    let udp = UdpSocket::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on UDP {} (is another herdd running? set `listen`)", config.listen))?;
    // Streams listen on the gossip port (the one the kernel chose, if `listen` says 0).
    let port = udp.local_addr()?.port();
    let stream_addr = SocketAddr::new(config.listen.ip(), port);
    let streams = tokio::net::TcpListener::bind(stream_addr)
        .await
        .with_context(|| format!("cannot listen on TCP {stream_addr}"))?;
    let id = NodeId::new(SocketAddr::new(ip, port), unix_ms());

    let control = bind_control_socket(&config.control_socket)?;
    let http = match config.http {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve HTTP on {addr} (set `http` to another address or \"off\")"))?,
        ),
        None => None,
    };
    let http_addr = http.as_ref().map(|l| l.local_addr()).transpose()?;

    let beacon = if config.discovery {
        // A node told which address is its own beacons on that interface only.
        let pinned = config.advertise.is_some() || !config.listen.ip().is_unspecified();
        let only = match ip {
            std::net::IpAddr::V4(v4) if pinned => Some(v4),
            _ => None,
        };
        match net::beacon_socket(config.beacon, only) {
            Ok((s, ifaces)) if !ifaces.is_empty() => Some((Arc::new(UdpSocket::from_std(s)?), ifaces)),
            Ok(_) => {
                tracing::warn!("discovery is on but no interface can join {}: only static peers will be found", config.beacon);
                None
            }
            Err(e) => {
                tracing::warn!("discovery disabled: cannot open the beacon socket {}: {e}", config.beacon);
                None
            }
        }
    } else {
        None
    };

    let (mem_total, mem_free) = stats::memory();
    let dfsa = {
        let (name, paths, auto) = (config.name.clone(), config.dfsa_paths.clone(), config.dfsa_auto);
        tokio::task::spawn_blocking(move || crate::dfsa::Dfsa::prepare(&name, &paths, auto)).await?
    };
    let info = NodeInfo {
        name: config.name.clone(),
        version: crate::VERSION.into(),
        cpus: stats::cpus(),
        speed,
        load: 0.0,
        mem_total,
        mem_free,
        status: NodeStatus::default(),
        features: stats::features(),
        shared: dfsa.published(),
    };
    let started = Instant::now();
    let membership = Membership::new(id, info, MembershipConfig::default(), rand::random(), Duration::ZERO);
    let (snap_tx, snap_rx) = watch::channel(Snapshot { id, nodes: membership.view(Duration::ZERO), status: NodeStatus::default(), at: std::time::Instant::now() });
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let keypair = Arc::new(herd_wire::stream::NodeKeypair::generate()?);
    let shared = Arc::new(Shared {
        config: config.clone(),
        key: key.clone(),
        fingerprint,
        started,
        euid: nix::unistd::geteuid().as_raw(),
        snapshot: snap_rx,
        commands: cmd_tx,
        counters: Counters::default(),
        http: http_addr,
        keypair: keypair.clone(),
        procs: Default::default(),
        dfsa,
        dashboard: Default::default(),
        looks: watch::Sender::new(Arc::default()),
        born: tokio::sync::Notify::new(),
        views: Default::default(),
        spares: Default::default(),
    });
    let gossip = GossipLoop {
        shared: shared.clone(),
        membership,
        udp: Arc::new(udp),
        sealer: Sealer::new(&key, Purpose::Gossip),
        beacon,
        beacon_sealer: Sealer::new(&key, Purpose::Beacon),
        snapshot: snap_tx,
        commands: cmd_rx,
        started,
    };
    Ok(Prepared { shared, gossip, control, http, streams, keypair })
}

/// Binds the control socket, replacing a stale one but never a live daemon's.
fn bind_control_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!("another herdd is already running on {}", path.display());
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove stale socket {}", path.display())),
    }
    let listener = tokio::net::UnixListener::bind(path).with_context(|| format!("cannot create control socket {}", path.display()))?;
    // Everyone may connect; what each may do is decided per request from SO_PEERCRED.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

impl Prepared {
    /// Serves until SIGTERM, SIGINT or a Shutdown request; then leaves the cluster.
    pub async fn run(self) -> anyhow::Result<()> {
        let Prepared { shared, gossip, control, http, streams, keypair } = self;
        tracing::info!(
            "herdd {} node {} at {} (key {}), control socket {}",
            crate::VERSION,
            shared.config.name,
            gossip.membership.id().addr,
            shared.fingerprint,
            shared.config.control_socket.display()
        );
        tokio::spawn(crate::server::serve_control(control, shared.clone()));
        if let Some(l) = http {
            tokio::spawn(crate::http::serve(l, shared.clone()));
            tokio::spawn(crate::dashboard::run(shared.clone()));
        }
        tokio::spawn(crate::peer::serve(streams, shared.clone(), keypair));
        tokio::spawn(crate::balancer::run(shared.clone()));
        tokio::spawn(crate::family::run(shared.clone()));
        tokio::spawn(crate::migrate::watch_membership(shared.clone()));
        tokio::spawn(crate::dfsa::verify_loop(shared.clone()));
        // Unmounted when dropped, after the gossip loop ends.
        let _hpc = shared.config.hpc.as_ref().and_then(|path| match crate::hpc::mount(shared.clone(), path) {
            Ok(session) => {
                tracing::info!("/proc/hpc view mounted at {}", path.display());
                Some(session)
            }
            Err(e) => {
                tracing::warn!("no /proc/hpc view at {}: {e} (it needs /dev/fuse and root; `hpc = \"off\"` in herd.toml stops trying)", path.display());
                None
            }
        });
        let result = gossip.run().await;
        let _ = std::fs::remove_file(&shared.config.control_socket);
        result
    }
}

struct GossipLoop {
    shared: Arc<Shared>,
    membership: Membership,
    udp: Arc<UdpSocket>,
    sealer: Sealer,
    beacon: Option<(Arc<UdpSocket>, Vec<Ipv4Addr>)>,
    beacon_sealer: Sealer,
    snapshot: watch::Sender<Snapshot>,
    commands: mpsc::Receiver<Command>,
    started: Instant,
}

impl GossipLoop {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let (timer_tx, mut timer_rx) = mpsc::unbounded_channel();
        let (heard_tx, mut heard_rx) = mpsc::channel::<NodeId>(256);
        if let Some((sock, _)) = &self.beacon {
            tokio::spawn(listen_beacons(sock.clone(), Sealer::new(&self.shared.key, Purpose::Beacon), self.shared.clone(), heard_tx));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut sample = tokio::time::interval(crate::sampler::EVERY);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sampler = Some(Sampler::default());
        let mut peers_tick = tokio::time::interval(Duration::from_secs(5));
        let mut next_beacon = tokio::time::Instant::now();
        let mut meter = stats::LoadMeter::default();
        let mut status = NodeStatus::default();
        let mut buf = vec![0u8; herd_wire::seal::MAX_DATAGRAM];
        let mut peers = self.shared.config.resolve_peers();
        for p in &peers.1 {
            tracing::warn!("static peer {p:?} does not resolve (yet); trying again every 5 s");
        }

        let out = self.membership.set_info(self.membership.info().clone(), self.now());
        self.apply(out, &timer_tx).await;
        loop {
            tokio::select! {
                r = self.udp.recv_from(&mut buf) => {
                    let (n, from) = match r {
                        Ok(x) => x,
                        Err(e) => { tracing::debug!("gossip recv: {e}"); continue; }
                    };
                    self.shared.counters.gossip_received.inc();
                    match self.sealer.open(&buf[..n]) {
                        Err(e) => {
                            self.shared.counters.gossip_forged.inc();
                            tracing::debug!("gossip datagram from {from} rejected: {e}");
                        }
                        Ok(plain) => {
                            let (out, result) = self.membership.handle_data(&plain, self.now());
                            if let Err(e) = result {
                                self.shared.counters.gossip_malformed.inc();
                                tracing::debug!("gossip from {from}: {e}");
                            }
                            self.apply(out, &timer_tx).await;
                        }
                    }
                }
                Some(timer) = timer_rx.recv() => {
                    let out = self.membership.handle_timer(timer, self.now());
                    self.apply(out, &timer_tx).await;
                }
                Some(id) = heard_rx.recv() => {
                    let out = self.membership.heard_beacon(id, self.now());
                    self.apply(out, &timer_tx).await;
                }
                _ = sample.tick() => {
                    // /proc reads: off the runtime's threads. The sampler keeps each task's
                    // figures from one look to the next (a lost one starts again).
                    let mut s = sampler.take().unwrap_or_default();
                    let looked = tokio::task::spawn_blocking(move || {
                        let (look, load) = s.look();
                        (s, look, load)
                    })
                    .await;
                    let mut runnable = None;
                    if let Ok((s, look, load)) = looked {
                        sampler = Some(s);
                        let look = Arc::new(look);
                        self.shared.looks.send_replace(look.clone());
                        crate::migrate::looked(&self.shared, &look);
                        runnable = load;
                    }
                    let mut info = self.membership.info().clone();
                    info.load = meter.second(runnable);
                    (info.mem_total, info.mem_free) = stats::memory();
                    info.cpus = stats::cpus();
                    info.status = status;
                    let out = self.membership.set_info(info, self.now());
                    self.apply(out, &timer_tx).await;
                    self.publish(status);
                }
                _ = peers_tick.tick() => {
                    if !peers.1.is_empty() {
                        peers = self.shared.config.resolve_peers();
                    }
                    let view = self.membership.view(self.now());
                    for addr in &peers.0 {
                        let up = view.iter().any(|v| v.id.addr == *addr && v.state != NodeState::Down);
                        if !up && *addr != self.membership.id().addr {
                            let out = self.membership.announce(NodeId::unknown(*addr), self.now());
                            self.apply(out, &timer_tx).await;
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_beacon), if self.beacon.is_some() => {
                    self.send_beacon();
                    let every = herd_cluster::beacon::interval(self.membership.peers_up());
                    let jitter = Duration::from_millis(rand::random::<u64>() % 500);
                    next_beacon = tokio::time::Instant::now() + every + jitter;
                }
                Some(cmd) = self.commands.recv() => {
                    let mut info = self.membership.info().clone();
                    let reply = match cmd {
                        Command::Ctl { op, reply } => {
                            match op {
                                CtlOp::Block | CtlOp::Expel => status.blocked = true,
                                CtlOp::NoBlock => status.blocked = false,
                                CtlOp::Bring | CtlOp::LStay => status.lstay = true,
                                CtlOp::NoLStay => status.lstay = false,
                                CtlOp::Stay => status.stay = true,
                                CtlOp::NoStay => status.stay = false,
                                CtlOp::Quiet => status.quiet = true,
                                CtlOp::NoQuiet => status.quiet = false,
                                CtlOp::Speed(0) => {
                                    // Measured aside: the loop must go on serving gossip.
                                    let commands = self.shared.commands.clone();
                                    tokio::spawn(async move {
                                        if let Ok(n) = tokio::task::spawn_blocking(stats::calibrate_speed).await {
                                            let _ = commands.send(Command::Speed(n)).await;
                                        }
                                    });
                                }
                                CtlOp::Speed(n) => info.speed = n,
                            }
                            Some(reply)
                        }
                        Command::Speed(n) => {
                            info.speed = n;
                            None
                        }
                        Command::Shutdown => break,
                    };
                    tracing::info!("node status now {status:?}, speed {}", info.speed);
                    info.status = status;
                    let out = self.membership.set_info_now(info, self.now());
                    self.apply(out, &timer_tx).await;
                    self.publish(status);
                    if let Some(reply) = reply {
                        let _ = reply.send(status);
                    }
                }
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        tracing::info!("leaving the cluster");
        let out = self.membership.leave(self.now());
        self.apply(out, &timer_tx).await;
        Ok(())
    }

    fn publish(&self, status: NodeStatus) {
        let snap = Snapshot { id: self.membership.id(), nodes: self.membership.view(self.now()), status, at: std::time::Instant::now() };
        self.snapshot.send_replace(snap);
    }

    async fn apply(&mut self, out: Output, timers: &mpsc::UnboundedSender<herd_cluster::membership::Timer>) {
        for (to, data) in out.sends {
            match self.sealer.seal(&data) {
                Ok(sealed) => {
                    self.shared.counters.gossip_sent.inc();
                    self.shared.counters.gossip_sent_bytes.inc_by(sealed.len() as u64);
                    if let Err(e) = self.udp.send_to(&sealed, to).await {
                        tracing::debug!("gossip to {to}: {e}");
                    }
                }
                Err(e) => tracing::warn!("cannot seal a gossip packet: {e}"),
            }
        }
        for (after, timer) in out.timers {
            let tx = timers.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(timer);
            });
        }
        if out.declared_down {
            crate::migrate::declared_down(&self.shared);
        }
        if !out.events.is_empty() {
            for e in &out.events {
                tracing::info!("{e}");
            }
            let status = self.snapshot.borrow().status;
            self.publish(status);
        }
    }

    fn send_beacon(&self) {
        let Some((sock, ifaces)) = &self.beacon else { return };
        let beacon = Beacon { id: self.membership.id(), name: self.shared.config.name.clone(), sent_unix_ms: unix_ms() };
        match self.beacon_sealer.seal(&beacon.encode()) {
            Ok(d) => {
                net::send_beacon(sock, self.shared.config.beacon, ifaces, &d);
                self.shared.counters.beacons_sent.inc();
            }
            Err(e) => tracing::warn!("cannot seal a beacon: {e}"),
        }
    }
}

async fn listen_beacons(sock: Arc<UdpSocket>, sealer: Sealer, shared: Arc<Shared>, heard: mpsc::Sender<NodeId>) {
    let mut buf = vec![0u8; herd_wire::seal::MAX_DATAGRAM];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("beacon recv: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let beacon = sealer
            .open(&buf[..n])
            .map_err(|e| e.to_string())
            .and_then(|plain| Beacon::decode(&plain, unix_ms()).map_err(|e| e.to_string()));
        match beacon {
            Ok(b) => {
                shared.counters.beacons_heard.inc();
                let _ = heard.try_send(b.id);
            }
            Err(e) => {
                shared.counters.beacons_rejected.inc();
                tracing::debug!("beacon from {from} rejected: {e}");
            }
        }
    }
}
