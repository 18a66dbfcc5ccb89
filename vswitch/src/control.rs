//! The control socket behind `vfabric ctl`: one JSON request line in, one JSON answer line
//! out, per connection.
//!
//! The socket is created with mode 0600 (or the topology's `[control] mode`) and may be
//! given an owner and group; on top of the file permissions, every peer's credentials are
//! checked (root, vfabric's own user, or a member of the configured group), so a socket
//! moved or re-moded by mistake still refuses strangers. Served by a single-threaded tokio
//! runtime on its own thread; the data path never waits for it.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::core::{MacAddr, PortId};
use crate::dataplane::Fabric;
use crate::topology::{ControlConfig, PortKind, Topology};
use vhost_backends::blk::Disk;

/// A request: a command and its arguments.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Request {
    pub cmd: Vec<String>,
}

/// The default control socket of a topology file: `<dir>/<stem>-<hash>.ctl`, where `<dir>`
/// is `$XDG_RUNTIME_DIR/vfabric` for users with a runtime directory, `/run/vfabric` for root,
/// else `/tmp/vfabric-<uid>`, and `<hash>` comes from the file's absolute path (two
/// topologies with the same name in different places never share a socket).
pub fn default_socket(topology: &Path) -> PathBuf {
    let stem = topology
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vfabric".into());
    let abs = std::fs::canonicalize(topology).unwrap_or_else(|_| topology.to_path_buf());
    // FNV-1a: stable across builds and platforms.
    let hash = abs
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let stem = format!("{stem}-{:08x}", hash as u32);
    let uid = nix::unistd::geteuid();
    let dir = if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        PathBuf::from(d).join("vfabric")
    } else if uid.is_root() {
        PathBuf::from("/run/vfabric")
    } else {
        PathBuf::from(format!("/tmp/vfabric-{uid}"))
    };
    dir.join(format!("{stem}.ctl"))
}

/// The control socket of `topo`, loaded from `file`.
pub fn socket_path(file: &Path, cfg: &ControlConfig) -> PathBuf {
    cfg.socket.clone().unwrap_or_else(|| default_socket(file))
}

fn lookup_uid(name: &str) -> io::Result<nix::unistd::Uid> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(nix::unistd::Uid::from_raw(n));
    }
    nix::unistd::User::from_name(name)?
        .map(|u| u.uid)
        .ok_or_else(|| io::Error::other(format!("no user `{name}`")))
}

fn lookup_gid(name: &str) -> io::Result<nix::unistd::Gid> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(n));
    }
    nix::unistd::Group::from_name(name)?
        .map(|g| g.gid)
        .ok_or_else(|| io::Error::other(format!("no group `{name}`")))
}

/// Gives a socket file its configured mode, owner and group.
pub fn apply_perms(path: &Path, perms: &crate::topology::SocketPerms) -> io::Result<()> {
    let owner = perms.owner.as_deref().map(lookup_uid).transpose()?;
    let group = perms.group.as_deref().map(lookup_gid).transpose()?;
    if let Some(m) = perms.mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m))?;
    }
    if owner.is_some() || group.is_some() {
        nix::unistd::chown(path, owner, group)?;
    }
    Ok(())
}

/// What the control socket serves.
pub struct Control {
    pub fabric: Arc<Fabric>,
    /// The topology being served (replaced by a reload).
    pub topology: std::sync::RwLock<Topology>,
    /// The file it came from (re-read by a reload).
    pub file: PathBuf,
    pub disks: Vec<Arc<Disk>>,
}

/// A bound control socket, not serving yet.
pub struct Listener {
    listener: std::os::unix::net::UnixListener,
    group: Option<nix::unistd::Gid>,
    pub path: PathBuf,
    /// The Prometheus endpoint, served on the same thread.
    pub metrics: Option<std::net::TcpListener>,
}

/// Creates the control socket (stale files replaced, a live one refused) with its mode,
/// owner and group.
pub fn bind(path: &Path, cfg: &ControlConfig) -> io::Result<Listener> {
    let group = cfg.perms.group.as_deref().map(lookup_gid).transpose()?;
    let listener = vhost_backends::server::bind_socket(path)?;
    if let Err(e) = apply_perms(path, &cfg.perms) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(Listener {
        listener,
        group,
        path: path.to_path_buf(),
        metrics: None,
    })
}

impl Listener {
    /// Serves requests forever on a thread of its own.
    pub fn serve(self, control: Arc<Control>) -> io::Result<()> {
        self.listener.set_nonblocking(true)?;
        if let Some(m) = &self.metrics {
            m.set_nonblocking(true)?;
        }
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("control socket: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    if let Some(m) = self.metrics {
                        match tokio::net::TcpListener::from_std(m) {
                            Ok(m) => {
                                tokio::spawn(crate::metrics::serve(m, control.clone()));
                            }
                            Err(e) => tracing::error!("metrics endpoint: {e}"),
                        }
                    }
                    let l = match tokio::net::UnixListener::from_std(self.listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("control socket: {e}");
                            return;
                        }
                    };
                    loop {
                        let Ok((stream, _)) = l.accept().await else {
                            continue;
                        };
                        let control = control.clone();
                        let group = self.group;
                        tokio::spawn(async move {
                            if let Err(e) = connection(stream, &control, group).await {
                                tracing::debug!("control connection: {e}");
                            }
                        });
                    }
                });
            })?;
        Ok(())
    }
}

/// Whether a peer may use the socket: root, our own user, or a member of `group`.
fn allowed(stream: &tokio::net::UnixStream, group: Option<nix::unistd::Gid>) -> bool {
    let Ok(cred) = stream.peer_cred() else {
        return false;
    };
    let me = nix::unistd::geteuid().as_raw();
    cred.uid() == 0 || cred.uid() == me || group.is_some_and(|g| g.as_raw() == cred.gid())
}

async fn connection(
    stream: tokio::net::UnixStream,
    control: &Control,
    group: Option<nix::unistd::Gid>,
) -> io::Result<()> {
    let ok = allowed(&stream, group);
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r);
    reader.read_line(&mut line).await?;
    if ok
        && let Ok(req) = serde_json::from_str::<Request>(&line)
        && req.cmd.first().is_some_and(|c| c == "capture")
    {
        return control.capture(&req.cmd[1..], &mut w, reader).await;
    }
    let answer = if !ok {
        json!({"ok": false, "error": "permission denied"})
    } else {
        match serde_json::from_str::<Request>(&line) {
            Ok(req) => match control.handle(&req) {
                Ok(data) => json!({"ok": true, "data": data}),
                Err(e) => json!({"ok": false, "error": e}),
            },
            Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
        }
    };
    let mut out = answer.to_string();
    out.push('\n');
    w.write_all(out.as_bytes()).await?;
    w.shutdown().await
}

fn vlan_mode(p: &vlan::PortVlan) -> String {
    match p {
        vlan::PortVlan::Access(v) => format!("access {}", v.get()),
        vlan::PortVlan::Tunnel { svlan } => format!("qinq {}", svlan.get()),
        vlan::PortVlan::Trunk { allowed, native } => {
            let all = allowed.len() == 4094;
            let vids = if all {
                "all".to_string()
            } else {
                let v: Vec<String> = allowed.iter().map(|v| v.get().to_string()).collect();
                v.join(",")
            };
            match native {
                Some(n) => format!("trunk {vids} native {}", n.get()),
                None => format!("trunk {vids}"),
            }
        }
    }
}

impl Control {
    fn topo(&self) -> std::sync::RwLockReadGuard<'_, Topology> {
        self.topology.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the topology file and makes the fabric match it: ports added and removed,
    /// VLAN modes, port security, static addresses, MAC aging. Untouched ports keep their
    /// guests, counters and learned addresses; a port whose VLAN mode changed forgets its
    /// learned addresses. What needs a restart (disks, switches, a port's device settings)
    /// makes the reload refused as a whole, naming what differs; nothing is half-applied.
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let new = crate::topology::load(&self.file).map_err(|e| e.to_string())?;
        let mut guard = self.topology.write().unwrap_or_else(|p| p.into_inner());
        let changes = self.fabric.reload(&guard, &new)?;
        *guard = new;
        Ok(changes)
    }

    /// `capture PORT [COUNT] [VLAN]`: a JSON header line, then frame records
    /// (timestamp ns u64, length u32, both little endian, then the bytes) until COUNT frames
    /// were sent or the client went away.
    async fn capture(
        &self,
        args: &[String],
        w: &mut tokio::net::unix::OwnedWriteHalf,
        mut reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    ) -> io::Result<()> {
        let found = args.first().and_then(|name| self.find_port(name));
        let count: u64 = args.get(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let vlan = args
            .get(2)
            .and_then(|v| v.parse::<u32>().ok())
            .and_then(|v| vlan::VlanId::new(v).ok());
        let started = match found {
            Some((si, pi)) => self.fabric.switches()[si]
                .start_capture(pi, vlan)
                .map(|rx| (si, pi, rx)),
            None => Err(format!("no port `{}`", args.first().map_or("", |s| s))),
        };
        let (si, pi, mut rx) = match started {
            Ok(x) => x,
            Err(e) => {
                let mut out = json!({"ok": false, "error": e}).to_string();
                out.push('\n');
                return w.write_all(out.as_bytes()).await;
            }
        };
        let mut out = json!({"ok": true, "data": {"linktype": "ethernet"}}).to_string();
        out.push('\n');
        let mut sent = 0u64;
        let mut result = w.write_all(out.as_bytes()).await;
        let mut gone = [0u8; 1];
        while result.is_ok() && (count == 0 || sent < count) {
            tokio::select! {
                f = rx.recv() => {
                    let Some((ns, bytes)) = f else { break };
                    let mut rec = Vec::with_capacity(12 + bytes.len());
                    rec.extend_from_slice(&ns.to_le_bytes());
                    rec.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                    rec.extend_from_slice(&bytes);
                    result = w.write_all(&rec).await;
                    sent += 1;
                }
                // The client closed its side: stop.
                r = tokio::io::AsyncReadExt::read(&mut reader, &mut gone) => {
                    if matches!(r, Ok(0) | Err(_)) {
                        break;
                    }
                }
            }
        }
        let missed = self.fabric.switches()[si].stop_capture(pi);
        if missed > 0 {
            tracing::info!("capture of {}: {missed} frames missed", args[0]);
        }
        let _ = w.shutdown().await;
        result
    }

    /// Answers one request.
    pub fn handle(&self, req: &Request) -> Result<Value, String> {
        let args: Vec<&str> = req.cmd.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["ports"] => Ok(self.ports()),
            ["stats"] => Ok(self.stats(None)),
            ["stats", name] => {
                let v = self.stats(Some(name));
                if v.as_array().is_some_and(|a| a.is_empty()) {
                    Err(format!("no port or disk `{name}`"))
                } else {
                    Ok(v)
                }
            }
            ["fdb", "show"] => self.fdb_show(None),
            ["fdb", "show", sw] => self.fdb_show(Some(sw)),
            ["fdb", "flush"] => self.fdb_flush(None, None),
            ["fdb", "flush", sw] => self.fdb_flush(Some(sw), None),
            ["fdb", "flush", sw, port] => self.fdb_flush(Some(sw), Some(port)),
            ["fdb", "add", sw, mac, port] => self.fdb_add(sw, mac, port, None),
            ["fdb", "add", sw, mac, port, vlan] => self.fdb_add(sw, mac, port, Some(vlan)),
            ["fdb", "del", sw, mac] => self.fdb_del(sw, mac, None),
            ["fdb", "del", sw, mac, vlan] => self.fdb_del(sw, mac, Some(vlan)),
            ["graph"] => Ok(Value::String(self.graph())),
            ["reload"] => self.reload().map(|c| json!({"changes": c})),
            ["port", "add", sw, name, keys @ ..] => self.port_add(sw, name, keys),
            ["port", "del", name] => self.port_del(name),
            ["impair", port, loss, delay, jitter, rate] => {
                self.impair(port, loss, delay, jitter, rate)
            }
            _ => Err(format!(
                "unknown command `{}` (ports, stats [NAME], fdb show|flush|add|del, port add|del, graph, reload, impair, capture)",
                req.cmd.join(" ")
            )),
        }
    }

    /// `port add SWITCH NAME KEY=VALUE...`: a port with the topology file's keys (checked
    /// the same way, and against every other port and disk), added to the running fabric.
    /// The file is not changed: a later reload makes the fabric match the file again.
    fn port_add(&self, sw: &str, name: &str, keys: &[&str]) -> Result<Value, String> {
        let si = self.switch(sw)?;
        let mut topo = self.topology.write().unwrap_or_else(|p| p.into_inner());
        let port = crate::topology::port_from_keys(&self.file, &topo, sw, name, keys)?;
        self.fabric.add_port(si, &port)?;
        topo.switches[si].ports.push(port);
        Ok(json!({"added": name, "switch": sw}))
    }

    /// `port del NAME`: the port leaves the running fabric (its guest is disconnected, its
    /// socket file removed).
    fn port_del(&self, name: &str) -> Result<Value, String> {
        let mut topo = self.topology.write().unwrap_or_else(|p| p.into_inner());
        let (si, _) = self
            .find_port(name)
            .ok_or_else(|| format!("no port `{name}`"))?;
        self.fabric.remove_port(si, name);
        topo.switches[si].ports.retain(|p| p.name != name);
        Ok(json!({"removed": name}))
    }

    /// `impair PORT LOSS% DELAY_MS JITTER_MS RATE_MBIT` (all 0: cleared).
    fn impair(
        &self,
        port: &str,
        loss: &str,
        delay: &str,
        jitter: &str,
        rate: &str,
    ) -> Result<Value, String> {
        let num = |what: &str, s: &str, max: f64| -> Result<f64, String> {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0 && *v <= max)
                .ok_or_else(|| format!("{what}: `{s}` is not a number between 0 and {max}"))
        };
        let loss = num("loss", loss, 100.0)?;
        let delay = num("delay", delay, 60_000.0)?;
        let jitter = num("jitter", jitter, 60_000.0)?;
        let rate = num("rate", rate, 1_000_000.0)?;
        let (si, pi) = self
            .find_port(port)
            .ok_or_else(|| format!("no port `{port}`"))?;
        let off = loss == 0.0 && delay == 0.0 && jitter == 0.0 && rate == 0.0;
        let imp = (!off).then(|| {
            crate::dataplane::Impairment::new(
                loss / 100.0,
                std::time::Duration::from_secs_f64(delay / 1000.0),
                std::time::Duration::from_secs_f64(jitter / 1000.0),
                (rate > 0.0).then_some((rate * 1e6) as u64),
            )
        });
        self.fabric.switches()[si].set_impairment(pi, imp);
        Ok(
            json!({"port": port, "impaired": !off, "loss_pct": loss, "delay_ms": delay, "jitter_ms": jitter, "rate_mbit": rate}),
        )
    }

    /// (switch index, port index) of the port called `name`.
    fn find_port(&self, name: &str) -> Option<(usize, usize)> {
        self.fabric
            .switches()
            .iter()
            .enumerate()
            .find_map(|(si, s)| s.port_by_name(name).map(|(pi, _)| (si, pi)))
    }

    fn switch(&self, name: &str) -> Result<usize, String> {
        self.topo()
            .switches
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| format!("no switch `{name}`"))
    }

    fn ports(&self) -> Value {
        let mut out = Vec::new();
        for (sw_cfg, sw) in self.topo().switches.iter().zip(self.fabric.switches()) {
            for p in &sw_cfg.ports {
                let Some((_, port)) = sw.port_by_name(&p.name) else {
                    continue;
                };
                let mut line = json!({
                    "switch": sw_cfg.name,
                    "port": p.name,
                    "type": p.kind.type_name(),
                    "connected": port.is_connected(),
                    "vlan": vlan_mode(&p.policy.vlan),
                });
                let extra = match &p.kind {
                    PortKind::VhostUserNet(v) => json!({
                        "socket": v.socket,
                        "connections": port.connections(),
                        "queues": v.queues,
                    }),
                    PortKind::Tap(t) => json!({
                        "ifname": t.ifname,
                        "netns": t.netns,
                        "bridge": t.bridge,
                        "queues": t.queues,
                    }),
                    PortKind::Nat(n) => json!({
                        "subnet": format!("{}/{}", n.network, n.prefix),
                        "gateway": n.gateway.to_string(),
                        "dns": n.dns.to_string(),
                        "dns_upstream": n.dns_upstream.to_string(),
                        "restrict": n.restrict,
                        "ipv6": n.ipv6.map(|(p, l)| format!("{p}/{l}")),
                        "forwards": n.forwards.len(),
                    }),
                    PortKind::Vxlan(v) => json!({
                        "vni": v.vni,
                        "local": v.local.to_string(),
                        "remote": v.remote.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                        "udp_port": v.port,
                        "learned": match port {
                            crate::dataplane::Port::Vxlan(x) => x.learned(),
                            _ => 0,
                        },
                    }),
                };
                if let (Some(l), Some(e)) = (line.as_object_mut(), extra.as_object()) {
                    l.extend(e.clone());
                }
                out.push(line);
            }
        }
        for (d, disk) in self.topo().disks.iter().zip(&self.disks) {
            out.push(json!({
                "disk": d.name,
                "type": "vhost-user-blk",
                "socket": d.socket,
                "path": d.path,
                "readonly": d.readonly,
                "queues": d.queues,
                "connections": disk.counters.connections.load(std::sync::atomic::Ordering::Relaxed),
            }));
        }
        Value::Array(out)
    }

    /// Every port's and disk's counters (or just `only`'s).
    pub fn stats(&self, only: Option<&str>) -> Value {
        Value::Array(stats_lines(&self.fabric, &self.disks, only))
    }

    fn fdb_show(&self, sw: Option<&str>) -> Result<Value, String> {
        let now = self.fabric.now();
        let mut out = Vec::new();
        for (i, s) in self.fabric.switches().iter().enumerate() {
            let name = &self.topo().switches[i].name;
            if sw.is_some_and(|w| w != name) {
                continue;
            }
            let core = s.core();
            let mut rows: Vec<(u16, String, Value)> = core
                .fdb()
                .entries(now)
                .map(|(vlan, mac, e)| {
                    let row = json!({
                        "switch": name,
                        "vlan": vlan.get(),
                        "mac": mac.to_string(),
                        "port": core.port_name(e.port).unwrap_or("?"),
                        "static": e.is_static,
                        "age_s": now.since(e.last_seen).as_secs(),
                    });
                    (vlan.get(), mac.to_string(), row)
                })
                .collect();
            rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            out.extend(rows.into_iter().map(|r| r.2));
        }
        if let Some(w) = sw {
            self.switch(w)?;
        }
        Ok(Value::Array(out))
    }

    fn port_id(&self, si: usize, port: &str) -> Result<PortId, String> {
        self.fabric.switches()[si]
            .port_by_name(port)
            .map(|(i, _)| PortId(i as u32))
            .ok_or_else(|| {
                format!(
                    "no port `{port}` on switch `{}`",
                    self.topo().switches[si].name
                )
            })
    }

    fn fdb_flush(&self, sw: Option<&str>, port: Option<&str>) -> Result<Value, String> {
        let mut removed = 0usize;
        let targets: Vec<usize> = match sw {
            Some(w) => vec![self.switch(w)?],
            None => (0..self.fabric.switches().len()).collect(),
        };
        for si in targets {
            let port = port.map(|p| self.port_id(si, p)).transpose()?;
            let mut core = self.fabric.switches()[si].core();
            match port {
                Some(p) => removed += core.fdb_mut().flush_port(p),
                None => {
                    let ports: Vec<PortId> = core.ports().collect();
                    for p in ports {
                        removed += core.fdb_mut().flush_port(p);
                    }
                }
            }
        }
        Ok(json!({"removed": removed}))
    }

    fn vlan_arg(v: Option<&&str>) -> Result<vlan::VlanId, String> {
        match v {
            None => Ok(vlan::VlanId::DEFAULT),
            Some(s) => s
                .parse::<u32>()
                .ok()
                .and_then(|n| vlan::VlanId::new(n).ok())
                .ok_or_else(|| format!("`{s}` is not a VLAN id (1-4094)")),
        }
    }

    fn fdb_add(
        &self,
        sw: &str,
        mac: &str,
        port: &str,
        vlan: Option<&&str>,
    ) -> Result<Value, String> {
        let si = self.switch(sw)?;
        let p = self.port_id(si, port)?;
        let mac: MacAddr = mac.parse().map_err(|e| format!("{e}"))?;
        if !mac.is_valid_source() {
            return Err(format!("{mac} is a group or zero address"));
        }
        let vlan = Self::vlan_arg(vlan)?;
        let now = self.fabric.now();
        self.fabric.switches()[si]
            .core()
            .add_static(now, vlan, mac, p);
        Ok(json!({"added": mac.to_string(), "vlan": vlan.get(), "port": port}))
    }

    fn fdb_del(&self, sw: &str, mac: &str, vlan: Option<&&str>) -> Result<Value, String> {
        let si = self.switch(sw)?;
        let mac: MacAddr = mac.parse().map_err(|e| format!("{e}"))?;
        let vlan = Self::vlan_arg(vlan)?;
        let removed = self.fabric.switches()[si]
            .core()
            .fdb_mut()
            .remove(vlan, mac);
        if removed {
            Ok(json!({"removed": mac.to_string(), "vlan": vlan.get()}))
        } else {
            Err(format!(
                "no entry for {mac} in VLAN {} on `{sw}`",
                vlan.get()
            ))
        }
    }

    /// The topology as Graphviz dot: switches, their ports (with VLAN mode and link state),
    /// disks.
    pub fn graph(&self) -> String {
        let mut g = String::from("graph vfabric {\n  node [fontname=\"sans\"];\n");
        for (sw_cfg, sw) in self.topo().switches.iter().zip(self.fabric.switches()) {
            g += &format!(
                "  \"sw:{0}\" [shape=box, label=\"switch {0}\"];\n",
                sw_cfg.name
            );
            for p in &sw_cfg.ports {
                let Some((_, port)) = sw.port_by_name(&p.name) else {
                    continue;
                };
                let state = if port.is_connected() { "up" } else { "down" };
                g += &format!(
                    "  \"port:{0}\" [shape=ellipse, label=\"{0}\\n{1}\\n{2}\"];\n  \"sw:{3}\" -- \"port:{0}\";\n",
                    p.name,
                    vlan_mode(&p.policy.vlan),
                    state,
                    sw_cfg.name
                );
            }
        }
        for d in &self.topo().disks {
            g += &format!(
                "  \"disk:{0}\" [shape=cylinder, label=\"disk {0}\\n{1}\"];\n",
                d.name,
                d.path.display()
            );
        }
        g += "}\n";
        g
    }
}

/// The counters of every port (and every disk), one JSON object each: what SIGUSR1 prints
/// and `vfabric ctl stats` shows.
pub fn stats_lines(fabric: &Fabric, disks: &[Arc<Disk>], only: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for d in disks {
        if only.is_some_and(|o| o != d.config.name) {
            continue;
        }
        let counters: BTreeMap<&str, u64> = d.counters.snapshot().into_iter().collect();
        out.push(json!({"disk": d.config.name, "counters": counters}));
    }
    for sw in fabric.switches() {
        let core = sw.core();
        for (i, port) in sw.ports().iter().enumerate() {
            let Some(port) = port else {
                continue;
            };
            if only.is_some_and(|o| o != port.name()) {
                continue;
            }
            let mut counters = serde_json::Map::new();
            for (k, v) in port.counters() {
                counters.insert(k.into(), v.into());
            }
            let id = PortId(i as u32);
            if let Some(s) = core.port_stats(id) {
                for (k, v) in s.fields() {
                    counters.insert(k.into(), v.into());
                }
            }
            counters.insert(
                "fdb_port_entries".into(),
                core.fdb().port_entries(id).into(),
            );
            if let Some(imp) = sw.impairment(i) {
                use std::sync::atomic::Ordering::Relaxed;
                counters.insert("impair_lost".into(), imp.lost.load(Relaxed).into());
                counters.insert(
                    "impair_over_rate".into(),
                    imp.over_rate.load(Relaxed).into(),
                );
                counters.insert("impair_delayed".into(), imp.delayed.load(Relaxed).into());
            }
            out.push(json!({
                "switch": core.name(),
                "port": port.name(),
                "connected": port.is_connected(),
                "connections": port.connections(),
                "counters": counters,
            }));
        }
        if only.is_none() {
            let f = core.fdb_stats();
            out.push(json!({
                "switch": core.name(),
                "fdb_entries": core.fdb().len(),
                "fdb_learned": f.learned, "fdb_moves": f.moves, "fdb_aged_out": f.aged_out, "fdb_table_full": f.table_full,
            }));
        }
    }
    out
}

/// Sends one request to the control socket at `path` and returns the answer's data.
pub fn call(path: &Path, cmd: &[String]) -> Result<Value, String> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        format!(
            "{}: {e} (is vfabric running with this topology?)",
            path.display()
        )
    })?;
    let mut line =
        serde_json::to_string(&Request { cmd: cmd.to_vec() }).map_err(|e| e.to_string())?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    std::io::BufReader::new(s)
        .read_line(&mut answer)
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&answer).map_err(|e| format!("bad answer: {e}"))?;
    if v["ok"] == Value::Bool(true) {
        Ok(v["data"].clone())
    } else {
        Err(v["error"].as_str().unwrap_or("failed").to_string())
    }
}
