//! Hostile frames into the gateway: any bytes, and frames that parse but carry random
//! headers, never panic it, never make it answer a frame for someone else, and every frame
//! it sends is well formed Ethernet.

use std::net::Ipv4Addr;
use std::sync::Arc;

use etherparse::{PacketBuilder, SlicedPacket};
use nat::{Counters, Gateway, NatConfig};
use proptest::prelude::*;

fn gateway() -> Gateway {
    let mut cfg = NatConfig::for_subnet(
        Ipv4Addr::new(10, 0, 2, 0),
        24,
        "127.0.0.1:9".parse().unwrap(),
    );
    // Nothing relayed may leave the machine: only loopback targets are allowed.
    cfg.restrict = true;
    cfg.ipv6 = Some(("fd00:2::".parse().unwrap(), 64));
    Gateway::new(cfg, Arc::new(Counters::default())).unwrap()
}

const GW_MAC: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];

fn check_output(gw: &mut Gateway) -> Result<(), TestCaseError> {
    gw.poll();
    for f in gw.take_output() {
        prop_assert!(f.len() >= 14);
        prop_assert_eq!(&f[6..12], &GW_MAC, "every frame comes from the gateway");
        prop_assert!(SlicedPacket::from_ethernet(&f).is_ok());
    }
    Ok(())
}

/// `n` cases, or `PROPTEST_CASES` when set (long runs outside CI).
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(n),
    )
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn any_bytes(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..8)) {
        let mut gw = gateway();
        for f in &frames {
            gw.input(f.clone());
        }
        check_output(&mut gw)?;
    }

    #[test]
    fn well_formed_headers_random_fields(
        proto in 0u8..4,
        src in any::<[u8; 4]>(),
        dst_last in any::<u8>(),
        sport in any::<u16>(),
        dport in any::<u16>(),
        flags in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut gw = gateway();
        let dst = [10, 0, 2, dst_last];
        let eth = PacketBuilder::ethernet2([0x52, 0x54, 0, 0, 0, 1], GW_MAC).ipv4(src, dst, 64);
        let mut v = Vec::new();
        match proto {
            0 => {
                let mut b = eth.tcp(sport, dport, 1, 1000);
                if flags & 1 != 0 { b = b.syn(); }
                if flags & 2 != 0 { b = b.ack(7); }
                if flags & 4 != 0 { b = b.fin(); }
                if flags & 8 != 0 { b = b.rst(); }
                b.write(&mut v, &payload).unwrap();
            }
            1 => eth.udp(sport, dport).write(&mut v, &payload).unwrap(),
            2 => eth.icmpv4_echo_request(sport, dport).write(&mut v, &payload).unwrap(),
            _ => eth.udp(68, 67).write(&mut v, &payload).unwrap(),
        }
        gw.input(v);
        check_output(&mut gw)?;
    }

    #[test]
    fn dhcp_payloads(payload in proptest::collection::vec(any::<u8>(), 0..600), now in any::<u32>()) {
        let cfg = NatConfig::for_subnet(Ipv4Addr::new(10, 0, 2, 0), 24, "127.0.0.1:9".parse().unwrap());
        let mut s = nat::dhcp::DhcpServer::new();
        if let Some(r) = s.handle(&cfg, u64::from(now), &payload) {
            prop_assert!(!r.payload.is_empty());
        }
    }

    #[test]
    fn mutated_dhcp_messages(
        kind in 1u8..9,
        edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..12),
        extra in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let cfg = NatConfig::for_subnet(Ipv4Addr::new(10, 0, 2, 0), 24, "127.0.0.1:9".parse().unwrap());
        let mut m = nat::dhcp::client_message(
            dhcproto::v4::MessageType::from(kind),
            9,
            [0x52, 0x54, 0, 0, 0, 1],
            Ipv4Addr::UNSPECIFIED,
            Some(Ipv4Addr::new(10, 0, 2, 20)),
            Some(Ipv4Addr::new(10, 0, 2, 2)),
        );
        // Options of random codes and lengths before the end, then random byte edits.
        let end = m.len() - 1;
        m.splice(end..end, extra);
        for (at, b) in edits {
            let i = usize::from(at) % m.len();
            m[i] = b;
        }
        let mut s = nat::dhcp::DhcpServer::new();
        let _ = s.handle(&cfg, 0, &m);
    }
}
