//! Checks that span the file: names (their syntax and uniqueness), unicast MACs, overlapping
//! subnets, and the cross-checks of a port added at run time (`ctl port add`) against the
//! running topology: names, sockets, TAP names, VXLAN endpoints, NAT subnets and forwards,
//! static addresses must stay unique.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::Ctx;
use super::{PortConfig, PortKind, Topology, parse_checked};
use crate::core::MacAddr;

/// Names are 1-32 characters of a-z, A-Z, 0-9, '-', '_' and '.'.
pub(super) fn check_name(cx: &mut Ctx<'_>, name: &Spanned<String>, here: &str) {
    let s = name.get_ref();
    let ok = (1..=32).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        cx.error(
            name.span(),
            format!("{here}: name"),
            "names are 1-32 characters of a-z, A-Z, 0-9, '-', '_' and '.'",
        );
    }
}

pub(super) fn unicast_mac(cx: &mut Ctx<'_>, m: &Spanned<String>, field: &str) -> Option<MacAddr> {
    match m.get_ref().parse::<MacAddr>() {
        Ok(mac) if mac.is_valid_source() => Some(mac),
        Ok(mac) => {
            cx.error(
                m.span(),
                field,
                format!("{mac} is a group or zero address; a port's address must be unicast"),
            );
            None
        }
        Err(e) => {
            cx.error(m.span(), field, e.to_string());
            None
        }
    }
}

/// Whether two IPv4 subnets (network, prefix length) share an address.
pub(super) fn subnets_overlap(a: (std::net::Ipv4Addr, u8), b: (std::net::Ipv4Addr, u8)) -> bool {
    let range = |(net, len): (std::net::Ipv4Addr, u8)| {
        let start = u64::from(u32::from(net));
        (start, start + (1u64 << (32 - u32::from(len))))
    };
    let ((a0, a1), (b0, b1)) = (range(a), range(b));
    a0 < b1 && b0 < a1
}

/// A port for `vfabric ctl port add`: `keys` are `KEY=VALUE` with the topology file's keys
/// and syntax (strings may be left unquoted), checked as in a file, and against `topo`, the
/// running topology read from `file` (names, sockets, TAP names, VXLAN endpoints, static
/// addresses must stay unique).
pub fn port_from_keys(
    file: &Path,
    topo: &Topology,
    switch: &str,
    name: &str,
    keys: &[&str],
) -> Result<PortConfig, String> {
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut text = format!(
        "[[switch]]\nname = {}\n[[switch.port]]\nname = {}\n",
        quote(switch),
        quote(name)
    );
    for kv in keys {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("`{kv}`: expected KEY=VALUE (like type=vhost-user-net)"))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{kv}`: `{k}` is not a key"));
        }
        // Numbers, booleans, arrays and quoted strings as written; anything else a string.
        let raw = v.parse::<i64>().is_ok()
            || v == "true"
            || v == "false"
            || v.starts_with('[')
            || v.starts_with('"');
        text += &format!("{k} = {}\n", if raw { v.to_string() } else { quote(v) });
    }
    let parsed = parse_checked(file, &text, true).map_err(|e| {
        e.0.iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let port = parsed
        .switches
        .into_iter()
        .next()
        .and_then(|s| s.ports.into_iter().next())
        .ok_or("no port")?;
    check_against(topo, switch, name, &port)?;
    Ok(port)
}

/// A port about to be added to `switch` of the running `topo`: its name, socket, TAP name,
/// VXLAN endpoint, NAT subnet and forwards, and static addresses must not be taken.
fn check_against(
    topo: &Topology,
    switch: &str,
    name: &str,
    port: &PortConfig,
) -> Result<(), String> {
    let here = format!("switch \"{switch}\" port \"{name}\"");
    let all_ports = || topo.switches.iter().flat_map(|s| s.ports.iter());
    if all_ports().any(|p| p.name == name) || topo.disks.iter().any(|d| d.name == name) {
        return Err(format!("{here}: name: a port or disk of that name exists"));
    }
    match &port.kind {
        PortKind::VhostUserNet(v) => {
            let taken = all_ports().find_map(|p| match &p.kind {
                PortKind::VhostUserNet(o) if o.socket == v.socket => Some(p.name.clone()),
                _ => None,
            });
            let taken = taken
                .or_else(|| {
                    topo.disks
                        .iter()
                        .find(|d| d.socket == v.socket)
                        .map(|d| d.name.clone())
                })
                .or_else(|| {
                    (topo.control.socket.as_ref() == Some(&v.socket)).then(|| "control".into())
                });
            if let Some(other) = taken {
                return Err(format!(
                    "{here}: socket: {} is already the socket of \"{other}\"",
                    v.socket.display()
                ));
            }
        }
        PortKind::Tap(t) => {
            if let Some(other) = all_ports().find(|p| {
                matches!(&p.kind, PortKind::Tap(o) if o.ifname == t.ifname && o.netns == t.netns)
            }) {
                return Err(format!(
                    "{here}: ifname: {} is already the TAP of port \"{}\"",
                    t.ifname, other.name
                ));
            }
        }
        PortKind::Nat(n) => {
            for other in all_ports() {
                if let PortKind::Nat(o) = &other.kind {
                    if subnets_overlap((n.network, n.prefix), (o.network, o.prefix)) {
                        return Err(format!(
                            "{here}: subnet: {}/{} overlaps {}/{} of port \"{}\"",
                            n.network, n.prefix, o.network, o.prefix, other.name
                        ));
                    }
                    if let Some(f) = n.forwards.iter().find(|f| {
                        o.forwards
                            .iter()
                            .any(|g| g.host == f.host && g.proto == f.proto)
                    }) {
                        return Err(format!(
                            "{here}: forward: {} is already forwarded by port \"{}\"",
                            f.host, other.name
                        ));
                    }
                }
            }
        }
        PortKind::Vxlan(x) => {
            if let Some(other) = all_ports().find(
                |p| matches!(&p.kind, PortKind::Vxlan(o) if o.local == x.local && o.port == x.port),
            ) {
                return Err(format!(
                    "{here}: local: {} port {} is already the endpoint of port \"{}\"",
                    x.local, x.port, other.name
                ));
            }
        }
    }
    if let Some(sw) = topo.switches.iter().find(|s| s.name == switch) {
        for m in &port.static_macs {
            if let Some(other) = sw.ports.iter().find(|p| p.static_macs.contains(m)) {
                return Err(format!(
                    "{here}: static_macs: {m} is already static on port \"{}\"",
                    other.name
                ));
            }
        }
    }
    Ok(())
}

/// What must be unique across the file, each with who has it: switch names; port and disk
/// names (one namespace); socket paths (ports, disks, the control socket); host resources
/// (TAP names per namespace, VXLAN endpoints, NAT port forwards); NAT subnets.
#[derive(Default)]
pub(super) struct Taken {
    pub(super) switches: HashMap<String, usize>,
    pub(super) names: HashMap<String, String>,
    pub(super) sockets: HashMap<PathBuf, String>,
    pub(super) host: HashMap<String, String>,
    pub(super) subnets: Vec<(std::net::Ipv4Addr, u8, String)>,
}

/// A `socket` key: required (`missing` says how to write it), relative to `sock_base`, and
/// unique: the port or disk `name` takes it, and a second claim is an error naming the first
/// owner (`of`: how to call it, "port " or "").
#[allow(clippy::too_many_arguments)]
pub(super) fn unique_socket(
    cx: &mut Ctx<'_>,
    socket: &Option<Spanned<String>>,
    name: &Spanned<String>,
    here: &str,
    sock_base: &Path,
    sockets: &mut HashMap<PathBuf, String>,
    of: &str,
    missing: &str,
) -> PathBuf {
    match socket {
        Some(s) if !s.get_ref().is_empty() => {
            let path = sock_base.join(s.get_ref());
            if let Some(other) = sockets.insert(path.clone(), name.get_ref().clone()) {
                cx.error(
                    s.span(),
                    format!("{here}: socket"),
                    format!(
                        "{} is already the socket of {of}\"{other}\"",
                        path.display()
                    ),
                );
            }
            path
        }
        Some(s) => {
            cx.error(s.span(), format!("{here}: socket"), "empty socket path");
            PathBuf::new()
        }
        None => {
            cx.error(name.span(), format!("{here}: socket"), missing);
            PathBuf::new()
        }
    }
}
