//! What `vfabric run` prints once it is ready: for every port and disk, how it is served
//! and the arguments that attach a VMM to it (QEMU, cloud-hypervisor), or the Linux command
//! that makes a VXLAN peer. Then `vfabric ready`.
//!
//! Invariant: the arguments printed are the ones the VM tests use (reconnect-ms=100 for a
//! socket vfabric listens on, server=on for one it dials; shared memory; one vector per
//! queue plus two).

use std::io::{self, Write};

use vswitch::topology::{
    DiskConfig, DiskFormat, PortConfig, PortKind, SwitchConfig, TapConfig, Topology, VhostUserNet,
    VxlanConfig,
};

/// Prints every port's and disk's attach lines, then `vfabric ready`.
pub fn print_ready(topo: &Topology) {
    let mut out = io::stdout().lock();
    for sw in &topo.switches {
        for p in &sw.ports {
            let _ = match &p.kind {
                PortKind::VhostUserNet(v) => vm(&mut out, sw, p, v),
                PortKind::Tap(t) => tap(&mut out, sw, p, t),
                PortKind::Nat(n) => nat(&mut out, sw, p, n),
                PortKind::Vxlan(x) => vxlan(&mut out, sw, p, x),
            };
        }
    }
    for d in &topo.disks {
        let _ = disk(&mut out, d);
    }
    let _ = writeln!(out, "vfabric ready");
    let _ = out.flush();
}

/// The QEMU `-chardev` for a vhost-user socket: QEMU listens when vfabric dials it,
/// otherwise it dials back every 100 ms.
fn chardev(id: &str, sock: &std::path::Path, vfabric_dials: bool) -> String {
    let sock = sock.display();
    if vfabric_dials {
        format!("-chardev socket,id={id},path={sock},server=on,wait=off")
    } else {
        format!("-chardev socket,id={id},path={sock},reconnect-ms=100")
    }
}

fn role(vfabric_dials: bool) -> &'static str {
    if vfabric_dials {
        "vfabric dials"
    } else {
        "listening"
    }
}

fn vm(out: &mut impl Write, sw: &SwitchConfig, p: &PortConfig, v: &VhostUserNet) -> io::Result<()> {
    let sock = v.socket.display();
    let chardev = chardev(&p.name, &v.socket, v.client);
    let mq = if v.queues > 1 {
        format!(",mq=on,vectors={}", 2 * v.queues + 2)
    } else {
        String::new()
    };
    let mac = v.mac.map(|m| format!(",mac={m}")).unwrap_or_default();
    writeln!(
        out,
        "port {} (switch {}): vhost-user-net {sock} ({}, up to {} queue pairs)",
        p.name,
        sw.name,
        role(v.client),
        v.queues
    )?;
    writeln!(
        out,
        "  qemu: -object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem {chardev} -netdev vhost-user,id={n},chardev={n},queues={q} -device virtio-net-pci,netdev={n}{mac}{mq}",
        n = p.name,
        q = v.queues
    )?;
    writeln!(
        out,
        "  cloud-hypervisor: --memory size=1G,shared=on --net vhost_user=true,socket={sock},num_queues={}{}",
        2 * v.queues,
        if v.client {
            ",vhost_mode=server"
        } else {
            ",vhost_mode=client"
        }
    )
}

fn tap(out: &mut impl Write, sw: &SwitchConfig, p: &PortConfig, t: &TapConfig) -> io::Result<()> {
    writeln!(
        out,
        "port {} (switch {}): tap {}{}{}{} ({} queue{})",
        p.name,
        sw.name,
        t.ifname,
        t.netns
            .as_ref()
            .map(|n| format!(" in namespace {n}"))
            .unwrap_or_default(),
        t.address
            .map(|(a, l)| format!(", address {a}/{l}"))
            .unwrap_or_default(),
        t.bridge
            .as_ref()
            .map(|b| format!(", bridge {b}"))
            .unwrap_or_default(),
        t.queues,
        if t.queues == 1 { "" } else { "s" }
    )
}

fn nat(
    out: &mut impl Write,
    sw: &SwitchConfig,
    p: &PortConfig,
    n: &nat::NatConfig,
) -> io::Result<()> {
    writeln!(
        out,
        "port {} (switch {}): nat {}/{}: gateway {} (also the host's loopback), DNS {} -> {}, DHCP {}-{}{}{}",
        p.name,
        sw.name,
        n.network,
        n.prefix,
        n.gateway,
        n.dns,
        n.dns_upstream,
        n.dhcp_first,
        n.dhcp_last,
        if n.restrict { ", restricted" } else { "" },
        n.forwards
            .iter()
            .map(|f| format!(", forward {:?} {} -> {}", f.proto, f.host, f.guest))
            .collect::<String>()
    )
}

fn vxlan(
    out: &mut impl Write,
    sw: &SwitchConfig,
    p: &PortConfig,
    x: &VxlanConfig,
) -> io::Result<()> {
    writeln!(
        out,
        "port {} (switch {}): vxlan vni {} from {} port {} to {}",
        p.name,
        sw.name,
        x.vni,
        x.local,
        x.port,
        x.remote
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(
        out,
        "  linux peer: ip link add vxlan{vni} type vxlan id {vni} local <peer address> remote {local} dstport {port}",
        vni = x.vni,
        local = x.local,
        port = x.port
    )
}

fn disk(out: &mut impl Write, d: &DiskConfig) -> io::Result<()> {
    let sock = d.socket.display();
    let chardev = chardev(&d.name, &d.socket, d.client);
    writeln!(
        out,
        "disk {}: vhost-user-blk {sock} ({}, {} queues, {})",
        d.name,
        role(d.client),
        d.queues,
        if d.format == DiskFormat::Null {
            "null".to_string()
        } else {
            d.path.display().to_string()
        }
    )?;
    writeln!(
        out,
        "  qemu: {chardev} -device vhost-user-blk-pci,chardev={n},num-queues={q}",
        n = d.name,
        q = d.queues
    )
}
