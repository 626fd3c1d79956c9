//! Sockets: this node's addresses, the gossip socket, the multicast beacon socket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// IPv4 addresses of interfaces that are up, not loopback, and can multicast.
pub fn lan_addresses() -> Vec<Ipv4Addr> {
    use nix::net::if_::InterfaceFlags as F;
    let mut out = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if !a.flags.contains(F::IFF_UP) || a.flags.contains(F::IFF_LOOPBACK) {
                continue;
            }
            if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
                let ip = sin.ip();
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// The address other nodes reach this one at: configured, else the listen address,
/// else the first LAN interface, else loopback (a one-node cluster).
pub fn advertise_ip(configured: Option<IpAddr>, listen: SocketAddr) -> (IpAddr, bool) {
    if let Some(ip) = configured {
        return (ip, true);
    }
    if !listen.ip().is_unspecified() {
        return (listen.ip(), true);
    }
    match lan_addresses().first() {
        Some(ip) => (IpAddr::V4(*ip), true),
        None => (IpAddr::V4(Ipv4Addr::LOCALHOST), false),
    }
}

/// The multicast socket beacons are sent from and heard on. It joins the group on every
/// LAN interface (or the one `only` names), so no default route is needed — the old
/// omdiscd needed one.
pub fn beacon_socket(group: SocketAddr, only: Option<Ipv4Addr>) -> std::io::Result<(std::net::UdpSocket, Vec<Ipv4Addr>)> {
    let IpAddr::V4(group_ip) = group.ip() else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "the beacon group must be IPv4"));
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), group.port()).into())?;
    s.set_multicast_loop_v4(true)?;
    s.set_multicast_ttl_v4(1)?;
    let ifaces = match only {
        Some(ip) => vec![ip],
        None => lan_addresses(),
    };
    let mut joined = Vec::new();
    for ip in ifaces {
        match s.join_multicast_v4(&group_ip, &ip) {
            Ok(()) => joined.push(ip),
            Err(e) => tracing::warn!("cannot join beacon group {group_ip} on {ip}: {e}"),
        }
    }
    s.set_nonblocking(true)?;
    Ok((s.into(), joined))
}

/// Sends one beacon out of each interface the group was joined on.
pub fn send_beacon(socket: &tokio::net::UdpSocket, group: SocketAddr, ifaces: &[Ipv4Addr], datagram: &[u8]) {
    let s = socket2::SockRef::from(socket);
    for ip in ifaces {
        if let Err(e) = s.set_multicast_if_v4(ip).and_then(|()| socket.try_send_to(datagram, group).map(drop)) {
            tracing::debug!("beacon on {ip}: {e}");
        }
    }
}
