//! The network lock of `--tcp-established` (CRIU's name for the same thing).
//!
//! While a checkpoint reads a TCP connection, and, when the checkpoint ends the
//! processes (`--kill`), until `herd restart` has made the connection again, every
//! packet of that connection is dropped in the processes' network namespace, both
//! ways. Without it, a segment the peer sends meanwhile finds no socket and is
//! answered with a reset: the connection is lost. With it, the peer hears nothing
//! and retransmits until the connection exists again, as across a short outage.
//!
//! The packets are dropped by netfilter: a table of its own per connection, made
//! and removed with `nft` (Debian package nftables), as CRIU calls iptables or
//! nftables. The table is named after the connection's addresses
//! ([`table_name`]), so that a restart finds it from the image alone and one
//! checkpoint's lock never lifts another's:
//!
//! ```text
//! table inet herd_tcp_10_0_0_1_40000_10_0_0_2_5432 {
//!     chain in  { type filter hook input  priority -150; policy accept; ip saddr 10.0.0.2 tcp sport 5432 ip daddr 10.0.0.1 tcp dport 40000 drop; }
//!     chain out { type filter hook output priority -150; policy accept; ip saddr 10.0.0.1 tcp sport 40000 ip daddr 10.0.0.2 tcp dport 5432 drop; }
//! }
//! ```
//!
//! A lock left behind (a restart that never came, or came elsewhere) is removed by
//! hand: `nft delete table inet herd_tcp_…` (`nft list tables` lists them).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

/// Why nothing can be held still without nft.
const NO_NFT: &str = "nft is not installed (Debian package nftables)";

/// The netfilter table that holds the lock of the connection from `local` to
/// `remote` (an IPv4 address mapped into IPv6 is named as the IPv4 one).
pub fn table_name(local: &SocketAddr, remote: &SocketAddr) -> String {
    let part = |a: &SocketAddr| {
        let ip = plain(a.ip()).to_string().replace(['.', ':'], "_");
        format!("{ip}_{}", a.port())
    };
    format!("herd_tcp_{}_{}", part(local), part(remote))
}

/// An IPv4 address mapped into IPv6 (a dual-stack socket's) as the IPv4 address
/// its packets carry.
fn plain(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The nft commands that lock the connection from `local` to `remote`: its table
/// made anew (an old one of the same name removed first) with a chain dropping
/// what comes in and one dropping what goes out.
fn lock_script(local: &SocketAddr, remote: &SocketAddr) -> String {
    let name = table_name(local, remote);
    let (l, r) = (plain(local.ip()), plain(remote.ip()));
    let family = if l.is_ipv4() { "ip" } else { "ip6" };
    let (lp, rp) = (local.port(), remote.port());
    format!(
        "add table inet {name}\ndelete table inet {name}\ntable inet {name} {{\n\
         \tchain in {{ type filter hook input priority -150; policy accept; {family} saddr {r} tcp sport {rp} {family} daddr {l} tcp dport {lp} drop; }}\n\
         \tchain out {{ type filter hook output priority -150; policy accept; {family} saddr {l} tcp sport {lp} {family} daddr {r} tcp dport {rp} drop; }}\n}}\n"
    )
}

/// The nft commands that lift the locks of `tables`, whether they exist or not.
fn unlock_script<'a>(tables: impl IntoIterator<Item = &'a str>) -> String {
    tables.into_iter().map(|t| format!("add table inet {t}\ndelete table inet {t}\n")).collect()
}

/// Runs `nft -f -` with `script`, in network namespace `netns` (this process's
/// if `None`); the error says what nft said.
fn nft(script: &str, netns: Option<&OwnedFd>) -> Result<(), String> {
    let mut cmd = Command::new("nft");
    cmd.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(ns) = netns {
        let ns = ns.try_clone().map_err(|e| format!("its network namespace: {e}"))?;
        herd_kernel::ns::enter(&mut cmd, vec![(ns, libc::CLONE_NEWNET)]);
    }
    herd_kernel::ns::clean_start(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => NO_NFT.to_string(),
        _ => format!("starting nft: {e}"),
    })?;
    let written = child.stdin.take().expect("piped").write_all(script.as_bytes());
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if !out.status.success() {
        return Err(format!("nft: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    written.map_err(|e| format!("writing to nft: {e}"))
}

/// Whether `nft` can be run (a check's answer for a connection a checkpoint would lock).
pub fn available() -> Result<(), String> {
    match Command::new("nft").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("holding the network still: nft --version: {s}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!("holding the network still: {NO_NFT}")),
        Err(e) => Err(format!("holding the network still: starting nft: {e}")),
    }
}

/// Locks taken in one network namespace. Dropped, it lifts them; [`NetLock::keep`]
/// leaves them for `herd restart` to lift.
pub struct NetLock {
    /// The namespace's file, if it is not this process's.
    netns: Option<OwnedFd>,
    tables: Vec<String>,
}

impl NetLock {
    /// No lock yet, in the network namespace of process `pid`.
    pub fn new(pid: i32) -> Result<NetLock, String> {
        let theirs = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|e| format!("its network namespace: {e}"))?;
        let mine = std::fs::metadata("/proc/self/ns/net").map_err(|e| format!("this process's network namespace: {e}"))?;
        let same = theirs.metadata().is_ok_and(|m| m.ino() == mine.ino() && m.dev() == mine.dev());
        Ok(NetLock { netns: if same { None } else { Some(theirs.into()) }, tables: Vec::new() })
    }

    /// Drops every packet of the connection from `local` to `remote` from now on.
    pub fn add(&mut self, local: &SocketAddr, remote: &SocketAddr) -> Result<(), String> {
        nft(&lock_script(local, remote), self.netns.as_ref()).map_err(|e| format!("holding the network still: {e}"))?;
        self.tables.push(table_name(local, remote));
        Ok(())
    }

    /// Leaves the locks in place.
    pub fn keep(mut self) {
        self.tables.clear();
    }
}

impl Drop for NetLock {
    fn drop(&mut self) {
        if self.tables.is_empty() {
            return;
        }
        if let Err(e) = nft(&unlock_script(self.tables.iter().map(String::as_str)), self.netns.as_ref()) {
            tracing::warn!("lifting the network lock ({}): {e}", self.tables.join(", "));
        }
    }
}

/// Lifts the locks of the connections `conns` (local, remote) in this process's
/// network namespace, those that exist.
pub fn unlock(conns: &[(SocketAddr, SocketAddr)]) -> Result<(), String> {
    let tables: Vec<String> = conns.iter().map(|(l, r)| table_name(l, r)).collect();
    nft(&unlock_script(tables.iter().map(String::as_str)), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_scripts() {
        let (l, r): (SocketAddr, SocketAddr) = ("10.0.0.1:40000".parse().unwrap(), "10.0.0.2:5432".parse().unwrap());
        assert_eq!(table_name(&l, &r), "herd_tcp_10_0_0_1_40000_10_0_0_2_5432");
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:40000".parse().unwrap();
        assert_eq!(table_name(&mapped, &r), table_name(&l, &r));
        let s = lock_script(&mapped, &r);
        assert!(s.contains("ip saddr 10.0.0.2 tcp sport 5432 ip daddr 10.0.0.1 tcp dport 40000 drop"), "{s}");
        assert!(s.contains("ip saddr 10.0.0.1 tcp sport 40000 ip daddr 10.0.0.2 tcp dport 5432 drop"), "{s}");
        let (l6, r6): (SocketAddr, SocketAddr) = ("[fd00::1]:1".parse().unwrap(), "[fd00::2]:2".parse().unwrap());
        assert_eq!(table_name(&l6, &r6), "herd_tcp_fd00__1_1_fd00__2_2");
        assert!(lock_script(&l6, &r6).contains("ip6 saddr fd00::2 tcp sport 2 ip6 daddr fd00::1 tcp dport 1 drop"));
        assert_eq!(unlock_script(["a", "b"]), "add table inet a\ndelete table inet a\nadd table inet b\ndelete table inet b\n");
    }

    /// In a network namespace of its own: a lock drops a connection's packets
    /// (the peer's bytes do not arrive, nor is it reset), and lifting it lets the
    /// peer's retransmission through.
    #[test]
    fn a_locked_connection_hears_nothing_until_unlocked() {
        if !nix::unistd::geteuid().is_root() {
            println!("SKIP a_locked_connection_hears_nothing_until_unlocked: needs root (a network namespace and nft)");
            return;
        }
        if Command::new("nft").arg("--version").stdout(Stdio::null()).status().is_err() {
            println!("SKIP a_locked_connection_hears_nothing_until_unlocked: {NO_NFT}");
            return;
        }
        // A thread of our own in a new network namespace, with loopback up.
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            let up = Command::new("ip").args(["link", "set", "lo", "up"]).status().expect("ip link set lo up");
            assert!(up.success());
            use std::io::Read;
            use std::net::{TcpListener, TcpStream};
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (mut server, _) = listener.accept().unwrap();
            let (local, remote) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
            // Our thread's namespace is not the process's: name it by thread id.
            let tid = nix::unistd::gettid().as_raw();
            let mut lock = NetLock::new(tid).unwrap();
            assert!(lock.netns.is_some());
            lock.add(&local, &remote).unwrap();
            server.write_all(b"held").unwrap();
            client.set_read_timeout(Some(std::time::Duration::from_millis(600))).unwrap();
            let mut buf = [0u8; 4];
            let e = client.read(&mut buf).expect_err("a byte came through the lock");
            assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e}");
            drop(lock);
            client.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            client.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"held");
        })
        .join()
        .unwrap();
    }
}
