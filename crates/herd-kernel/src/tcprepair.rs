//! Established TCP connections taken out of a process and made again, with
//! the kernel's TCP_REPAIR interface (the one CRIU's libsoccr uses).
//!
//! A socket in repair mode sends nothing: its sequence numbers, queues,
//! negotiated options and window can be read ([`dump`]) and, on a new socket,
//! set ([`restore`]): `connect` then makes it established without a handshake.
//! Closed while in repair mode, a connection ends without a FIN or a reset,
//! so its peer sees nothing until the copy speaks again.
//!
//! The capture reads the queues with MSG_PEEK: the connection is untouched,
//! and [`set_repair`]`(false)` lets it go on. What a restore needs is copied
//! into a [`TcpPlan`] before the restorer forks; [`restore`] itself makes only
//! async-signal-safe calls.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// TCP_REPAIR_QUEUE values.
const TCP_NO_QUEUE: i32 = 0;
const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;
/// tcp_repair_opt codes (the TCP option kinds).
const TCPOPT_MAXSEG: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;
/// tcp_info.tcpi_options bits.
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;
/// TCP_ESTABLISHED in tcp_info.tcpi_state.
const ESTABLISHED: u8 = 1;
/// Largest queue carried (each of the send and receive queues).
pub const MAX_QUEUE: usize = 64 << 20;

/// One established connection, as [`dump`] reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpDump {
    /// The sequence number after the last byte queued to send (`write_seq`).
    pub send_seq: u32,
    /// The next sequence number expected from the peer (`rcv_nxt`).
    pub recv_seq: u32,
    /// Bytes sent and not yet acknowledged by the peer.
    pub sent: Vec<u8>,
    /// Bytes queued and not sent yet.
    pub unsent: Vec<u8>,
    /// Bytes received and not yet read by the process.
    pub received: Vec<u8>,
    /// The largest segment (TCP_MAXSEG).
    pub mss: u32,
    /// Window scaling (ours for sending, the peer's for receiving), when negotiated.
    pub wscale: Option<(u8, u8)>,
    pub sack: bool,
    /// The current timestamp value (TCP_TIMESTAMP), when timestamps were negotiated.
    pub timestamp: Option<u32>,
    /// struct tcp_repair_window: snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup.
    pub window: [u32; 5],
}

fn setopt<T>(sock: i32, name: i32, v: &T) -> io::Result<()> {
    // SAFETY: setsockopt reads size_of::<T>() bytes from `v`, which lives across the call.
    if unsafe { libc::setsockopt(sock, libc::SOL_TCP, name, (v as *const T).cast(), std::mem::size_of::<T>() as libc::socklen_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn getopt<T: Default>(sock: i32, name: i32) -> io::Result<T> {
    let mut v = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`, a T on our stack.
    if unsafe { libc::getsockopt(sock, libc::SOL_TCP, name, (&mut v as *mut T).cast(), &mut len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

fn ioctl_int(sock: i32, req: libc::c_ulong) -> io::Result<usize> {
    let mut v: libc::c_int = 0;
    // SAFETY: SIOCINQ / SIOCOUTQ / SIOCOUTQNSD write one int into `v`.
    if unsafe { libc::ioctl(sock, req as _, &mut v) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v.max(0) as usize)
}

/// Turns repair mode on or off. On needs CAP_NET_ADMIN; off lets the
/// connection go on (the kernel sends a window probe).
pub fn set_repair(sock: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    setopt(sock.as_raw_fd(), libc::TCP_REPAIR, &libc::c_int::from(on))
}

/// The next sequence number expected from the peer; `sock` must be in repair mode.
pub fn recv_seq(sock: BorrowedFd<'_>) -> io::Result<u32> {
    let fd = sock.as_raw_fd();
    setopt(fd, libc::TCP_REPAIR_QUEUE, &TCP_RECV_QUEUE)?;
    let seq = getopt::<u32>(fd, libc::TCP_QUEUE_SEQ);
    setopt(fd, libc::TCP_REPAIR_QUEUE, &TCP_NO_QUEUE)?;
    seq
}

/// Peeks `len` bytes of the queue selected with TCP_REPAIR_QUEUE.
fn peek_queue(fd: i32, len: usize) -> io::Result<Vec<u8>> {
    if len > MAX_QUEUE {
        return Err(io::Error::other(format!("{} MiB waiting in a queue (at most {} MiB are carried)", len >> 20, MAX_QUEUE >> 20)));
    }
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        // SAFETY: recv writes at most len - got bytes into our buffer from `got` on.
        let n = unsafe { libc::recv(fd, buf[got..].as_mut_ptr().cast(), len - got, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 || got > 0 {
            // A peek starts at the queue's head each time: one call must take it all.
            break;
        }
        got = n as usize;
    }
    if got != len {
        return Err(io::Error::other(format!("{got} of the {len} bytes waiting in a queue could be read")));
    }
    Ok(buf)
}

/// Puts `sock`, an established TCP connection of a stopped process, in repair
/// mode and reads its state. It stays in repair mode: the caller turns it off
/// ([`set_repair`]) to let the connection go on, or closes every descriptor of
/// it in repair mode to end it without a packet. On failure it is left as it was.
pub fn dump(sock: BorrowedFd<'_>) -> io::Result<TcpDump> {
    let fd = sock.as_raw_fd();
    set_repair(sock, true).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => io::Error::new(e.kind(), "TCP_REPAIR needs CAP_NET_ADMIN (root)"),
        _ => e,
    })?;
    let r = dump_repaired(sock, fd);
    if r.is_err() {
        let _ = setopt(fd, libc::TCP_REPAIR_QUEUE, &TCP_NO_QUEUE);
        let _ = set_repair(sock, false);
    }
    r
}

fn dump_repaired(sock: BorrowedFd<'_>, fd: i32) -> io::Result<TcpDump> {
    let info: TcpInfo = getopt(fd, libc::TCP_INFO)?;
    if info.state != ESTABLISHED {
        return Err(io::Error::other(format!("not established (TCP state {})", info.state)));
    }
    let mut d = TcpDump { mss: getopt::<u32>(fd, libc::TCP_MAXSEG)?, sack: info.options & TCPI_OPT_SACK != 0, ..Default::default() };
    if info.options & TCPI_OPT_WSCALE != 0 {
        d.wscale = Some((info.wscale & 0xf, info.wscale >> 4));
    }
    if info.options & TCPI_OPT_TIMESTAMPS != 0 {
        d.timestamp = Some(getopt::<u32>(fd, libc::TCP_TIMESTAMP)?);
    }
    let w: [u32; 5] = getopt(fd, libc::TCP_REPAIR_WINDOW)?;
    d.window = w;
    let outq = ioctl_int(fd, libc::TIOCOUTQ)?;
    let unsent = ioctl_int(fd, libc::SIOCOUTQNSD)?.min(outq);
    let inq = ioctl_int(fd, libc::FIONREAD)?;
    // A peek offset the program set would move where MSG_PEEK starts.
    let peek_off = crate::sockdiag::sockopt(sock, libc::SOL_SOCKET, libc::SO_PEEK_OFF)?;
    let set_peek = |off: libc::c_int| {
        // SAFETY: setsockopt with a pointer to an int on our stack and its size.
        unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, (&off as *const libc::c_int).cast(), 4) }
    };
    if peek_off >= 0 {
        set_peek(0);
    }
    let queues = (|| -> io::Result<()> {
        setopt(fd, libc::TCP_REPAIR_QUEUE, &TCP_SEND_QUEUE)?;
        d.send_seq = getopt(fd, libc::TCP_QUEUE_SEQ)?;
        let all = if outq > 0 { peek_queue(fd, outq)? } else { Vec::new() };
        d.sent = all[..outq - unsent].to_vec();
        d.unsent = all[outq - unsent..].to_vec();
        setopt(fd, libc::TCP_REPAIR_QUEUE, &TCP_RECV_QUEUE)?;
        d.recv_seq = getopt(fd, libc::TCP_QUEUE_SEQ)?;
        d.received = if inq > 0 { peek_queue(fd, inq)? } else { Vec::new() };
        setopt(fd, libc::TCP_REPAIR_QUEUE, &TCP_NO_QUEUE)
    })();
    if peek_off >= 0 {
        set_peek(peek_off);
    }
    queues?;
    Ok(d)
}

/// The head of struct tcp_info (the fields read here).
#[repr(C)]
#[derive(Default)]
struct TcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    /// snd_wscale in the low 4 bits, rcv_wscale in the high 4.
    wscale: u8,
    _pad: u8,
    _rest: [u32; 24],
}

/// A connection to make again, prepared before the restorer forks.
#[derive(Clone, Debug)]
pub struct TcpPlan {
    pub domain: i32,
    /// struct sockaddr_in/in6 of the local and the remote end.
    pub local: Vec<u8>,
    pub remote: Vec<u8>,
    /// Socket options set before connecting: (level, name, int value).
    pub options: Vec<(i32, i32, i32)>,
    pub dump: TcpDump,
    /// The tcp_repair_opt entries: (code, value).
    pub repair_options: Vec<[u32; 2]>,
}

impl TcpPlan {
    pub fn new(domain: i32, local: Vec<u8>, remote: Vec<u8>, options: Vec<(i32, i32, i32)>, dump: TcpDump) -> TcpPlan {
        let mut repair_options = vec![[TCPOPT_MAXSEG, dump.mss]];
        if let Some((snd, rcv)) = dump.wscale {
            repair_options.push([TCPOPT_WINDOW, u32::from(snd) | (u32::from(rcv) << 16)]);
        }
        if dump.sack {
            repair_options.push([TCPOPT_SACK_PERM, 0]);
        }
        if dump.timestamp.is_some() {
            repair_options.push([TCPOPT_TIMESTAMP, 0]);
        }
        TcpPlan { domain, local, remote, options, dump, repair_options }
    }
}

/// setsockopt without allocation; false on failure (errno set).
///
/// # Safety
/// `v` must point to `len` readable bytes.
unsafe fn raw_set(fd: i32, level: i32, name: i32, v: *const libc::c_void, len: usize) -> bool {
    // SAFETY: the caller's promise on `v` and `len`.
    unsafe { libc::setsockopt(fd, level, name, v, len as libc::socklen_t) == 0 }
}

/// Sends `data` whole in repair mode (into the queue TCP_REPAIR_QUEUE selects),
/// in pieces the kernel can take.
///
/// # Safety
/// Async-signal-safe calls only.
unsafe fn send_all(fd: i32, data: &[u8], flags: i32) -> bool {
    let mut off = 0;
    let mut chunk = data.len();
    while off < data.len() {
        let n = chunk.min(data.len() - off);
        // SAFETY: send reads `n` bytes of `data` from `off`.
        let r = unsafe { libc::send(fd, data[off..].as_ptr().cast(), n, flags) };
        if r < 0 {
            // The receive queue takes one buffer per call: halve it while it is too big.
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOMEM) && chunk > 1024 {
                chunk /= 2;
                continue;
            }
            return false;
        }
        off += r as usize;
    }
    true
}

/// Makes the connection of `p` again: a new socket in repair mode, its
/// sequence numbers, bound and connected without a handshake, its options,
/// timestamp, queues and window. It stays in repair mode, silent, until
/// [`finish`]: the other end, when it is made in the same restore, must exist
/// before either speaks (a packet to a connection not made yet is answered by
/// a reset). Returns the socket, or -1 with errno set (the socket closed in
/// repair mode: nothing reaches the peer).
///
/// # Safety
/// Makes only async-signal-safe calls and does not allocate: callable in a
/// forked child of a multi-threaded process.
pub unsafe fn restore(p: &TcpPlan) -> i32 {
    // SAFETY: every call below is async-signal-safe and reads only `p` and
    // values on this stack, with their sizes.
    unsafe {
        let t = libc::socket(p.domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if t < 0 {
            return -1;
        }
        let int = |name: i32, v: i32| raw_set(t, libc::SOL_TCP, name, (&v as *const i32).cast(), 4);
        let d = &p.dump;
        let ok = (|| {
            if !int(libc::TCP_REPAIR, 1) {
                return false;
            }
            for (level, name, value) in &p.options {
                if !raw_set(t, *level, *name, (value as *const i32).cast(), 4) {
                    return false;
                }
            }
            let queued = (d.sent.len() + d.unsent.len()) as u32;
            // Room for the queues (a new socket's buffers are small; the kernel doubles the value).
            for (name, need) in [(libc::SO_SNDBUFFORCE, queued as usize), (libc::SO_RCVBUFFORCE, d.received.len())] {
                let v = (need + (64 << 10)).min(i32::MAX as usize) as i32;
                if need > 0 && !raw_set(t, libc::SOL_SOCKET, name, (&v as *const i32).cast(), 4) {
                    return false;
                }
            }
            if !int(libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE) || !int(libc::TCP_QUEUE_SEQ, d.recv_seq.wrapping_sub(d.received.len() as u32) as i32) {
                return false;
            }
            if !int(libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE) || !int(libc::TCP_QUEUE_SEQ, d.send_seq.wrapping_sub(queued) as i32) {
                return false;
            }
            if libc::bind(t, p.local.as_ptr().cast(), p.local.len() as libc::socklen_t) != 0 {
                return false;
            }
            if libc::connect(t, p.remote.as_ptr().cast(), p.remote.len() as libc::socklen_t) != 0 {
                return false;
            }
            if !raw_set(t, libc::SOL_TCP, libc::TCP_REPAIR_OPTIONS, p.repair_options.as_ptr().cast(), p.repair_options.len() * 8) {
                return false;
            }
            if let Some(ts) = d.timestamp {
                if !int(libc::TCP_TIMESTAMP, ts as i32) {
                    return false;
                }
            }
            if !int(libc::TCP_REPAIR_QUEUE, TCP_RECV_QUEUE) || !send_all(t, &d.received, 0) {
                return false;
            }
            // Already sent once: queued as sent, retransmitted if the peer did not get them.
            if !int(libc::TCP_REPAIR_QUEUE, TCP_SEND_QUEUE) || !send_all(t, &d.sent, 0) {
                return false;
            }
            raw_set(t, libc::SOL_TCP, libc::TCP_REPAIR_WINDOW, d.window.as_ptr().cast(), 20) && int(libc::TCP_REPAIR_QUEUE, TCP_NO_QUEUE)
        })();
        if !ok {
            let e = *libc::__errno_location();
            libc::close(t);
            *libc::__errno_location() = e;
            return -1;
        }
        t
    }
}

/// Takes socket `t`, made by [`restore`] from `p`, out of repair mode (the
/// connection goes on: the kernel sends a window probe) and sends the bytes
/// that had not been sent. False on failure, errno set.
///
/// # Safety
/// As [`restore`]: async-signal-safe calls only.
pub unsafe fn finish(t: i32, p: &TcpPlan) -> bool {
    let off: i32 = 0;
    // SAFETY: setsockopt reads the int on our stack; send_all is async-signal-safe.
    unsafe { raw_set(t, libc::SOL_TCP, libc::TCP_REPAIR, (&off as *const i32).cast(), 4) && send_all(t, &p.dump.unsent, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    /// A loopback connection: (the end that connected, the end that accepted).
    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// Whether TCP_REPAIR may be used here; prints the skip line when not.
    fn can_repair(test: &str) -> bool {
        let (c, _) = pair();
        let ok = set_repair(c.as_fd(), true).is_ok();
        let _ = set_repair(c.as_fd(), false);
        if !ok {
            eprintln!("SKIP {test}: TCP_REPAIR needs CAP_NET_ADMIN");
        }
        ok
    }

    /// Closes `a` (dumped as `d`) in repair mode and makes it again.
    fn remake(a: std::net::TcpStream, d: TcpDump, options: Vec<(i32, i32, i32)>) -> std::net::TcpStream {
        let local = crate::sockdiag::sockaddr_bytes(&a.local_addr().unwrap());
        let remote = crate::sockdiag::sockaddr_bytes(&a.peer_addr().unwrap());
        // Closed in repair mode: no FIN, no reset.
        drop(a);
        let plan = TcpPlan::new(libc::AF_INET, local, remote, options, d);
        // SAFETY: called in a plain thread; restore only makes system calls.
        let fd = unsafe { restore(&plan) };
        assert!(fd >= 0, "restore: {}", io::Error::last_os_error());
        // SAFETY: as above.
        assert!(unsafe { finish(fd, &plan) }, "finish: {}", io::Error::last_os_error());
        // SAFETY: restore returned a socket we now own.
        std::net::TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// A loopback connection with bytes waiting both ways is dumped, closed
    /// in repair mode (its peer sees nothing) and made again: the peer reads
    /// on from where it was and the copy reads what waited in the old one.
    #[test]
    fn a_connection_dumped_and_made_again_goes_on() {
        if !can_repair("a_connection_dumped_and_made_again_goes_on") {
            return;
        }
        let (mut a, mut b) = pair();
        a.set_nodelay(true).unwrap();
        a.write_all(b"from a, read before\n").unwrap();
        let mut buf = [0u8; 20];
        b.read_exact(&mut buf).unwrap();
        b.write_all(b"waiting for a\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let d = dump(a.as_fd()).unwrap();
        assert_eq!(d.received, b"waiting for a\n");
        assert!(d.sent.is_empty() && d.unsent.is_empty(), "{d:?}");
        assert!(d.mss > 0);
        let mut a2 = remake(a, d, vec![(libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)]);
        let mut got = [0u8; 14];
        a2.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"waiting for a\n");
        a2.write_all(b"from the copy\n").unwrap();
        let mut got = [0u8; 14];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"from the copy\n");
        b.write_all(b"and back\n").unwrap();
        let mut got = [0u8; 9];
        a2.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"and back\n");
    }

    /// Bytes that arrive while a connection is held in repair mode are taken
    /// in (the capture would miss them): [`recv_seq`] shows it.
    #[test]
    fn bytes_arriving_in_repair_mode_move_recv_seq() {
        if !can_repair("bytes_arriving_in_repair_mode_move_recv_seq") {
            return;
        }
        let (a, mut b) = pair();
        let d = dump(a.as_fd()).unwrap();
        assert_eq!(recv_seq(a.as_fd()).unwrap(), d.recv_seq);
        b.write_all(b"late").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(recv_seq(a.as_fd()).unwrap(), d.recv_seq.wrapping_add(4));
        set_repair(a.as_fd(), false).unwrap();
    }

    /// A sender whose peer does not read fills its send queue (bytes sent and
    /// not acknowledged, bytes not sent at all): the copy delivers every byte,
    /// in order, once the peer reads.
    #[test]
    fn a_full_send_queue_is_delivered_by_the_copy() {
        if !can_repair("a_full_send_queue_is_delivered_by_the_copy") {
            return;
        }
        let (mut a, mut b) = pair();
        a.set_nonblocking(true).unwrap();
        let pattern: Vec<u8> = (0..1u32 << 16).map(|i| (i % 251) as u8).collect();
        let mut written = 0usize;
        loop {
            match a.write(&pattern[written % pattern.len()..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let d = dump(a.as_fd()).unwrap();
        assert!(!d.sent.is_empty() || !d.unsent.is_empty(), "nothing waits to be sent after {written} bytes");
        let a2 = remake(a, d, Vec::new());
        b.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let mut got = vec![0u8; written];
        b.read_exact(&mut got).unwrap();
        assert!(got.iter().enumerate().all(|(i, &x)| x == pattern[i % pattern.len()]), "the bytes differ");
        drop(a2);
    }
}
