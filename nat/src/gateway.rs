//! The gateway engine: Ethernet frames from the segment in, frames to the segment out, host
//! sockets in between. No root, no raw sockets: guest TCP is terminated by smoltcp and
//! relayed through ordinary host TCP sockets; UDP goes through a flow table of host UDP
//! sockets; DHCP, DNS relay and pings to the gateway are answered here.
//!
//! Addresses, as QEMU user networking lays them out: the gateway (`.2`) routes everything
//! and is also the host's loopback (a connection to 10.0.2.2:80 reaches 127.0.0.1:80); the
//! DNS relay (`.3`) forwards to the upstream resolver. Everything else is the outside world,
//! reached from the host (unless `restrict`).
//!
//! Bounded: at most `max_flows` TCP + UDP flows, `max_flows_per_guest` per guest address;
//! a guest over its share gets its SYNs reset and its datagrams dropped (counted), so a SYN
//! flood cannot take the host's file descriptors or other guests' share.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use nix::poll::PollFlags;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, IpEndpoint, IpListenEndpoint};

use crate::config::{NatConfig, Proto};
use crate::dhcp::DhcpServer;

macro_rules! counters {
    ($($(#[$m:meta])* $f:ident,)*) => {
        /// What the gateway did, shared with the thread that reports it.
        #[derive(Debug, Default)]
        pub struct Counters { $($(#[$m])* pub $f: AtomicU64,)* }

        impl Counters {
            /// Every counter as (name, value).
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($f), self.$f.load(Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Frames from the segment handled.
    nat_frames_in,
    /// Frames sent to the segment.
    nat_frames_out,
    /// DHCP replies sent.
    nat_dhcp_replies,
    /// DNS queries relayed.
    nat_dns_queries,
    /// TCP connections relayed to the host (outbound and forwarded).
    nat_tcp_flows,
    /// UDP flows opened.
    nat_udp_flows,
    /// Host connections that failed (the guest got a reset).
    nat_connect_errors,
    /// Connections or datagrams refused by `restrict`.
    nat_restricted,
    /// Connections or datagrams over the flow limits.
    nat_flow_limit,
    /// Echo requests answered for the gateway and DNS addresses.
    nat_icmp_echo,
    /// Echo requests relayed to other addresses (through unprivileged ping sockets).
    nat_icmp_relayed,
    /// Echo requests that could not be relayed (ping sockets not allowed to vfabric's group:
    /// net.ipv4.ping_group_range).
    nat_icmp_unavailable,
    /// Frames not handled (other protocols, other addresses, malformed).
    nat_dropped,
}

/// smoltcp's view of the segment: frames queued in, frames queued out.
#[derive(Default)]
struct Dev {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    mtu: usize,
}

struct RxT(Vec<u8>);
struct TxT<'a>(&'a mut Vec<Vec<u8>>);

impl smoltcp::phy::RxToken for RxT {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for TxT<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut v = vec![0u8; len];
        let r = f(&mut v);
        self.0.push(v);
        r
    }
}

impl Device for Dev {
    type RxToken<'a> = RxT;
    type TxToken<'a> = TxT<'a>;

    fn receive(&mut self, _ts: SInstant) -> Option<(RxT, TxT<'_>)> {
        let f = self.rx.pop_front()?;
        Some((RxT(f), TxT(&mut self.tx)))
    }

    fn transmit(&mut self, _ts: SInstant) -> Option<TxT<'_>> {
        Some(TxT(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.mtu;
        // Frames reach the gateway with complete checksums (offloads are completed before
        // delivery); checking them again costs time for nothing.
        let mut cs = ChecksumCapabilities::default();
        cs.ipv4 = Checksum::Tx;
        cs.tcp = Checksum::Tx;
        cs.udp = Checksum::Tx;
        c.checksum = cs;
        c
    }
}

/// (guest address, guest port, destination as the guest sees it, its port).
type FlowKey = (IpAddr, u16, IpAddr, u16);

/// One relayed TCP connection: a smoltcp socket facing the guest, a host socket.
struct TcpFlow {
    handle: SocketHandle,
    host: TcpStream,
    connected: bool,
    /// From the guest, not yet written to the host.
    to_host: Vec<u8>,
    host_eof: bool,
    guest_eof_passed: bool,
    guest: IpAddr,
}

/// One UDP flow: a host socket connected to the destination.
struct UdpFlow {
    sock: UdpSocket,
    last: Instant,
}

/// A UDP forward: a host socket, and the host peers talking through it, each behind a
/// gateway port the guest answers to.
struct UdpForward {
    sock: UdpSocket,
    guest: SocketAddrV4,
    by_port: HashMap<u16, SocketAddr>,
    by_peer: HashMap<SocketAddr, u16>,
}

/// Room kept per TCP flow in smoltcp (receive, send).
const TCP_RX_BUF: usize = 64 * 1024;
const TCP_TX_BUF: usize = 128 * 1024;
/// Most bytes held from the guest for a slow host socket.
const TO_HOST_MAX: usize = 64 * 1024;

/// The gateway of one NAT port.
pub struct Gateway {
    cfg: NatConfig,
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: Dev,
    tcp: HashMap<FlowKey, TcpFlow>,
    udp: HashMap<FlowKey, UdpFlow>,
    /// Echo flows: (guest, echo id, destination, 0) -> a ping socket.
    icmp: HashMap<FlowKey, UdpFlow>,
    tcp_forwards: Vec<(TcpListener, SocketAddrV4)>,
    udp_forwards: Vec<UdpForward>,
    dhcp: DhcpServer,
    /// Guest addresses and their MACs, learned from their frames and leases.
    macs: HashMap<IpAddr, [u8; 6]>,
    next_port: u16,
    /// Sockets of ended flows still sending their last segments.
    closing: Vec<SocketHandle>,
    /// When the last unsolicited router advertisement went out.
    last_ra: Option<Instant>,
    out: Vec<Vec<u8>>,
    /// Room for one datagram read from a host socket.
    scratch: Vec<u8>,
    counters: Arc<Counters>,
    start: Instant,
}

impl Gateway {
    /// A gateway for `cfg`; binds the port forwards' host sockets (an error names the one
    /// that failed).
    pub fn new(cfg: NatConfig, counters: Arc<Counters>) -> Result<Gateway, String> {
        let mut dev = Dev {
            mtu: usize::from(cfg.mtu) + 14,
            ..Default::default()
        };
        let mac = EthernetAddress(cfg.gateway_mac());
        let start = Instant::now();
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ethernet(mac)),
            &mut dev,
            SInstant::from_millis(0),
        );
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(cfg.gateway.into(), cfg.prefix));
            let _ = a.push(IpCidr::new(cfg.dns.into(), cfg.prefix));
        });
        if let (Some(g6), Some(d6), Some((_, len))) = (cfg.gateway6(), cfg.dns6(), cfg.ipv6) {
            let ll = cfg.gateway_ll();
            iface.update_ip_addrs(|a| {
                let _ = a.push(IpCidr::new(g6.into(), len));
                let _ = a.push(IpCidr::new(d6.into(), len));
                let _ = a.push(IpCidr::new(ll.into(), 64));
            });
            let _ = iface.routes_mut().add_default_ipv6_route(g6);
        }
        // Any address behind the gateway is ours to answer for (the far end of every
        // relayed connection).
        let _ = iface.routes_mut().add_default_ipv4_route(cfg.gateway);
        iface.set_any_ip(true);
        let mut tcp_forwards = Vec::new();
        let mut udp_forwards = Vec::new();
        for f in &cfg.forwards {
            let SocketAddr::V4(guest) = f.guest else {
                return Err(format!("forward to {}: IPv4 guests only", f.guest));
            };
            match f.proto {
                Proto::Tcp => {
                    let l = TcpListener::bind(f.host)
                        .map_err(|e| format!("forward tcp {}: {e}", f.host))?;
                    l.set_nonblocking(true)
                        .map_err(|e| format!("forward tcp {}: {e}", f.host))?;
                    tcp_forwards.push((l, guest));
                }
                Proto::Udp => {
                    let s = UdpSocket::bind(f.host)
                        .map_err(|e| format!("forward udp {}: {e}", f.host))?;
                    s.set_nonblocking(true)
                        .map_err(|e| format!("forward udp {}: {e}", f.host))?;
                    udp_forwards.push(UdpForward {
                        sock: s,
                        guest,
                        by_port: HashMap::new(),
                        by_peer: HashMap::new(),
                    });
                }
            }
        }
        let mut macs = HashMap::new();
        for (m, ip) in &cfg.reservations {
            macs.insert(IpAddr::V4(*ip), *m);
        }
        Ok(Gateway {
            cfg,
            iface,
            sockets: SocketSet::new(Vec::new()),
            dev,
            tcp: HashMap::new(),
            udp: HashMap::new(),
            icmp: HashMap::new(),
            tcp_forwards,
            udp_forwards,
            dhcp: DhcpServer::new(),
            macs,
            next_port: 49152,
            closing: Vec::new(),
            last_ra: None,
            out: Vec::new(),
            scratch: vec![0; 65536],
            counters,
            start,
        })
    }

    fn now(&self) -> SInstant {
        SInstant::from_millis(self.start.elapsed().as_millis() as i64)
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Flows open now (TCP, UDP).
    pub fn flows(&self) -> (usize, usize) {
        (self.tcp.len(), self.udp.len())
    }

    /// The address DHCP leased to `mac`.
    pub fn lease_of(&self, mac: &[u8; 6]) -> Option<Ipv4Addr> {
        self.dhcp.lease_of(mac)
    }

    /// Where a connection or datagram to `dst:port` goes on the host, if anywhere.
    fn host_target(&self, dst: IpAddr, port: u16) -> Option<SocketAddr> {
        let target = match dst {
            IpAddr::V4(dst) => {
                if dst == self.cfg.gateway {
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
                } else if dst == self.cfg.dns {
                    if port != 53 {
                        return None;
                    }
                    self.cfg.dns_upstream
                } else if self.cfg.contains(dst)
                    || dst.is_broadcast()
                    || dst.is_multicast()
                    || dst.is_unspecified()
                {
                    return None;
                } else {
                    SocketAddr::new(IpAddr::V4(dst), port)
                }
            }
            IpAddr::V6(dst) => {
                if Some(dst) == self.cfg.gateway6() || dst == self.cfg.gateway_ll() {
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port)
                } else if Some(dst) == self.cfg.dns6() {
                    if port != 53 {
                        return None;
                    }
                    self.cfg.dns_upstream
                } else if self.cfg.contains6(dst) || dst.is_multicast() || dst.is_unspecified() {
                    return None;
                } else {
                    SocketAddr::new(IpAddr::V6(dst), port)
                }
            }
        };
        Some(target)
    }

    /// Whether `restrict` lets a flow reach `target`.
    fn allowed(&self, target: &SocketAddr) -> bool {
        !self.cfg.restrict || target.ip().is_loopback()
    }

    fn flows_of(&self, guest: IpAddr) -> usize {
        self.tcp.values().filter(|f| f.guest == guest).count()
            + self.udp.keys().filter(|k| k.0 == guest).count()
            + self.icmp.keys().filter(|k| k.0 == guest).count()
    }

    /// Whether one more flow for `guest` fits the limits (counted when not).
    fn room_for(&self, guest: IpAddr) -> bool {
        let ok = self.tcp.len() + self.udp.len() + self.icmp.len() < self.cfg.max_flows
            && self.flows_of(guest) < self.cfg.max_flows_per_guest;
        if !ok {
            self.counters.nat_flow_limit.fetch_add(1, Relaxed);
        }
        ok
    }

    /// Handles one frame from the segment (taken by value: TCP and neighbour discovery go
    /// to smoltcp without another copy).
    pub fn input(&mut self, frame: Vec<u8>) {
        self.counters.nat_frames_in.fetch_add(1, Relaxed);
        if self.handle(&frame) {
            self.dev.rx.push_back(frame);
        }
    }

    /// Answers or relays what the gateway handles itself; true for what smoltcp handles
    /// (ARP, TCP, neighbour discovery).
    fn handle(&mut self, frame: &[u8]) -> bool {
        let Ok(p) = SlicedPacket::from_ethernet(frame) else {
            self.counters.nat_dropped.fetch_add(1, Relaxed);
            return false;
        };
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link.as_ref() else {
            self.counters.nat_dropped.fetch_add(1, Relaxed);
            return false;
        };
        let src_mac = eth.source();
        let dst_mac = eth.destination();
        let v6_multicast = dst_mac[0] == 0x33 && dst_mac[1] == 0x33;
        if dst_mac != self.cfg.gateway_mac() && dst_mac != [0xff; 6] && !v6_multicast {
            // Flooded unicast for someone else.
            return false;
        }
        let (src, dst): (IpAddr, IpAddr) = match &p.net {
            Some(NetSlice::Arp(_)) => return true,
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header();
                if h.is_fragmenting_payload() {
                    self.counters.nat_dropped.fetch_add(1, Relaxed);
                    return false;
                }
                (h.source_addr().into(), h.destination_addr().into())
            }
            Some(NetSlice::Ipv6(ip)) if self.cfg.ipv6.is_some() => {
                let h = ip.header();
                (h.source_addr().into(), h.destination_addr().into())
            }
            _ => {
                self.counters.nat_dropped.fetch_add(1, Relaxed);
                return false;
            }
        };
        let on_link = match src {
            IpAddr::V4(a) => self.cfg.contains(a),
            IpAddr::V6(a) => self.cfg.contains6(a) && !a.is_unspecified(),
        };
        if on_link && src_mac[0] & 1 == 0 {
            self.macs.insert(src, src_mac);
        }
        match &p.transport {
            Some(TransportSlice::Udp(u)) if dst.is_ipv4() && u.destination_port() == 67 => {
                self.dhcp_request(u.payload());
            }
            Some(TransportSlice::Udp(u)) => {
                self.udp_from_guest(src, u.source_port(), dst, u.destination_port(), u.payload());
            }
            Some(TransportSlice::Tcp(t)) => {
                if t.syn() && !t.ack() {
                    self.tcp_syn(src, t.source_port(), dst, t.destination_port());
                }
                return true;
            }
            Some(TransportSlice::Icmpv4(icmp)) => {
                let (IpAddr::V4(src), IpAddr::V4(dst)) = (src, dst) else {
                    self.counters.nat_dropped.fetch_add(1, Relaxed);
                    return false;
                };
                match icmp.icmp_type() {
                    etherparse::Icmpv4Type::EchoRequest(e)
                        if dst == self.cfg.gateway || dst == self.cfg.dns =>
                    {
                        let b = PacketBuilder::ethernet2(self.cfg.gateway_mac(), src_mac)
                            .ipv4(dst.octets(), src.octets(), 64)
                            .icmpv4_echo_reply(e.id, e.seq);
                        let mut v = Vec::with_capacity(b.size(icmp.payload().len()));
                        if b.write(&mut v, icmp.payload()).is_ok() {
                            self.out.push(v);
                            self.counters.nat_icmp_echo.fetch_add(1, Relaxed);
                        }
                    }
                    etherparse::Icmpv4Type::EchoRequest(e) => {
                        self.echo_out(src, dst, e.id, e.seq, icmp.payload())
                    }
                    _ => {
                        self.counters.nat_dropped.fetch_add(1, Relaxed);
                    }
                }
            }
            Some(TransportSlice::Icmpv6(icmp)) => {
                let (IpAddr::V6(src), IpAddr::V6(dst)) = (src, dst) else {
                    self.counters.nat_dropped.fetch_add(1, Relaxed);
                    return false;
                };
                match icmp.icmp_type() {
                    etherparse::Icmpv6Type::RouterSolicitation => {
                        let to = if src.is_unspecified() {
                            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)
                        } else {
                            src
                        };
                        self.router_advert(to, src_mac);
                    }
                    etherparse::Icmpv6Type::EchoRequest(e)
                        if Some(dst) == self.cfg.gateway6()
                            || Some(dst) == self.cfg.dns6()
                            || dst == self.cfg.gateway_ll() =>
                    {
                        let b = PacketBuilder::ethernet2(self.cfg.gateway_mac(), src_mac)
                            .ipv6(dst.octets(), src.octets(), 64)
                            .icmpv6_echo_reply(e.id, e.seq);
                        let mut v = Vec::with_capacity(b.size(icmp.payload().len()));
                        if b.write(&mut v, icmp.payload()).is_ok() {
                            self.out.push(v);
                            self.counters.nat_icmp_echo.fetch_add(1, Relaxed);
                        }
                    }
                    // Neighbour discovery for the gateway's addresses: smoltcp's.
                    etherparse::Icmpv6Type::NeighborSolicitation
                    | etherparse::Icmpv6Type::NeighborAdvertisement(_) => return true,
                    _ => {
                        self.counters.nat_dropped.fetch_add(1, Relaxed);
                    }
                }
            }
            _ => {
                self.counters.nat_dropped.fetch_add(1, Relaxed);
            }
        }
        false
    }

    /// A router advertisement to `to` (MAC `mac`): the prefix for SLAAC, the MTU, the DNS
    /// relay (RDNSS), the gateway as default router.
    fn router_advert(&mut self, to: Ipv6Addr, mac: [u8; 6]) {
        let (Some((prefix, len)), Some(dns6)) = (self.cfg.ipv6, self.cfg.dns6()) else {
            return;
        };
        let dst_mac = if to.is_multicast() {
            let o = to.octets();
            [0x33, 0x33, o[12], o[13], o[14], o[15]]
        } else {
            mac
        };
        let lifetime: u16 = 1800;
        let mut body = Vec::with_capacity(64);
        // Reachable time, retransmit timer: unspecified.
        body.extend_from_slice(&[0; 8]);
        // Source link-layer address.
        body.extend_from_slice(&[1, 1]);
        body.extend_from_slice(&self.cfg.gateway_mac());
        // MTU.
        body.extend_from_slice(&[5, 1, 0, 0]);
        body.extend_from_slice(&u32::from(self.cfg.mtu).to_be_bytes());
        // Prefix information: on-link, autonomous.
        body.extend_from_slice(&[3, 4, len, 0xc0]);
        body.extend_from_slice(&86400u32.to_be_bytes());
        body.extend_from_slice(&14400u32.to_be_bytes());
        body.extend_from_slice(&[0; 4]);
        body.extend_from_slice(&prefix.octets());
        // Recursive DNS server (RFC 8106).
        body.extend_from_slice(&[25, 3, 0, 0]);
        body.extend_from_slice(&u32::from(lifetime).to_be_bytes());
        body.extend_from_slice(&dns6.octets());
        let lt = lifetime.to_be_bytes();
        let b = PacketBuilder::ethernet2(self.cfg.gateway_mac(), dst_mac)
            .ipv6(self.cfg.gateway_ll().octets(), to.octets(), 255)
            .icmpv6_raw(134, 0, [64, 0, lt[0], lt[1]]);
        let mut v = Vec::with_capacity(b.size(body.len()));
        if b.write(&mut v, &body).is_ok() {
            self.out.push(v);
        }
        self.last_ra = Some(Instant::now());
    }

    fn dhcp_request(&mut self, payload: &[u8]) {
        let now = self.now_ms();
        let Some(r) = self.dhcp.handle(&self.cfg, now, payload) else {
            return;
        };
        if !r.to_ip.is_unspecified() {
            self.macs.insert(IpAddr::V4(r.to_ip), r.to_mac);
        }
        let (ip, mac) = if r.broadcast {
            (Ipv4Addr::BROADCAST, [0xff; 6])
        } else {
            (r.to_ip, r.to_mac)
        };
        self.udp_to_guest_raw(self.cfg.gateway, 67, ip, mac, 68, &r.payload);
        self.counters.nat_dhcp_replies.fetch_add(1, Relaxed);
    }

    /// A UDP datagram to the guest at `to:to_port` from `from:from_port`.
    fn udp_to_guest(
        &mut self,
        from: IpAddr,
        from_port: u16,
        to: IpAddr,
        to_port: u16,
        data: &[u8],
    ) {
        let Some(mac) = self.macs.get(&to).copied() else {
            self.counters.nat_dropped.fetch_add(1, Relaxed);
            return;
        };
        match (from, to) {
            (IpAddr::V4(f), IpAddr::V4(t)) => {
                self.udp_to_guest_raw(f, from_port, t, mac, to_port, data)
            }
            (IpAddr::V6(f), IpAddr::V6(t)) => {
                // No IP fragmentation here: a datagram over the MTU is dropped.
                if data.len() + 48 > usize::from(self.cfg.mtu) {
                    self.counters.nat_dropped.fetch_add(1, Relaxed);
                    return;
                }
                let b = PacketBuilder::ethernet2(self.cfg.gateway_mac(), mac)
                    .ipv6(f.octets(), t.octets(), 64)
                    .udp(from_port, to_port);
                let mut v = Vec::with_capacity(b.size(data.len()));
                if b.write(&mut v, data).is_ok() {
                    self.out.push(v);
                }
            }
            _ => {
                self.counters.nat_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    fn udp_to_guest_raw(
        &mut self,
        from: Ipv4Addr,
        from_port: u16,
        to: Ipv4Addr,
        mac: [u8; 6],
        to_port: u16,
        data: &[u8],
    ) {
        // No IP fragmentation here: a datagram over the MTU is dropped.
        if data.len() + 28 > usize::from(self.cfg.mtu) {
            self.counters.nat_dropped.fetch_add(1, Relaxed);
            return;
        }
        let b = PacketBuilder::ethernet2(self.cfg.gateway_mac(), mac)
            .ipv4(from.octets(), to.octets(), 64)
            .udp(from_port, to_port);
        let mut v = Vec::with_capacity(b.size(data.len()));
        if b.write(&mut v, data).is_ok() {
            self.out.push(v);
        }
    }

    fn udp_from_guest(&mut self, src: IpAddr, sport: u16, dst: IpAddr, dport: u16, data: &[u8]) {
        // An answer through a UDP forward?
        if dst == IpAddr::V4(self.cfg.gateway)
            && let Some(f) = self.udp_forwards.iter().find(|f| {
                f.by_port.contains_key(&dport)
                    && IpAddr::V4(*f.guest.ip()) == src
                    && f.guest.port() == sport
            })
        {
            if let Some(peer) = f.by_port.get(&dport) {
                let _ = f.sock.send_to(data, peer);
            }
            return;
        }
        let key = (src, sport, dst, dport);
        if let Some(f) = self.udp.get_mut(&key) {
            f.last = Instant::now();
            let _ = f.sock.send(data);
            return;
        }
        let Some(target) = self.host_target(dst, dport) else {
            self.counters.nat_dropped.fetch_add(1, Relaxed);
            return;
        };
        if !self.allowed(&target) {
            self.counters.nat_restricted.fetch_add(1, Relaxed);
            return;
        }
        if !self.room_for(src) {
            return;
        }
        let bind: SocketAddr = if target.is_ipv4() {
            "0.0.0.0:0".parse().unwrap_or(target)
        } else {
            "[::]:0".parse().unwrap_or(target)
        };
        let sock = match UdpSocket::bind(bind).and_then(|s| {
            s.connect(target)?;
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(_) => {
                self.counters.nat_connect_errors.fetch_add(1, Relaxed);
                return;
            }
        };
        let _ = sock.send(data);
        if dst == IpAddr::V4(self.cfg.dns) || self.cfg.dns6().is_some_and(|d| dst == IpAddr::V6(d))
        {
            self.counters.nat_dns_queries.fetch_add(1, Relaxed);
        }
        self.counters.nat_udp_flows.fetch_add(1, Relaxed);
        self.udp.insert(
            key,
            UdpFlow {
                sock,
                last: Instant::now(),
            },
        );
    }

    /// A guest pings an address beyond the gateway: relayed through an unprivileged ping
    /// socket (the kernel picks the echo id; replies get the guest's back).
    fn echo_out(&mut self, src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, data: &[u8]) {
        let Some(target) = self.host_target(dst.into(), 0) else {
            self.counters.nat_dropped.fetch_add(1, Relaxed);
            return;
        };
        if !self.allowed(&target) {
            self.counters.nat_restricted.fetch_add(1, Relaxed);
            return;
        }
        let key = (IpAddr::V4(src), id, IpAddr::V4(dst), 0);
        if !self.icmp.contains_key(&key) {
            if !self.room_for(key.0) {
                return;
            }
            match ping_socket(target) {
                Ok(sock) => {
                    self.icmp.insert(
                        key,
                        UdpFlow {
                            sock,
                            last: Instant::now(),
                        },
                    );
                }
                Err(_) => {
                    self.counters.nat_icmp_unavailable.fetch_add(1, Relaxed);
                    return;
                }
            }
        }
        let Some(f) = self.icmp.get_mut(&key) else {
            return;
        };
        f.last = Instant::now();
        // Echo request: type 8, code 0, checksum (the kernel fills it), id, seq, data.
        let mut m = Vec::with_capacity(8 + data.len());
        m.extend_from_slice(&[8, 0, 0, 0]);
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(data);
        if f.sock.send(&m).is_ok() {
            self.counters.nat_icmp_relayed.fetch_add(1, Relaxed);
        }
    }

    /// A guest opens a connection: a host connection is started and a smoltcp socket made
    /// to accept the SYN as the destination. Refused ones get no socket (smoltcp resets).
    fn tcp_syn(&mut self, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) {
        let key = (src, sport, dst, dport);
        if self.tcp.contains_key(&key) {
            return;
        }
        let Some(target) = self.host_target(dst, dport) else {
            return;
        };
        if !self.allowed(&target) {
            self.counters.nat_restricted.fetch_add(1, Relaxed);
            return;
        }
        if !self.room_for(src) {
            return;
        }
        let host = match connect_nonblocking(target) {
            Ok(h) => h,
            Err(_) => {
                self.counters.nat_connect_errors.fetch_add(1, Relaxed);
                return;
            }
        };
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_RX_BUF]),
            tcp::SocketBuffer::new(vec![0; TCP_TX_BUF]),
        );
        s.set_nagle_enabled(false);
        s.set_ack_delay(None);
        s.set_timeout(Some(smoltcp::time::Duration::from_secs(120)));
        if s.listen(IpListenEndpoint {
            addr: Some(dst.into()),
            port: dport,
        })
        .is_err()
        {
            return;
        }
        let handle = self.sockets.add(s);
        self.counters.nat_tcp_flows.fetch_add(1, Relaxed);
        self.tcp.insert(
            key,
            TcpFlow {
                handle,
                host,
                connected: false,
                to_host: Vec::new(),
                host_eof: false,
                guest_eof_passed: false,
                guest: src,
            },
        );
    }

    /// Runs the stack and every host socket once: what can move, moves.
    pub fn poll(&mut self) {
        // Unsolicited router advertisements every minute (guests that missed the answer to
        // their solicitation still configure themselves).
        if self.cfg.ipv6.is_some()
            && self
                .last_ra
                .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            self.router_advert(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), [0; 6]);
        }
        let now = self.now();
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        self.accept_forwards();
        self.pump_tcp();
        self.pump_udp();
        let now = self.now();
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
    }

    /// How long the stack may sleep before it has timers to run.
    pub fn poll_delay(&mut self) -> Duration {
        let now = self.now();
        self.iface
            .poll_delay(now, &self.sockets)
            .map_or(Duration::from_secs(1), |d| {
                Duration::from_micros(d.total_micros())
            })
    }

    /// Frames for the segment since the last call.
    pub fn take_output(&mut self) -> Vec<Vec<u8>> {
        let mut v = std::mem::take(&mut self.out);
        v.append(&mut self.dev.tx);
        self.counters
            .nat_frames_out
            .fetch_add(v.len() as u64, Relaxed);
        v
    }

    /// The host descriptors worth waiting on, with what to wait for.
    pub fn wait_set(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let mut v = Vec::new();
        for (l, _) in &self.tcp_forwards {
            v.push((l.as_fd(), PollFlags::POLLIN));
        }
        for f in &self.udp_forwards {
            v.push((f.sock.as_fd(), PollFlags::POLLIN));
        }
        for f in self.udp.values().chain(self.icmp.values()) {
            v.push((f.sock.as_fd(), PollFlags::POLLIN));
        }
        for f in self.tcp.values() {
            let mut ev = PollFlags::empty();
            if !f.connected || !f.to_host.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            if f.connected && !f.host_eof {
                let s = self.sockets.get::<tcp::Socket>(f.handle);
                if s.can_send() {
                    ev |= PollFlags::POLLIN;
                }
            }
            if !ev.is_empty() {
                v.push((f.host.as_fd(), ev));
            }
        }
        v
    }

    fn accept_forwards(&mut self) {
        let mut new = Vec::new();
        for (l, guest) in &self.tcp_forwards {
            while let Ok((s, _)) = l.accept() {
                new.push((s, *guest));
            }
        }
        for (host, guest) in new {
            if host.set_nonblocking(true).is_err() || !self.room_for(IpAddr::V4(*guest.ip())) {
                continue;
            }
            let port = self.ephemeral_port();
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; TCP_RX_BUF]),
                tcp::SocketBuffer::new(vec![0; TCP_TX_BUF]),
            );
            s.set_nagle_enabled(false);
            s.set_ack_delay(None);
            s.set_timeout(Some(smoltcp::time::Duration::from_secs(120)));
            let remote = IpEndpoint::new((*guest.ip()).into(), guest.port());
            let local = IpListenEndpoint {
                addr: Some(self.cfg.gateway.into()),
                port,
            };
            if s.connect(self.iface.context(), remote, local).is_err() {
                continue;
            }
            let handle = self.sockets.add(s);
            self.counters.nat_tcp_flows.fetch_add(1, Relaxed);
            self.tcp.insert(
                (
                    IpAddr::V4(*guest.ip()),
                    guest.port(),
                    IpAddr::V4(self.cfg.gateway),
                    port,
                ),
                TcpFlow {
                    handle,
                    host,
                    connected: true,
                    to_host: Vec::new(),
                    host_eof: false,
                    guest_eof_passed: false,
                    guest: IpAddr::V4(*guest.ip()),
                },
            );
        }
        // UDP forwards: datagrams from host peers to the guest, each peer behind a port.
        let mut datagrams = Vec::new();
        let buf = &mut self.scratch;
        for (i, f) in self.udp_forwards.iter().enumerate() {
            while let Ok((n, peer)) = f.sock.recv_from(buf) {
                datagrams.push((i, peer, buf[..n].to_vec()));
            }
        }
        for (i, peer, data) in datagrams {
            let port = match self.udp_forwards[i].by_peer.get(&peer) {
                Some(p) => *p,
                None => {
                    let p = self.ephemeral_port();
                    let f = &mut self.udp_forwards[i];
                    f.by_peer.insert(peer, p);
                    f.by_port.insert(p, peer);
                    p
                }
            };
            let guest = self.udp_forwards[i].guest;
            self.udp_to_guest(
                IpAddr::V4(self.cfg.gateway),
                port,
                IpAddr::V4(*guest.ip()),
                guest.port(),
                &data,
            );
        }
    }

    fn ephemeral_port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p == u16::MAX { 49152 } else { p + 1 };
        p
    }

    fn pump_tcp(&mut self) {
        let mut gone = Vec::new();
        for (key, f) in self.tcp.iter_mut() {
            let s = self.sockets.get_mut::<tcp::Socket>(f.handle);
            if !f.connected {
                match f.host.take_error() {
                    Ok(None) if f.host.peer_addr().is_ok() => f.connected = true,
                    Ok(None) => {}
                    _ => {
                        self.counters.nat_connect_errors.fetch_add(1, Relaxed);
                        s.abort();
                        gone.push(*key);
                        continue;
                    }
                }
            }
            // Guest -> host.
            while s.can_recv() && f.to_host.len() < TO_HOST_MAX {
                let to_host = &mut f.to_host;
                let got = s.recv(|b| {
                    let n = b.len().min(TO_HOST_MAX - to_host.len());
                    to_host.extend_from_slice(&b[..n]);
                    (n, n)
                });
                if !matches!(got, Ok(n) if n > 0) {
                    break;
                }
            }
            let mut broken = false;
            if f.connected && !f.to_host.is_empty() {
                match f.host.write(&f.to_host) {
                    Ok(n) => {
                        f.to_host.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => broken = true,
                }
            }
            // The guest's FIN, once everything before it reached the host.
            let guest_done = matches!(
                s.state(),
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
            );
            if f.connected && !f.guest_eof_passed && f.to_host.is_empty() && guest_done {
                let _ = f.host.shutdown(std::net::Shutdown::Write);
                f.guest_eof_passed = true;
            }
            // Host -> guest, straight into the socket's send buffer.
            while f.connected && !f.host_eof && !broken && s.can_send() {
                let host = &mut f.host;
                let r = s.send(|b| match host.read(b) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(0)) => {
                        f.host_eof = true;
                        s.close();
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Ok(Err(_)) => broken = true,
                    Err(_) => break,
                }
            }
            if broken {
                s.abort();
            }
            let state = s.state();
            if broken || state == tcp::State::Closed || state == tcp::State::TimeWait {
                gone.push(*key);
            }
        }
        for k in gone {
            if let Some(f) = self.tcp.remove(&k) {
                // Let smoltcp send what it still has (a reset, a FIN) before it goes.
                let st = self.sockets.get::<tcp::Socket>(f.handle).state();
                if st == tcp::State::Closed || st == tcp::State::TimeWait {
                    self.sockets.remove(f.handle);
                } else {
                    self.closing.push(f.handle);
                }
            }
        }
        self.closing.retain(|h| {
            let st = self.sockets.get::<tcp::Socket>(*h).state();
            if st == tcp::State::Closed || st == tcp::State::TimeWait {
                self.sockets.remove(*h);
                false
            } else {
                true
            }
        });
    }

    fn pump_udp(&mut self) {
        let mut buf = std::mem::take(&mut self.scratch);
        let mut replies = Vec::new();
        let timeout = self.cfg.udp_timeout;
        let now = Instant::now();
        self.udp.retain(|key, f| {
            while let Ok(n) = f.sock.recv(&mut buf) {
                f.last = now;
                replies.push((*key, buf[..n].to_vec()));
            }
            now.duration_since(f.last) < timeout
        });
        for ((guest, gport, dst, dport), data) in replies {
            self.udp_to_guest(dst, dport, guest, gport, &data);
        }
        // Echo replies: the guest's id back in, the checksum made again.
        let mut echoes = Vec::new();
        self.icmp.retain(|key, f| {
            while let Ok(n) = f.sock.recv(&mut buf) {
                if n >= 8 && buf[0] == 0 {
                    f.last = now;
                    let seq = u16::from_be_bytes([buf[6], buf[7]]);
                    echoes.push((key.0, key.1, key.2, seq, buf[8..n].to_vec()));
                }
            }
            now.duration_since(f.last) < timeout
        });
        for (guest, id, dst, seq, data) in echoes {
            let (IpAddr::V4(guest), IpAddr::V4(dst)) = (guest, dst) else {
                continue;
            };
            let Some(mac) = self.macs.get(&IpAddr::V4(guest)).copied() else {
                continue;
            };
            let b = PacketBuilder::ethernet2(self.cfg.gateway_mac(), mac)
                .ipv4(dst.octets(), guest.octets(), 64)
                .icmpv4_echo_reply(id, seq);
            let mut v = Vec::with_capacity(b.size(data.len()));
            if b.write(&mut v, &data).is_ok() {
                self.out.push(v);
            }
        }
        self.scratch = buf;
    }
}

/// An unprivileged ICMP echo socket (SOCK_DGRAM, IPPROTO_ICMP) aimed at `to`.
fn ping_socket(to: SocketAddr) -> io::Result<UdpSocket> {
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
fn connect_nonblocking(to: SocketAddr) -> io::Result<TcpStream> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, Icmpv4Type};

    const GUEST: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const G_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

    fn gateway(f: impl FnOnce(&mut NatConfig)) -> (Gateway, Arc<Counters>) {
        let mut cfg = NatConfig::for_subnet(
            Ipv4Addr::new(10, 0, 2, 0),
            24,
            "127.0.0.1:53".parse().unwrap(),
        );
        f(&mut cfg);
        let c = Arc::new(Counters::default());
        (Gateway::new(cfg, c.clone()).unwrap(), c)
    }

    /// The guest asking who has `target` (which also tells smoltcp the guest's MAC).
    fn arp_request(target: Ipv4Addr) -> Vec<u8> {
        let arp = ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            ArpOperation::REQUEST,
            &GUEST,
            &G_IP.octets(),
            &[0; 6],
            &target.octets(),
        )
        .unwrap();
        let b = PacketBuilder::ethernet2(GUEST, [0xff; 6]).arp(arp);
        let mut v = Vec::new();
        b.write(&mut v).unwrap();
        v
    }

    /// A gateway that knows the guest (its ARP request answered).
    fn known(f: impl FnOnce(&mut NatConfig)) -> (Gateway, Arc<Counters>) {
        let (mut gw, c) = gateway(f);
        gw.input(arp_request(Ipv4Addr::new(10, 0, 2, 2)));
        gw.poll();
        gw.take_output();
        (gw, c)
    }

    fn gw_mac() -> [u8; 6] {
        [0x52, 0x55, 10, 0, 2, 2]
    }

    fn syn(dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(GUEST, gw_mac())
            .ipv4(G_IP.octets(), dst.octets(), 64)
            .tcp(sport, dport, 1000, 64240)
            .syn();
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        v
    }

    fn tcp_flags(frame: &[u8]) -> Option<(bool, bool, bool, Ipv4Addr)> {
        let p = SlicedPacket::from_ethernet(frame).ok()?;
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            return None;
        };
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            return None;
        };
        Some((t.syn(), t.ack(), t.rst(), ip.header().source_addr()))
    }

    #[test]
    fn arp_and_ping_for_the_gateway_and_dns_addresses() {
        let (mut gw, c) = gateway(|_| {});
        for target in [Ipv4Addr::new(10, 0, 2, 2), Ipv4Addr::new(10, 0, 2, 3)] {
            gw.input(arp_request(target));
            gw.poll();
            let out = gw.take_output();
            assert_eq!(out.len(), 1, "one ARP reply for {target}");
            let p = SlicedPacket::from_ethernet(&out[0]).unwrap();
            let Some(NetSlice::Arp(a)) = &p.net else {
                panic!("not ARP")
            };
            assert_eq!(a.operation(), ArpOperation::REPLY);
            assert_eq!(a.sender_hw_addr(), &gw_mac());
            assert_eq!(a.sender_protocol_addr(), &target.octets());
        }
        let b = PacketBuilder::ethernet2(GUEST, gw_mac())
            .ipv4(G_IP.octets(), [10, 0, 2, 2], 64)
            .icmpv4_echo_request(7, 9);
        let mut v = Vec::new();
        b.write(&mut v, b"ping!").unwrap();
        gw.input(v);
        let out = gw.take_output();
        let p = SlicedPacket::from_ethernet(&out[0]).unwrap();
        let Some(TransportSlice::Icmpv4(i)) = &p.transport else {
            panic!("not ICMP")
        };
        assert!(matches!(i.icmp_type(), Icmpv4Type::EchoReply(e) if e.id == 7 && e.seq == 9));
        assert_eq!(i.payload(), b"ping!");
        assert_eq!(c.nat_icmp_echo.load(Relaxed), 1);
    }

    #[test]
    fn dhcp_over_frames_and_frames_for_others_ignored() {
        let (mut gw, c) = gateway(|_| {});
        let d = crate::dhcp::client_message(
            dhcproto::v4::MessageType::Discover,
            5,
            GUEST,
            Ipv4Addr::UNSPECIFIED,
            None,
            None,
        );
        let b = PacketBuilder::ethernet2(GUEST, [0xff; 6])
            .ipv4([0; 4], [255; 4], 64)
            .udp(68, 67);
        let mut v = Vec::new();
        b.write(&mut v, &d).unwrap();
        gw.input(v);
        let out = gw.take_output();
        assert_eq!(out.len(), 1);
        let p = SlicedPacket::from_ethernet(&out[0]).unwrap();
        let Some(TransportSlice::Udp(u)) = &p.transport else {
            panic!("not UDP")
        };
        assert_eq!((u.source_port(), u.destination_port()), (67, 68));
        assert_eq!(&out[0][..6], &[0xff; 6]);
        assert_eq!(c.nat_dhcp_replies.load(Relaxed), 1);
        // A frame for another guest's MAC (flooded unknown unicast) is not the gateway's.
        let mut other = syn(Ipv4Addr::new(10, 0, 2, 2), 1, 2);
        other[..6].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 9]);
        gw.input(other);
        gw.poll();
        assert!(gw.take_output().is_empty());
    }

    #[test]
    fn restrict_resets_outbound_syns_without_a_host_socket() {
        let (mut gw, c) = known(|c| c.restrict = true);
        gw.input(syn(Ipv4Addr::new(192, 0, 2, 1), 40000, 80));
        gw.poll();
        let out = gw.take_output();
        let rst = out.iter().filter_map(|f| tcp_flags(f)).find(|t| t.2);
        assert_eq!(rst.map(|t| t.3), Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(c.nat_restricted.load(Relaxed), 1);
        assert_eq!(gw.flows(), (0, 0));
    }

    #[test]
    fn a_guest_over_its_flow_share_is_reset() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (mut gw, c) = known(|c| c.max_flows_per_guest = 2);
        for sport in [40000, 40001, 40002] {
            gw.input(syn(Ipv4Addr::new(10, 0, 2, 2), sport, port));
        }
        gw.poll();
        let out = gw.take_output();
        let flags: Vec<_> = out.iter().filter_map(|f| tcp_flags(f)).collect();
        assert_eq!(
            flags.iter().filter(|t| t.0 && t.1).count(),
            2,
            "two SYN-ACKs"
        );
        assert_eq!(flags.iter().filter(|t| t.2).count(), 1, "one reset");
        assert_eq!(c.nat_flow_limit.load(Relaxed), 1);
        assert_eq!(gw.flows().0, 2);
    }
}
