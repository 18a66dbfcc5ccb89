//! Hostile vhost-user message sequences against a live port, one VMM connection per input:
//! the same builder and checks as `vhost-backends/tests/hostile_messages.rs`.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../vhost-backends/tests/msgs/mod.rs"]
mod msgs;

fuzz_target!(|data: &[u8]| {
    msgs::run(data);
});
