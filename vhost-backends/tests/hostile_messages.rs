//! Hostile vhost-user message sequences against a live port (see `msgs/mod.rs`), then a
//! well-behaved VMM on the same port: its frames still go through. `PROPTEST_CASES=N` for
//! long runs; the cargo-fuzz target `vhost_user` runs the same sequences under libFuzzer, on
//! one connection kept across inputs.

mod msgs;
#[path = "../../vswitch/tests/support/mod.rs"]
mod support;

use std::sync::Mutex;
use std::time::Duration;

/// The tests share one port and count the process's descriptors: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Open descriptors of this process.
fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::{Guest, Order, frame, mac};

#[test]
fn any_message_sequence() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let before = msgs::port().1.counters();
    let fds_before = fds();
    let mut runner = TestRunner::new(Config::with_cases(cases));
    runner
        .run(&vec(any::<u8>(), 0..6000), |data| {
            msgs::run(&data);
            Ok(())
        })
        .unwrap();
    // The sequences reached live rings: the port took chains from them (good or bad), or
    // found them broken.
    let c = msgs::port().1.counters();
    eprintln!(
        "{cases} sequences; port counters {c:?}; descriptors {fds_before} -> {}",
        fds()
    );
    let taken = |c: &vhost_backends::counters::NetCountersSnapshot| {
        c.rx_frames
            + c.rx_drop_bad_descriptor
            + c.rx_drop_missing_header
            + c.rx_drop_runt
            + c.ring_broken
    };
    assert!(
        taken(&c) > taken(&before),
        "no sequence reached a live ring: {c:?}"
    );
}

/// The same sequences one after another on one connection kept open (as the fuzz target
/// sends them): the port answers after each, and a real guest is served afterwards.
#[test]
fn sequences_on_one_persistent_connection() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    /// Closes the kept connection however the test ends (the port serves one VMM at a time:
    /// the other tests of this binary would wait behind it).
    struct HangUp;
    impl Drop for HangUp {
        fn drop(&mut self) {
            msgs::hang_up_persistent();
        }
    }
    let hang_up = HangUp;
    let mut runner = TestRunner::new(Config::with_cases(cases));
    runner
        .run(&vec(any::<u8>(), 0..6000), |data| {
            msgs::run_persistent(&data);
            Ok(())
        })
        .unwrap();
    drop(hang_up);
    a_guest_is_served(b"after the persistent hostile VMM");
}

/// Sequences that reach deep: a full setup whose memory file is shorter than the region
/// it claims, rings inside it, kicks; then all bytes 0xff; then a real guest.
#[test]
fn known_sequences_then_a_real_guest() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    msgs::run(&[]);
    msgs::run(&[0xff; 3000]);
    // A real guest on the same port after all that.
    a_guest_is_served(b"after the hostile VMMs");
}

/// A well-behaved guest connects to the port and its frame comes back (the switch behind
/// the port echoes it).
fn a_guest_is_served(payload: &[u8]) {
    let mut g = Guest::connect(msgs::port_socket(), 1, Order::Qemu, 0);
    g.post_rx(0, 16, 2048);
    let f = frame(mac(1), mac(2), payload);
    g.send(0, &f);
    let got = g.recv(0, 1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, f);
}

/// A ring laid out so that the device's own notification flag makes it look non-empty (its
/// avail index over the used ring's flags) keeps the port's worker busy for ever unless it
/// gives way: the guest's disconnect must still end the connection, and the next guest must
/// be served. (Without the TX budget this test hangs.)
#[test]
fn a_ring_that_never_empties_does_not_hold_the_port() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Without EVENT_IDX: notifications are the used ring's flags.
    let mut g = Guest::connect(msgs::port_socket(), 1, Order::Qemu, support::F_EVENT_IDX);
    g.lay_avail_over_used(1);
    drop(g);
    a_guest_is_served(b"served again");
}

/// Every input of the libFuzzer corpus kept in the repository (`fuzz/corpus/vhost_user`, made
/// by `scripts/fuzz.sh`) passes the same checks: the corpus is a regression suite.
#[test]
fn the_fuzz_corpus_passes() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for input in msgs::input::corpus("vhost_user") {
        msgs::run(&input);
    }
}

/// Every connection's descriptors are closed when it ends (vhost-user-backend 0.24 leaks
/// each worker's exit eventfd; `vhost_backends::exit` closes them): 100 connections, guests
/// and bare ones, leave the count where it was.
#[test]
fn connections_leave_no_descriptor_behind() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let p = msgs::port_socket();
    drop(Guest::connect(p, 1, Order::Qemu, 0));
    // The port takes the next connection only once the previous one is gone.
    drop(Guest::connect(p, 1, Order::Qemu, 0));
    let before = fds();
    for _ in 0..50 {
        drop(Guest::connect(p, 1, Order::Qemu, 0));
        drop(std::os::unix::net::UnixStream::connect(p).unwrap());
    }
    // The last one ends on the port's thread; a guest connection after it is served only
    // once it has.
    drop(Guest::connect(p, 1, Order::Qemu, 0));
    support::wait_for(
        Duration::from_secs(10),
        || fds() <= before,
        || {
            format!(
                "descriptors: {before} before 100 connections, {} after",
                fds()
            )
        },
    );
}
