//! Guest benchmark: ping RTT and iperf3 TCP between two guests through vfabric, next to the
//! same figures through `dpdk-testpmd` in io forwarding mode (a plain two-port wire, DPDK's
//! vhost PMD) and through QEMU's own TAP backend on a Linux bridge (inside a network
//! namespace the benchmark creates; vhost-net when the host has it), in one run with the
//! contenders alternating round by round. Prints medians and ratios. Run with
//! `benches/guests.sh` (installs DPDK, sets up hugepages, builds release).
//!
//! Usage: bench-guests [ROUNDS] (default 3)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use vfabric_tests::dpdk::testpmd_io;
use vfabric_tests::fabric::{Fabric, PortSpec};
use vfabric_tests::lab::BOOT;
use vfabric_tests::median;
use vfabric_tests::qemu::{NetDev, Qemu, Vm, VmConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    Vfabric,
    Testpmd,
    TapBridge,
}

struct Round {
    who: Contender,
    rtt_ms: f64,
    gbps: f64,
}

enum Backend {
    /// Held for its lifetime: dropping it stops vfabric.
    Vfabric {
        _fabric: Box<Fabric>,
    },
    Testpmd(Child),
    /// A network namespace holding the bridge and the guests' TAP devices.
    TapBridge(String),
}

impl Drop for Backend {
    fn drop(&mut self) {
        match self {
            Backend::Testpmd(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Backend::TapBridge(ns) => {
                let _ = Command::new("ip")
                    .args(["netns", "del", ns.as_str()])
                    .status();
            }
            Backend::Vfabric { .. } => {}
        }
    }
}

fn sh(args: &[&str]) -> Result<()> {
    let st = Command::new(args[0]).args(&args[1..]).status()?;
    if !st.success() {
        bail!("{args:?}: {st}");
    }
    Ok(())
}

/// A namespace with a bridge `br0` for the TAP contender.
fn start_bridge() -> Result<(Backend, String)> {
    let ns = format!("vfb-br-{}", std::process::id());
    sh(&["ip", "netns", "add", &ns])?;
    let b = Backend::TapBridge(ns.clone());
    sh(&[
        "ip", "netns", "exec", &ns, "ip", "link", "add", "br0", "type", "bridge",
    ])?;
    sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "br0", "up"])?;
    Ok((b, ns))
}

/// Waits for QEMU to create TAP `tap` in `ns`, then enslaves it to br0 and brings it up.
fn attach_tap(ns: &str, tap: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new("ip")
            .args(["netns", "exec", ns, "ip", "link", "show", tap])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?
            .success();
        if ok {
            break;
        }
        if Instant::now() > deadline {
            bail!("QEMU never created {tap}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    sh(&[
        "ip", "netns", "exec", ns, "ip", "link", "set", tap, "master", "br0", "up",
    ])
}

fn start_testpmd(dir: &Path) -> Result<(Backend, [PathBuf; 2])> {
    let socks = [dir.join("tp0.sock"), dir.join("tp1.sock")];
    let prefix = format!("vfbench{}", std::process::id());
    let child = testpmd_io(&socks, "0@0,1@1", &prefix, &dir.join("testpmd.log"))?;
    Ok((Backend::Testpmd(child), socks))
}

/// How a benchmark guest's NIC is attached.
enum Nic<'a> {
    VhostUser(&'a Path),
    /// QEMU's TAP backend, TAP `vfbtI` created in namespace `ns`.
    Tap {
        ns: &'a str,
    },
}

fn guest(name: &str, i: usize, nic: Nic<'_>, qemu: &Qemu, dir: &Path) -> Result<Vm> {
    let mut cfg = VmConfig::new(name, qemu.clone());
    let mac = format!("52:54:00:00:00:{i:02x}");
    match nic {
        Nic::VhostUser(sock) => cfg.nics.push(NetDev {
            socket: sock.to_path_buf(),
            mac,
            queues: 1,
            qemu_is_server: false,
            packed: false,
        }),
        Nic::Tap { ns } => {
            let vhost = if Path::new("/dev/vhost-net").exists() {
                "on"
            } else {
                "off"
            };
            cfg.extra_args = vec![
                "-netdev".into(),
                format!("tap,id=t0,ifname=vfbt{i},script=no,downscript=no,vhost={vhost}"),
                "-device".into(),
                format!("virtio-net-pci,netdev=t0,mac={mac},romfile="),
            ];
            cfg.netns = Some(ns.to_string());
        }
    }
    cfg.ips.push(("eth0".into(), format!("10.0.0.{i}/24")));
    let vm = Vm::start(cfg, &dir.join(name))?;
    if let Nic::Tap { ns } = nic {
        attach_tap(ns, &format!("vfbt{i}"))?;
    }
    Ok(vm)
}

fn round(who: Contender, qemu: &Qemu) -> Result<Round> {
    let dir = tempfile::Builder::new().prefix("vfb").tempdir_in("/tmp")?;
    let (_backend, socks, ns) = match who {
        Contender::Vfabric => {
            let f = Fabric::start(dir.path(), &[PortSpec::new("vm1"), PortSpec::new("vm2")])?;
            let s = [f.socket("vm1"), f.socket("vm2")];
            (
                Backend::Vfabric {
                    _fabric: Box::new(f),
                },
                s,
                String::new(),
            )
        }
        Contender::Testpmd => {
            let (b, s) = start_testpmd(dir.path())?;
            (b, s, String::new())
        }
        Contender::TapBridge => {
            let (b, ns) = start_bridge()?;
            (b, [PathBuf::new(), PathBuf::new()], ns)
        }
    };
    let nic = |i: usize| match who {
        Contender::TapBridge => Nic::Tap { ns: &ns },
        _ => Nic::VhostUser(&socks[i]),
    };
    let mut a = guest("vm1", 1, nic(0), qemu, dir.path())?;
    let mut b = guest("vm2", 2, nic(1), qemu, dir.path())?;
    a.wait_ready(BOOT)?;
    b.wait_ready(BOOT)?;
    let (rtt_ms, gbps) = vfabric_tests::ping_and_tcp(&mut a, &mut b)?;
    Ok(Round { who, rtt_ms, gbps })
}

fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3);
    let qemu = Qemu::system()?;
    println!(
        "guests: 1 vCPU, 256 MiB, QEMU {}.{}.{}, accel {:?}; {rounds} rounds per contender, alternating",
        qemu.version.0,
        qemu.version.1,
        qemu.version.2,
        vfabric_tests::qemu::accel()
    );
    let mut results = Vec::new();
    for r in 0..rounds {
        for who in [Contender::Vfabric, Contender::Testpmd, Contender::TapBridge] {
            let res = round(who, &qemu)?;
            println!(
                "round {r} {:<8} ping avg {:>7.3} ms   iperf3 {:>6.3} Gbit/s",
                format!("{who:?}"),
                res.rtt_ms,
                res.gbps
            );
            results.push(res);
        }
    }
    let pick = |who, f: fn(&Round) -> f64| {
        median(results.iter().filter(|r| r.who == who).map(f).collect())
    };
    let (vr, tr, br) = (
        pick(Contender::Vfabric, |r| r.rtt_ms),
        pick(Contender::Testpmd, |r| r.rtt_ms),
        pick(Contender::TapBridge, |r| r.rtt_ms),
    );
    let (vg, tg, bg) = (
        pick(Contender::Vfabric, |r| r.gbps),
        pick(Contender::Testpmd, |r| r.gbps),
        pick(Contender::TapBridge, |r| r.gbps),
    );
    println!();
    println!(
        "| median            | vfabric | testpmd io | QEMU TAP + bridge | vfabric/testpmd | vfabric/TAP |"
    );
    println!(
        "|-------------------|---------|------------|-------------------|-----------------|-------------|"
    );
    println!(
        "| ping RTT (ms)     | {vr:>7.3} | {tr:>10.3} | {br:>17.3} | {:>15.2} | {:>11.2} |",
        vr / tr,
        vr / br
    );
    println!(
        "| iperf3 TCP Gbit/s | {vg:>7.3} | {tg:>10.3} | {bg:>17.3} | {:>15.2} | {:>11.2} |",
        vg / tg,
        vg / bg
    );
    Ok(())
}
