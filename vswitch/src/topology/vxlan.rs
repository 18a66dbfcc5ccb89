//! VXLAN and GENEVE ports: the VNI, the local endpoint (unique per address and UDP port), the
//! peer VTEPs (unicast, of the local address's family, each once).

use std::collections::HashMap;

use super::error::Ctx;
use super::parse::RawPort;
use super::{Encap, VxlanConfig};

/// The VXLAN (or GENEVE: `encap`) keys of `p`.
pub(super) fn vxlan_port(
    cx: &mut Ctx<'_>,
    p: &RawPort,
    here: &str,
    host_names: &mut HashMap<String, String>,
    encap: Encap,
) -> VxlanConfig {
    let kind = encap.type_name();
    let vni = match &p.vni {
        Some(v) if (0..1 << 24).contains(v.get_ref()) => *v.get_ref() as u32,
        Some(v) => {
            cx.error(
                v.span(),
                format!("{here}: vni"),
                format!("{}: a VNI is 0-16777215", v.get_ref()),
            );
            0
        }
        None => {
            cx.error(
                p.name.span(),
                format!("{here}: vni"),
                format!("missing (a {kind} port needs `vni = 100`)"),
            );
            0
        }
    };
    let unspecified = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    let local = match &p.local {
        Some(l) => match l.get_ref().parse::<std::net::IpAddr>() {
            Ok(a) if !a.is_unspecified() && !a.is_multicast() => a,
            _ => {
                cx.error(
                    l.span(),
                    format!("{here}: local"),
                    format!(
                        "`{}` is not a unicast address of this host (like \"192.0.2.1\")",
                        l.get_ref()
                    ),
                );
                unspecified
            }
        },
        None => {
            cx.error(
                p.name.span(),
                format!("{here}: local"),
                format!("missing (a {kind} port needs `local = \"192.0.2.1\"`, the address its UDP socket binds)"),
            );
            unspecified
        }
    };
    let port = match &p.port {
        None => encap.default_port(),
        Some(v) if (1..=65535).contains(v.get_ref()) => *v.get_ref() as u16,
        Some(v) => {
            cx.error(
                v.span(),
                format!("{here}: port"),
                format!("{}: a UDP port is 1-65535", v.get_ref()),
            );
            encap.default_port()
        }
    };
    if !local.is_unspecified() {
        // VXLAN and GENEVE ports share the UDP port space.
        let key = format!("udp tunnel {}", std::net::SocketAddr::new(local, port));
        if let Some(other) = host_names.insert(key, p.name.get_ref().clone()) {
            let span = p.local.as_ref().map(|l| l.span()).unwrap_or(0..0);
            cx.error(
                span,
                format!("{here}: local"),
                format!(
                    "{local} port {port} is already the endpoint of port \"{other}\" (one VXLAN or GENEVE port per local address and UDP port)"
                ),
            );
        }
    }
    let group = tunnel_group(cx, p, here, local);
    if let Some(g) = group {
        // The group's socket binds group:port: one tunnel port per group and UDP port.
        let key = format!("udp group {}", std::net::SocketAddr::new(g, port));
        if let Some(other) = host_names.insert(key, p.name.get_ref().clone()) {
            let span = p.group.as_ref().map(|g| g.span()).unwrap_or(0..0);
            cx.error(
                span,
                format!("{here}: group"),
                format!(
                    "{g} port {port} is already the group of port \"{other}\" (one tunnel port per multicast group and UDP port)"
                ),
            );
        }
    }
    let remote = remotes(cx, p, here, local, kind);
    VxlanConfig {
        encap,
        vni,
        local,
        remote,
        group,
        port,
        vlan_vnis: Vec::new(),
    }
}

/// The multicast underlay group of `p` (`group`), if any: IPv4, like `local`.
fn tunnel_group(
    cx: &mut Ctx<'_>,
    p: &RawPort,
    here: &str,
    local: std::net::IpAddr,
) -> Option<std::net::IpAddr> {
    match &p.group {
        None => None,
        Some(g) => match g.get_ref().parse::<std::net::IpAddr>() {
            Ok(a @ std::net::IpAddr::V4(v4)) if v4.is_multicast() && local.is_ipv4() => Some(a),
            Ok(a) if a.is_multicast() => {
                cx.error(
                    g.span(),
                    format!("{here}: group"),
                    format!("{a}: multicast underlays are IPv4 for now (local too)"),
                );
                None
            }
            _ => {
                cx.error(
                    g.span(),
                    format!("{here}: group"),
                    format!(
                        "`{}` is not a multicast group (like \"239.1.1.1\")",
                        g.get_ref()
                    ),
                );
                None
            }
        },
    }
}

/// The static remote VTEPs of `p` (`remote`): unicast, of `local`'s family, each once;
/// required unless the port has a multicast `group`.
fn remotes(
    cx: &mut Ctx<'_>,
    p: &RawPort,
    here: &str,
    local: std::net::IpAddr,
    kind: &str,
) -> Vec<std::net::IpAddr> {
    let mut remote = Vec::new();
    match &p.remote {
        None if p.group.is_some() => {}
        None => cx.error(
            p.name.span(),
            format!("{here}: remote"),
            format!(
                "missing (a {kind} port needs `remote = [\"192.0.2.2\"]`, its peer VTEPs, or a multicast `group`)"
            ),
        ),
        Some(list) if list.get_ref().is_empty() && p.group.is_none() => cx.error(
            list.span(),
            format!("{here}: remote"),
            "empty: name at least one peer VTEP (or a multicast `group`)",
        ),
        Some(list) => {
            for r in list.get_ref() {
                match r.get_ref().parse::<std::net::IpAddr>() {
                    Ok(a) if a.is_unspecified() || a.is_multicast() => cx.error(
                        r.span(),
                        format!("{here}: remote"),
                        format!("{a} is not a unicast address"),
                    ),
                    Ok(a) if a.is_ipv4() != local.is_ipv4() => cx.error(
                        r.span(),
                        format!("{here}: remote"),
                        format!("{a} is not of the same family as local {local}"),
                    ),
                    Ok(a) if a == local => cx.error(
                        r.span(),
                        format!("{here}: remote"),
                        format!("{a} is the local address"),
                    ),
                    Ok(a) if remote.contains(&a) => cx.error(
                        r.span(),
                        format!("{here}: remote"),
                        format!("{a} is listed twice"),
                    ),
                    Ok(a) => remote.push(a),
                    Err(_) => cx.error(
                        r.span(),
                        format!("{here}: remote"),
                        format!("`{}` is not an IP address", r.get_ref()),
                    ),
                }
            }
        }
    }
    remote
}
