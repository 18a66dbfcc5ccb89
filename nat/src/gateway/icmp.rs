//! ICMP: echo requests answered for the gateway's addresses or relayed through unprivileged
//! ping sockets; IPv6 router advertisements (SLAAC).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use etherparse::PacketBuilder;

use super::Gateway;
use super::flows::*;

impl Gateway {
    /// A guest pings an address beyond the gateway: relayed through an unprivileged ping
    /// socket (the kernel picks the echo id; replies get the guest's back).
    pub(super) fn echo_out(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        id: u16,
        seq: u16,
        data: &[u8],
    ) {
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

    /// A router advertisement to `to` (MAC `mac`): the prefix for SLAAC, the MTU, the DNS
    /// relay (RDNSS), the gateway as default router.
    pub(super) fn router_advert(&mut self, to: Ipv6Addr, mac: [u8; 6]) {
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
}
