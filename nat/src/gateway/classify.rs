//! A frame from the segment, classified: ARP, DHCP, router solicitations, echo requests,
//! UDP and TCP by destination, or dropped and counted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering::Relaxed;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

use super::Gateway;

impl Gateway {
    /// Answers or relays what the gateway handles itself; true for what smoltcp handles
    /// (ARP, TCP, neighbour discovery).
    pub(super) fn handle(&mut self, frame: &[u8]) -> bool {
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

    pub(super) fn dhcp_request(&mut self, payload: &[u8]) {
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
}
