//! What crossing hosts costs: ping RTT and iperf3 TCP between two guests on one switch of one
//! vfabric, next to the same two guests on one switch that spans two hosts (two vfabrics,
//! each in a network namespace of its own joined by a veth pair, built from one topology
//! with `[[host]]` tables: the guests' frames cross the VXLAN mesh). Both contenders give
//! the guests an MTU of 1450 (what fits the tunnel on a 1500-byte underlay), so only the
//! tunnel differs. Rounds alternate; prints medians and ratios. Traffic stays between the
//! guests and in the namespaces the benchmark creates.
//!
//! Usage: bench-tunnel [ROUNDS] (default 3); `benches/tunnel.sh` builds release first.

use std::path::Path;

use anyhow::Result;
use vfabric_tests::fabric::{Fabric, PortSpec};
use vfabric_tests::lab::BOOT;
use vfabric_tests::median;
use vfabric_tests::netns::Netns;
use vfabric_tests::qemu::{NetDev, Qemu, Vm, VmConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contender {
    OneHost,
    TwoHosts,
}

struct Round {
    who: Contender,
    rtt_ms: f64,
    gbps: f64,
}

fn guest(name: &str, i: usize, socket: &Path, qemu: &Qemu, dir: &Path) -> Result<Vm> {
    let mut cfg = VmConfig::new(name, qemu.clone());
    cfg.nics.push(NetDev {
        socket: socket.to_path_buf(),
        mac: format!("52:54:00:00:00:{i:02x}"),
        queues: 1,
        qemu_is_server: false,
        packed: false,
    });
    cfg.ips.push(("eth0".into(), format!("10.0.0.{i}/24")));
    cfg.extra_cmdline = "vf.mtu=eth0:1450".into();
    Vm::start(cfg, &dir.join(name))
}

/// Two namespaces joined by a veth pair (192.168.79.1 and .2), and the two vfabrics serving
/// hosts a and b of one topology file: vm1 on a, vm2 on b.
fn two_hosts(dir: &Path) -> Result<(Vec<Netns>, Vec<Fabric>)> {
    let a = Netns::new("tna")?;
    let b = Netns::new("tnb")?;
    a.exec(&[
        "ip",
        "link",
        "add",
        "tna0",
        "type",
        "veth",
        "peer",
        "name",
        "tnb0",
        "netns",
        b.name(),
    ])?;
    a.sh("ip addr add 192.168.79.1/24 dev tna0 && ip link set tna0 up")?;
    b.sh("ip addr add 192.168.79.2/24 dev tnb0 && ip link set tnb0 up")?;
    let file = dir.join("lab.toml");
    let mut t = String::from(
        "[[host]]\nname = \"a\"\naddress = \"192.168.79.1\"\n[[host]]\nname = \"b\"\naddress = \"192.168.79.2\"\n[[switch]]\nname = \"lab\"\n",
    );
    for (vm, host) in [("vm1", "a"), ("vm2", "b")] {
        t += &format!(
            "[[switch.port]]\nname = \"{vm}\"\nhost = \"{host}\"\ntype = \"vhost-user-net\"\nsocket = \"{vm}.sock\"\nqueues = 1\n"
        );
    }
    std::fs::write(&file, t)?;
    let fa = Fabric::start_host(&file, "a", true, a.name(), &["vm1", "mesh-lab"])?;
    let fb = Fabric::start_host(&file, "b", true, b.name(), &["vm2", "mesh-lab"])?;
    Ok((vec![a, b], vec![fa, fb]))
}

fn round(who: Contender, qemu: &Qemu) -> Result<Round> {
    let dir = tempfile::Builder::new().prefix("vfb").tempdir_in("/tmp")?;
    let (_namespaces, _fabrics) = match who {
        Contender::OneHost => {
            let spec = |n: &str| PortSpec {
                name: n.into(),
                extra: "queues = 1".into(),
            };
            let f = Fabric::start(dir.path(), &[spec("vm1"), spec("vm2")])?;
            (Vec::new(), vec![f])
        }
        Contender::TwoHosts => two_hosts(dir.path())?,
    };
    let sock = |n: &str| dir.path().join(format!("{n}.sock"));
    let mut a = guest("vm1", 1, &sock("vm1"), qemu, dir.path())?;
    let mut b = guest("vm2", 2, &sock("vm2"), qemu, dir.path())?;
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
        "guests: 1 vCPU, 256 MiB, MTU 1450, QEMU {}.{}.{}, accel {:?}; {rounds} rounds per contender, alternating",
        qemu.version.0,
        qemu.version.1,
        qemu.version.2,
        vfabric_tests::qemu::accel()
    );
    let mut results = Vec::new();
    for r in 0..rounds {
        for who in [Contender::OneHost, Contender::TwoHosts] {
            let res = round(who, &qemu)?;
            println!(
                "round {r} {:<9} ping avg {:>7.3} ms   iperf3 {:>6.3} Gbit/s",
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
    let (r1, r2) = (
        pick(Contender::OneHost, |r| r.rtt_ms),
        pick(Contender::TwoHosts, |r| r.rtt_ms),
    );
    let (g1, g2) = (
        pick(Contender::OneHost, |r| r.gbps),
        pick(Contender::TwoHosts, |r| r.gbps),
    );
    println!();
    println!("| median            | one host | two hosts (VXLAN mesh) | two/one |");
    println!("|-------------------|----------|------------------------|---------|");
    println!(
        "| ping RTT (ms)     | {r1:>8.3} | {r2:>22.3} | {:>7.2} |",
        r2 / r1
    );
    println!(
        "| iperf3 TCP Gbit/s | {g1:>8.3} | {g2:>22.3} | {:>7.2} |",
        g2 / g1
    );
    Ok(())
}
