//! Reading a topology file: the TOML parsed into raw tables, then every switch, port, disk,
//! the control socket and the metrics address checked in file order, with one registry of
//! what must stay unique (`checks::Taken`).
//!
//! Invariant: every error is collected (none stops the others) and a `Topology` is returned
//! only when there is none.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::checks::{Taken, check_name, unicast_mac};
use super::disk::parse_disks;
use super::error::{ConfigError, ConfigErrors, Ctx};
use super::hosts::{VniClaims, parse_hosts, parse_mesh, placement, switch_vnis};
use super::nat::nat_port;
use super::parse::{PORT_KEYS, RawControl, RawPort, RawSwitch, RawTopology, parse_duration};
use super::tap::tap_port;
use super::vlan_keys::port_policy;
use super::vm::{socket_perms, vhost_port};
use super::vxlan::vxlan_port;
use super::{
    ControlConfig, HostConfig, Hosts, PortConfig, PortKind, SocketPerms, SwitchConfig, Topology,
};
use crate::core::MacAddr;

/// Reads and validates a topology file.
pub fn load(path: &Path) -> Result<Topology, ConfigErrors> {
    load_for(path, None)
}

/// `load` for host `host` of a topology that spans hosts: the images checked are its
/// disks' (and those of disks placed on no host).
pub fn load_for(path: &Path, host: Option<&str>) -> Result<Topology, ConfigErrors> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            field: "file".into(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse_inner(path, &src, true, host)
}

/// Validates topology text; `file` names it in errors and anchors relative socket paths.
pub fn parse(file: &Path, src: &str) -> Result<Topology, ConfigErrors> {
    parse_checked(file, src, false)
}

/// `parse`; with `check_files`, images that are missing or unreadable are errors too (what
/// `load`, and so `vfabric check` and `run`, do).
pub fn parse_checked(file: &Path, src: &str, check_files: bool) -> Result<Topology, ConfigErrors> {
    parse_inner(file, src, check_files, None)
}

/// `parse_checked`; with hosts, only the images of `files_of`'s disks are checked.
fn parse_inner(
    file: &Path,
    src: &str,
    check_files: bool,
    files_of: Option<&str>,
) -> Result<Topology, ConfigErrors> {
    let mut cx = Ctx {
        file,
        src,
        errors: Vec::new(),
        check_files,
    };
    let raw: RawTopology = match toml::from_str(src) {
        Ok(r) => r,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let msg = e.message().trim().to_string();
            cx.error(span, "parse", msg);
            return Err(ConfigErrors(cx.errors));
        }
    };
    let base = file.parent().unwrap_or(Path::new("."));
    let sock_base = socket_base(&mut cx, &raw, base);
    let mut taken = Taken::default();
    let mut hosts = Hosts {
        list: parse_hosts(&mut cx, &raw.host),
        mesh: parse_mesh(&mut cx, &raw.mesh, !raw.host.is_empty()),
        ..Hosts::default()
    };
    // Each host's mesh endpoint is the meshes' own: no port of the file may bind it.
    for h in &hosts.list {
        taken.enter(Some(&h.name));
        let at = std::net::SocketAddr::new(h.address, hosts.mesh.port);
        taken
            .host
            .insert(format!("udp tunnel {at}"), "(the mesh)".into());
    }
    if raw.switch.is_empty() && raw.disk.is_empty() {
        cx.error(
            0..0,
            "switch",
            "the topology has no [[switch]] and no [[disk]]",
        );
    }
    let mut switches = Vec::new();
    let mut claims = VniClaims::new();
    for sw in raw.switch {
        let sw = sw.into_inner();
        let here = format!("switch \"{}\"", sw.name.get_ref());
        let vnis = switch_vnis(&mut cx, &sw, &here, !hosts.list.is_empty(), &mut claims);
        hosts.vnis.insert(sw.name.get_ref().clone(), vnis);
        let mut on = Placed {
            hosts: &hosts.list,
            placement: &mut hosts.placement,
        };
        switches.push(switch(&mut cx, sw, &sock_base, &mut taken, &mut on));
    }
    let files = cx.check_files;
    let mut disks = Vec::new();
    for d in raw.disk {
        let h = placement(
            &mut cx,
            &d.get_ref().host,
            &d.get_ref().name,
            &hosts.list,
            &format!("disk \"{}\"", d.get_ref().name.get_ref()),
        );
        taken.enter(h.as_deref());
        cx.check_files = files && (h.is_none() || h.as_deref() == files_of);
        disks.extend(parse_disks(&mut cx, base, &sock_base, vec![d], &mut taken));
        if let Some(h) = h {
            hosts
                .placement
                .insert(disks.last().map(|d| d.name.clone()).unwrap_or_default(), h);
        }
    }
    cx.check_files = files;
    let control = match raw.control {
        Some(c) => control(&mut cx, c.into_inner(), &sock_base, &taken.all_sockets()),
        None => ControlConfig::default(),
    };
    let metrics = raw.metrics.as_ref().and_then(|m| metrics(&mut cx, m));
    if cx.errors.is_empty() {
        Ok(Topology {
            switches,
            disks,
            control,
            metrics,
            hosts,
        })
    } else {
        Err(ConfigErrors(cx.errors))
    }
}

/// Where relative socket paths live: `socket_dir` (itself relative to the file), else next
/// to the file.
fn socket_base(cx: &mut Ctx<'_>, raw: &RawTopology, base: &Path) -> PathBuf {
    match &raw.socket_dir {
        Some(d) if !d.get_ref().is_empty() => base.join(d.get_ref()),
        Some(d) => {
            cx.error(d.span(), "socket_dir", "empty path");
            base.to_path_buf()
        }
        None => base.to_path_buf(),
    }
}

/// Most busy-poll threads one switch may have.
pub const MAX_POLL_THREADS: u16 = 64;

/// The hosts, and where each port and disk found so far runs.
struct Placed<'a> {
    hosts: &'a [HostConfig],
    placement: &'a mut std::collections::BTreeMap<String, String>,
}

/// One `[[switch]]` and its ports.
fn switch(
    cx: &mut Ctx<'_>,
    sw: RawSwitch,
    sock_base: &Path,
    taken: &mut Taken,
    on: &mut Placed<'_>,
) -> SwitchConfig {
    let name = sw.name.get_ref().clone();
    let here = format!("switch \"{name}\"");
    check_name(cx, &sw.name, &here);
    if !taken.switches.insert(name.clone()) {
        cx.error(
            sw.name.span(),
            format!("{here}: name"),
            "duplicate switch name",
        );
    }
    let mac_aging = match &sw.mac_aging {
        None => crate::core::fdb::DEFAULT_AGING,
        Some(s) => match parse_duration(s.get_ref()) {
            Some(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(86_400 * 7) => d,
            _ => {
                cx.error(
                    s.span(),
                    format!("{here}: mac_aging"),
                    format!(
                        "`{}` is not a duration between 1s and 7d (like \"300s\", \"5m\")",
                        s.get_ref()
                    ),
                );
                crate::core::fdb::DEFAULT_AGING
            }
        },
    };
    let busy_poll = sw.busy_poll.map(|b| *b.get_ref()).unwrap_or(false);
    let poll_threads = match &sw.poll_threads {
        None => 1,
        Some(n) => match u16::try_from(*n.get_ref()) {
            Ok(k @ 1..=MAX_POLL_THREADS) if busy_poll || k == 1 => k,
            Ok(1..=MAX_POLL_THREADS) => {
                cx.error(
                    n.span(),
                    format!("{here}: poll_threads"),
                    "poll threads need `busy_poll = true` on the switch",
                );
                1
            }
            _ => {
                cx.error(
                    n.span(),
                    format!("{here}: poll_threads"),
                    format!(
                        "`{}` is not a number from 1 to {MAX_POLL_THREADS}",
                        n.get_ref()
                    ),
                );
                1
            }
        },
    };
    let mut ports = Vec::new();
    let mut static_seen: HashMap<MacAddr, String> = HashMap::new();
    for p in sw.port {
        let p = p.into_inner();
        let here = format!("switch \"{name}\" port \"{}\"", p.name.get_ref());
        let h = placement(cx, &p.host, &p.name, on.hosts, &here);
        taken.enter(h.as_deref());
        if let Some(port) = port(cx, &p, &name, sock_base, taken, &mut static_seen) {
            if let Some(h) = h {
                on.placement.insert(port.name.clone(), h);
            }
            ports.push(port);
        }
    }
    SwitchConfig {
        name,
        mac_aging,
        busy_poll,
        poll_threads,
        ports,
    }
}

/// One `[[switch.port]]` of switch `sw` (`None`: its type is unknown; the error is noted).
fn port(
    cx: &mut Ctx<'_>,
    p: &RawPort,
    sw: &str,
    sock_base: &Path,
    taken: &mut Taken,
    static_seen: &mut HashMap<MacAddr, String>,
) -> Option<PortConfig> {
    let pname = p.name.get_ref().clone();
    let here = format!("switch \"{sw}\" port \"{pname}\"");
    check_name(cx, &p.name, &here);
    if let Some(other) = taken.names.insert(pname.clone(), sw.to_string()) {
        cx.error(
            p.name.span(),
            format!("{here}: name"),
            format!("duplicate port name (also on switch \"{other}\")"),
        );
    }
    let type_name = p.kind.get_ref().as_str();
    let Some((_, keys)) = PORT_KEYS.iter().find(|(t, _)| *t == type_name) else {
        cx.error(
            p.kind.span(),
            format!("{here}: type"),
            format!("unknown port type `{type_name}` (supported: vhost-user-net, tap, vxlan, geneve, nat)"),
        );
        return None;
    };
    for (key, span) in p.specific_keys() {
        if !keys.contains(&key) {
            cx.error(
                span,
                format!("{here}: {key}"),
                format!(
                    "not a key of a {type_name} port (its own keys: {})",
                    keys.join(", ")
                ),
            );
        }
    }
    let mut static_macs = Vec::new();
    for m in p.static_macs.iter().flat_map(|l| l.get_ref().iter()) {
        if let Some(mac) = unicast_mac(cx, m, &format!("{here}: static_macs")) {
            if let Some(other) = static_seen.insert(mac, pname.clone()) {
                cx.error(
                    m.span(),
                    format!("{here}: static_macs"),
                    format!("{mac} is already static on port \"{other}\""),
                );
            }
            static_macs.push(mac);
        }
    }
    let policy = port_policy(cx, p, &here);
    let kind = match type_name {
        "tap" => PortKind::Tap(tap_port(cx, p, &here, &mut taken.host)),
        "vxlan" => PortKind::Vxlan(vxlan_port(
            cx,
            p,
            &here,
            &mut taken.host,
            super::Encap::Vxlan,
        )),
        "geneve" => PortKind::Vxlan(vxlan_port(
            cx,
            p,
            &here,
            &mut taken.host,
            super::Encap::Geneve,
        )),
        "nat" => PortKind::Nat(nat_port(cx, p, &here, &mut taken.host, &mut taken.subnets)),
        _ => PortKind::VhostUserNet(vhost_port(cx, p, &here, sock_base, &mut taken.sockets)),
    };
    Some(PortConfig {
        policy,
        name: pname,
        kind,
        static_macs,
    })
}

/// `[control]`: the socket (not another port's or disk's) and its permissions.
fn control(
    cx: &mut Ctx<'_>,
    c: RawControl,
    sock_base: &Path,
    sockets: &HashMap<PathBuf, String>,
) -> ControlConfig {
    let mut control = ControlConfig::default();
    if let Some(sock) = &c.socket {
        let path = sock_base.join(sock.get_ref());
        if sock.get_ref().is_empty() {
            cx.error(sock.span(), "control: socket", "empty socket path");
        } else if let Some(other) = sockets.get(&path) {
            cx.error(
                sock.span(),
                "control: socket",
                format!("{} is already the socket of \"{other}\"", path.display()),
            );
        }
        control.socket = Some(path);
    }
    let perms = socket_perms(cx, &c.mode, &c.owner, &c.group, false, "control");
    control.perms = SocketPerms {
        mode: perms.mode.or(control.perms.mode),
        ..perms
    };
    control
}

/// `metrics`: an address:port.
fn metrics(cx: &mut Ctx<'_>, m: &Spanned<String>) -> Option<std::net::SocketAddr> {
    match m.get_ref().parse() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.error(
                m.span(),
                "metrics",
                format!(
                    "`{}` is not an address:port like \"127.0.0.1:9100\"",
                    m.get_ref()
                ),
            );
            None
        }
    }
}
