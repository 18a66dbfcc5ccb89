//! The commands that describe the fabric: `ports` (every port and disk with its link, VLAN
//! mode and device settings), `port show NAME` (one port: counters, FDB entries, policy,
//! guest connection, impairment), `fdb show`, `graph` (Graphviz dot).

use serde_json::{Value, json};

use super::Control;
use crate::ports::Port;
use crate::topology::PortKind;

pub use crate::core::vlan_mode;

/// A remote heard from within this long shows as "up".
const REMOTE_UP: std::time::Duration = std::time::Duration::from_secs(60);

impl Control {
    pub(super) fn ports(&self) -> Value {
        let mut out = Vec::new();
        for (sw_cfg, sw) in self.topo().switches.iter().zip(self.fabric.switches()) {
            for p in &sw_cfg.ports {
                let Some((index, port)) = sw.port_by_name(&p.name) else {
                    continue;
                };
                let mut line = json!({
                    "host": self.topo().hosts.local,
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
                        // Busy poll: the poll thread draining each TX ring pair.
                        "poll_threads": sw.poll_thread_of(index, v.queues),
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
                    PortKind::Vxlan(v) => {
                        let remotes = match &port {
                            Port::Vxlan(x) => self.remotes(x),
                            _ => Vec::new(),
                        };
                        json!({
                            "encap": v.encap.type_name(),
                            "vni": v.vni,
                            "vlan_vnis": v.vlan_vnis.iter().map(|(l, n)| json!({"vlan": l, "vni": n})).collect::<Vec<_>>(),
                            "local": v.local.to_string(),
                            "remote": v.remote.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                            "remotes": remotes,
                            "group": v.group.map(|g| g.to_string()),
                            "udp_port": v.port,
                            "learned": match port {
                                Port::Vxlan(x) => x.learned(),
                                _ => 0,
                            },
                        })
                    }
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

    /// `port show NAME`: one port as the web console's port page shows it: its `ports`
    /// line, counters, FDB entries, policy, guest connection and impairment.
    pub(super) fn port_show(&self, name: &str) -> Result<Value, String> {
        let (si, pi) = self
            .find_port(name)
            .ok_or_else(|| format!("no port `{name}`"))?;
        let line = self
            .ports()
            .as_array()
            .and_then(|a| a.iter().find(|p| p["port"] == name).cloned())
            .unwrap_or(Value::Null);
        let counters = self
            .stats_lines(Some(name))
            .into_iter()
            .find_map(|l| match l {
                super::stats::StatsLine::Port { counters, .. } => Some(counters),
                _ => None,
            })
            .unwrap_or_default();
        let sw = &self.fabric.switches()[si];
        let fdb: Vec<Value> = self
            .fdb_show(Some(sw.name()))?
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["port"] == name)
            .cloned()
            .collect();
        let policy = self
            .topo()
            .switches
            .get(si)
            .and_then(|s| s.ports.iter().find(|p| p.name == name))
            .map(|p| {
                let pol = &p.policy;
                json!({
                    "vlan": vlan_mode(&pol.vlan),
                    "allowed_macs": pol.allowed_macs.as_ref().map(|m| m.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
                    "allowed_ips": pol.allowed_ips.as_ref().map(|m| m.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
                    "max_macs": pol.max_macs,
                    "storm_limit": pol.storm_pps,
                    "isolated": pol.isolated,
                    "static_macs": p.static_macs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                })
            })
            .unwrap_or(Value::Null);
        let guest = match sw.port(pi) {
            Some(Port::Vm(v)) => v.net().guest().map(|g| {
                let vmm = v.port_stop().peer();
                json!({
                    "features": g.feature_names(),
                    "queue_pairs": g.queue_pairs,
                    "packed": g.packed,
                    "event_idx": g.event_idx,
                    "vmm": vmm.map(|p| json!({"pid": p.pid, "uid": p.uid, "program": p.program})),
                })
            }),
            _ => None,
        };
        let impairment = sw.impairment(pi).map(|i| {
            json!({
                "loss_pct": i.loss * 100.0,
                "delay_ms": i.delay.as_secs_f64() * 1000.0,
                "jitter_ms": i.jitter.as_secs_f64() * 1000.0,
                "rate_mbit": i.rate_bps.map_or(0.0, |r| r as f64 / 1e6),
            })
        });
        Ok(json!({
            "port": line,
            "counters": counters,
            "fdb": fdb,
            "policy": policy,
            "guest": guest,
            "impairment": impairment,
        }))
    }

    /// A one-line summary for service managers (systemd's STATUS=): ports, how many VM
    /// ports have a guest, disks and how many have one.
    pub fn status_line(&self) -> String {
        let all = self.ports();
        let items = all.as_array().map(Vec::as_slice).unwrap_or_default();
        let connected = |i: &&&Value| i["connections"].as_u64().is_some_and(|c| c > 0);
        let (ports, disks): (Vec<&Value>, Vec<&Value>) =
            items.iter().partition(|i| i.get("port").is_some());
        let vms: Vec<&&Value> = ports
            .iter()
            .filter(|p| p["type"] == "vhost-user-net")
            .collect();
        let guests = vms.iter().filter(|p| p["connected"] == true).count();
        format!(
            "{} ports ({} up), {} of {} VM ports with a guest, {} of {} disks with a VMM",
            ports.len(),
            ports.iter().filter(|p| p["connected"] == true).count(),
            guests,
            vms.len(),
            disks.iter().filter(connected).count(),
            disks.len()
        )
    }

    /// A remote VTEP as `ctl` shows it: "host b (192.0.2.2)" when it is a host of the file.
    fn vtep_name(&self, ip: std::net::IpAddr) -> String {
        match self.topo().hosts.by_address(ip) {
            Some(h) => format!("host {} ({ip})", h.name),
            None => ip.to_string(),
        }
    }

    /// A tunnel port's static remotes: address, host (of the file), and how long ago it was
    /// last heard ("up": within `REMOTE_UP`; tunnels have no keepalive, so a silent remote
    /// shows as "quiet").
    fn remotes(&self, x: &crate::ports::VxlanPort) -> Vec<Value> {
        let topo = self.topo();
        (x.remotes().into_iter())
            .map(|(ip, ago)| {
                let state = match ago {
                    Some(a) if a < REMOTE_UP => "up",
                    Some(_) => "quiet",
                    None => "never heard",
                };
                json!({
                    "address": ip.to_string(),
                    "host": topo.hosts.by_address(ip).map(|h| h.name.clone()),
                    "heard_ms_ago": ago.map(|a| a.as_millis() as u64),
                    "state": state,
                })
            })
            .collect()
    }

    pub(super) fn fdb_show(&self, sw: Option<&str>) -> Result<Value, String> {
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
                    // Behind a tunnel port: the remote VTEP (host) the MAC was seen behind.
                    let via = match s.port(e.port.0 as usize) {
                        Some(Port::Vxlan(x)) => x.vtep_of_mac(mac.0).map(|ip| self.vtep_name(ip)),
                        _ => None,
                    };
                    let row = json!({
                        "switch": name,
                        "vlan": vlan.get(),
                        "mac": mac.to_string(),
                        "port": core.port_name(e.port).unwrap_or("?"),
                        "via": via,
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
                // A tunnel's remotes: the other hosts, as nodes, with the tunnel's state.
                if let Port::Vxlan(x) = &port {
                    for r in self.remotes(x) {
                        let label = match r["host"].as_str() {
                            Some(h) => {
                                format!("host {h}\\n{}", r["address"].as_str().unwrap_or(""))
                            }
                            None => format!("VTEP {}", r["address"].as_str().unwrap_or("")),
                        };
                        g += &format!(
                            "  \"remote:{0}\" [shape=box3d, label=\"{label}\"];\n  \"port:{1}\" -- \"remote:{0}\" [style=dashed, label=\"{2}\"];\n",
                            r["address"].as_str().unwrap_or(""),
                            p.name,
                            r["state"].as_str().unwrap_or("")
                        );
                    }
                }
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
