//! Hostile packed rings through the walk, the TX and RX paths and the used-descriptor
//! writes (see `packed_ring/mod.rs` for what is built and what is checked against the
//! spec's model). `PROPTEST_CASES=N` for long runs; the cargo-fuzz target `packed_rings`
//! runs the same function under libFuzzer.

mod packed_ring;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use vhost_backends::net::RxDrop;

#[test]
fn any_packed_ring_contents() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut runner = TestRunner::new(Config::with_cases(cases));
    // How often each outcome came up: the inputs must reach all of them.
    let seen = std::cell::RefCell::new([0u32; 6]);
    runner
        .run(&vec(any::<u8>(), 0..4000), |data| {
            let o = packed_ring::run(&data);
            let mut s = seen.borrow_mut();
            s[0] += u32::from(o.tx_frames > 0);
            s[1] += u32::from(o.chains > o.tx_frames);
            s[2] += u32::from(o.broken);
            s[match o.rx {
                Ok(()) => 3,
                Err(RxDrop::BadDescriptor) => 4,
                Err(_) => 5,
            }] += 1;
            Ok(())
        })
        .unwrap();
    let s = seen.into_inner();
    eprintln!(
        "{cases} packed rings: {} with TX frames accepted, {} with chains refused, {} broken, \
         RX frames placed {}, dropped as malformed {}, without room {}",
        s[0], s[1], s[2], s[3], s[4], s[5]
    );
    assert!(s.iter().all(|&n| n > 0), "an outcome never came up: {s:?}");
}

/// Rings a guest could really make, each checked once.
#[test]
fn known_shapes() {
    packed_ring::run(&[]);
    packed_ring::run(&[0xff; 4000]);
    packed_ring::run(&[0x55; 4000]);
}

/// Every input of the libFuzzer corpus kept in the repository (`fuzz/corpus/packed_rings`).
#[test]
fn the_fuzz_corpus_passes() {
    for input in packed_ring::input::corpus("packed_rings") {
        packed_ring::run(&input);
    }
}
