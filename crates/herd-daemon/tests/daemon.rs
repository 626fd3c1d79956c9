//! One real herdd on loopback: hostile datagrams and streams, the control socket's
//! permission checks with a real unprivileged uid, configuration errors.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herd_daemon::control::{Client, ClientError, DaemonStatus, Request, Response};
use herd_daemon::peer::{PeerRequest, PeerResponse};
use herd_migrate::proto::{self, Refusal};
use herd_wire::seal::{Purpose, Sealer};
use herd_wire::stream::{NodeKeypair, SecureStream};
use herd_wire::ClusterKey;

fn herdd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herdd"));
    // Whatever started the tests may leak fds; herdd must not inherit them.
    // SAFETY: close_range is async-signal-safe and touches only this child's fds.
    unsafe {
        c.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    c
}

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_key(path: &Path) -> ClusterKey {
    let key = ClusterKey::generate().unwrap();
    key.write_new(path).unwrap();
    key
}

fn start(extra: &str) -> (Daemon, ClusterKey) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = write_key(&dir.path().join("cluster.key"));
    let socket = dir.path().join("herdd.sock");
    let config = format!(
        "name = \"solo\"\nkey_file = \"{}\"\nlisten = \"127.0.0.1:0\"\ndiscovery = false\ncontrol_socket = \"{}\"\nhttp = \"127.0.0.1:0\"\nhpc = \"off\"\nspeed = 10000\n{extra}",
        dir.path().join("cluster.key").display(),
        socket.display()
    );
    std::fs::write(dir.path().join("herd.toml"), config).unwrap();
    let log = std::fs::File::create(dir.path().join("herdd.log")).unwrap();
    let child = herdd()
        .arg("--config")
        .arg(dir.path().join("herd.toml"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let d = Daemon { child, dir, socket };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Client::connect(&d.socket).is_err() {
        assert!(Instant::now() < deadline, "herdd did not start: {}", log_of(&d));
        std::thread::sleep(Duration::from_millis(50));
    }
    (d, key)
}

fn log_of(d: &Daemon) -> String {
    std::fs::read_to_string(d.dir.path().join("herdd.log")).unwrap_or_default()
}

fn status(d: &Daemon) -> DaemonStatus {
    match Client::connect(&d.socket).unwrap().call(&Request::Status).unwrap() {
        Response::Status(s) => *s,
        r => panic!("unexpected {r:?}"),
    }
}

fn wait_for(what: &str, d: &Daemon, cond: impl Fn(&DaemonStatus) -> bool) -> DaemonStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(d);
        if cond(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn garbled_forged_and_oversized_datagrams_are_dropped_and_the_daemon_carries_on() {
    let (d, key) = start("");
    let addr: SocketAddr = status(&d).address.parse().unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Plain garbage, an empty datagram, a maximal one.
    udp.send_to(b"hello herd", addr).unwrap();
    udp.send_to(&[], addr).unwrap();
    udp.send_to(&vec![0xa5; 65000], addr).unwrap();
    // Sealed with another cluster's key.
    let other = Sealer::new(&ClusterKey::generate().unwrap(), Purpose::Gossip);
    udp.send_to(&other.seal(b"\x00\x01 not foca").unwrap(), addr).unwrap();
    // Sealed with the right key but for the beacon, and right key + garbage payload.
    udp.send_to(&Sealer::new(&key, Purpose::Beacon).seal(b"x").unwrap(), addr).unwrap();
    let right = Sealer::new(&key, Purpose::Gossip);
    for junk in [&b""[..], b"\x01", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage", &[0u8; 1400]] {
        udp.send_to(&right.seal(junk).unwrap(), addr).unwrap();
    }
    let s = wait_for("forged datagrams counted", &d, |s| s.counters.gossip_forged >= 5 && s.counters.gossip_malformed >= 3);
    assert_eq!(s.peers_known, 0, "garbage created a member: {s:?}");
    // Still serving.
    assert!(matches!(Client::connect(&d.socket).unwrap().call(&Request::Nodes).unwrap(), Response::Nodes(n) if n.len() == 1));
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn bad_streams_are_refused_and_a_good_one_still_works() {
    let (d, key) = start("");
    let addr: SocketAddr = status(&d).address.parse().unwrap();
    rt().block_on(async {
        use tokio::io::AsyncWriteExt;
        // A Noise handshake with the wrong cluster key.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let wrong = ClusterKey::generate().unwrap();
        let e = SecureStream::connect(tcp, &wrong, &NodeKeypair::generate().unwrap()).await;
        assert!(e.is_err(), "handshake with a wrong key succeeded");
        // Garbage instead of a handshake; a truncated frame; an oversized length.
        for bytes in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"\x00\x30abc", b"\xff\xff", b"\x00"] {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(bytes).await.unwrap();
            tcp.shutdown().await.unwrap();
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut sink)).await;
        }
        // A correct stream still gets an answer.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut s = SecureStream::connect(tcp, &key, &NodeKeypair::generate().unwrap()).await.unwrap();
        s.send(&proto::encode_request(&PeerRequest::Hello)).await.unwrap();
        let reply: PeerResponse = postcard::from_bytes(&s.recv().await.unwrap()).unwrap();
        assert!(matches!(reply, PeerResponse::Hello { ref name, .. } if name == "solo"), "{reply:?}");
        // A complete, authenticated stream whose request is nonsense is refused and closed.
        let mut nonsense = proto::encode(&proto::PROTOCOL_VERSION);
        nonsense.extend_from_slice(b"\xfe nonsense");
        s.send(&nonsense).await.unwrap();
        let reply: PeerResponse = postcard::from_bytes(&s.recv().await.unwrap()).unwrap();
        assert!(matches!(reply, PeerResponse::Refused(Refusal::BadRequest { .. })), "{reply:?}");
        assert!(matches!(s.recv().await, Err(herd_wire::StreamError::Closed)), "the stream stays open after a refusal");
        // A node that speaks another protocol version: refused, naming both versions; the
        // answer reads the same as a move's refusal (ToHome::Refused).
        for request in [proto::encode(&(99u32, PeerRequest::Hello)), proto::encode(&(1u32, 0u8))] {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut s = SecureStream::connect(tcp, &key, &NodeKeypair::generate().unwrap()).await.unwrap();
            s.send(&request).await.unwrap();
            let bytes = s.recv().await.unwrap();
            let reply: PeerResponse = postcard::from_bytes(&bytes).unwrap();
            let theirs = request[0] as u32;
            match reply {
                PeerResponse::Refused(r @ Refusal::Version { ours: proto::PROTOCOL_VERSION, theirs: t }) if t == theirs => {
                    let text = r.to_string();
                    assert!(text.contains(&format!("version {theirs}")) && text.contains(&format!("version {}", proto::PROTOCOL_VERSION)), "{text}");
                }
                other => panic!("another version's request got {other:?}"),
            }
            let as_move: proto::ToHome = postcard::from_bytes(&bytes).unwrap();
            assert!(matches!(as_move, proto::ToHome::Refused(Refusal::Version { .. })), "{as_move:?}");
        }
    });
    let s = wait_for("failed streams counted", &d, |s| s.counters.streams_failed >= 8);
    assert_eq!(s.counters.streams_accepted, 3, "{s:?}");
    assert!(log_of(&d).contains("refused"), "no log line for refused streams");
}

/// Sends one raw request as uid/gid 65534 with python3 (a real other user).
fn as_nobody(socket: &Path, request: &str) -> String {
    let script = r#"
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
body = sys.argv[2].encode(); s.sendall(struct.pack(">I", len(body)) + body)
n = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))[0]
print(s.recv(n, socket.MSG_WAITALL).decode())
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(socket)
        .arg(request)
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "python3 as nobody: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_control_socket_lets_other_users_look_but_not_change() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP: needs root to run a request as another uid");
        return;
    }
    if Command::new("python3").arg("-V").output().is_err() {
        println!("SKIP: python3 is not installed");
        return;
    }
    let (d, _) = start("");
    let look = as_nobody(&d.socket, r#"{"request":"status"}"#);
    assert!(look.contains(r#""response":"status""#), "{look}");
    for req in [
        r#"{"request":"shutdown"}"#,
        r#"{"request":"ctl","op":{"op":"block"}}"#,
        r#"{"request":"ctl","op":{"op":"quiet"}}"#,
        r#"{"request":"ctl","op":{"op":"expel"}}"#,
        r#"{"request":"ctl","op":{"op":"speed","value":5000}}"#,
    ] {
        let r: serde_json::Value = serde_json::from_str(&as_nobody(&d.socket, req)).unwrap();
        assert_eq!(r["response"], "error", "{req} -> {r}");
        assert_eq!(r["body"]["kind"], "permission_denied", "{req} -> {r}");
    }
    let r = as_nobody(&d.socket, r#"{"request":"format_disk"}"#);
    assert!(r.contains("bad_request"), "{r}");
    let s = status(&d);
    assert!(!s.status.blocked, "a refused request changed the node");
    // Root may.
    let mut c = Client::connect(&d.socket).unwrap();
    assert!(matches!(c.call(&Request::Ctl { op: herd_daemon::control::CtlOp::Block }).unwrap(), Response::Ctl(d) if d.status.blocked));
    wait_for("blocked", &d, |s| s.status.blocked);
    assert_eq!(c.call(&Request::Shutdown).unwrap(), Response::Done);
    let mut d = d;
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "herdd did not stop on Shutdown");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!d.socket.exists(), "socket left behind");
    assert!(matches!(Client::connect(&d.socket), Err(ClientError::NotRunning(_))));
}

fn check(config: &str, dir: &Path) -> (bool, String) {
    let path = dir.join("herd.toml");
    std::fs::write(&path, config).unwrap();
    let out = herdd().arg("--config").arg(&path).arg("--check").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
}

#[test]
fn configuration_errors_name_the_file_the_line_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    write_key(&key);
    let k = format!("key_file = \"{}\"\n", key.display());

    let (ok, msg) = check(&format!("{k}name = \"a\"\nlisten_addr = \"1.2.3.4\"\n"), dir.path());
    assert!(!ok);
    assert!(msg.contains("herd.toml") && msg.contains("listen_addr") && msg.contains("line 3"), "{msg}");

    let (ok, msg) = check(&format!("{k}listen = \"nowhere\"\n"), dir.path());
    assert!(!ok && msg.contains("listen"), "{msg}");

    std::fs::write(dir.path().join("openmosix.map"), "1 10.0.0.1 2\n# ok\n3 10.0.0.9\n").unwrap();
    let (ok, msg) = check(&format!("{k}map_file = \"{}\"\n", dir.path().join("openmosix.map").display()), dir.path());
    assert!(!ok && msg.contains("openmosix.map:3:"), "{msg}");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, msg) = check(&k, dir.path());
    assert!(!ok && msg.contains("chmod 600"), "{msg}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let (ok, msg) = check(&format!("key_file = \"{}\"\n", dir.path().join("missing.key").display()), dir.path());
    assert!(!ok && msg.contains("herd keygen"), "{msg}");

    std::fs::write(dir.path().join("bad.key"), "not a key\n").unwrap();
    std::fs::set_permissions(dir.path().join("bad.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, msg) = check(&format!("key_file = \"{}\"\n", dir.path().join("bad.key").display()), dir.path());
    assert!(!ok && msg.contains("bad.key"), "{msg}");

    let (ok, msg) = check(&k, dir.path());
    assert!(ok, "{msg}");
    assert!(msg.contains("key herd:"), "{msg}");

    let out = herdd().arg("--config").arg(dir.path().join("nope.toml")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));
    let _ = std::io::stdout().flush();
}
