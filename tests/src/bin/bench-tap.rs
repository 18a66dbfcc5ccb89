//! TAP benchmark: TCP between a guest and an iperf3 server in a network namespace, through
//! vfabric's TAP port (guest on a vhost-user port, the TAP in the namespace) and through
//! QEMU's own TAP backend (vhost-net when the host has it, the TAP in the same kind of
//! namespace), alternating round by round in one run. Both directions: guest -> namespace
//! and namespace -> guest (`iperf3 -R`). Prints medians and ratios. Run with
//! `benches/tap.sh` (builds release).
//!
//! Usage: bench-tap [ROUNDS] (default 3)

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use vfabric_tests::fabric::{Fabric, PortSpec};
use vfabric_tests::lab::{BOOT, CMD};
use vfabric_tests::netns::Netns;
use vfabric_tests::qemu::{NetDev, Qemu, Vm, VmConfig};
use vfabric_tests::{median, wait_until};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    Vfabric,
    QemuTap,
}

struct Round {
    who: Contender,
    up_gbps: f64,
    down_gbps: f64,
}

const SERVER: &str = "10.0.0.254";

/// Waits (bounded) for `ifname` to exist in `ns`.
fn wait_link(ns: &Netns, ifname: &str) -> Result<()> {
    wait_until(
        Duration::from_secs(30),
        || Ok(ns.exec(&["ip", "link", "show", ifname]).is_ok()),
        || format!("{ifname} never appeared in {}", ns.name()),
    )
}

/// One iperf3 test from the guest against a one-shot server in the namespace.
fn iperf(vm: &mut Vm, ns: &Netns, reverse: bool) -> Result<f64> {
    let mut server: Child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            "iperf3",
            "-s",
            "-1",
            "-B",
            SERVER,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let ready = wait_until(
        Duration::from_secs(10),
        || Ok(ns.exec(&["sh", "-c", "ss -ltn | grep -q ':5201 '"]).is_ok()),
        || "iperf3 server did not start".into(),
    );
    if let Err(e) = ready {
        let _ = server.kill();
        let _ = server.wait();
        return Err(e);
    }
    let out = vm.run_ok(
        &format!(
            "iperf3 -c {SERVER} -t 5{}",
            if reverse { " -R" } else { "" }
        ),
        CMD,
    );
    let _ = server.kill();
    let _ = server.wait();
    let out = out?;
    vfabric_tests::iperf_gbps(&out).with_context(|| format!("iperf3 output:\n{out}"))
}

fn round(who: Contender, qemu: &Qemu) -> Result<Round> {
    let dir = tempfile::Builder::new().prefix("vfb").tempdir_in("/tmp")?;
    let ns = Netns::new("bench")?;
    let mut cfg = VmConfig::new("vm1", qemu.clone());
    cfg.ips.push(("eth0".into(), "10.0.0.1/24".into()));
    let mac = "52:54:00:00:00:01".to_string();
    let _fabric = match who {
        Contender::Vfabric => {
            let f = Fabric::start_with(
                dir.path(),
                &[PortSpec::new("vm1")],
                &format!(
                    "[[switch.port]]\nname = \"host\"\ntype = \"tap\"\nifname = \"vfb-tap\"\nnetns = \"{}\"\naddress = \"{SERVER}/24\"\n",
                    ns.name()
                ),
            )?;
            cfg.nics.push(NetDev {
                socket: f.socket("vm1"),
                mac,
                queues: 1,
                qemu_is_server: false,
                packed: false,
            });
            Some(f)
        }
        Contender::QemuTap => {
            let vhost = if Path::new("/dev/vhost-net").exists() {
                "on"
            } else {
                "off"
            };
            cfg.extra_args = vec![
                "-netdev".into(),
                format!("tap,id=t0,ifname=vfb-qtap,script=no,downscript=no,vhost={vhost}"),
                "-device".into(),
                format!("virtio-net-pci,netdev=t0,mac={mac},romfile="),
            ];
            cfg.netns = Some(ns.name().to_string());
            None
        }
    };
    let mut vm = Vm::start(cfg, &dir.path().join("vm1"))?;
    if who == Contender::QemuTap {
        wait_link(&ns, "vfb-qtap")?;
        ns.sh(&format!(
            "ip addr add {SERVER}/24 dev vfb-qtap && ip link set vfb-qtap up"
        ))?;
    }
    vm.wait_ready(BOOT)?;
    vm.run_ok(&format!("ping -c 2 -W 5 {SERVER}"), CMD)?;
    let up_gbps = iperf(&mut vm, &ns, false)?;
    let down_gbps = iperf(&mut vm, &ns, true)?;
    vm.kill();
    Ok(Round {
        who,
        up_gbps,
        down_gbps,
    })
}

fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3);
    let qemu = Qemu::system()?;
    println!(
        "guest: 1 vCPU, 256 MiB, QEMU {}.{}.{}, accel {:?}, vhost-net {}; {rounds} rounds per contender, alternating",
        qemu.version.0,
        qemu.version.1,
        qemu.version.2,
        vfabric_tests::qemu::accel(),
        if Path::new("/dev/vhost-net").exists() {
            "yes"
        } else {
            "no"
        }
    );
    let mut results = Vec::new();
    for r in 0..rounds {
        for who in [Contender::Vfabric, Contender::QemuTap] {
            let res = round(who, &qemu)?;
            println!(
                "round {r} {:<8} guest->netns {:>6.3} Gbit/s   netns->guest {:>6.3} Gbit/s",
                format!("{who:?}"),
                res.up_gbps,
                res.down_gbps
            );
            results.push(res);
        }
    }
    let pick = |who, f: fn(&Round) -> f64| {
        median(results.iter().filter(|r| r.who == who).map(f).collect())
    };
    let (vu, qu) = (
        pick(Contender::Vfabric, |r| r.up_gbps),
        pick(Contender::QemuTap, |r| r.up_gbps),
    );
    let (vd, qd) = (
        pick(Contender::Vfabric, |r| r.down_gbps),
        pick(Contender::QemuTap, |r| r.down_gbps),
    );
    println!();
    println!("| median TCP Gbit/s | vfabric TAP port | QEMU TAP backend | vfabric/QEMU |");
    println!("|-------------------|------------------|------------------|--------------|");
    println!(
        "| guest -> netns    | {vu:>16.3} | {qu:>16.3} | {:>12.2} |",
        vu / qu
    );
    println!(
        "| netns -> guest    | {vd:>16.3} | {qd:>16.3} | {:>12.2} |",
        vd / qd
    );
    Ok(())
}
