//! A topology across machines: `[[host]]` (name, underlay address), `[mesh]` (the overlay
//! that joins a switch's hosts), the `host` key that places a port or disk, and each
//! switch's VNIs (`vni`, else derived from its name; `vni_map` for a VNI per VLAN).
//!
//! Invariants: with hosts, every port and disk names one of them; without, none does. Every
//! VNI a mesh uses (switch VNIs and mapped ones) is unique across the file, since every host
//! receives all of its switches' VNIs on one UDP port.

use std::collections::HashMap;
use std::net::IpAddr;

use toml::Spanned;

use super::checks::check_name;
use super::error::Ctx;
use super::parse::{RawHost, RawMesh, RawSwitch};
use super::{Encap, HostConfig, MeshConfig, SwitchVni};

/// Every `[[host]]`: names unique, addresses unicast, unique and of one family.
pub(super) fn parse_hosts(cx: &mut Ctx<'_>, raw: &[Spanned<RawHost>]) -> Vec<HostConfig> {
    let mut hosts: Vec<HostConfig> = Vec::new();
    for h in raw {
        let h = h.get_ref();
        let name = h.name.get_ref().clone();
        let here = format!("host \"{name}\"");
        check_name(cx, &h.name, &here);
        if hosts.iter().any(|o| o.name == name) {
            cx.error(
                h.name.span(),
                format!("{here}: name"),
                "duplicate host name",
            );
        }
        let Some(a) = &h.address else {
            cx.error(
                h.name.span(),
                format!("{here}: address"),
                "missing (a host needs `address = \"192.0.2.1\"`, its underlay address)",
            );
            continue;
        };
        let address = match a.get_ref().parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() && !ip.is_loopback() => ip,
            _ => {
                cx.error(
                    a.span(),
                    format!("{here}: address"),
                    format!(
                        "`{}` is not a unicast, non-loopback address (like \"192.0.2.1\")",
                        a.get_ref()
                    ),
                );
                continue;
            }
        };
        if let Some(o) = hosts.iter().find(|o| o.address == address) {
            cx.error(
                a.span(),
                format!("{here}: address"),
                format!("{address} is already the address of host \"{}\"", o.name),
            );
        } else if let Some(o) = hosts
            .iter()
            .find(|o| o.address.is_ipv4() != address.is_ipv4())
        {
            cx.error(
                a.span(),
                format!("{here}: address"),
                format!(
                    "{address} is not of the same family as host \"{}\"'s {} (one underlay)",
                    o.name, o.address
                ),
            );
        }
        hosts.push(HostConfig { name, address });
    }
    hosts
}

/// `[mesh]`: `type` (vxlan or geneve) and `port` (the type's IANA port by default).
pub(super) fn parse_mesh(
    cx: &mut Ctx<'_>,
    raw: &Option<Spanned<RawMesh>>,
    has_hosts: bool,
) -> MeshConfig {
    let Some(m) = raw else {
        return MeshConfig::default();
    };
    if !has_hosts {
        cx.error(
            m.span(),
            "mesh",
            "a mesh joins hosts: declare them with [[host]] tables first",
        );
    }
    let m = m.get_ref();
    let encap = match m.kind.as_ref().map(|k| k.get_ref().as_str()) {
        None | Some("vxlan") => Encap::Vxlan,
        Some("geneve") => Encap::Geneve,
        Some(other) => {
            let span = m.kind.as_ref().map(|k| k.span()).unwrap_or(0..0);
            cx.error(
                span,
                "mesh: type",
                format!("unknown overlay `{other}` (vxlan or geneve)"),
            );
            Encap::Vxlan
        }
    };
    let port = match &m.port {
        None => encap.default_port(),
        Some(p) if (1..=65535).contains(p.get_ref()) => *p.get_ref() as u16,
        Some(p) => {
            cx.error(
                p.span(),
                "mesh: port",
                format!("{}: a UDP port is 1-65535", p.get_ref()),
            );
            encap.default_port()
        }
    };
    MeshConfig { encap, port }
}

/// The host a port or disk runs on (`host` key): required with hosts, refused without.
pub(super) fn placement(
    cx: &mut Ctx<'_>,
    key: &Option<Spanned<String>>,
    name: &Spanned<String>,
    hosts: &[HostConfig],
    here: &str,
) -> Option<String> {
    match key {
        None if hosts.is_empty() => None,
        None => {
            cx.error(
                name.span(),
                format!("{here}: host"),
                format!(
                    "missing (the topology has [[host]] tables: say which one serves it, like `host = \"{}\"`)",
                    hosts[0].name
                ),
            );
            None
        }
        Some(h) if hosts.is_empty() => {
            cx.error(
                h.span(),
                format!("{here}: host"),
                format!(
                    "no [[host]] named \"{}\" (the topology has none)",
                    h.get_ref()
                ),
            );
            None
        }
        Some(h) if hosts.iter().any(|o| &o.name == h.get_ref()) => Some(h.get_ref().clone()),
        Some(h) => {
            let names: Vec<&str> = hosts.iter().map(|o| o.name.as_str()).collect();
            cx.error(
                h.span(),
                format!("{here}: host"),
                format!(
                    "no [[host]] named \"{}\" (hosts: {})",
                    h.get_ref(),
                    names.join(", ")
                ),
            );
            None
        }
    }
}

/// The VNI of a switch that names none: from its name (FNV-1a folded to 24 bits, never 0),
/// so every host derives the same one.
pub fn derived_vni(switch: &str) -> u32 {
    let h = switch.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let v = (h >> 24 ^ h) & 0x00ff_ffff;
    if v == 0 { 1 } else { v }
}

/// A VNI in the overlay: where it was written (or derived) and who has it.
pub(super) struct VniClaims(HashMap<u32, String>);

impl VniClaims {
    pub(super) fn new() -> VniClaims {
        VniClaims(HashMap::new())
    }

    fn claim(
        &mut self,
        cx: &mut Ctx<'_>,
        vni: u32,
        span: std::ops::Range<usize>,
        field: &str,
        who: String,
    ) {
        if let Some(other) = self.0.insert(vni, who) {
            cx.error(
                span,
                field,
                format!(
                    "VNI {vni} is already {other} (every VNI of the meshes is unique; set `vni`)"
                ),
            );
        }
    }
}

/// A switch's `vni` and `vni_map` (only with hosts), its VNIs claimed in `claims`.
pub(super) fn switch_vnis(
    cx: &mut Ctx<'_>,
    sw: &RawSwitch,
    here: &str,
    has_hosts: bool,
    claims: &mut VniClaims,
) -> SwitchVni {
    let name = sw.name.get_ref();
    if !has_hosts {
        for (key, span) in [
            ("vni", sw.vni.as_ref().map(|v| v.span())),
            ("vni_map", sw.vni_map.as_ref().map(|v| v.span())),
        ] {
            if let Some(span) = span {
                cx.error(
                    span,
                    format!("{here}: {key}"),
                    "a switch's VNIs are for the mesh between hosts: declare them with [[host]] tables",
                );
            }
        }
        return SwitchVni::default();
    }
    let vni = match &sw.vni {
        Some(v) if (1..1 << 24).contains(v.get_ref()) => {
            let vni = *v.get_ref() as u32;
            let who = format!("switch \"{name}\"'s");
            claims.claim(cx, vni, v.span(), &format!("{here}: vni"), who);
            vni
        }
        Some(v) => {
            cx.error(
                v.span(),
                format!("{here}: vni"),
                format!("{}: a VNI is 1-16777215", v.get_ref()),
            );
            0
        }
        None => {
            let vni = derived_vni(name);
            let who = format!("switch \"{name}\"'s (derived from its name)");
            claims.claim(cx, vni, sw.name.span(), &format!("{here}: vni"), who);
            vni
        }
    };
    let mut vlans = Vec::new();
    if let Some(map) = &sw.vni_map {
        for (vlan, v) in map.get_ref() {
            let field = format!("{here}: vni_map");
            let Some(vlan) = vlan.parse::<u16>().ok().filter(|n| (1..=4094).contains(n)) else {
                cx.error(
                    v.span(),
                    field,
                    format!("`{vlan}` is not a VLAN id (1-4094)"),
                );
                continue;
            };
            if !(1..1 << 24).contains(v.get_ref()) {
                cx.error(
                    v.span(),
                    field,
                    format!("{}: a VNI is 1-16777215", v.get_ref()),
                );
                continue;
            }
            let vni = *v.get_ref() as u32;
            claims.claim(
                cx,
                vni,
                v.span(),
                &field,
                format!("VLAN {vlan}'s of switch \"{name}\""),
            );
            vlans.push((vlan, vni));
        }
        vlans.sort_unstable();
    }
    SwitchVni { vni, vlans }
}
