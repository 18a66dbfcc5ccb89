//! The machine's phase, for reading benchmark figures: the round trip of one cache line
//! between CPU 0 and CPU 1 (where the benchmarks pin the switch and the generator), measured
//! every second for a while. On the 2-core lab machines it takes three values, depending on
//! where the host places the two vCPUs at that moment: about 50 ns, about 110 ns and about
//! 500 ns (most likely one physical core, two cores sharing a cache, two dies); packet rates
//! in the ~500 ns phase are about half those in the ~110 ns one.
//!
//! Usage: bench-core-rtt [SECONDS]   (default 10; run it on an otherwise idle machine, e.g.
//! just before and after a benchmark round).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Round trips per sample.
const TRIPS: u64 = 200_000;

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (0 or 1 here).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given, for the calling thread (0).
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if r != 0 {
        bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Two flags on lines of their own, bounced between CPU 0 and CPU 1.
#[repr(align(128))]
struct Line(AtomicU64);

/// Spins until `flag` holds `i`; false after 10 s (the other side stopped). The clock is
/// read once per 4096 spins only, so it adds nothing to the round trip measured.
fn wait_for(flag: &AtomicU64, i: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut spins = 0u32;
    while flag.load(Ordering::Acquire) != i {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(4096) && Instant::now() > deadline {
            return false;
        }
        std::hint::spin_loop();
    }
    true
}

/// One sample: the mean round trip in nanoseconds over `TRIPS` trips.
fn sample() -> Result<f64> {
    let ping = Arc::new(Line(AtomicU64::new(0)));
    let pong = Arc::new(Line(AtomicU64::new(0)));
    let (p, q) = (ping.clone(), pong.clone());
    let peer = std::thread::spawn(move || -> Result<()> {
        pin(1)?;
        for i in 1..=TRIPS {
            if !wait_for(&p.0, i) {
                bail!("CPU 0 stopped answering");
            }
            q.0.store(i, Ordering::Release);
        }
        Ok(())
    });
    pin(0)?;
    let start = Instant::now();
    for i in 1..=TRIPS {
        ping.0.store(i, Ordering::Release);
        if !wait_for(&pong.0, i) {
            bail!("CPU 1 stopped answering");
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / TRIPS as f64;
    peer.join()
        .map_err(|_| anyhow::anyhow!("peer panicked"))??;
    Ok(ns)
}

fn main() -> Result<()> {
    let secs: u64 = match std::env::args().nth(1) {
        Some(s) => s.parse().context("SECONDS")?,
        None => 10,
    };
    if std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        < 2
    {
        bail!("needs 2 CPUs");
    }
    let mut all = Vec::new();
    for _ in 0..secs.max(1) {
        let ns = sample()?;
        let phase = match ns {
            x if x < 80.0 => "~50 ns phase",
            x if x < 250.0 => "~110 ns phase",
            _ => "~500 ns phase",
        };
        println!("cpu0<->cpu1 round trip {ns:>6.1} ns  ({phase})");
        all.push(ns);
        std::thread::sleep(Duration::from_secs(1));
    }
    println!("median {:.1} ns", vfabric_tests::median(all));
    Ok(())
}
