//! One host's share of a topology that spans several: which host this is (`choose_host`),
//! and the topology it serves (`localize`): its own ports and disks, every switch kept (so
//! a reload that moves a port between hosts changes ports, not switches), and on every
//! switch that has ports on this host and on others, a mesh port: a VXLAN (or GENEVE)
//! tunnel to exactly those other hosts, with the switch's VNIs.

use std::net::IpAddr;

use super::{PortConfig, PortKind, Topology, VxlanConfig};
use crate::core::PortPolicy;

/// The name of a switch's mesh port.
pub fn mesh_port_name(switch: &str) -> String {
    format!("mesh-{switch}")
}

/// The host this machine is in `topo`: the one named (`--host`), else the only host whose
/// address is one of `local` (this machine's addresses). `None` for a topology without
/// hosts. The error says what to do.
pub fn choose_host(
    topo: &Topology,
    named: Option<&str>,
    local: &[IpAddr],
) -> Result<Option<String>, String> {
    let hosts = &topo.hosts.list;
    let names = || {
        hosts
            .iter()
            .map(|h| format!("{} ({})", h.name, h.address))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match named {
        Some(n) if hosts.is_empty() => Err(format!(
            "--host {n}: the topology has no [[host]] tables (it is served whole)"
        )),
        Some(n) if hosts.iter().any(|h| h.name == n) => Ok(Some(n.to_string())),
        Some(n) => Err(format!("--host {n}: no such host (hosts: {})", names())),
        None if hosts.is_empty() => Ok(None),
        None => {
            let here: Vec<_> = hosts
                .iter()
                .filter(|h| local.contains(&h.address))
                .collect();
            match here.as_slice() {
                [h] => Ok(Some(h.name.clone())),
                [] => Err(format!(
                    "the topology spans hosts and none of their addresses is on this machine: name this one with --host (hosts: {})",
                    names()
                )),
                _ => Err(format!(
                    "several hosts' addresses are on this machine: name this one with --host (hosts: {})",
                    names()
                )),
            }
        }
    }
}

/// This machine's addresses (every interface's), for `choose_host`.
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let sa = a.address?;
            if let Some(v4) = sa.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// `topo` as host `host` serves it (a topology without hosts is returned as it is).
pub fn localize(topo: &Topology, host: &str) -> Topology {
    let hosts = &topo.hosts;
    if hosts.list.is_empty() {
        return topo.clone();
    }
    let on = |name: &str| hosts.placement.get(name).map(String::as_str);
    let address = |h: &str| hosts.list.iter().find(|o| o.name == h).map(|o| o.address);
    let mut out = topo.clone();
    for sw in &mut out.switches {
        // The hosts with ports on this switch, in [[host]] order.
        let spans: Vec<&str> = (hosts.list.iter().map(|h| h.name.as_str()))
            .filter(|h| sw.ports.iter().any(|p| on(&p.name) == Some(*h)))
            .collect();
        sw.ports.retain(|p| on(&p.name) == Some(host));
        let (Some(local), true) = (address(host), spans.contains(&host) && spans.len() > 1) else {
            continue;
        };
        let vnis = hosts.vnis.get(&sw.name).cloned().unwrap_or_default();
        sw.ports.push(PortConfig {
            name: mesh_port_name(&sw.name),
            kind: PortKind::Vxlan(VxlanConfig {
                encap: hosts.mesh.encap,
                vni: vnis.vni,
                local,
                remote: spans
                    .iter()
                    .filter(|h| **h != host)
                    .filter_map(|h| address(h))
                    .collect(),
                group: None,
                port: hosts.mesh.port,
                vlan_vnis: vnis.vlans,
            }),
            static_macs: Vec::new(),
            // A trunk of every VLAN: the switch's segments cross as they are.
            policy: PortPolicy::default(),
        });
    }
    out.disks.retain(|d| on(&d.name) == Some(host));
    out.hosts.local = Some(host.to_string());
    out
}
