//! Hostile packed rings through the walk, the TX and RX paths and the used-descriptor
//! writes: the same builder and checks as the proptest suite
//! `vhost-backends/tests/hostile_packed_rings.rs`.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../vhost-backends/tests/packed_ring/mod.rs"]
mod packed_ring;

fuzz_target!(|data: &[u8]| {
    packed_ring::run(data);
});
