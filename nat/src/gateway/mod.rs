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
//!
//! Files: `device.rs` (smoltcp's view of the segment), `flows.rs` (the flow tables' entries
//! and the host sockets they hold), `classify.rs` (a frame from the segment: which protocol,
//! for whom), `tcp.rs` (guest TCP through smoltcp to host streams, port forwards), `udp.rs`
//! (UDP flows, forwards, DNS relay), `icmp.rs` (echo, router advertisements). Each adds its
//! methods to `Gateway`; this file holds the gateway's state and its outer interface.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp as smol_tcp;
use smoltcp::time::Instant as SInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr};

use crate::config::{NatConfig, Proto};
use crate::dhcp::DhcpServer;

mod classify;
mod device;
mod flows;
mod icmp;
mod tcp;
mod udp;

use device::Dev;
use flows::*;

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
                let s = self.sockets.get::<smol_tcp::Socket>(f.handle);
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
}

#[cfg(test)]
mod tests;
