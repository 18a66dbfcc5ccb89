//! `vfabric ctl port add`: a port from KEY=VALUE words, checked exactly as in a file (the
//! words become a one-port topology text), then against the running topology: its name,
//! socket, TAP name, VXLAN endpoint, NAT subnet and forwards, and static addresses must not
//! be taken.

use std::path::Path;

use super::checks::subnets_overlap;
use super::file::parse_checked;
use super::{PortConfig, PortKind, Topology};

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
