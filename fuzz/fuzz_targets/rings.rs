//! Hostile split rings through the TX and RX paths: the same builder and checks as the
//! proptest suite `vhost-backends/tests/hostile_rings.rs`.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../vhost-backends/tests/ring/mod.rs"]
mod ring;

fuzz_target!(|data: &[u8]| {
    ring::run(data);
});
