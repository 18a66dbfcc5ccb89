//! The demo: vfabric plus two small guests on one switch, pinging and moving data through it.
//! Run it with `scripts/demo.sh` (which installs what is needed first).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vfabric_tests::lab::{CMD, GuestOpts, NetLab, ip};
use vfabric_tests::qemu::{self, Qemu};

fn main() -> Result<()> {
    let t0 = Instant::now();
    println!("== vfabric demo: two VMs on one vfabric switch ==");
    print!("guest image (Debian kernel + busybox initramfs, cached after the first run) ... ");
    let img = vfabric_tests::guest_image::guest_image()?;
    println!("kernel {}", img.kernel_version);
    let q = Qemu::system().context("QEMU not found: run scripts/install-deps.sh")?;
    println!(
        "QEMU {}.{}.{}, accelerator {:?}",
        q.version.0,
        q.version.1,
        q.version.2,
        qemu::accel()
    );
    println!("starting vfabric with ports vm1, vm2 and booting two guests ...");
    let mut lab = NetLab::start(2, &[q], GuestOpts::default())?;
    println!(
        "  vfabric pid {}, topology in {}",
        lab.fabric.pid().unwrap_or(0),
        lab.dir().display()
    );
    println!("\n-- the topology vfabric runs --");
    for l in std::fs::read_to_string(lab.fabric.topology())?.lines() {
        if !l.trim().is_empty() {
            println!("  {l}");
        }
    }
    println!("\n-- vfabric ctl ports --");
    let (_, ports, _) = lab.fabric.ctl(&["ports"])?;
    for l in ports.lines() {
        println!("  {l}");
    }
    println!();
    for i in 1..=2 {
        println!(
            "  vm{i}: {} / mac 52:54:00:00:00:0{i}, booted in {:.1?}",
            ip(i),
            lab.vm(i).boot_time().unwrap_or_default()
        );
    }

    println!("\n-- ping vm1 -> vm2 --");
    let out = lab.ping(1, 2, 5)?;
    for l in out
        .lines()
        .filter(|l| l.contains("bytes from") || l.contains("round-trip") || l.contains("packets"))
    {
        println!("  {l}");
    }
    println!("-- ping vm2 -> vm1 --");
    let out = lab.ping(2, 1, 3)?;
    for l in out.lines().filter(|l| l.contains("round-trip")) {
        println!("  {l}");
    }

    println!("\n-- 20 MB over HTTP vm1 -> vm2, checksums compared --");
    let sent = lab.vm(1).run_ok(
        "mkdir -p /tmp/www && head -c 20971520 /dev/urandom > /tmp/www/blob && httpd -p 8080 -h /tmp/www && sha256sum /tmp/www/blob | cut -d' ' -f1",
        Duration::from_secs(120),
    )?;
    lab.wait_listening(1, 8080)?;
    let t = Instant::now();
    let got = lab.vm(2).run_ok(
        &format!(
            "wget -q -O - http://{}:8080/blob | sha256sum | cut -d' ' -f1",
            ip(1)
        ),
        Duration::from_secs(300),
    )?;
    let secs = t.elapsed().as_secs_f64();
    println!("  sent     {}", sent.trim());
    println!(
        "  received {}  ({:.1} MB/s incl. wget and sha256sum in the guest)",
        got.trim(),
        20.0 / secs
    );
    anyhow::ensure!(sent.trim() == got.trim(), "checksums differ");
    println!("  identical");

    println!("\n-- iperf3 TCP vm1 -> vm2, 5 s --");
    lab.vm(2).run_ok("iperf3 -s -D", CMD)?;
    lab.wait_listening(2, 5201)?;
    let out = lab
        .vm(1)
        .run_ok(&format!("iperf3 -c {} -t 5", ip(2)), CMD)?;
    for l in out
        .lines()
        .filter(|l| l.contains("sender") || l.contains("receiver"))
    {
        println!("  {l}");
    }

    println!("\n-- vfabric's counters (rx = from the guest, tx = to the guest) --");
    let s = lab.fabric.stats()?;
    for p in ["vm1", "vm2"] {
        let c = &s[p];
        // Drops by reason, only the non-zero ones (an early broadcast that reached a port
        // whose guest was still booting counts as tx_drop_link_down, for example).
        let drops: Vec<String> = c
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, v)| k.contains("drop") && v.as_u64().unwrap_or(0) > 0)
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect()
            })
            .unwrap_or_default();
        let drops = if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(", ")
        };
        println!(
            "  {p}: rx {} frames / {} bytes, tx {} frames / {} bytes, drops: {drops}",
            c["rx_frames"], c["rx_bytes"], c["tx_frames"], c["tx_bytes"]
        );
    }
    println!(
        "  switch: {} MAC addresses learned",
        s["lab"]["fdb_entries"]
    );
    lab.fabric.terminate()?;
    println!(
        "\ndemo finished in {:.0?}: vfabric stopped, guests shut down.",
        t0.elapsed()
    );
    Ok(())
}
