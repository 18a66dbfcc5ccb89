//! Client messages into the DHCP server.
#![no_main]
use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = nat::NatConfig::for_subnet(
        Ipv4Addr::new(10, 0, 2, 0),
        24,
        "127.0.0.1:9".parse().unwrap(),
    );
    let mut s = nat::dhcp::DhcpServer::new();
    let _ = s.handle(&cfg, 0, data);
});
