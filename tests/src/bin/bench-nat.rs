//! NAT benchmark: TCP between a guest and an iperf3 server on the host's loopback, reached
//! through the gateway address 10.0.2.2, through vfabric's NAT port, QEMU's user networking
//! (slirp) and passt (socket mode, QEMU `-netdev stream`), alternating round by round in one
//! run. Both directions: guest -> host and host -> guest (`iperf3 -R`). Prints medians and
//! ratios. Run with `benches/nat.sh` (installs passt, builds release).
//!
//! Usage: bench-nat [ROUNDS] (default 3)

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use vfabric_tests::fabric::{Fabric, PortSpec};
use vfabric_tests::lab::{BOOT, CMD};
use vfabric_tests::qemu::{NetDev, Qemu, Vm, VmConfig};
use vfabric_tests::{median, wait_until};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    Vfabric,
    Slirp,
    Passt,
}

struct Round {
    who: Contender,
    up_gbps: f64,
    down_gbps: f64,
}

/// Kills a helper process when dropped.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn iperf_server(port: u16) -> Result<Reaper> {
    let child = Command::new("iperf3")
        .args(["-s", "-B", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("iperf3")?;
    let r = Reaper(child);
    wait_until(
        Duration::from_secs(10),
        || Ok(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
        || "iperf3 server did not listen".into(),
    )?;
    Ok(r)
}

fn round(who: Contender, qemu: &Qemu, port: u16) -> Result<Round> {
    let dir = tempfile::Builder::new().prefix("vfb").tempdir_in("/tmp")?;
    let mut cfg = VmConfig::new("vm1", qemu.clone());
    cfg.ips.push(("eth0".into(), "10.0.2.15/24".into()));
    cfg.extra_cmdline = "vf.route=eth0:default:10.0.2.2".into();
    let mac = "52:54:00:12:34:56".to_string();
    let mut _keep: Vec<Reaper> = Vec::new();
    // passt drops root for nobody: its socket goes where nobody may write.
    let passt_sock =
        std::path::PathBuf::from(format!("/tmp/vfb-passt-{}-{port}.sock", std::process::id()));
    let _fabric = match who {
        Contender::Vfabric => {
            let f = Fabric::start_with(
                dir.path(),
                &[PortSpec::new("vm1")],
                "[[switch.port]]\nname = \"uplink\"\ntype = \"nat\"\nsubnet = \"10.0.2.0/24\"\n",
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
        Contender::Slirp => {
            cfg.extra_args = vec![
                "-netdev".into(),
                "user,id=n0,net=10.0.2.0/24".into(),
                "-device".into(),
                format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
            ];
            None
        }
        Contender::Passt => {
            let sock = passt_sock.clone();
            let _ = std::fs::remove_file(&sock);
            let child = Command::new("passt")
                .args(["-f", "-1", "-q", "-s"])
                .arg(&sock)
                .args(["-a", "10.0.2.15", "-n", "24", "-g", "10.0.2.2"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("passt (benches/nat.sh installs it)")?;
            _keep.push(Reaper(child));
            wait_until(
                Duration::from_secs(10),
                || Ok(sock.exists()),
                || "passt did not create its socket".into(),
            )?;
            cfg.extra_args = vec![
                "-netdev".into(),
                format!(
                    "stream,id=n0,server=off,addr.type=unix,addr.path={}",
                    sock.display()
                ),
                "-device".into(),
                format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
            ];
            None
        }
    };
    let mut vm = Vm::start(cfg, &dir.path().join("vm1"))?;
    vm.wait_ready(BOOT)?;
    let run = |vm: &mut Vm, reverse: bool| -> Result<f64> {
        let out = vm.run_ok(
            &format!(
                "iperf3 -c 10.0.2.2 -p {port} -t 5{}",
                if reverse { " -R" } else { "" }
            ),
            CMD,
        )?;
        vfabric_tests::iperf_gbps(&out).with_context(|| format!("iperf3 output:\n{out}"))
    };
    let up_gbps = run(&mut vm, false)?;
    let down_gbps = run(&mut vm, true)?;
    vm.kill();
    let _ = std::fs::remove_file(&passt_sock);
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _server = iperf_server(port)?;
    println!(
        "guest: 1 vCPU, 256 MiB, QEMU {}.{}.{}, accel {:?}; iperf3 server on 127.0.0.1:{port}; {rounds} rounds per contender, alternating",
        qemu.version.0,
        qemu.version.1,
        qemu.version.2,
        vfabric_tests::qemu::accel(),
    );
    let mut results = Vec::new();
    let all = [Contender::Vfabric, Contender::Slirp, Contender::Passt];
    for r in 0..rounds {
        for who in all {
            let res = round(who, &qemu, port)?;
            println!(
                "round {r} {:<8} guest->host {:>6.3} Gbit/s   host->guest {:>6.3} Gbit/s",
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
    println!();
    println!(
        "| median TCP Gbit/s | vfabric NAT | QEMU user (slirp) | passt | vfabric/slirp | vfabric/passt |"
    );
    println!(
        "|-------------------|-------------|-------------------|-------|---------------|---------------|"
    );
    for (label, f) in [
        (
            "guest -> host    ",
            (|r: &Round| r.up_gbps) as fn(&Round) -> f64,
        ),
        ("host -> guest    ", |r: &Round| r.down_gbps),
    ] {
        let (v, s, p) = (
            pick(Contender::Vfabric, f),
            pick(Contender::Slirp, f),
            pick(Contender::Passt, f),
        );
        println!(
            "| {label} | {v:>11.3} | {s:>17.3} | {p:>5.3} | {:>13.2} | {:>13.2} |",
            v / s,
            v / p
        );
    }
    Ok(())
}
