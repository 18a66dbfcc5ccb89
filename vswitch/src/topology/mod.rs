//! The topology file: parsed, validated, and turned into the model the daemon runs.
//!
//! `parse.rs` reads the TOML into raw tables with spans; the kind files (`vm.rs`, `tap.rs`,
//! `vxlan.rs`, `nat.rs`, `disk.rs`) and `vlan_keys.rs` check each key and build the
//! validated values; `checks.rs` holds what spans the file (unique names, sockets, subnets)
//! and the checks of a port added at run time; `error.rs` the errors.
//!
//! Invariants: a `Topology` exists only when the whole file is valid; every error names the
//! file, line, column and field (`lab.toml:12:10: switch "lab" port "vm1": socket: ...`),
//! and `parse` collects every error it finds rather than stopping at the first, so
//! `vfabric check` shows them all. Nothing here knows that a fabric exists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::core::{MacAddr, PortPolicy};

mod checks;
mod disk;
mod error;
mod nat;
mod parse;
mod tap;
mod vlan_keys;
mod vm;
mod vxlan;

pub use checks::port_from_keys;
pub use error::{ConfigError, ConfigErrors};
pub use parse::{parse_cidr, parse_duration, parse_pps, parse_size};

use checks::Taken;
use checks::{check_name, unicast_mac};
use disk::parse_disks;
use error::Ctx;
use nat::nat_port;
use parse::{PORT_KEYS, RawControl, RawPort, RawSwitch, RawTopology};
use tap::tap_port;
use vlan_keys::port_policy;
use vm::{socket_perms, vhost_port};
use vxlan::vxlan_port;

/// Queue pairs a vhost-user-net port offers when the topology does not say.
pub const DEFAULT_QUEUES: u16 = 8;

/// The validated topology.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    pub switches: Vec<SwitchConfig>,
    pub disks: Vec<DiskConfig>,
    pub control: ControlConfig,
    /// Address of the Prometheus endpoint (`metrics = "127.0.0.1:9100"`).
    pub metrics: Option<std::net::SocketAddr>,
}

/// The control socket (`vfabric ctl`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlConfig {
    /// Explicit path; `None`: the default for the topology file (see `control::default_socket`).
    pub socket: Option<PathBuf>,
    /// Mode (0600 unless set), owner and group of the socket file; members of the group may
    /// use it.
    pub perms: SocketPerms,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: None,
            perms: SocketPerms {
                mode: Some(0o600),
                owner: None,
                group: None,
            },
        }
    }
}

/// Image formats a disk may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    /// Detected from the image's first bytes (qcow2 magic, else raw).
    Auto,
    Raw,
    Qcow2,
    /// No image: I/O completes without storage (benchmarks); needs `size`.
    Null,
}

/// A virtio-blk disk served over vhost-user.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskConfig {
    pub name: String,
    pub socket: PathBuf,
    /// false: vfabric listens and the VMM connects; true: vfabric dials the VMM.
    pub client: bool,
    /// The image (absolute; relative paths are relative to the file).
    pub path: PathBuf,
    pub format: DiskFormat,
    pub readonly: bool,
    /// Request queues offered (one worker thread and one I/O ring each).
    pub queues: u16,
    /// GET_ID answer (at most 20 bytes); the disk's name by default.
    pub serial: String,
    /// Size of a null disk, bytes.
    pub size: u64,
    pub perms: SocketPerms,
}

/// One switch.
#[derive(Clone, Debug, PartialEq)]
pub struct SwitchConfig {
    pub name: String,
    pub mac_aging: Duration,
    /// A poll thread per switch drains the guests' TX rings without waiting for kicks (lower
    /// latency and higher packet rates for one busy CPU); it sleeps after 1 ms without work.
    pub busy_poll: bool,
    pub ports: Vec<PortConfig>,
}

/// One port of a switch.
#[derive(Clone, Debug, PartialEq)]
pub struct PortConfig {
    pub name: String,
    pub kind: PortKind,
    /// Addresses pinned to this port in the forwarding table.
    pub static_macs: Vec<MacAddr>,
    /// VLAN mode and port security.
    pub policy: PortPolicy,
}

/// What a port connects to.
#[derive(Clone, Debug, PartialEq)]
pub enum PortKind {
    /// A VM's virtio-net device over vhost-user.
    VhostUserNet(VhostUserNet),
    /// A TAP device: the segment reaches the host kernel or a container's namespace.
    Tap(TapConfig),
    /// A VXLAN tunnel endpoint (RFC 7348): the segment reaches other hosts.
    Vxlan(VxlanConfig),
    /// A NAT gateway: DHCP, DNS relay, outbound and inbound NAT through host sockets.
    Nat(::nat::NatConfig),
}

impl PortKind {
    /// The `type` key's value.
    pub fn type_name(&self) -> &'static str {
        match self {
            PortKind::VhostUserNet(_) => "vhost-user-net",
            PortKind::Tap(_) => "tap",
            PortKind::Vxlan(_) => "vxlan",
            PortKind::Nat(_) => "nat",
        }
    }
}

/// A TAP port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapConfig {
    /// The interface name (at most 15 bytes).
    pub ifname: String,
    /// Create the TAP inside this existing network namespace (`/run/netns/NAME`).
    pub netns: Option<String>,
    /// An address given to the TAP (in its namespace): address and prefix length.
    pub address: Option<(std::net::IpAddr, u8)>,
    /// Enslave the TAP to this existing Linux bridge (in its namespace).
    pub bridge: Option<String>,
    pub mtu: Option<u32>,
    /// Queues of the multi-queue TAP (one reader thread each).
    pub queues: u16,
    /// When the TAP cannot be created (no CAP_NET_ADMIN, no namespace...), run without it
    /// (its link stays down) instead of refusing to start.
    pub optional: bool,
}

/// A VXLAN port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanConfig {
    /// The 24-bit VXLAN network identifier.
    pub vni: u32,
    /// The local address the UDP socket binds.
    pub local: std::net::IpAddr,
    /// Static remote VTEPs: broadcast, unknown unicast and multicast go to all of them.
    pub remote: Vec<std::net::IpAddr>,
    /// UDP port (4789, the IANA port, unless set); the same on both ends.
    pub port: u16,
}

/// Ownership and permissions given to a listening socket file (unset: the process's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketPerms {
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

/// A vhost-user-net port.
#[derive(Clone, Debug, PartialEq)]
pub struct VhostUserNet {
    /// The unix socket (absolute; relative paths in the file are relative to the file).
    pub socket: PathBuf,
    /// false: vfabric listens and the VMM connects; true: the VMM listens, vfabric dials.
    pub client: bool,
    /// MAC offered in the device's config space.
    pub mac: Option<MacAddr>,
    /// Queue pairs offered to the VMM.
    pub queues: u16,
    /// Offer checksum/TCP segmentation offloads to the guest (default true).
    pub offloads: bool,
    pub perms: SocketPerms,
}

/// Reads and validates a topology file.
pub fn load(path: &Path) -> Result<Topology, ConfigErrors> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            field: "file".into(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse_checked(path, &src, true)
}

/// Validates topology text; `file` names it in errors and anchors relative socket paths.
pub fn parse(file: &Path, src: &str) -> Result<Topology, ConfigErrors> {
    parse_checked(file, src, false)
}

/// `parse`; with `check_files`, images that are missing or unreadable are errors too (what
/// `load`, and so `vfabric check` and `run`, do).
pub fn parse_checked(file: &Path, src: &str, check_files: bool) -> Result<Topology, ConfigErrors> {
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
    if raw.switch.is_empty() && raw.disk.is_empty() {
        cx.error(
            0..0,
            "switch",
            "the topology has no [[switch]] and no [[disk]]",
        );
    }
    let mut switches = Vec::new();
    for sw in raw.switch {
        switches.push(switch(&mut cx, sw.into_inner(), &sock_base, &mut taken));
    }
    let disks = parse_disks(
        &mut cx,
        base,
        &sock_base,
        raw.disk,
        &mut taken.names,
        &mut taken.sockets,
    );
    let control = match raw.control {
        Some(c) => control(&mut cx, c.into_inner(), &sock_base, &taken.sockets),
        None => ControlConfig::default(),
    };
    let metrics = raw.metrics.as_ref().and_then(|m| metrics(&mut cx, m));
    if cx.errors.is_empty() {
        Ok(Topology {
            switches,
            disks,
            control,
            metrics,
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

/// One `[[switch]]` and its ports.
fn switch(cx: &mut Ctx<'_>, sw: RawSwitch, sock_base: &Path, taken: &mut Taken) -> SwitchConfig {
    let name = sw.name.get_ref().clone();
    let here = format!("switch \"{name}\"");
    check_name(cx, &sw.name, &here);
    if taken.switches.insert(name.clone(), 0).is_some() {
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
    let mut ports = Vec::new();
    let mut static_seen: HashMap<MacAddr, String> = HashMap::new();
    for p in sw.port {
        if let Some(port) = port(
            cx,
            &p.into_inner(),
            &name,
            sock_base,
            taken,
            &mut static_seen,
        ) {
            ports.push(port);
        }
    }
    SwitchConfig {
        name,
        mac_aging,
        busy_poll: sw.busy_poll.map(|b| *b.get_ref()).unwrap_or(false),
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
            format!("unknown port type `{type_name}` (supported: vhost-user-net, tap, vxlan, nat)"),
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
        "vxlan" => PortKind::Vxlan(vxlan_port(cx, p, &here, &mut taken.host)),
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

#[cfg(test)]
mod tests;
