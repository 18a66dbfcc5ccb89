//! Hostile split rings through the TX and RX paths (see `ring/mod.rs` for what is built and
//! what is checked). `PROPTEST_CASES=N` for long runs; the cargo-fuzz target `rings` runs the
//! same function under libFuzzer.

mod ring;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use vhost_backends::net::RxDrop;

#[test]
fn any_ring_contents() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut runner = TestRunner::new(Config::with_cases(cases));
    // How often each outcome came up: the inputs must reach all of them, or the properties
    // would hold only for want of cases.
    let seen = std::cell::RefCell::new([0u32; 5]);
    runner
        .run(&vec(any::<u8>(), 0..6000), |data| {
            let o = ring::run(&data);
            let mut s = seen.borrow_mut();
            s[0] += u32::from(o.tx_frames > 0);
            s[1] += u32::from(o.tx_chains > o.tx_frames);
            s[match o.rx {
                Ok(()) => 2,
                Err(RxDrop::BadDescriptor) => 3,
                Err(_) => 4,
            }] += 1;
            Ok(())
        })
        .unwrap();
    let s = seen.into_inner();
    eprintln!(
        "{cases} rings: {} with TX frames accepted, {} with TX chains dropped, RX frames \
         placed {}, dropped as malformed {}, without room {}",
        s[0], s[1], s[2], s[3], s[4]
    );
    assert!(s.iter().all(|&n| n > 0), "an outcome never came up: {s:?}");
}

/// Rings a guest could really make, each checked once.
#[test]
fn known_shapes() {
    // Empty input: a ring of one descriptor, nothing available.
    ring::run(&[]);
    // Every byte 0xff: all chains with all flags, addresses anywhere.
    ring::run(&[0xff; 6000]);
    // A ring of 256 whose descriptors all point into the descriptor table itself.
    let mut d = vec![8u8, 0x11];
    for _ in 0..256 {
        d.extend_from_slice(&[2, 0, 0, 6, 0x40, 0x00, 1, 0x10]);
    }
    ring::run(&d);
}

/// Every input of the libFuzzer corpus kept in the repository (`fuzz/corpus/rings`, made by
/// `scripts/fuzz.sh`) passes the same checks: the corpus is a regression suite.
#[test]
fn the_fuzz_corpus_passes() {
    for input in ring::input::corpus("rings") {
        ring::run(&input);
    }
}
