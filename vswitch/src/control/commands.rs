//! The commands that change the running fabric: `port add|del`, `fdb flush|add|del`,
//! `impair`, `reload`, and the dispatch of every request line to its command.
//!
//! Invariant: arguments are checked before anything changes; an error answer means nothing
//! was changed.

use serde_json::{Value, json};

use super::{Control, Request};
use crate::core::{MacAddr, PortId};

impl Control {
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
            ["attach", name, vmm] => {
                let vmm = crate::attach::Vmm::parse(vmm).ok_or_else(|| {
                    format!("unknown VMM `{vmm}` (qemu, libvirt, cloud-hypervisor)")
                })?;
                let s = crate::attach::snippet(&self.topo(), name, vmm)?;
                Ok(json!({"name": name, "as": vmm.name(), "snippet": s}))
            }
            ["trace", port, hex] => self.trace(port, hex),
            ["reload"] => self.reload().map(|c| json!({"changes": c})),
            ["port", "add", sw, name, keys @ ..] => self.port_add(sw, name, keys),
            ["port", "del", name] => self.port_del(name),
            ["port", "show", name] => self.port_show(name),
            ["impair", port, loss, delay, jitter, rate] => {
                self.impair(port, loss, delay, jitter, rate)
            }
            _ => Err(format!(
                "unknown command `{}` (ports, stats [NAME], fdb show|flush|add|del, port add|del|show, graph, attach, trace, reload, impair, capture)",
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
            crate::fabric::Impairment::new(
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
}
