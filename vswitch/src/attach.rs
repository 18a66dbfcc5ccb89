//! How a VMM attaches to a port or disk: the QEMU arguments, the libvirt domain XML and the
//! cloud-hypervisor arguments, as `vfabric run` prints them once ready and as
//! `vfabric ctl attach NAME --as ...` answers them for one port or disk at any time.
//!
//! Invariants: the QEMU arguments are the ones the VM tests use (reconnect-ms=100 for a
//! socket vfabric listens on, server=on for one it dials; shared memory; one vector per
//! queue plus two), the libvirt XML the one the libvirt test defines; every vhost-user device
//! needs the guest's memory shared (`-object memory-backend-memfd,share=on`, libvirt's
//! `<memoryBacking>`, cloud-hypervisor's `shared=on`).

use std::fmt::Write as _;
use std::path::Path;

use crate::topology::{
    DiskConfig, DiskFormat, PortConfig, PortKind, SwitchConfig, TapConfig, Topology, VhostUserNet,
    VxlanConfig,
};

/// The VMMs (and VMM front ends) an attach snippet is written for (`--as` of `ctl attach`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Vmm {
    Qemu,
    Libvirt,
    CloudHypervisor,
}

impl Vmm {
    /// The name on the command line and in the control protocol.
    pub fn name(self) -> &'static str {
        match self {
            Vmm::Qemu => "qemu",
            Vmm::Libvirt => "libvirt",
            Vmm::CloudHypervisor => "cloud-hypervisor",
        }
    }

    pub fn parse(s: &str) -> Option<Vmm> {
        [Vmm::Qemu, Vmm::Libvirt, Vmm::CloudHypervisor]
            .into_iter()
            .find(|v| v.name() == s)
    }
}

/// What a libvirt domain needs once, for any vhost-user device: its memory shared with
/// vfabric (memfd, libvirt 4.10 or later; no NUMA cell needed with libvirt 6.9 and QEMU 5).
pub const LIBVIRT_MEMORY: &str =
    "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>";

/// `s` escaped for an XML attribute in single quotes.
fn xml_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

fn path_attr(p: &Path) -> String {
    xml_attr(&p.to_string_lossy())
}

/// The QEMU `-chardev` for a vhost-user socket: QEMU listens when vfabric dials it,
/// otherwise it dials back every 100 ms.
fn chardev(id: &str, sock: &Path, vfabric_dials: bool) -> String {
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

/// A VM port's snippet for `vmm`.
pub fn vm_port(p: &PortConfig, v: &VhostUserNet, vmm: Vmm) -> String {
    match vmm {
        Vmm::Qemu => {
            let mq = if v.queues > 1 {
                format!(",mq=on,vectors={}", 2 * v.queues + 2)
            } else {
                String::new()
            };
            let mac = v.mac.map(|m| format!(",mac={m}")).unwrap_or_default();
            format!(
                "-object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem {} -netdev vhost-user,id={n},chardev={n},queues={q} -device virtio-net-pci,netdev={n}{mac}{mq}",
                chardev(&p.name, &v.socket, v.client),
                n = p.name,
                q = v.queues
            )
        }
        Vmm::Libvirt => {
            // libvirt's `mode` is QEMU's side: `client` when vfabric listens (QEMU then
            // reconnects by itself after a vfabric restart), `server` when vfabric dials.
            let mut x = String::from("<interface type='vhostuser'>");
            if let Some(m) = v.mac {
                let _ = write!(x, "<mac address='{m}'/>");
            }
            let _ = write!(
                x,
                "<source type='unix' path='{}' mode='{}'>",
                path_attr(&v.socket),
                if v.client { "server" } else { "client" }
            );
            if !v.client {
                x.push_str("<reconnect enabled='yes' timeout='1'/>");
            }
            x.push_str("</source><model type='virtio'/>");
            if v.queues > 1 {
                let _ = write!(x, "<driver queues='{}'/>", v.queues);
            }
            x.push_str("</interface>");
            x
        }
        Vmm::CloudHypervisor => format!(
            "--memory size=1G,shared=on --net vhost_user=true,socket={},num_queues={}{}",
            v.socket.display(),
            2 * v.queues,
            if v.client {
                ",vhost_mode=server"
            } else {
                ",vhost_mode=client"
            }
        ),
    }
}

/// A disk's snippet for `vmm`; `None` when that VMM cannot attach to it (libvirt's and
/// cloud-hypervisor's vhost-user disks always dial, so a disk vfabric dials has only the
/// QEMU form). `target` is the guest device name libvirt wants (`vdb`, ...).
pub fn disk(d: &DiskConfig, vmm: Vmm, target: &str) -> Option<String> {
    match vmm {
        Vmm::Qemu => Some(format!(
            "{} -device vhost-user-blk-pci,chardev={n},num-queues={q}",
            chardev(&d.name, &d.socket, d.client),
            n = d.name,
            q = d.queues
        )),
        Vmm::Libvirt => (!d.client).then(|| {
            format!(
                "<disk type='vhostuser' device='disk'><driver name='qemu' type='raw' queues='{}'/><source type='unix' path='{}'><reconnect enabled='yes' timeout='1'/></source><target dev='{}' bus='virtio'/></disk>",
                d.queues,
                path_attr(&d.socket),
                xml_attr(target)
            )
        }),
        // cloud-hypervisor's vhost-user disks dial too.
        Vmm::CloudHypervisor => (!d.client).then(|| {
            format!(
                "--memory size=1G,shared=on --disk vhost_user=true,socket={},num_queues={}",
                d.socket.display(),
                d.queues
            )
        }),
    }
}

/// The snippet that attaches `vmm` to the port or disk called `name` of `topo`, with what
/// else the VMM needs (libvirt: the memory backing). An error names what is missing.
pub fn snippet(topo: &Topology, name: &str, vmm: Vmm) -> Result<String, String> {
    let port = topo
        .switches
        .iter()
        .flat_map(|s| s.ports.iter())
        .find(|p| p.name == name);
    if let Some(p) = port {
        let PortKind::VhostUserNet(v) = &p.kind else {
            return Err(format!(
                "port `{name}` is not a VM port (vhost-user-net): no VMM attaches to it"
            ));
        };
        let mut s = vm_port(p, v, vmm);
        if vmm == Vmm::Libvirt {
            s = format!("{s}\n{LIBVIRT_MEMORY}");
        }
        return Ok(s);
    }
    let Some((i, d)) = topo.disks.iter().enumerate().find(|(_, d)| d.name == name) else {
        return Err(format!("no port or disk `{name}`"));
    };
    match disk(d, vmm, &disk_target(i)) {
        Some(s) if vmm == Vmm::Libvirt => Ok(format!("{s}\n{LIBVIRT_MEMORY}")),
        Some(s) => Ok(s),
        None => Err(format!(
            "disk `{name}`: vfabric dials its socket (client = true), and {}'s vhost-user disks only dial too; set client = false to attach it through {}",
            vmm.name(),
            vmm.name()
        )),
    }
}

/// The guest device name suggested for the `i`-th disk: vdb, vdc, ... (vda left to a boot
/// disk), then vdaa, vdab, ... as Linux names them.
pub fn disk_target(i: usize) -> String {
    let n = i + 1;
    if n < 26 {
        format!("vd{}", (b'a' + n as u8) as char)
    } else {
        let (hi, lo) = (n / 26 - 1, n % 26);
        format!(
            "vd{}{}",
            (b'a' + hi as u8) as char,
            (b'a' + lo as u8) as char
        )
    }
}

/// What `vfabric run` prints once ready: every port and disk, how it is served and how to
/// attach to it; then the libvirt memory backing (if anything needs it) and `vfabric ready`.
pub fn ready_text(topo: &Topology) -> String {
    let mut out = String::new();
    let mut vhost = false;
    for sw in &topo.switches {
        for p in &sw.ports {
            match &p.kind {
                PortKind::VhostUserNet(v) => {
                    vhost = true;
                    vm_lines(&mut out, sw, p, v)
                }
                PortKind::Tap(t) => tap(&mut out, sw, p, t),
                PortKind::Nat(n) => nat(&mut out, sw, p, n),
                PortKind::Vxlan(x) => vxlan(&mut out, sw, p, x),
            };
        }
    }
    for (i, d) in topo.disks.iter().enumerate() {
        vhost = true;
        disk_lines(&mut out, d, i);
    }
    if vhost {
        let _ = writeln!(out, "libvirt domains also need: {LIBVIRT_MEMORY}");
    }
    out.push_str("vfabric ready\n");
    out
}

fn vm_lines(out: &mut String, sw: &SwitchConfig, p: &PortConfig, v: &VhostUserNet) {
    let _ = writeln!(
        out,
        "port {} (switch {}): vhost-user-net {} ({}, up to {} queue pairs)",
        p.name,
        sw.name,
        v.socket.display(),
        role(v.client),
        v.queues
    );
    for vmm in [Vmm::Qemu, Vmm::Libvirt, Vmm::CloudHypervisor] {
        let _ = writeln!(out, "  {}: {}", vmm.name(), vm_port(p, v, vmm));
    }
}

fn tap(out: &mut String, sw: &SwitchConfig, p: &PortConfig, t: &TapConfig) {
    let _ = writeln!(
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
    );
}

fn nat(out: &mut String, sw: &SwitchConfig, p: &PortConfig, n: &nat::NatConfig) {
    let _ = writeln!(
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
    );
}

fn vxlan(out: &mut String, sw: &SwitchConfig, p: &PortConfig, x: &VxlanConfig) {
    let _ = writeln!(
        out,
        "port {} (switch {}): {} vni {} from {} port {} to {}",
        p.name,
        sw.name,
        x.encap.type_name(),
        x.vni,
        x.local,
        x.port,
        x.remote
            .iter()
            .map(|r| r.to_string())
            .chain(x.group.map(|g| format!("group {g}")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (vni, local, port) = (x.vni, x.local, x.port);
    let _ = match (x.encap, x.group) {
        (crate::topology::Encap::Vxlan, Some(g)) => writeln!(
            out,
            "  linux peer: ip link add vxlan{vni} type vxlan id {vni} local <peer address> group {g} dev <underlay interface> dstport {port}"
        ),
        (crate::topology::Encap::Geneve, Some(g)) => writeln!(
            out,
            "  linux peer: the Linux geneve device has no multicast group ({g}): give it `remote {local}`"
        ),
        (crate::topology::Encap::Vxlan, None) => writeln!(
            out,
            "  linux peer: ip link add vxlan{vni} type vxlan id {vni} local <peer address> remote {local} dstport {port}"
        ),
        (crate::topology::Encap::Geneve, None) => writeln!(
            out,
            "  linux peer: ip link add geneve{vni} type geneve id {vni} remote {local} dstport {port}"
        ),
    };
}

fn disk_lines(out: &mut String, d: &DiskConfig, i: usize) {
    let _ = writeln!(
        out,
        "disk {}: vhost-user-blk {} ({}, {} queues, {})",
        d.name,
        d.socket.display(),
        role(d.client),
        d.queues,
        if d.format == DiskFormat::Null {
            "null".to_string()
        } else {
            d.path.display().to_string()
        }
    );
    for vmm in [Vmm::Qemu, Vmm::Libvirt, Vmm::CloudHypervisor] {
        if let Some(s) = disk(d, vmm, &disk_target(i)) {
            let _ = writeln!(out, "  {}: {s}", vmm.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_targets_follow_linux_names() {
        assert_eq!(disk_target(0), "vdb");
        assert_eq!(disk_target(24), "vdz");
        assert_eq!(disk_target(25), "vdaa");
        assert_eq!(disk_target(26), "vdab");
    }

    #[test]
    fn xml_attributes_are_escaped() {
        assert_eq!(xml_attr("/a'b&<c>\""), "/a&apos;b&amp;&lt;c&gt;&quot;");
    }
}
