//! Frames into the NAT gateway (restricted: nothing leaves the machine).
#![no_main]
use std::net::Ipv4Addr;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|frames: Vec<Vec<u8>>| {
    let mut cfg = nat::NatConfig::for_subnet(
        Ipv4Addr::new(10, 0, 2, 0),
        24,
        "127.0.0.1:9".parse().unwrap(),
    );
    cfg.restrict = true;
    cfg.ipv6 = Some(("fd00:2::".parse().unwrap(), 64));
    let mut gw = nat::Gateway::new(cfg, Arc::new(nat::Counters::default())).unwrap();
    for f in frames.iter().take(16) {
        gw.input(f.clone());
    }
    gw.poll();
    for f in gw.take_output() {
        assert!(f.len() >= 14);
    }
});
