//! Hostile vhost-user message sequences against a live port, one VMM connection per input:
//! the same builder and checks as `vhost-backends/tests/hostile_messages.rs`.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../vhost-backends/tests/msgs/mod.rs"]
mod msgs;

fuzz_target!(
    init: {
        // vfabric is a Rust program: its runtime ignores SIGPIPE, and the vhost crate relies
        // on that when it answers a peer that hung up. libFuzzer's main does not.
        // SAFETY: setting a signal's disposition to SIG_IGN, before any thread of ours runs.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    },
    |data: &[u8]| {
        msgs::run(data);
    }
);
