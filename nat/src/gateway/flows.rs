//! The entries of the gateway's flow tables (TCP, UDP, echo, UDP forwards) and the host
//! sockets they are made of (non-blocking connects, unprivileged ping sockets).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::time::Instant;

use smoltcp::iface::SocketHandle;

/// (guest address, guest port, destination as the guest sees it, its port).
pub(super) type FlowKey = (IpAddr, u16, IpAddr, u16);

/// One relayed TCP connection: a smoltcp socket facing the guest, a host socket.
pub(super) struct TcpFlow {
    pub(super) handle: SocketHandle,
    pub(super) host: TcpStream,
    pub(super) connected: bool,
    /// From the guest, not yet written to the host.
    pub(super) to_host: Vec<u8>,
    pub(super) host_eof: bool,
    pub(super) guest_eof_passed: bool,
    pub(super) guest: IpAddr,
}

/// One UDP flow: a host socket connected to the destination.
pub(super) struct UdpFlow {
    pub(super) sock: UdpSocket,
    pub(super) last: Instant,
}

/// A UDP forward: a host socket, and the host peers talking through it, each behind a
/// gateway port the guest answers to.
pub(super) struct UdpForward {
    pub(super) sock: UdpSocket,
    pub(super) guest: SocketAddrV4,
    pub(super) by_port: HashMap<u16, SocketAddr>,
    pub(super) by_peer: HashMap<SocketAddr, u16>,
}

/// Room kept per TCP flow in smoltcp (receive, send).
pub(super) const TCP_RX_BUF: usize = 64 * 1024;
pub(super) const TCP_TX_BUF: usize = 128 * 1024;
/// Most bytes held from the guest for a slow host socket.
pub(super) const TO_HOST_MAX: usize = 64 * 1024;

/// An unprivileged ICMP echo socket (SOCK_DGRAM, IPPROTO_ICMP) aimed at `to`.
pub(super) fn ping_socket(to: SocketAddr) -> io::Result<UdpSocket> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
    let SocketAddr::V4(_) = to else {
        return Err(io::Error::from(io::ErrorKind::Unsupported));
    };
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::Icmp,
    )?;
    // Datagram calls work on it like on a UDP socket; the port is ignored.
    let s = UdpSocket::from(fd);
    s.connect(to)?;
    Ok(s)
}

/// Starts a TCP connection without waiting for it.
pub(super) fn connect_nonblocking(to: SocketAddr) -> io::Result<TcpStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, connect, socket,
    };
    let family = if to.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd: OwnedFd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let r = match to {
        SocketAddr::V4(a) => connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn6::from(a)),
    };
    match r {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => Ok(TcpStream::from(fd)),
        Err(e) => Err(e.into()),
    }
}
