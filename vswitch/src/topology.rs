//! The topology file: parsing, validation, and the validated model the daemon runs.
//!
//! Every error names the file, line and column, and the field:
//! `lab.toml:12:10: switch "lab" port "vm1": socket: ...`. `parse` collects every semantic
//! error it finds rather than stopping at the first, so `vfabric check` shows them all.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::core::{MacAddr, PortPolicy};

/// Queue pairs a vhost-user-net port offers when the topology does not say.
pub const DEFAULT_QUEUES: u16 = 8;

/// One problem in a topology file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Where in the topology, e.g. `switch "lab" port "vm1": socket`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.field,
            self.message
        )
    }
}

/// All the problems found in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

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
    /// VLAN mode and port security.
    pub policy: PortPolicy,
}

/// What a port connects to.
#[derive(Clone, Debug, PartialEq)]
pub enum PortKind {
    /// A VM's virtio-net device over vhost-user.
    VhostUserNet(VhostUserNet),
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
    /// Addresses pinned to this port in the forwarding table.
    pub static_macs: Vec<MacAddr>,
    /// Queue pairs offered to the VMM.
    pub queues: u16,
    /// Offer checksum/TCP segmentation offloads to the guest (default true).
    pub offloads: bool,
    pub perms: SocketPerms,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    #[serde(default)]
    switch: Vec<Spanned<RawSwitch>>,
    #[serde(default)]
    disk: Vec<Spanned<RawDisk>>,
    control: Option<Spanned<RawControl>>,
    metrics: Option<Spanned<String>>,
    socket_dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    name: Spanned<String>,
    socket: Option<Spanned<String>>,
    client: Option<Spanned<bool>>,
    mode: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    readonly: Option<Spanned<bool>>,
    queues: Option<Spanned<i64>>,
    serial: Option<Spanned<String>>,
    size: Option<Spanned<String>>,
}

/// Parses a size like `512`, `64K`, `10M`, `2G`, `1T` (binary units, optional `iB`/`B`).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim().trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwitch {
    name: Spanned<String>,
    mac_aging: Option<Spanned<String>>,
    busy_poll: Option<Spanned<bool>>,
    #[serde(default)]
    port: Vec<Spanned<RawPort>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    socket: Option<Spanned<String>>,
    client: Option<Spanned<bool>>,
    mode: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    mac: Option<Spanned<String>>,
    static_macs: Option<Spanned<Vec<Spanned<String>>>>,
    queues: Option<Spanned<i64>>,
    offloads: Option<Spanned<bool>>,
    vlan: Option<Spanned<i64>>,
    trunk: Option<Spanned<Vec<Spanned<VlanItem>>>>,
    native_vlan: Option<Spanned<i64>>,
    qinq: Option<Spanned<i64>>,
    max_macs: Option<Spanned<i64>>,
    allowed_macs: Option<Spanned<Vec<Spanned<String>>>>,
    allowed_ips: Option<Spanned<Vec<Spanned<String>>>>,
    storm_limit: Option<Spanned<String>>,
    isolated: Option<Spanned<bool>>,
}

/// One entry of `trunk`: a VLAN id or a range "100-199".
#[derive(Deserialize)]
#[serde(untagged)]
enum VlanItem {
    Id(i64),
    Range(String),
}

/// Parses a duration like `300s`, `5m`, `1h`, `1500ms` or `2d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" | "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

struct Ctx<'a> {
    file: &'a Path,
    src: &'a str,
    errors: Vec<ConfigError>,
    /// Also check that the files the topology names (images) exist and can be read.
    check_files: bool,
}

impl Ctx<'_> {
    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.src[..offset.min(self.src.len())];
        let line = before.matches('\n').count() + 1;
        let col = before
            .rfind('\n')
            .map_or(before.len(), |nl| before.len() - nl - 1)
            + 1;
        (line, col)
    }

    fn error(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        });
    }
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
    // Relative socket paths live in `socket_dir` (itself relative to the file), else next to
    // the file.
    let sock_base_buf = match &raw.socket_dir {
        Some(d) if !d.get_ref().is_empty() => base.join(d.get_ref()),
        Some(d) => {
            cx.error(d.span(), "socket_dir", "empty path");
            base.to_path_buf()
        }
        None => base.to_path_buf(),
    };
    let sock_base = sock_base_buf.as_path();
    let mut switches = Vec::new();
    let mut switch_names: HashMap<String, usize> = HashMap::new();
    let mut port_names: HashMap<String, String> = HashMap::new();
    let mut sockets: HashMap<PathBuf, String> = HashMap::new();
    if raw.switch.is_empty() && raw.disk.is_empty() {
        cx.error(
            0..0,
            "switch",
            "the topology has no [[switch]] and no [[disk]]",
        );
    }
    for sw in raw.switch {
        let sw = sw.into_inner();
        let name = sw.name.get_ref().clone();
        let here = format!("switch \"{name}\"");
        check_name(&mut cx, &sw.name, &here);
        if switch_names.insert(name.clone(), 0).is_some() {
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
            let p = p.into_inner();
            let pname = p.name.get_ref().clone();
            let here = format!("switch \"{name}\" port \"{pname}\"");
            check_name(&mut cx, &p.name, &here);
            if let Some(other) = port_names.insert(pname.clone(), name.clone()) {
                cx.error(
                    p.name.span(),
                    format!("{here}: name"),
                    format!("duplicate port name (also on switch \"{other}\")"),
                );
            }
            match p.kind.get_ref().as_str() {
                "vhost-user-net" => {}
                other => {
                    cx.error(
                        p.kind.span(),
                        format!("{here}: type"),
                        format!("unknown port type `{other}` (supported: vhost-user-net)"),
                    );
                    continue;
                }
            }
            let socket = match &p.socket {
                Some(s) if !s.get_ref().is_empty() => {
                    let path = sock_base.join(s.get_ref());
                    if let Some(other) = sockets.insert(path.clone(), pname.clone()) {
                        cx.error(
                            s.span(),
                            format!("{here}: socket"),
                            format!(
                                "{} is already the socket of port \"{other}\"",
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
                    cx.error(
                        p.name.span(),
                        format!("{here}: socket"),
                        "missing (a vhost-user-net port needs `socket = \"/path/to.sock\"`)",
                    );
                    PathBuf::new()
                }
            };
            let mac = p
                .mac
                .as_ref()
                .and_then(|m| unicast_mac(&mut cx, m, &format!("{here}: mac")));
            let mut static_macs = Vec::new();
            for m in p.static_macs.iter().flat_map(|l| l.get_ref().iter()) {
                if let Some(mac) = unicast_mac(&mut cx, m, &format!("{here}: static_macs")) {
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
            let queues = match &p.queues {
                None => DEFAULT_QUEUES,
                Some(q)
                    if (1..=i64::from(vhost_backends::net::MAX_QUEUE_PAIRS))
                        .contains(q.get_ref()) =>
                {
                    *q.get_ref() as u16
                }
                Some(q) => {
                    cx.error(
                        q.span(),
                        format!("{here}: queues"),
                        format!(
                            "{} queue pairs: must be 1-{}",
                            q.get_ref(),
                            vhost_backends::net::MAX_QUEUE_PAIRS
                        ),
                    );
                    1
                }
            };
            let policy = port_policy(&mut cx, &p, &here);
            let client = p.client.map(|c| *c.get_ref()).unwrap_or(false);
            let perms = socket_perms(&mut cx, &p.mode, &p.owner, &p.group, client, &here);
            ports.push(PortConfig {
                policy,
                name: pname,
                kind: PortKind::VhostUserNet(VhostUserNet {
                    socket,
                    client,
                    perms,
                    mac,
                    static_macs,
                    queues,
                    offloads: p.offloads.map(|o| *o.get_ref()).unwrap_or(true),
                }),
            });
        }
        switches.push(SwitchConfig {
            name,
            mac_aging,
            busy_poll: sw.busy_poll.map(|b| *b.get_ref()).unwrap_or(false),
            ports,
        });
    }
    let disks = parse_disks(
        &mut cx,
        base,
        sock_base,
        raw.disk,
        &mut port_names,
        &mut sockets,
    );
    let mut control = ControlConfig::default();
    if let Some(c) = raw.control {
        let c = c.into_inner();
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
        let perms = socket_perms(&mut cx, &c.mode, &c.owner, &c.group, false, "control");
        control.perms = SocketPerms {
            mode: perms.mode.or(control.perms.mode),
            ..perms
        };
    }
    let metrics = raw
        .metrics
        .as_ref()
        .and_then(|m| match m.get_ref().parse() {
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
        });
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

fn parse_disks(
    cx: &mut Ctx<'_>,
    base: &Path,
    sock_base: &Path,
    raw: Vec<Spanned<RawDisk>>,
    names: &mut HashMap<String, String>,
    sockets: &mut HashMap<PathBuf, String>,
) -> Vec<DiskConfig> {
    let mut disks = Vec::new();
    let mut images: HashMap<PathBuf, String> = HashMap::new();
    for d in raw {
        let d = d.into_inner();
        let name = d.name.get_ref().clone();
        let here = format!("disk \"{name}\"");
        check_name(cx, &d.name, &here);
        if names.insert(name.clone(), "disk".into()).is_some() {
            cx.error(
                d.name.span(),
                format!("{here}: name"),
                "duplicate name (ports and disks share one namespace)",
            );
        }
        let socket = match &d.socket {
            Some(s) if !s.get_ref().is_empty() => {
                let path = sock_base.join(s.get_ref());
                if let Some(other) = sockets.insert(path.clone(), name.clone()) {
                    cx.error(
                        s.span(),
                        format!("{here}: socket"),
                        format!("{} is already the socket of \"{other}\"", path.display()),
                    );
                }
                path
            }
            Some(s) => {
                cx.error(s.span(), format!("{here}: socket"), "empty socket path");
                PathBuf::new()
            }
            None => {
                cx.error(
                    d.name.span(),
                    format!("{here}: socket"),
                    "missing (a disk needs `socket = \"/path/to.sock\"`)",
                );
                PathBuf::new()
            }
        };
        let format = match d.format.as_ref().map(|f| f.get_ref().as_str()) {
            None | Some("auto") => DiskFormat::Auto,
            Some("raw") => DiskFormat::Raw,
            Some("qcow2") => DiskFormat::Qcow2,
            Some("null") => DiskFormat::Null,
            Some(other) => {
                let span = d.format.as_ref().map(|f| f.span()).unwrap_or(0..0);
                cx.error(
                    span,
                    format!("{here}: format"),
                    format!("unknown format `{other}` (raw, qcow2, null, or auto)"),
                );
                DiskFormat::Auto
            }
        };
        let path = match (&d.path, format) {
            (Some(p), _) if !p.get_ref().is_empty() => {
                let path = base.join(p.get_ref());
                if cx.check_files
                    && let Err(e) = std::fs::File::open(&path)
                {
                    cx.error(
                        p.span(),
                        format!("{here}: path"),
                        format!("{}: {e}", path.display()),
                    );
                }
                if let Some(other) = images.insert(path.clone(), name.clone()) {
                    cx.error(
                        p.span(),
                        format!("{here}: path"),
                        format!(
                            "{} is already the image of disk \"{other}\"",
                            path.display()
                        ),
                    );
                }
                path
            }
            (_, DiskFormat::Null) => PathBuf::new(),
            (Some(p), _) => {
                cx.error(p.span(), format!("{here}: path"), "empty image path");
                PathBuf::new()
            }
            (None, _) => {
                cx.error(
                    d.name.span(),
                    format!("{here}: path"),
                    "missing (a disk needs `path = \"/path/to/image\"`, raw or qcow2)",
                );
                PathBuf::new()
            }
        };
        let size = match (&d.size, format) {
            (Some(sz), DiskFormat::Null) => match parse_size(sz.get_ref()) {
                Some(n) if n >= 512 && n % 512 == 0 => n,
                _ => {
                    cx.error(
                        sz.span(),
                        format!("{here}: size"),
                        format!(
                            "`{}` is not a size in whole sectors (like \"1G\")",
                            sz.get_ref()
                        ),
                    );
                    0
                }
            },
            (Some(sz), _) => {
                cx.error(
                    sz.span(),
                    format!("{here}: size"),
                    "only a null disk has a size (an image's size is its own)",
                );
                0
            }
            (None, DiskFormat::Null) => {
                cx.error(
                    d.name.span(),
                    format!("{here}: size"),
                    "a null disk needs `size`",
                );
                0
            }
            (None, _) => 0,
        };
        let max = vhost_backends::blk::device::MAX_QUEUES;
        let queues = match &d.queues {
            None => 1,
            Some(q) if (1..=i64::from(max)).contains(q.get_ref()) => *q.get_ref() as u16,
            Some(q) => {
                cx.error(
                    q.span(),
                    format!("{here}: queues"),
                    format!("{} queues: must be 1-{max}", q.get_ref()),
                );
                1
            }
        };
        let serial = match &d.serial {
            None => name.clone(),
            Some(s) if s.get_ref().len() <= 20 && s.get_ref().is_ascii() => s.get_ref().clone(),
            Some(s) => {
                cx.error(
                    s.span(),
                    format!("{here}: serial"),
                    "a serial is at most 20 ASCII characters",
                );
                String::new()
            }
        };
        let client = d.client.map(|c| *c.get_ref()).unwrap_or(false);
        let perms = socket_perms(cx, &d.mode, &d.owner, &d.group, client, &here);
        disks.push(DiskConfig {
            perms,
            name,
            socket,
            client,
            path,
            format,
            readonly: d.readonly.map(|r| *r.get_ref()).unwrap_or(false),
            queues,
            serial,
            size,
        });
    }
    disks
}

/// Parses an octal socket mode like "0660" (owner read/write required).
fn parse_mode(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|&m| m <= 0o777 && m & 0o600 == 0o600)
}

fn socket_perms(
    cx: &mut Ctx<'_>,
    mode: &Option<Spanned<String>>,
    owner: &Option<Spanned<String>>,
    group: &Option<Spanned<String>>,
    client: bool,
    here: &str,
) -> SocketPerms {
    let mut p = SocketPerms::default();
    for (key, v) in [("mode", mode), ("owner", owner), ("group", group)] {
        if let (Some(v), true) = (v, client) {
            cx.error(
                v.span(),
                format!("{here}: {key}"),
                "only a socket vfabric listens on has an owner, group and mode (not with `client = true`)",
            );
        }
    }
    if let Some(m) = mode {
        match parse_mode(m.get_ref()) {
            Some(bits) => p.mode = Some(bits),
            None => cx.error(
                m.span(),
                format!("{here}: mode"),
                format!(
                    "`{}` is not an octal mode with owner read/write (like \"0660\")",
                    m.get_ref()
                ),
            ),
        }
    }
    p.owner = owner.as_ref().map(|o| o.get_ref().clone());
    p.group = group.as_ref().map(|g| g.get_ref().clone());
    p
}

fn vlan_id(cx: &mut Ctx<'_>, v: &Spanned<i64>, field: &str) -> Option<vlan::VlanId> {
    match u32::try_from(*v.get_ref())
        .ok()
        .and_then(|n| vlan::VlanId::new(n).ok())
    {
        Some(id) => Some(id),
        None => {
            cx.error(
                v.span(),
                field,
                format!("{} is not a VLAN id (1-4094)", v.get_ref()),
            );
            None
        }
    }
}

/// Parses a rate like `1000pps` (or a bare number).
pub fn parse_pps(s: &str) -> Option<u32> {
    let n = s.trim().trim_end_matches("pps").trim();
    n.parse().ok().filter(|&n: &u32| n > 0)
}

fn port_policy(cx: &mut Ctx<'_>, p: &RawPort, here: &str) -> PortPolicy {
    let mut pol = PortPolicy::default();
    let modes = [p.vlan.is_some(), p.trunk.is_some(), p.qinq.is_some()];
    if modes.iter().filter(|&&m| m).count() > 1 {
        let span = p.name.span();
        cx.error(
            span,
            format!("{here}: vlan"),
            "a port is either an access port (`vlan`), a trunk (`trunk`) or a QinQ tunnel (`qinq`)",
        );
    }
    if let Some(n) = &p.native_vlan
        && p.trunk.is_none()
    {
        cx.error(
            n.span(),
            format!("{here}: native_vlan"),
            "only a trunk (`trunk = [...]`) has a native VLAN",
        );
    }
    if let Some(v) = &p.vlan
        && let Some(id) = vlan_id(cx, v, &format!("{here}: vlan"))
    {
        pol.vlan = vlan::PortVlan::Access(id);
    } else if let Some(q) = &p.qinq
        && let Some(id) = vlan_id(cx, q, &format!("{here}: qinq"))
    {
        pol.vlan = vlan::PortVlan::Tunnel { svlan: id };
    } else if let Some(t) = &p.trunk {
        let mut set = vlan::VlanSet::new();
        for item in t.get_ref() {
            match item.get_ref() {
                VlanItem::Id(n) => {
                    let sp = Spanned::new(item.span(), *n);
                    if let Some(id) = vlan_id(cx, &sp, &format!("{here}: trunk")) {
                        set.insert(id);
                    }
                }
                VlanItem::Range(r) => match vlan::VlanSet::parse_range(r) {
                    Ok((a, b)) => set.insert_range(a, b),
                    Err(e) => cx.error(item.span(), format!("{here}: trunk"), e.0),
                },
            }
        }
        let native = p
            .native_vlan
            .as_ref()
            .and_then(|n| vlan_id(cx, n, &format!("{here}: native_vlan")));
        if set.is_empty() && native.is_none() {
            cx.error(
                t.span(),
                format!("{here}: trunk"),
                "a trunk carries at least one VLAN",
            );
        }
        pol.vlan = vlan::PortVlan::Trunk {
            allowed: Box::new(set),
            native,
        };
    }
    if let Some(m) = &p.max_macs {
        match usize::try_from(*m.get_ref()) {
            Ok(n) if (1..=1_000_000).contains(&n) => pol.max_macs = Some(n),
            _ => cx.error(
                m.span(),
                format!("{here}: max_macs"),
                format!("{}: must be 1-1000000", m.get_ref()),
            ),
        }
    }
    if let Some(list) = &p.allowed_macs {
        let mut macs = Vec::new();
        for m in list.get_ref() {
            if let Some(mac) = unicast_mac(cx, m, &format!("{here}: allowed_macs")) {
                macs.push(mac);
            }
        }
        pol.allowed_macs = Some(macs);
    }
    if let Some(list) = &p.allowed_ips {
        let mut ips = Vec::new();
        for ip in list.get_ref() {
            match ip.get_ref().parse::<std::net::IpAddr>() {
                Ok(a) => ips.push(a),
                Err(_) => cx.error(
                    ip.span(),
                    format!("{here}: allowed_ips"),
                    format!("`{}` is not an IPv4 or IPv6 address", ip.get_ref()),
                ),
            }
        }
        pol.allowed_ips = Some(ips);
    }
    if let Some(s) = &p.storm_limit {
        match parse_pps(s.get_ref()) {
            Some(n) => pol.storm_pps = Some(n),
            None => cx.error(
                s.span(),
                format!("{here}: storm_limit"),
                format!("`{}` is not a rate like \"1000pps\"", s.get_ref()),
            ),
        }
    }
    pol.isolated = p.isolated.as_ref().is_some_and(|i| *i.get_ref());
    pol
}

/// Names are 1-32 characters of a-z, A-Z, 0-9, '-', '_' and '.'.
fn check_name(cx: &mut Ctx<'_>, name: &Spanned<String>, here: &str) {
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

fn unicast_mac(cx: &mut Ctx<'_>, m: &Spanned<String>, field: &str) -> Option<MacAddr> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(src: &str) -> Vec<String> {
        match parse(Path::new("/etc/t.toml"), src) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    const GOOD: &str = r#"
[[switch]]
name = "lab"
mac_aging = "5m"

[[switch.port]]
name = "vm1"
type = "vhost-user-net"
socket = "/run/vfabric/vm1.sock"
mac = "52:54:00:00:00:01"
static_macs = ["52:54:00:00:00:01"]

[[switch.port]]
name = "vm2"
type = "vhost-user-net"
socket = "vm2.sock"
client = true
queues = 2
"#;

    #[test]
    fn a_good_file() {
        let t = parse(Path::new("/etc/vf/t.toml"), GOOD).unwrap();
        let sw = &t.switches[0];
        assert_eq!(sw.name, "lab");
        assert_eq!(sw.mac_aging, Duration::from_secs(300));
        let PortKind::VhostUserNet(p1) = &sw.ports[0].kind;
        assert_eq!(p1.socket, PathBuf::from("/run/vfabric/vm1.sock"));
        assert_eq!(p1.mac, Some("52:54:00:00:00:01".parse().unwrap()));
        assert_eq!((p1.client, p1.queues), (false, DEFAULT_QUEUES));
        let PortKind::VhostUserNet(p2) = &sw.ports[1].kind;
        assert_eq!(
            p2.socket,
            PathBuf::from("/etc/vf/vm2.sock"),
            "relative to the file"
        );
        assert_eq!((p2.client, p2.queues), (true, 2));
    }

    #[test]
    fn errors_name_file_line_column_and_field() {
        let table: &[(&str, &str)] = &[
            // unknown key
            (
                "[[switch]]\nname = \"s\"\nflavour = 1\n",
                "/etc/t.toml:3:1: parse: unknown field `flavour`",
            ),
            // bad type
            (
                "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\ntype = \"hub\"\n",
                "/etc/t.toml:5:8: switch \"s\" port \"p\": type: unknown port type `hub`",
            ),
            // missing socket
            (
                "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\ntype = \"vhost-user-net\"\n",
                "/etc/t.toml:4:8: switch \"s\" port \"p\": socket: missing",
            ),
            // bad mac
            (
                "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\ntype = \"vhost-user-net\"\nsocket = \"/a\"\nmac = \"01:00:5e:00:00:01\"\n",
                "/etc/t.toml:7:7: switch \"s\" port \"p\": mac: 01:00:5e:00:00:01 is a group",
            ),
            // bad aging
            (
                "[[switch]]\nname = \"s\"\nmac_aging = \"soon\"\n",
                "/etc/t.toml:3:13: switch \"s\": mac_aging: `soon` is not a duration",
            ),
            // queues
            (
                "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\ntype = \"vhost-user-net\"\nsocket = \"/a\"\nqueues = 0\n",
                "/etc/t.toml:7:10: switch \"s\" port \"p\": queues: 0 queue pairs",
            ),
            // wrong value type
            (
                "[[switch]]\nname = 5\n",
                "/etc/t.toml:2:8: parse: invalid type: integer `5`, expected a string",
            ),
            // empty
            (
                "",
                "/etc/t.toml:1:1: switch: the topology has no [[switch]]",
            ),
        ];
        for (src, want) in table {
            let got = errors(src);
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "want {want:?}\n got {got:?}"
            );
        }
    }

    #[test]
    fn all_semantic_errors_are_reported_together() {
        let src = r#"
[[switch]]
name = "a"
[[switch.port]]
name = "p"
type = "vhost-user-net"
socket = "/x.sock"
[[switch]]
name = "a"
[[switch.port]]
name = "p"
type = "vhost-user-net"
socket = "/x.sock"
static_macs = ["zz"]
"#;
        let got = errors(src);
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(got[0].contains("9:8: switch \"a\": name: duplicate switch name"));
        assert!(got[1].contains("11:8: switch \"a\" port \"p\": name: duplicate port name"));
        assert!(got[2].contains(
            "13:10: switch \"a\" port \"p\": socket: /x.sock is already the socket of port \"p\""
        ));
        assert!(
            got[3]
                .contains("14:16: switch \"a\" port \"p\": static_macs: `zz` is not a MAC address")
        );
    }

    #[test]
    fn vlan_and_security_keys() {
        let src = r#"
[[switch]]
name = "s"
[[switch.port]]
name = "a"
type = "vhost-user-net"
socket = "a.sock"
vlan = 10
max_macs = 16
allowed_macs = ["52:54:00:00:00:01"]
allowed_ips = ["10.0.0.5", "fd00::5"]
storm_limit = "1000pps"
isolated = true
[[switch.port]]
name = "t"
type = "vhost-user-net"
socket = "t.sock"
trunk = [10, 20, "100-199"]
native_vlan = 1
[[switch.port]]
name = "q"
type = "vhost-user-net"
socket = "q.sock"
qinq = 300
"#;
        let t = parse(Path::new("/etc/t.toml"), src).unwrap();
        let p = &t.switches[0].ports;
        let a = &p[0].policy;
        assert_eq!(
            a.vlan,
            vlan::PortVlan::Access(vlan::VlanId::new(10).unwrap())
        );
        assert_eq!(
            (a.max_macs, a.storm_pps, a.isolated),
            (Some(16), Some(1000), true)
        );
        assert_eq!(a.allowed_ips.as_ref().unwrap().len(), 2);
        let vlan::PortVlan::Trunk { allowed, native } = &p[1].policy.vlan else {
            panic!("{:?}", p[1].policy.vlan)
        };
        assert_eq!((allowed.len(), native.map(|n| n.get())), (102, Some(1)));
        assert_eq!(p[2].policy.vlan.service_vlan().map(|v| v.get()), Some(300));
        let port = |extra: &str| {
            format!(
                "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\ntype = \"vhost-user-net\"\nsocket = \"p.sock\"\n{extra}\n"
            )
        };
        let table: &[(&str, &str)] = &[
            (
                "vlan = 4095",
                "/etc/t.toml:7:8: switch \"s\" port \"p\": vlan: 4095 is not a VLAN id (1-4094)",
            ),
            (
                "vlan = 10\ntrunk = [20]",
                "switch \"s\" port \"p\": vlan: a port is either an access port",
            ),
            (
                "native_vlan = 5",
                "/etc/t.toml:7:15: switch \"s\" port \"p\": native_vlan: only a trunk",
            ),
            (
                "trunk = [\"30-20\"]",
                "/etc/t.toml:7:10: switch \"s\" port \"p\": trunk:",
            ),
            (
                "trunk = [0]",
                "/etc/t.toml:7:10: switch \"s\" port \"p\": trunk: 0 is not a VLAN id",
            ),
            (
                "trunk = []",
                "/etc/t.toml:7:9: switch \"s\" port \"p\": trunk: a trunk carries at least one VLAN",
            ),
            (
                "max_macs = 0",
                "/etc/t.toml:7:12: switch \"s\" port \"p\": max_macs: 0: must be 1-1000000",
            ),
            (
                "allowed_ips = [\"10.0.0\"]",
                "/etc/t.toml:7:16: switch \"s\" port \"p\": allowed_ips: `10.0.0` is not an IPv4 or IPv6 address",
            ),
            (
                "allowed_macs = [\"ff:ff:ff:ff:ff:ff\"]",
                "/etc/t.toml:7:17: switch \"s\" port \"p\": allowed_macs:",
            ),
            (
                "storm_limit = \"fast\"",
                "/etc/t.toml:7:15: switch \"s\" port \"p\": storm_limit: `fast` is not a rate",
            ),
        ];
        for (extra, want) in table {
            let src = port(extra);
            let got = errors(&src);
            assert!(
                got.iter().any(|e| e.contains(want)),
                "{extra}\nwant {want}\ngot {got:?}"
            );
        }
    }

    #[test]
    fn disks() {
        let src = r#"
[[disk]]
name = "vm1-root"
socket = "/run/vfabric/vm1-disk.sock"
path = "images/vm1.qcow2"
queues = 4
serial = "root1"

[[disk]]
name = "scratch"
socket = "s.sock"
format = "null"
size = "2G"
readonly = true
client = true
"#;
        let t = parse(Path::new("/etc/vf/t.toml"), src).unwrap();
        assert!(t.switches.is_empty());
        let d = &t.disks[0];
        assert_eq!(d.path, PathBuf::from("/etc/vf/images/vm1.qcow2"));
        assert_eq!(
            (d.format, d.queues, d.readonly, d.client),
            (DiskFormat::Auto, 4, false, false)
        );
        assert_eq!(d.serial, "root1");
        let n = &t.disks[1];
        assert_eq!(
            (n.format, n.size, n.readonly, n.client),
            (DiskFormat::Null, 2 << 30, true, true)
        );
        assert_eq!(n.serial, "scratch");
        assert_eq!(n.socket, PathBuf::from("/etc/vf/s.sock"));
        let table: &[(&str, &str)] = &[
            (
                "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\n",
                "/etc/t.toml:2:8: disk \"d\": path: missing",
            ),
            (
                "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\npath = \"x\"\nformat = \"vmdk\"\n",
                "/etc/t.toml:5:10: disk \"d\": format: unknown format `vmdk`",
            ),
            (
                "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\npath = \"x\"\nqueues = 0\n",
                "/etc/t.toml:5:10: disk \"d\": queues: 0 queues: must be 1-16",
            ),
            (
                "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\nformat = \"null\"\nsize = \"1000\"\n",
                "/etc/t.toml:5:8: disk \"d\": size: `1000` is not a size in whole sectors",
            ),
            (
                "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\npath = \"x\"\nsize = \"1G\"\n",
                "/etc/t.toml:5:8: disk \"d\": size: only a null disk has a size",
            ),
            (
                "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\npath = \"x\"\nserial = \"0123456789abcdefghijk\"\n",
                "/etc/t.toml:5:10: disk \"d\": serial: a serial is at most 20 ASCII characters",
            ),
            (
                "[[disk]]\nname = \"d\"\nsocket = \"a.sock\"\npath = \"x\"\n[[disk]]\nname = \"e\"\nsocket = \"b.sock\"\npath = \"x\"\n",
                "/etc/t.toml:8:8: disk \"e\": path: /etc/x is already the image of disk \"d\"",
            ),
            (
                "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\ntype = \"vhost-user-net\"\nsocket = \"a.sock\"\n[[disk]]\nname = \"d\"\nsocket = \"a.sock\"\npath = \"x\"\n",
                "/etc/t.toml:9:10: disk \"d\": socket: /etc/a.sock is already the socket of \"p\"",
            ),
            (
                "[[disk]]\nname = \"d\"\nsocket = \"a.sock\"\npath = \"x\"\nbogus = 1\n",
                "/etc/t.toml:5:1: parse: unknown field `bogus`",
            ),
        ];
        for (src, want) in table {
            let got = errors(src);
            assert!(
                got.iter().any(|e| e.starts_with(want)),
                "{src}\nwant {want}\ngot {got:?}"
            );
        }
        for (s, n) in [
            ("512", 512),
            ("64K", 65536),
            ("10M", 10 << 20),
            ("2GiB", 2 << 30),
            ("1T", 1 << 40),
        ] {
            assert_eq!(parse_size(s), Some(n), "{s}");
        }
        for s in ["", "G", "1.5G", "1X", "-1"] {
            assert_eq!(parse_size(s), None, "{s}");
        }
    }

    #[test]
    fn durations() {
        for (s, ms) in [
            ("300s", 300_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("250ms", 250),
            ("2d", 172_800_000),
        ] {
            assert_eq!(parse_duration(s), Some(Duration::from_millis(ms)), "{s}");
        }
        for s in ["", "s", "10", "10x", "-1s", "1.5s"] {
            assert_eq!(parse_duration(s), None, "{s}");
        }
    }
}
