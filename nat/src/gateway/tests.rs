//! Tests of the gateway, frames in and frames out.

use super::*;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

use crate::config::NatConfig;

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
