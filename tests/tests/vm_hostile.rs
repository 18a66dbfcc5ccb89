//! A hostile guest next to real ones. The hostile guest is this process (an in-process
//! vhost-user frontend, `vswitch/tests/support`: a stock guest kernel cannot hand out bad
//! descriptors); the two others are real TCG guests. While the real guests move 20 MB and
//! ping each other every 20 ms, the hostile one connects again and again, and each time
//! hands vfabric descriptors outside its memory, zero-length and device-writable TX chains,
//! a chain that wraps around the ring, bogus GSO headers, a frame over 64 KiB, a read-only
//! RX buffer, a storm of kicks, and finally an avail index far ahead. Every bad chain comes
//! back with length 0 and is counted; the real guests' traffic is byte-exact and loses no
//! ping.

#[path = "../../vswitch/tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use support::{Guest, Order, QSIZE};
use vfabric_tests::lab::{CMD, GuestOpts, NetLab, ip};
use vfabric_tests::qemu::Qemu;

const T: Duration = Duration::from_secs(10);
/// TX chains each round hands out, all bad.
const BAD_TX_CHAINS: usize = 9;

/// One hostile connection; returns when the guest gave up its ring.
fn hostile_round(sock: &std::path::Path) {
    let mut g = Guest::connect(sock, 1, Order::Qemu, 0);
    let z = g.alloc_raw(64);
    // RX: a read-only buffer where the device must write (the real guests' broadcasts try it).
    g.add_chain(0, &[(z, 2048, false)], false);
    g.kick(0);
    // TX: outside guest memory, zero-length, device-writable, wrapping around the ring.
    g.add_chain(1, &[(0xdead_0000_0000, 64, false)], false);
    g.add_chain(1, &[(z, 0, false), (z, 0, false)], false);
    g.add_chain(1, &[(z, 64, true)], false);
    let many: Vec<(u64, u32, bool)> = (0..(QSIZE as usize - 16)).map(|_| (z, 1, false)).collect();
    g.add_chain(1, &many, true);
    // Four offload headers with bogus GSO fields.
    g.send_bogus_gso();
    // A frame over 64 KiB in one descriptor.
    let big = g.alloc_raw(70_000);
    g.add_chain(1, &[(big, 70_000, false)], false);
    for _ in 0..10_000 {
        g.kick(1);
    }
    let used = g.wait_used(1, BAD_TX_CHAINS, T);
    assert_eq!(used.len(), BAD_TX_CHAINS);
    assert!(used.iter().all(|&(_, len)| len == 0), "{used:?}");
    // And the avail index leaps 1000 entries ahead: this ring is dead until a new connection.
    g.set_avail_idx_raw(1, 1000);
    g.kick(1);
}

#[test]
fn a_hostile_guest_does_not_disturb_real_guests() -> Result<()> {
    let opts = GuestOpts {
        topology_extra:
            "[[switch.port]]\nname = \"evil\"\ntype = \"vhost-user-net\"\nsocket = \"evil.sock\"\n"
                .into(),
        ..GuestOpts::default()
    };
    let qemu = Qemu::system().expect("QEMU (run scripts/install-deps.sh)");
    let mut lab = NetLab::start(2, &[qemu], opts)?;
    let sum = lab.vm(2).run_ok(
        "mkdir -p /tmp/www && head -c 20971520 /dev/urandom > /tmp/www/data && sha256sum /tmp/www/data | cut -d' ' -f1 && httpd -p 8080 -h /tmp/www",
        CMD,
    )?;
    lab.wait_listening(2, 8080)?;
    // The hostile guest, in rounds, until the real guests are done (bounded: 40 rounds, 3 min).
    let sock = lab.fabric.socket("evil");
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let attacker = std::thread::spawn(move || {
        let start = Instant::now();
        let mut rounds = 0u64;
        while !s2.load(Ordering::Relaxed)
            && rounds < 40
            && start.elapsed() < Duration::from_secs(180)
        {
            hostile_round(&sock);
            rounds += 1;
        }
        rounds
    });
    let out = lab.vm(1).run_ok(
        &format!(
            "ping -q -i 0.02 -c 200 {v2} | grep 'packets received' && \
             wget -q -O /tmp/got http://{v2}:8080/data && sha256sum /tmp/got | cut -d' ' -f1 && \
             ping -q -i 0.02 -c 200 {v2} | grep 'packets received'",
            v2 = ip(2)
        ),
        Duration::from_secs(240),
    )?;
    stop.store(true, Ordering::Relaxed);
    let rounds = attacker.join().expect("the hostile guest's thread");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("200 packets transmitted, 200 packets received"),
        "{out}"
    );
    assert_eq!(lines[1].trim(), sum.trim(), "20 MB byte-exact");
    assert!(
        lines[2].contains("200 packets transmitted, 200 packets received"),
        "{out}"
    );
    assert!(rounds >= 1);
    // Everything the hostile guest did was dropped and counted; the real guests lost nothing.
    let s = lab.fabric.stats()?;
    let c = |port: &str, k: &str| -> Result<u64> {
        s.get(port)
            .and_then(|p| p.get(k))
            .and_then(|v| v.as_u64())
            .with_context(|| format!("{port} {k}"))
    };
    assert_eq!(
        c("evil", "rx_frames")?,
        0,
        "nothing of the hostile guest was forwarded"
    );
    let dropped: u64 = [
        "rx_drop_bad_descriptor",
        "rx_drop_missing_header",
        "rx_drop_runt",
        "rx_drop_oversize",
        "rx_drop_too_fragmented",
        "rx_drop_bad_offload",
    ]
    .iter()
    .map(|k| c("evil", k))
    .sum::<Result<u64>>()?;
    assert_eq!(
        dropped,
        rounds * BAD_TX_CHAINS as u64,
        "every bad chain counted once"
    );
    assert_eq!(c("evil", "rx_drop_bad_offload")?, 4 * rounds);
    assert!(c("evil", "rx_drop_oversize")? >= rounds);
    for port in ["vm1", "vm2"] {
        for k in ["rx_drop_bad_descriptor", "tx_drop_bad_descriptor"] {
            assert_eq!(c(port, k)?, 0, "{port} {k}");
        }
        // A real guest's RX ring may be momentarily empty on a loaded TCG host (by design:
        // the sender is never blocked, TCP recovers): at most 2 frames, or 1 %.
        let (dropped, delivered) = (c(port, "tx_drop_no_buffer")?, c(port, "tx_frames")?);
        assert!(
            dropped <= 2 || dropped * 100 <= delivered,
            "{port}: {dropped} dropped for want of buffers, {delivered} delivered"
        );
    }
    eprintln!(
        "{rounds} hostile connections ({} bad TX chains, {} broken rings) next to 20 MB and 400 pings, none lost",
        dropped,
        c("evil", "ring_broken")?
    );
    Ok(())
}
