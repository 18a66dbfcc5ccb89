//! Soak: 8 guests on one switch with a NAT port, for a bounded time (default 10 minutes),
//! mixing broadcast (ARP requests for an absent address), unicast TCP between guest pairs
//! (iperf3, bounded runs) and NAT flows (downloads from a server on the host's loopback
//! through the gateway). vfabric's RSS and open file descriptors are sampled every 30 s; the
//! run prints them and the growth from the first sample after warm-up to the last. Run with
//! `benches/soak.sh` (builds release).
//!
//! Usage: bench-soak [MINUTES] (default 10)

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vfabric_tests::lab::{CMD, GuestOpts, NetLab};
use vfabric_tests::netns::pattern;
use vfabric_tests::qemu::Qemu;

const GUESTS: usize = 8;

/// (RSS in KiB, open descriptors, threads) of a process.
fn sample(pid: u32) -> Result<(u64, usize, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok((field("VmRSS:")?, fds, field("Threads:")? as usize))
}

/// Serves `data` over HTTP/1.0 to every client until `stop` (then one more connection
/// wakes it).
fn http_loop(l: TcpListener, data: Arc<Vec<u8>>, stop: Arc<AtomicBool>) {
    use std::io::{Read, Write};
    for conn in l.incoming() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        match conn {
            Ok(mut s) => {
                let data = data.clone();
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut b = [0u8; 1024];
                    let _ = s.read(&mut b);
                    let _ = write!(
                        s,
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                        data.len()
                    );
                    let _ = s.write_all(&data);
                });
            }
            Err(_) => continue,
        }
    }
}

fn main() -> Result<()> {
    let minutes: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);
    let run_for = Duration::from_secs(minutes * 60);
    let http = TcpListener::bind("127.0.0.1:0")?;
    let http_port = http.local_addr()?.port();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        let data = Arc::new(pattern(1 << 20, 3));
        std::thread::spawn(move || http_loop(http, data, stop))
    };
    // Guests keep their static 10.0.0.x addresses; the NAT port serves the same subnet, so
    // 10.0.0.2 is the gateway (and the host's loopback) for them.
    let opts = GuestOpts {
        topology_extra: "[[switch.port]]\nname = \"uplink\"\ntype = \"nat\"\nsubnet = \"10.0.0.0/24\"\ngateway = \"10.0.0.250\"\ndns = \"10.0.0.251\"\ndhcp_range = \"10.0.0.100-10.0.0.199\"\n".into(),
        ..Default::default()
    };
    let qemu = Qemu::system()?;
    let mut lab = NetLab::start(GUESTS, &[qemu], opts)?;
    let pid = lab.fabric.pid().context("vfabric pid")?;
    let secs = run_for.as_secs();
    // Every guest: a bounded loop of broadcast pings, a TCP run to its pair, and a download
    // through the NAT, until the run's time is up.
    for g in 1..=GUESTS {
        let pair = if g % 2 == 1 { g + 1 } else { g - 1 };
        if g % 2 == 0 {
            lab.vm(g).run_ok("iperf3 -s -D", CMD)?;
        }
        lab.vm(g).spawn_bg(&format!(
            "end=$(( $(cut -d. -f1 /proc/uptime) + {secs} )); \
             while [ $(cut -d. -f1 /proc/uptime) -lt $end ]; do \
               arping -c 5 -w 2 -I eth0 10.0.0.77 >/dev/null 2>&1; \
               {tcp} \
               wget -q -O /dev/null http://10.0.0.250:{http_port}/d; \
               sleep 1; \
             done; echo soak-done > /tmp/soak",
            tcp = if g % 2 == 1 {
                format!("iperf3 -c 10.0.0.{pair} -t 3 >/dev/null 2>&1;")
            } else {
                String::new()
            }
        ))?;
    }
    println!(
        "soak: {GUESTS} guests, {minutes} min, ARP broadcasts + iperf3 pairs + NAT downloads; vfabric pid {pid}"
    );
    println!("| t (s) | RSS (MiB) | open fds | threads |");
    println!("|-------|-----------|----------|---------|");
    let start = Instant::now();
    let mut samples = Vec::new();
    loop {
        let (rss, fds, threads) = sample(pid)?;
        println!(
            "| {:>5} | {:>9.1} | {fds:>8} | {threads:>7} |",
            start.elapsed().as_secs(),
            rss as f64 / 1024.0
        );
        samples.push((rss, fds));
        let left = run_for.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        // The sampling period (the run's length bounds it), not a wait for a condition.
        std::thread::sleep(Duration::from_secs(30).min(left));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = std::net::TcpStream::connect(("127.0.0.1", http_port));
    let _ = server.join();
    // Growth from the first sample after one minute (warm-up) to the last.
    let base = samples
        .get(2)
        .or(samples.first())
        .copied()
        .unwrap_or((0, 0));
    let last = samples.last().copied().unwrap_or((0, 0));
    println!();
    println!(
        "after warm-up: RSS {:.1} -> {:.1} MiB ({:+.1} MiB), fds {} -> {} ({:+})",
        base.0 as f64 / 1024.0,
        last.0 as f64 / 1024.0,
        (last.0 as f64 - base.0 as f64) / 1024.0,
        base.1,
        last.1,
        last.1 as i64 - base.1 as i64
    );
    let s = lab.fabric.stats()?;
    for port in ["vm1", "uplink"] {
        if let Some(c) = s.get(port) {
            println!("{port}: {c}");
        }
    }
    Ok(())
}
