//! Reload: the running fabric made to match a new topology, all or nothing.
//!
//! What a reload may change: ports added and removed (by name), a port's VLAN mode and
//! security policy, its static addresses, a tunnel port's remotes (so a mesh follows its
//! switch's hosts), a switch's MAC aging. Ports left alone keep their
//! guests, counters and learned addresses. What needs a restart (disks, switches, the
//! control socket, a port's device settings) refuses the whole reload, naming each
//! difference; a new port that cannot be set up undoes the ports already added.

use std::sync::Arc;

use super::{Fabric, home_vlan};
use crate::core::PortId;
use crate::ports::Port;
use crate::topology::{PortKind, SwitchConfig, Topology};

impl Fabric {
    /// Makes the running fabric match `new` (it runs `old`): ports added and removed (by
    /// name), VLAN modes, port security, static addresses, MAC aging. Ports left alone keep
    /// their connections and counters. Returns the changes, described. Refuses, changing
    /// nothing, what needs a restart (disks, switches, the control socket, a port's device
    /// settings), or when a new port cannot be set up.
    pub fn reload(self: &Arc<Self>, old: &Topology, new: &Topology) -> Result<Vec<String>, String> {
        let blockers = blockers(old, new);
        let find = |s: &SwitchConfig, name: &str| s.ports.iter().find(|p| p.name == name).cloned();
        if !blockers.is_empty() {
            return Err(format!(
                "reload refused, nothing changed (restart vfabric to apply): {}",
                blockers.join("; ")
            ));
        }
        let mut changes = Vec::new();
        // New ports first, all or nothing.
        let mut added: Vec<(usize, String)> = Vec::new();
        for (si, (a, b)) in old.switches.iter().zip(&new.switches).enumerate() {
            for pb in b.ports.iter().filter(|p| find(a, &p.name).is_none()) {
                if let Err(e) = self.add_port(si, pb) {
                    for (si, name) in &added {
                        self.remove_port(*si, name);
                    }
                    return Err(format!("reload refused, nothing changed: {e}"));
                }
                added.push((si, pb.name.clone()));
                changes.push(format!("switch \"{}\": port \"{}\" added", b.name, pb.name));
            }
        }
        for (si, (a, b)) in old.switches.iter().zip(&new.switches).enumerate() {
            for pa in a.ports.iter().filter(|p| find(b, &p.name).is_none()) {
                self.remove_port(si, &pa.name);
                changes.push(format!(
                    "switch \"{}\": port \"{}\" removed",
                    a.name, pa.name
                ));
            }
        }
        let now = self.now();
        for ((a, b), rt) in old.switches.iter().zip(&new.switches).zip(&self.switches) {
            if a.mac_aging != b.mac_aging {
                rt.core().fdb_mut().set_aging(b.mac_aging);
                changes.push(format!(
                    "switch \"{}\": mac_aging {:?}",
                    b.name, b.mac_aging
                ));
            }
            for pb in &b.ports {
                let (Some(pa), Some((i, _))) = (find(a, &pb.name), rt.port_by_name(&pb.name))
                else {
                    continue;
                };
                let id = PortId(i as u32);
                if let (PortKind::Vxlan(va), PortKind::Vxlan(vb), Some((_, Port::Vxlan(x)))) =
                    (&pa.kind, &pb.kind, rt.port_by_name(&pb.name))
                    && va.remote != vb.remote
                {
                    x.set_remotes(&vb.remote);
                    let list: Vec<String> = vb.remote.iter().map(|r| r.to_string()).collect();
                    changes.push(format!(
                        "port \"{}\": remote [{}]",
                        pb.name,
                        list.join(", ")
                    ));
                }
                let mut core = rt.core();
                if pa.policy != pb.policy {
                    core.set_policy(id, pb.policy.clone());
                    changes.push(format!("port \"{}\": VLAN/security policy", pb.name));
                }
                if pa.static_macs != pb.static_macs || pa.policy.vlan != pb.policy.vlan {
                    let home_a = home_vlan(&pa.policy.vlan);
                    for m in &pa.static_macs {
                        core.fdb_mut().remove(home_a, *m);
                    }
                    let home_b = home_vlan(&pb.policy.vlan);
                    for m in &pb.static_macs {
                        core.add_static(now, home_b, *m, id);
                    }
                    if pa.static_macs != pb.static_macs {
                        changes.push(format!("port \"{}\": static_macs", pb.name));
                    }
                }
            }
        }
        Ok(changes)
    }
}

/// What in `new` cannot be applied to a fabric running `old` without a restart, described
/// (empty: the reload can go ahead).
pub fn blockers(old: &Topology, new: &Topology) -> Vec<String> {
    let mut blockers = Vec::new();
    if old.disks != new.disks {
        blockers.push("disks changed".to_string());
    }
    if old.control != new.control || old.metrics != new.metrics {
        blockers.push("the control socket or metrics address changed".to_string());
    }
    let names = |t: &Topology| {
        t.switches
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
    };
    if names(old) != names(new) {
        blockers.push("switches added, removed or renamed".to_string());
    }
    let find = |s: &SwitchConfig, name: &str| s.ports.iter().find(|p| p.name == name).cloned();
    for (a, b) in old.switches.iter().zip(&new.switches) {
        if a.busy_poll != b.busy_poll {
            blockers.push(format!("switch \"{}\": busy_poll changed", a.name));
        } else if a.poll_threads != b.poll_threads {
            blockers.push(format!("switch \"{}\": poll_threads changed", a.name));
        }
        for pb in &b.ports {
            if let Some(pa) = find(a, &pb.name)
                && !same_device(&pa.kind, &pb.kind)
            {
                blockers.push(format!(
                    "port \"{}\": its type or device settings (socket, queues, mac, offloads, ifname, VXLAN endpoints...) changed (remove it, reload, add it back)",
                    pa.name
                ));
            }
        }
    }
    blockers
}

/// Whether two port kinds are one device: equal, or tunnel ports that differ only in their
/// static remotes (a reload changes those in place: a mesh whose hosts changed).
fn same_device(a: &PortKind, b: &PortKind) -> bool {
    match (a, b) {
        (PortKind::Vxlan(x), PortKind::Vxlan(y)) => {
            let mut y = y.clone();
            y.remote.clone_from(&x.remote);
            *x == y
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::blockers;
    use crate::topology::{Topology, parse};

    fn topo(extra_switch: &str, port: &str) -> Topology {
        let src = format!(
            "[[switch]]\nname = \"lab\"\n{extra_switch}\n\
             [[switch.port]]\nname = \"a\"\ntype = \"vhost-user-net\"\nsocket = \"a.sock\"\n{port}\n"
        );
        parse(Path::new("/t.toml"), &src).unwrap()
    }

    #[test]
    fn policy_changes_are_not_blockers() {
        assert!(blockers(&topo("", ""), &topo("mac_aging = \"10s\"", "vlan = 10")).is_empty());
    }

    #[test]
    fn device_settings_and_busy_poll_are_blockers_named_one_by_one() {
        let b = blockers(&topo("", ""), &topo("busy_poll = true", "queues = 2"));
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(b[0].contains("switch \"lab\": busy_poll changed"), "{b:?}");
        assert!(
            b[1].starts_with("port \"a\": its type or device settings"),
            "{b:?}"
        );
    }

    #[test]
    fn a_change_of_poll_threads_is_a_blocker() {
        let b = blockers(
            &topo("busy_poll = true", ""),
            &topo("busy_poll = true\npoll_threads = 2", ""),
        );
        assert_eq!(b, ["switch \"lab\": poll_threads changed"]);
    }

    #[test]
    fn a_tunnel_whose_remotes_changed_is_changed_in_place_another_vni_is_a_blocker() {
        let tunnel = |vni: u32, remote: &str| {
            format!("type = \"vxlan\"\nvni = {vni}\nlocal = \"192.0.2.1\"\nremote = [{remote}]")
        };
        let src = |port: String| {
            format!("[[switch]]\nname = \"lab\"\n[[switch.port]]\nname = \"t\"\n{port}\n")
        };
        let t = |p: String| parse(Path::new("/t.toml"), &src(p)).unwrap();
        let old = t(tunnel(5, "\"192.0.2.2\""));
        assert!(blockers(&old, &t(tunnel(5, "\"192.0.2.2\", \"192.0.2.3\""))).is_empty());
        let b = blockers(&old, &t(tunnel(6, "\"192.0.2.2\"")));
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(
            b[0].starts_with("port \"t\": its type or device settings"),
            "{b:?}"
        );
    }

    #[test]
    fn a_renamed_switch_is_a_blocker() {
        let old = topo("", "");
        let mut new = old.clone();
        new.switches[0].name = "other".into();
        assert_eq!(blockers(&old, &new), ["switches added, removed or renamed"]);
    }
}
