//! What the kernel says about sockets (NETLINK_SOCK_DIAG), and the bytes
//! waiting in one, read without taking them out.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags as InetStates};
use netlink_packet_sock_diag::unix::{nlas::Nla, nlas::UnixDiagName, ShowFlags, StateFlags, UnixRequest};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

/// A unix socket as sock_diag reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixSock {
    /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
    pub kind: i32,
    /// TCP_* state numbers: 1 established, 7 unconnected, 10 listening.
    pub state: u8,
    /// The inode of the socket it is connected to.
    pub peer: Option<u32>,
    /// Bound to a name: a path, or an abstract name (first byte 0).
    pub name: Option<Vec<u8>>,
    /// Connections waiting to be accepted (a listening socket).
    pub pending: usize,
    /// RCV_SHUTDOWN (1) and SEND_SHUTDOWN (2) as the kernel keeps them.
    pub shutdown: u8,
}

/// Sends one sock_diag dump request and hands every answer to `each`.
fn dump(req: SockDiagMessage, mut each: impl FnMut(SockDiagMessage)) -> std::io::Result<()> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut packet = NetlinkMessage::new(hdr, req.into());
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0)?;
    let mut rx = vec![0u8; 64 << 10];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[offset..size]).map_err(|e| std::io::Error::other(format!("sock_diag: {e}")))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                // A family the kernel does not have (say, no IPv6) answers with an error.
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(std::io::Error::other(format!("sock_diag: {e:?}"))),
                NetlinkPayload::InnerMessage(m) => each(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// Every unix socket of the caller's network namespace, by inode.
pub fn unix_sockets() -> std::io::Result<HashMap<u32, UnixSock>> {
    let req = UnixRequest {
        state_flags: StateFlags::from_bits_retain(u32::MAX),
        inode: 0,
        show_flags: ShowFlags::PEER | ShowFlags::NAME | ShowFlags::ICONS,
        cookie: [0xff; 8],
    };
    let mut out = HashMap::new();
    dump(SockDiagMessage::UnixRequest(req), |m| {
        if let SockDiagMessage::UnixResponse(r) = m {
            let mut s = UnixSock { kind: i32::from(r.header.kind), state: r.header.state, peer: None, name: None, pending: 0, shutdown: 0 };
            for nla in &r.nlas {
                match nla {
                    Nla::Peer(p) => s.peer = Some(*p),
                    Nla::Name(UnixDiagName::Pathname(p)) => s.name = Some(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec()),
                    Nla::Name(UnixDiagName::Abstract(a)) => s.name = Some([&[0u8][..], a].concat()),
                    Nla::PendingConnections(c) => s.pending = c.len(),
                    Nla::Shutdown(v) => s.shutdown = *v,
                    _ => {}
                }
            }
            out.insert(r.header.inode, s);
        }
    })?;
    Ok(out)
}

/// A TCP or UDP socket as sock_diag reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InetSock {
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub protocol: u8,
    /// TCP_* state: 1 established, 7 closed (unconnected UDP too), 10 listening.
    pub state: u8,
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
    /// Bytes (datagrams) waiting to be read; a listening socket: connections
    /// waiting to be accepted.
    pub recv_queue: u32,
    /// A listening socket: its backlog.
    pub send_queue: u32,
}

/// Every TCP and UDP socket (IPv4 and IPv6) of the caller's network namespace, by inode.
pub fn inet_sockets() -> std::io::Result<HashMap<u32, InetSock>> {
    let mut out = HashMap::new();
    for (family, any) in [(libc::AF_INET as u8, SocketId::new_v4()), (libc::AF_INET6 as u8, SocketId::new_v6())] {
        for protocol in [libc::IPPROTO_TCP as u8, libc::IPPROTO_UDP as u8] {
            let req = InetRequest { family, protocol, extensions: ExtensionFlags::empty(), states: InetStates::all(), socket_id: any.clone() };
            let got = dump(SockDiagMessage::InetRequest(req), |m| {
                if let SockDiagMessage::InetResponse(r) = m {
                    let h = &r.header;
                    let id = &h.socket_id;
                    out.insert(
                        h.inode,
                        InetSock {
                            protocol,
                            state: h.state,
                            local: std::net::SocketAddr::new(id.source_address, id.source_port),
                            remote: std::net::SocketAddr::new(id.destination_address, id.destination_port),
                            recv_queue: h.recv_queue,
                            send_queue: h.send_queue,
                        },
                    );
                }
            });
            // No IPv6 in this kernel: nothing of that family to list.
            if let Err(e) = got {
                if family == libc::AF_INET as u8 {
                    return Err(e);
                }
            }
        }
    }
    Ok(out)
}

/// An int socket option of `sock` (getsockopt).
pub fn sockopt(sock: BorrowedFd<'_>, level: i32, name: i32) -> std::io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`, an int on our stack.
    if unsafe { libc::getsockopt(sock.as_raw_fd(), level, name, (&mut v as *mut libc::c_int).cast(), &mut len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v)
}

/// A netlink socket's addresses (its own and where it sends) and the multicast
/// groups it listens to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetlinkSock {
    /// Its port id (bound or given by the kernel; 0 if neither yet).
    pub portid: u32,
    /// Its multicast groups, by number (group g is bit g-1 of a bind's nl_groups).
    pub groups: Vec<u32>,
    /// Where it sends by default (connect): a port id and a group (0: the kernel).
    pub dst_portid: u32,
    pub dst_group: u32,
}

/// Reads netlink socket `sock` (getsockname, getpeername, NETLINK_LIST_MEMBERSHIPS).
pub fn netlink_sock(sock: BorrowedFd<'_>) -> std::io::Result<NetlinkSock> {
    let fd = sock.as_raw_fd();
    // struct sockaddr_nl: family u16, pad u16, pid u32, groups u32.
    let name = |peer: bool| -> std::io::Result<(u32, u32)> {
        let mut a = [0u8; 12];
        let mut len = a.len() as libc::socklen_t;
        let p = a.as_mut_ptr().cast();
        // SAFETY: the kernel writes at most `len` bytes into `a`, on our stack.
        let r = unsafe { if peer { libc::getpeername(fd, p, &mut len) } else { libc::getsockname(fd, p, &mut len) } };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let word = |at: usize| u32::from_ne_bytes(a[at..at + 4].try_into().expect("4 bytes"));
        Ok((word(4), word(8)))
    };
    let (portid, _) = name(false)?;
    let (dst_portid, dst_mask) = name(true)?;
    // The group bitmap, as long as the family's groups need: the kernel fills what fits
    // and says how long the whole is (asked again with that room if it did not fit).
    let mut words = vec![0u32; 32];
    loop {
        let room = (words.len() * 4) as libc::socklen_t;
        let mut len = room;
        // SAFETY: the kernel writes at most `len` bytes of group bitmap into `words`.
        if unsafe { libc::getsockopt(fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, words.as_mut_ptr().cast(), &mut len) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if len <= room {
            words.truncate(len as usize / 4);
            break;
        }
        words = vec![0u32; (len as usize).div_ceil(4)];
    }
    let groups = (0..words.len() * 32).filter(|&b| words[b / 32] & (1 << (b % 32)) != 0).map(|b| b as u32 + 1).collect();
    Ok(NetlinkSock { portid, groups, dst_portid, dst_group: if dst_mask == 0 { 0 } else { dst_mask.trailing_zeros() + 1 } })
}

/// `SOL_NETLINK` and its options a checkpoint reads (linux/netlink.h).
pub const SOL_NETLINK: i32 = 270;
pub const NETLINK_LIST_MEMBERSHIPS: i32 = 9;
/// The int options of a netlink socket: PKTINFO, BROADCAST_ERROR, NO_ENOBUFS,
/// LISTEN_ALL_NSID, CAP_ACK, EXT_ACK, GET_STRICT_CHK.
pub const NETLINK_INT_OPTIONS: [i32; 7] = [3, 4, 5, 8, 10, 11, 12];

/// A netlink socket address as the kernel takes it (struct sockaddr_nl).
pub fn netlink_sockaddr_bytes(portid: u32, groups: u32) -> Vec<u8> {
    let mut b = (libc::AF_NETLINK as u16).to_ne_bytes().to_vec();
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&portid.to_ne_bytes());
    b.extend_from_slice(&groups.to_ne_bytes());
    b
}

/// The bytes waiting in netlink socket `inode` of the network namespace of process
/// `pid` (the Rmem column of /proc/PID/net/netlink); `None` if it is not there.
pub fn netlink_queued(pid: i32, inode: u64) -> std::io::Result<Option<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/netlink"))?;
    Ok(text.lines().skip(1).find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (w.len() >= 10 && w[9].parse::<u64>().ok() == Some(inode)).then(|| w[4].parse().ok()).flatten()
    }))
}

/// A socket address as the kernel takes it (struct sockaddr_in / sockaddr_in6).
pub fn sockaddr_bytes(a: &std::net::SocketAddr) -> Vec<u8> {
    match a {
        std::net::SocketAddr::V4(v4) => {
            let mut b = Vec::with_capacity(16);
            b.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b.extend_from_slice(&v4.port().to_be_bytes());
            b.extend_from_slice(&v4.ip().octets());
            b.extend_from_slice(&[0; 8]);
            b
        }
        std::net::SocketAddr::V6(v6) => {
            let mut b = Vec::with_capacity(28);
            b.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b.extend_from_slice(&v6.port().to_be_bytes());
            b.extend_from_slice(&v6.flowinfo().to_be_bytes());
            b.extend_from_slice(&v6.ip().octets());
            b.extend_from_slice(&v6.scope_id().to_ne_bytes());
            b
        }
    }
}

/// A unix socket address for `name` (a path, or an abstract name starting with 0).
pub fn unix_sockaddr_bytes(name: &[u8]) -> Vec<u8> {
    let mut b = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    b.extend_from_slice(name);
    if name.first() != Some(&0) {
        b.push(0);
    }
    b
}

/// The messages waiting in socket `sock` to be read (a stream socket's bytes
/// as one), read with MSG_PEEK from its peek offset, which is put back off
/// after. Fails on a message that carries file descriptors or credentials.
pub fn socket_peek(sock: BorrowedFd<'_>, stream: bool) -> std::io::Result<Vec<Vec<u8>>> {
    let fd = sock.as_raw_fd();
    let set_peek = |off: libc::c_int| {
        // SAFETY: setsockopt with a pointer to an int on our stack and its size.
        unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, (&off as *const libc::c_int).cast(), 4) }
    };
    // The program's own peek offset, put back after.
    let before = sockopt(sock, libc::SOL_SOCKET, libc::SO_PEEK_OFF)?;
    if set_peek(0) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let result = loop {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let mut control = [0u64; 64];
        // SAFETY: a zeroed msghdr is valid; its pointers are set to our buffers below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: recvmsg writes at most the iovec's and the control buffer's sizes
        // into our buffers, which outlive the call.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                break Ok(());
            }
            break Err(e);
        }
        if msg.msg_controllen > 0 || msg.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0 {
            break Err(std::io::Error::other("a message waiting in it carries file descriptors or credentials, or is larger than 1 MiB"));
        }
        if n == 0 && stream {
            // End of stream: the peer shut down.
            break Ok(());
        }
        if n == 0 && out.len() >= 1 << 16 {
            break Err(std::io::Error::other("more than 65536 datagrams waiting"));
        }
        out.push(buf[..n as usize].to_vec());
    };
    set_peek(before);
    result.map(|()| out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    /// A NETLINK_ROUTE socket bound to group 8 and added to group 33 (past a bind's 32):
    /// its port id is the kernel's, its groups both, and it sends to the kernel.
    #[test]
    fn a_netlink_socket_reads_back() {
        // SAFETY: socket(2) with constant arguments; the fd is owned at once.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `raw` is a new descriptor nobody else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = netlink_sockaddr_bytes(0, 1 << 7);
        // SAFETY: bind reads `addr.len()` bytes of a sockaddr_nl from `addr`.
        assert_eq!(unsafe { libc::bind(raw, addr.as_ptr().cast(), addr.len() as libc::socklen_t) }, 0, "bind: {}", std::io::Error::last_os_error());
        let group: libc::c_int = 33;
        // SAFETY: setsockopt reads an int from `group`, on our stack.
        let added = unsafe { libc::setsockopt(raw, SOL_NETLINK, 1, (&group as *const libc::c_int).cast(), 4) };
        assert_eq!(added, 0, "NETLINK_ADD_MEMBERSHIP: {}", std::io::Error::last_os_error());
        let n = netlink_sock(sock.as_fd()).unwrap();
        assert_ne!(n.portid, 0);
        assert_eq!(n.groups, vec![8, 33]);
        assert_eq!((n.dst_portid, n.dst_group), (0, 0));
    }
}
