//! node-init (`herd __lab node-init`): pid 1 of a node's pid namespace.
//!
//! It waits until the supervisor has given it its network (a byte on the
//! sync fd), then makes the node's own file system view: mounts private,
//! a fresh /proc for the node's pid namespace, private tmpfs on /tmp and
//! /dev/shm (paths the cluster needs there, such as DIR when it lies under
//! /tmp, are bind-mounted back at the same place), its hostname, lo and
//! eth0 with the node's address and no default route. Then it starts herdd
//! and stays its parent, reaping every process of the node.
//!
//! - herdd exits: logged, `herdd.exited` says how; the node waits.
//! - SIGUSR1: start herdd again (if it is not running).
//! - SIGTERM, SIGINT, SIGHUP: SIGTERM to herdd, SIGKILL after 5 s, exit.
//!   Leaving pid 1 makes the kernel kill everything else in the node.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::mount::{mount, MsFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::net;
use crate::signals::{log, Signals};
use crate::state;

/// Mount points that get a private tmpfs in every node.
pub const MASKED: [&str; 2] = ["/tmp", "/dev/shm"];

const DAEMON_STOP_GRACE: Duration = Duration::from_secs(5);

pub struct NodeInitOptions {
    pub dir: PathBuf,
    pub name: String,
    pub address: String,
    pub daemon: PathBuf,
    pub sync_fd: i32,
    pub keep: Vec<PathBuf>,
    /// Directories for direct file access: made (mode 1777) before herdd starts.
    pub shared: Vec<PathBuf>,
}

struct Node {
    opts: NodeInitOptions,
    node_dir: PathBuf,
    /// herdd's pid (in the node's pid namespace) while it runs.
    daemon: Option<i32>,
}

pub fn node_init(opts: NodeInitOptions) -> anyhow::Result<i32> {
    let signals = Signals::block(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGCHLD])?;
    // The supervisor writes one byte once our veth is in place; EOF means
    // it died first.
    let mut go = [0u8; 1];
    let n = loop {
        match nix::unistd::read(opts.sync_fd, &mut go) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.context("reading the sync fd")?,
        }
    };
    let _ = nix::unistd::close(opts.sync_fd);
    if n == 0 {
        log!("node {}: the supervisor went away before releasing us", opts.name);
        return Ok(1);
    }
    let me = std::process::id();
    log!("node {}: node-init is pid {me} in the node", opts.name);
    if me != 1 {
        bail!("node-init must be pid 1 of a new pid namespace (it is pid {me})");
    }
    private_mounts(&opts.keep).context("making the node's mounts")?;
    nix::unistd::sethostname(&opts.name).context("sethostname")?;
    net::configure_node(&opts.address)?;
    log!("node {}: {} on eth0, /proc, /tmp and /dev/shm are the node's own", opts.name, opts.address);
    for s in &opts.shared {
        if !s.is_dir() {
            std::fs::create_dir_all(s).with_context(|| format!("making the shared directory {}", s.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(s, std::fs::Permissions::from_mode(0o1777))?;
        }
    }

    let node_dir = state::node_dir(&opts.dir, &opts.name);
    let mut node = Node { opts, node_dir, daemon: None };
    node.start_daemon();

    let mut stop_deadline: Option<Instant> = None;
    loop {
        let timeout = stop_deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match signals.next(timeout) {
            Some(Signal::SIGCHLD) => node.reap(),
            Some(Signal::SIGUSR1) if stop_deadline.is_none() => match node.daemon {
                Some(pid) => log!("SIGUSR1: herdd is already running (pid {pid})"),
                None => node.start_daemon(),
            },
            Some(sig @ (Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP)) if stop_deadline.is_none() => {
                log!("{sig}: stopping the node");
                if let Some(pid) = node.daemon {
                    let _ = herd_kernel::task::kill(pid, libc::SIGTERM);
                }
                stop_deadline = Some(Instant::now() + DAEMON_STOP_GRACE);
            }
            _ => {}
        }
        if let Some(deadline) = stop_deadline {
            node.reap();
            match node.daemon {
                None => break,
                Some(pid) if Instant::now() >= deadline => {
                    log!("herdd did not stop in {DAEMON_STOP_GRACE:?}; killing it");
                    let _ = herd_kernel::task::kill(pid, libc::SIGKILL);
                    let _ = waitpid(Pid::from_raw(pid), None);
                    node.daemon_ended(pid, "killed by SIGKILL".into());
                    break;
                }
                Some(_) => {}
            }
        }
    }
    log!("node {}: down", node.opts.name);
    Ok(0)
}

/// Private mount propagation, a fresh /proc, private tmpfs on /tmp and
/// /dev/shm, and the `keep` paths those would hide bind-mounted back.
fn private_mounts(keep: &[PathBuf]) -> anyhow::Result<()> {
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .context("making / private (MS_REC|MS_PRIVATE)")?;
    // Held open (O_PATH) across the tmpfs mounts that hide them.
    let mut kept: Vec<(PathBuf, File)> = Vec::new();
    for p in keep {
        // A path inside another kept one comes along with it.
        let inside_other = keep.iter().any(|o| o != p && p.starts_with(o));
        if !inside_other && MASKED.iter().any(|m| p.starts_with(m) && p != Path::new(m)) {
            let f = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?;
            kept.push((p.clone(), f));
        }
    }
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(Some("proc"), "/proc", Some("proc"), nosuid_nodev | MsFlags::MS_NOEXEC, None::<&str>).context("mounting /proc")?;
    for m in MASKED {
        if Path::new(m).is_dir() {
            mount(Some("tmpfs"), m, Some("tmpfs"), nosuid_nodev, Some("mode=1777"))
                .with_context(|| format!("mounting a tmpfs on {m}"))?;
        }
    }
    for (p, f) in kept {
        if f.metadata().map(|m| m.is_dir()).unwrap_or(true) {
            std::fs::create_dir_all(&p)?;
        } else {
            std::fs::create_dir_all(p.parent().unwrap_or(Path::new("/")))?;
            File::create(&p)?;
        }
        let source = format!("/proc/self/fd/{}", f.as_raw_fd());
        mount(Some(source.as_str()), &p, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .with_context(|| format!("bind-mounting {} back into the node", p.display()))?;
    }
    Ok(())
}

impl Node {
    fn file(&self, name: &str) -> PathBuf {
        self.node_dir.join(name)
    }

    fn start_daemon(&mut self) {
        let _ = std::fs::remove_file(self.file(state::NODE_SOCKET));
        let _ = std::fs::remove_file(self.file(state::NODE_DAEMON_EXITED));
        match self.spawn_daemon() {
            Ok(pid) => {
                log!("herdd started: pid {pid} in the node");
                let _ = state::write_whole(&self.file(state::NODE_DAEMON_PID), &format!("{pid}\n"));
                self.daemon = Some(pid);
            }
            Err(e) => {
                log!("cannot start herdd: {e:#}");
                let _ = state::write_whole(&self.file(state::NODE_DAEMON_EXITED), &format!("could not start: {e:#}\n"));
            }
        }
    }

    fn spawn_daemon(&self) -> anyhow::Result<i32> {
        let log_path = self.file(state::NODE_DAEMON_LOG);
        let mut log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        use std::io::Write;
        writeln!(
            log_file,
            "--- {} node-init starts {} on {} ---",
            crate::signals::timestamp(),
            self.opts.daemon.display(),
            self.opts.name
        )?;
        let config = self.file(state::NODE_CONFIG);
        let mut cmd = Command::new(&self.opts.daemon);
        cmd.arg("--config").arg(&config).stdin(Stdio::null()).stdout(log_file.try_clone()?).stderr(log_file);
        herd_kernel::ns::clean_start(&mut cmd);
        let child = cmd.spawn().with_context(|| format!("{} --config {}", self.opts.daemon.display(), config.display()))?;
        Ok(child.id() as i32)
    }

    fn daemon_ended(&mut self, pid: i32, how: String) {
        log!("herdd (pid {pid}) ended: {how}");
        // How it ended first: while the pid file is there its end is not recorded yet
        // (start_node waits for that, so that this end is not taken for the next one's).
        let _ = state::write_whole(&self.file(state::NODE_DAEMON_EXITED), &format!("{how}\n"));
        let _ = std::fs::remove_file(self.file(state::NODE_DAEMON_PID));
        self.daemon = None;
    }

    /// Reaps every ended child: herdd, or any orphan of the node.
    fn reap(&mut self) {
        loop {
            let (pid, how) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), format!("exit code {code}")),
                Ok(WaitStatus::Signaled(pid, sig, core)) => {
                    (pid.as_raw(), format!("killed by {sig}{}", if core { " (core dumped)" } else { "" }))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            if Some(pid) == self.daemon {
                self.daemon_ended(pid, how);
            }
        }
    }
}
