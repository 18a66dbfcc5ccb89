//! Recovery after vfabric is killed (SIGKILL) and started again, as the guests see it.
//!
//! Two guests on one switch; guest 1 pings guest 2 every 20 ms (bounded: 1000 pings, 25 s).
//! Once the pings flow, vfabric is killed and started again. The outage is the longest gap
//! between two consecutive echo replies guest 1 received (gap in sequence numbers x 20 ms);
//! `restart` is the host's time from the kill until the new vfabric has its sockets bound;
//! `resumed` = outage - restart is how long after the new vfabric was up traffic flowed again.
//! Both ways of meeting QEMU are measured: vfabric listening (QEMU dials back with
//! `reconnect-ms=100`) and QEMU listening (vfabric dials, at start).
//!
//! Usage: bench-restart [ROUNDS] (default 5). Run with `benches/restart.sh` (builds release).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vfabric_tests::lab::{CMD, GuestOpts, NetLab, ip};
use vfabric_tests::qemu::Qemu;
use vfabric_tests::{median, wait_until};

const INTERVAL_MS: u64 = 20;

/// The longest gap between consecutive replies in busybox ping's output, in pings.
fn longest_gap(out: &str) -> Result<u64> {
    let seqs: Vec<u64> = out
        .lines()
        .filter_map(|l| l.split("seq=").nth(1))
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .collect();
    if seqs.len() < 2 {
        bail!("too few replies:\n{out}");
    }
    Ok(seqs
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .max()
        .unwrap_or(0))
}

fn delivered_to_vm2(lab: &mut NetLab) -> Result<u64> {
    let s = lab.fabric.stats()?;
    s.get("vm2")
        .and_then(|p| p.get("tx_frames"))
        .and_then(|v| v.as_u64())
        .context("vm2 tx_frames in stats")
}

fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(5);
    let qemu = Qemu::system()?;
    println!(
        "# vfabric SIGKILL + restart under 20 ms pings, {rounds} rounds per mode (median / max)"
    );
    for (mode, qemu_is_server) in [
        ("vfabric listens, QEMU reconnect-ms=100", false),
        ("QEMU listens, vfabric dials", true),
    ] {
        let opts = GuestOpts {
            qemu_is_server,
            ..GuestOpts::default()
        };
        let mut lab = NetLab::start(2, std::slice::from_ref(&qemu), opts)?;
        lab.wait_reachable(1, 2, Duration::from_secs(30))?;
        let (mut outage, mut restart, mut resumed) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            let file = format!("/tmp/ping{r}");
            lab.vm(1).run_ok(
                &format!(
                    "ping -i 0.{INTERVAL_MS:03} -c 1000 -w 25 {} > {file} 2>&1 &",
                    ip(2)
                ),
                CMD,
            )?;
            // The pings flow (counters of the vfabric about to be killed).
            let base = delivered_to_vm2(&mut lab)?;
            wait_until(
                Duration::from_secs(10),
                || Ok(delivered_to_vm2(&mut lab)? >= base + 25),
                || "pings did not flow".into(),
            )?;
            let t = Instant::now();
            lab.fabric.restart()?;
            let up = t.elapsed();
            // ping ends by itself (1000 pings or 25 s).
            lab.vm(1).run_ok(
                "while pidof ping >/dev/null; do sleep 0.2; done",
                Duration::from_secs(40),
            )?;
            let out = lab.vm(1).run_ok(&format!("cat {file}"), CMD)?;
            let gap = Duration::from_millis(longest_gap(&out)? * INTERVAL_MS);
            let after = gap.saturating_sub(up);
            println!(
                "{mode}: round {r}: outage {:.0} ms, restart {:.0} ms, resumed {:.0} ms after",
                gap.as_secs_f64() * 1e3,
                up.as_secs_f64() * 1e3,
                after.as_secs_f64() * 1e3
            );
            outage.push(gap.as_secs_f64() * 1e3);
            restart.push(up.as_secs_f64() * 1e3);
            resumed.push(after.as_secs_f64() * 1e3);
        }
        let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
        println!(
            "{mode}: outage {:.0} / {:.0} ms; restart {:.0} / {:.0} ms; traffic resumed {:.0} / {:.0} ms after the restart",
            median(outage.clone()),
            max(&outage),
            median(restart.clone()),
            max(&restart),
            median(resumed.clone()),
            max(&resumed)
        );
    }
    Ok(())
}
