//! vfabric's real-VM test harness: a cached guest image ([`guest_image`]) and a QEMU launcher with
//! a command agent in the guest ([`qemu`]). See tests/vm/README.md.

pub mod browser;
pub mod dpdk;
pub mod fabric;
pub mod guest_image;
pub mod lab;
pub mod libvirt;
pub mod netns;
pub mod ovs;
pub mod qemu;
pub mod raw;

/// Polls `ready` every 100 ms until it says yes; an error naming `what` once `timeout`
/// passed without it (or the first error `ready` returns). The one way tests wait for a
/// condition: a socket, a counter, a log line, a guest file.
pub fn wait_until(
    timeout: std::time::Duration,
    mut ready: impl FnMut() -> anyhow::Result<bool>,
    what: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if ready()? {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("{} (not within {timeout:?})", what());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Ends a child that was asked to end (SIGTERM, a close command): waits up to `grace` for it
/// to exit by itself, then kills it; reaped either way.
pub fn reap(child: &mut std::process::Child, grace: std::time::Duration) {
    let _ = wait_until(
        grace,
        || Ok(!matches!(child.try_wait(), Ok(None))),
        String::new,
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The median of benchmark samples (NaN for none): what the benchmark binaries report.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The average of a busybox ping summary: "round-trip min/avg/max = 0.314/0.420/0.912 ms".
pub fn ping_avg_ms(out: &str) -> Option<f64> {
    let l = out.lines().find(|l| l.contains("round-trip"))?;
    l.split('=').nth(1)?.trim().split('/').nth(1)?.parse().ok()
}

/// What the guest benchmarks measure between guest `a` and guest `b` (10.0.0.2): the
/// average ping RTT in ms (20 pings after 2 to warm up ARP and the path) and iperf3 TCP
/// from `a` to `b` over 5 s in Gbit/s.
pub fn ping_and_tcp(a: &mut qemu::Vm, b: &mut qemu::Vm) -> anyhow::Result<(f64, f64)> {
    use anyhow::Context;
    use lab::{CMD, listening_cmd};
    a.run_ok("ping -c 2 -W 5 10.0.0.2", CMD)?;
    let ping = a.run_ok("ping -c 20 -i 0.2 -W 5 10.0.0.2", CMD)?;
    b.run_ok("iperf3 -s -D", CMD)?;
    b.run_ok(&listening_cmd(5201), CMD)?;
    let ip = a.run_ok("iperf3 -c 10.0.0.2 -t 5", CMD)?;
    let rtt = ping_avg_ms(&ping).with_context(|| format!("ping output:\n{ping}"))?;
    let gbps = iperf_gbps(&ip).with_context(|| format!("iperf3 output:\n{ip}"))?;
    Ok((rtt, gbps))
}

/// The receiver's rate of an iperf3 client report, in Gbit/s:
/// "[  5]   0.00-5.00   sec   187 MBytes   314 Mbits/sec    receiver".
pub fn iperf_gbps(out: &str) -> Option<f64> {
    let l = out.lines().find(|l| l.contains("receiver"))?;
    let w: Vec<&str> = l.split_whitespace().collect();
    let i = w.iter().position(|x| x.ends_with("bits/sec"))?;
    let v: f64 = w[i - 1].parse().ok()?;
    Some(match w[i] {
        "Gbits/sec" => v,
        "Mbits/sec" => v / 1e3,
        "Kbits/sec" => v / 1e6,
        _ => return None,
    })
}
