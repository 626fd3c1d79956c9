//! What the kernel says about sockets (NETLINK_SOCK_DIAG), and the bytes
//! waiting in one, read without taking them out.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::unix::{nlas::Nla, ShowFlags, StateFlags, UnixRequest};
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
    /// Bound to a name (a path or an abstract name).
    pub named: bool,
    /// RCV_SHUTDOWN (1) and SEND_SHUTDOWN (2) as the kernel keeps them.
    pub shutdown: u8,
}

/// Every unix socket of the caller's network namespace, by inode.
pub fn unix_sockets() -> std::io::Result<HashMap<u32, UnixSock>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let req = UnixRequest {
        state_flags: StateFlags::from_bits_retain(u32::MAX),
        inode: 0,
        show_flags: ShowFlags::PEER | ShowFlags::NAME,
        cookie: [0xff; 8],
    };
    let mut packet = NetlinkMessage::new(hdr, SockDiagMessage::UnixRequest(req).into());
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0)?;
    let mut out = HashMap::new();
    let mut rx = vec![0u8; 64 << 10];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[offset..size]).map_err(|e| std::io::Error::other(format!("sock_diag: {e}")))?;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => return Err(std::io::Error::other(format!("sock_diag: {e:?}"))),
                NetlinkPayload::InnerMessage(SockDiagMessage::UnixResponse(r)) => {
                    let mut s = UnixSock { kind: i32::from(r.header.kind), state: r.header.state, peer: None, named: false, shutdown: 0 };
                    for nla in &r.nlas {
                        match nla {
                            Nla::Peer(p) => s.peer = Some(*p),
                            Nla::Name(_) => s.named = true,
                            Nla::Shutdown(v) => s.shutdown = *v,
                            _ => {}
                        }
                    }
                    out.insert(r.header.inode, s);
                }
                _ => {}
            }
            if msg.header.length == 0 {
                break;
            }
            offset += msg.header.length as usize;
        }
    }
}

/// The messages waiting in socket `sock` to be read (a stream socket's bytes
/// as one), read with MSG_PEEK from its peek offset, which is put back off
/// after. Fails on a message that carries file descriptors or credentials.
pub fn socket_peek(sock: BorrowedFd<'_>) -> std::io::Result<Vec<Vec<u8>>> {
    let fd = sock.as_raw_fd();
    let set_peek = |off: libc::c_int| {
        // SAFETY: setsockopt with a pointer to an int on our stack and its size.
        unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, (&off as *const libc::c_int).cast(), 4) }
    };
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
        if n == 0 {
            // End of stream (the peer shut down), or an empty datagram.
            break Ok(());
        }
        out.push(buf[..n as usize].to_vec());
    };
    set_peek(-1);
    result.map(|()| out)
}
