//! Guest UDP: one connected host socket per flow (the DNS relay's included), UDP port
//! forwards with a gateway port per host peer, datagrams pumped each poll.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use etherparse::PacketBuilder;

use super::Gateway;
use super::flows::*;

impl Gateway {
    /// A UDP datagram to the guest at `to:to_port` from `from:from_port`.
    pub(super) fn udp_to_guest(
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

    pub(super) fn udp_to_guest_raw(
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

    pub(super) fn udp_from_guest(
        &mut self,
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
        data: &[u8],
    ) {
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

    pub(super) fn pump_udp(&mut self) {
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
