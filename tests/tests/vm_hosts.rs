//! One topology across three hosts: three vfabric processes, each in its own network
//! namespace (a "host"), joined by a Linux bridge of veths (the underlay), all serving the
//! same file with `[[host]]` tables. Each builds its share and the VXLAN mesh of each switch
//! itself. Guests and TAP endpoints (each TAP in a namespace of its own) sit on different
//! hosts. Needs root (namespaces, veth, TAP). Traffic stays in the guests and in the
//! namespaces created here.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use vfabric_tests::fabric::Fabric;
use vfabric_tests::lab::{BOOT, CMD, ip, mac};
use vfabric_tests::netns::Netns;
use vfabric_tests::qemu::{NetDev, Qemu, Vm, VmConfig};
use vfabric_tests::raw::{count_broadcasts, send_broadcasts};
use vfabric_tests::wait_until;

const HOSTS: [&str; 3] = ["a", "b", "c"];

/// Underlay address of host `i` (0-based).
fn underlay_ip(i: usize) -> String {
    format!("10.78.0.{}", i + 1)
}

/// The lab: the underlay, the hosts' namespaces, the TAP endpoints' namespaces, the shared
/// topology file, the three vfabrics and the guests.
struct Lab {
    _underlay: Netns,
    hosts: Vec<Netns>,
    /// TAP endpoints by port name: (namespace, address).
    taps: Vec<(&'static str, Netns, &'static str)>,
    dir: tempfile::TempDir,
    fabrics: Vec<Fabric>,
    vms: Vec<Vm>,
}

impl Lab {
    fn topology(&self) -> PathBuf {
        self.dir.path().join("lab.toml")
    }

    fn tap(&self, port: &str) -> &Netns {
        &self
            .taps
            .iter()
            .find(|t| t.0 == port)
            .expect("a TAP endpoint")
            .1
    }

    /// The file: hosts a, b, c; switch "lab" with VLAN 20 on its own VNI; vm1 and a TAP on
    /// a, vm2 (on `vm2_host`) and a TAP on b, two TAPs on c (VLAN 1 and 20), a TAP of VLAN
    /// 20 on a.
    fn write_topology(&self, vm2_host: &str) -> Result<()> {
        let mut t = String::new();
        for (i, h) in HOSTS.iter().enumerate() {
            t += &format!(
                "[[host]]\nname = \"{h}\"\naddress = \"{}\"\n\n",
                underlay_ip(i)
            );
        }
        t += "[[switch]]\nname = \"lab\"\nvni_map = { 20 = 2020 }\n\n";
        for (vm, host) in [("vm1", "a"), ("vm2", vm2_host)] {
            t += &format!(
                "[[switch.port]]\nname = \"{vm}\"\nhost = \"{host}\"\ntype = \"vhost-user-net\"\nsocket = \"{vm}.sock\"\nqueues = 1\n\n"
            );
        }
        for (port, ns, addr) in &self.taps {
            let host = &port[1..2];
            let vlan = if port.ends_with("20") {
                "vlan = 20\n"
            } else {
                ""
            };
            t += &format!(
                "[[switch.port]]\nname = \"{port}\"\nhost = \"{host}\"\ntype = \"tap\"\nifname = \"{port}\"\nnetns = \"{}\"\naddress = \"{addr}/24\"\n{vlan}\n",
                ns.name()
            );
        }
        std::fs::write(self.topology(), t)?;
        Ok(())
    }

    /// `tag` tells this lab's namespaces from another test's.
    fn start(tag: &str) -> Result<Lab> {
        let underlay = Netns::new(&format!("{tag}u"))?;
        underlay.sh("ip link add br0 type bridge && ip link set br0 up")?;
        let mut hosts = Vec::new();
        for (i, h) in HOSTS.iter().enumerate() {
            let ns = Netns::new(&format!("{tag}{h}"))?;
            let (inside, outside) = (format!("u{h}"), format!("mhp{h}"));
            ns.exec(&[
                "ip",
                "link",
                "add",
                &inside,
                "type",
                "veth",
                "peer",
                "name",
                &outside,
                "netns",
                underlay.name(),
            ])?;
            underlay.sh(&format!(
                "ip link set {outside} master br0 && ip link set {outside} up"
            ))?;
            ns.sh(&format!(
                "ip addr add {}/24 dev {inside} && ip link set {inside} up",
                underlay_ip(i)
            ))?;
            hosts.push(ns);
        }
        // TAP endpoints: "t<host>" in VLAN 1, "t<host>20" in VLAN 20 (same subnet: only
        // the VLANs keep them apart).
        let mut taps = Vec::new();
        for (port, addr) in [
            ("ta", "10.0.0.11"),
            ("tb", "10.0.0.12"),
            ("tc", "10.0.0.13"),
            ("ta20", "10.0.0.21"),
            ("tc20", "10.0.0.23"),
        ] {
            taps.push((port, Netns::new(&format!("{tag}e{port}"))?, addr));
        }
        let dir = tempfile::Builder::new().prefix("vfh").tempdir_in("/tmp")?;
        let mut lab = Lab {
            _underlay: underlay,
            hosts,
            taps,
            dir,
            fabrics: Vec::new(),
            vms: Vec::new(),
        };
        lab.write_topology("b")?;
        let topo = lab.topology();
        // a and b are named; c finds itself by its address.
        let ports: [&[&str]; 3] = [
            &["vm1", "ta", "ta20", "mesh-lab"],
            &["vm2", "tb", "mesh-lab"],
            &["tc", "tc20", "mesh-lab"],
        ];
        for (i, h) in HOSTS.iter().enumerate() {
            let f = Fabric::start_host(&topo, h, i < 2, lab.hosts[i].name(), ports[i]);
            lab.fabrics
                .push(f.with_context(|| format!("vfabric of host {h}"))?);
        }
        for (i, host) in [(1, 0), (2, 1)] {
            let name = format!("vm{i}");
            let mut cfg = VmConfig::new(&name, Qemu::system()?);
            cfg.nics.push(NetDev {
                socket: lab.dir.path().join(format!("{name}.sock")),
                mac: mac(i),
                queues: 1,
                qemu_is_server: false,
                packed: false,
            });
            cfg.ips.push(("eth0".into(), format!("{}/24", ip(i))));
            let work = lab.dir.path().join(format!("{name}-{host}"));
            lab.vms.push(Vm::start(cfg, &work)?);
        }
        for vm in &mut lab.vms {
            vm.wait_ready(BOOT)?;
        }
        Ok(lab)
    }

    /// `ping` from a TAP endpoint's namespace; whether every reply came.
    fn tap_pings(&self, port: &str, to: &str, count: u32) -> Result<bool> {
        let out = self
            .tap(port)
            .exec(&["ping", "-c", &count.to_string(), "-W", "3", to]);
        Ok(out.is_ok_and(|o| o.contains(&format!("{count} received"))))
    }

    fn ctl(&self, host: usize, args: &[&str]) -> Result<String> {
        let (code, out, err) = self.fabrics[host].ctl(args)?;
        anyhow::ensure!(code == 0, "ctl {args:?} on host {}: {err}", HOSTS[host]);
        Ok(out)
    }

    /// The mesh port of host `host` as `ctl --json ports` shows it.
    fn mesh(&self, host: usize) -> Result<serde_json::Value> {
        self.fabrics[host].port_info("mesh-lab")
    }
}

/// Whether `ping` from guest `vm` reached `to` every time.
fn guest_pings(vm: &mut Vm, to: &str) -> Result<bool> {
    let out = vm.run(&format!("ping -c 3 -W 3 {to}"), CMD)?;
    Ok(out.output.contains("3 packets received"))
}

fn remotes(mesh: &serde_json::Value) -> Vec<(String, String)> {
    (mesh["remotes"].as_array().into_iter().flatten())
        .map(|r| {
            let h = r["host"].as_str().unwrap_or("?").to_string();
            (h, r["state"].as_str().unwrap_or("?").to_string())
        })
        .collect()
}

/// Guests and TAPs on three hosts reach each other through the meshes each vfabric built
/// from the one file; VLAN 20 (its own VNI) and VLAN 1 stay apart across hosts; a broadcast
/// reaches each other host exactly once; `ctl` shows the remote hosts, their state, and
/// behind which host a MAC was learned.
#[test]
fn three_hosts_one_topology_reach_each_other_and_vlans_stay_apart() -> Result<()> {
    let mut lab = Lab::start("h1")?;
    // Across hosts, VLAN 1: a guest on a to the guest on b and a TAP on c; b to c.
    assert!(guest_pings(&mut lab.vms[0], &ip(2))?, "vm1 (a) -> vm2 (b)");
    assert!(
        guest_pings(&mut lab.vms[0], "10.0.0.13")?,
        "vm1 (a) -> tc (c)"
    );
    assert!(lab.tap_pings("tb", "10.0.0.13", 2)?, "tb (b) -> tc (c)");
    // VLAN 20, carried under VNI 2020: a to c.
    assert!(
        lab.tap_pings("ta20", "10.0.0.23", 2)?,
        "ta20 (a) -> tc20 (c)"
    );
    // Apart: same subnet, other VLAN.
    assert!(
        !lab.tap_pings("ta20", "10.0.0.13", 2)?,
        "VLAN 20 reached VLAN 1"
    );
    assert!(
        !guest_pings(&mut lab.vms[0], "10.0.0.23")?,
        "VLAN 1 reached VLAN 20"
    );

    // What ctl shows on a: the mesh to b and c, both heard; vm2's MAC behind host b.
    let mesh = lab.mesh(0)?;
    assert_eq!(mesh["host"], "a");
    assert_eq!(mesh["vlan_vnis"][0]["vni"], 2020);
    let want = [
        ("b".to_string(), "up".to_string()),
        ("c".into(), "up".into()),
    ];
    assert_eq!(remotes(&mesh), want, "{mesh}");
    let fdb = lab.ctl(0, &["fdb", "show"])?;
    let row = fdb
        .lines()
        .find(|l| l.contains(&mac(2)))
        .context("vm2's MAC")?;
    assert!(
        row.contains("mesh-lab") && row.contains("host b (10.78.0.2)"),
        "{fdb}"
    );
    let graph = lab.ctl(0, &["graph"])?;
    assert!(graph.contains("host c\\n10.78.0.3"), "{graph}");

    // A broadcast from b (VLAN 1) reaches a and c once each, and nothing of VLAN 20.
    let window = (Duration::from_secs(1), Duration::from_secs(20));
    let on_a = count_broadcasts(lab.tap("ta"), "ta", 10, window.0, window.1)?;
    let on_c = count_broadcasts(lab.tap("tc"), "tc", 10, window.0, window.1)?;
    let on_c20 = count_broadcasts(lab.tap("tc20"), "tc20", 1, window.0, window.0)?;
    send_broadcasts(lab.tap("tb"), "tb", [2, 0, 0, 0, 0xb, 1], 10)?;
    let all: Vec<u32> = (0..10).collect();
    for (who, t) in [("a", on_a), ("c", on_c)] {
        let got = t.join().expect("the counting thread")?;
        assert_eq!(got, all, "broadcasts seen on host {who}");
    }
    assert_eq!(
        on_c20.join().expect("the counting thread")?,
        Vec::<u32>::new()
    );
    Ok(())
}

/// A host restarted comes back into the mesh; a port moved from one host to another in the
/// file moves when both hosts reload (its guest reconnects to the new host).
#[test]
fn a_restarted_host_rejoins_and_a_port_moves_between_hosts_on_reload() -> Result<()> {
    let mut lab = Lab::start("h2")?;
    assert!(guest_pings(&mut lab.vms[0], &ip(2))?, "vm1 (a) -> vm2 (b)");

    // b crashes and starts again: its guest reconnects, the mesh carries it again.
    lab.fabrics[1].restart()?;
    wait_until(
        Duration::from_secs(60),
        || guest_pings(&mut lab.vms[0], &ip(2)),
        || "vm1 did not reach vm2 after host b restarted".into(),
    )?;
    assert!(
        lab.tap_pings("tb", "10.0.0.13", 2)?,
        "tb (b) -> tc (c) after b restarted"
    );

    // vm2 moves from b to c: b lets it go, then c takes it (same socket file here).
    lab.write_topology("c")?;
    let out = lab.ctl(1, &["reload"])?;
    assert!(out.contains("port \"vm2\" removed"), "{out}");
    lab.fabrics[1].set_ports(&["tb", "mesh-lab"]);
    let out = lab.ctl(2, &["reload"])?;
    assert!(out.contains("port \"vm2\" added"), "{out}");
    lab.fabrics[2].set_ports(&["vm2", "tc", "tc20", "mesh-lab"]);
    let out = lab.ctl(0, &["reload"])?;
    assert!(
        !out.contains("vm2"),
        "host a has nothing of vm2 to change: {out}"
    );
    wait_until(
        Duration::from_secs(60),
        || guest_pings(&mut lab.vms[0], &ip(2)),
        || "vm1 did not reach vm2 on host c".into(),
    )?;
    let fdb = lab.ctl(0, &["fdb", "show"])?;
    let row = fdb
        .lines()
        .find(|l| l.contains(&mac(2)))
        .context("vm2's MAC")?;
    assert!(row.contains("host c (10.78.0.3)"), "{fdb}");
    let ports = lab.ctl(2, &["--json", "ports"])?;
    assert!(ports.contains("\"vm2\""), "{ports}");
    assert!(!lab.ctl(1, &["--json", "ports"])?.contains("\"vm2\""));
    // b still has tb on the switch, so its mesh stays, to a and c.
    assert_eq!(remotes(&lab.mesh(1)?).len(), 2);
    Ok(())
}

/// `vfabric check` validates the whole file and counts each host's share; `--host` a host
/// that is not in it is refused by `run`, naming the hosts.
#[test]
fn check_counts_each_hosts_share_and_run_refuses_an_unknown_host() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("vfh").tempdir_in("/tmp")?;
    let file = dir.path().join("lab.toml");
    std::fs::write(
        &file,
        "[[host]]\nname = \"a\"\naddress = \"203.0.113.1\"\n[[host]]\nname = \"b\"\naddress = \"203.0.113.2\"\n\
         [[switch]]\nname = \"lab\"\n\
         [[switch.port]]\nname = \"vm1\"\nhost = \"a\"\ntype = \"vhost-user-net\"\nsocket = \"vm1.sock\"\n\
         [[switch.port]]\nname = \"vm2\"\nhost = \"b\"\ntype = \"vhost-user-net\"\nsocket = \"vm1.sock\"\n",
    )?;
    let bin = vfabric_tests::fabric::vfabric_bin()?;
    // Each command must end by itself: a `run` that started serving is ended and failed.
    let run = |args: &[&str]| -> Result<(bool, String)> {
        let mut child = std::process::Command::new(&bin)
            .args(args)
            .arg(&file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let ended = wait_until(
            Duration::from_secs(30),
            || Ok(child.try_wait()?.is_some()),
            || format!("vfabric {args:?} did not end by itself"),
        );
        if ended.is_err() {
            let _ = child.kill();
        }
        let out = child.wait_with_output()?;
        ended?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Ok((out.status.success(), text))
    };
    let (ok, out) = run(&["check"])?;
    assert!(ok, "{out}");
    assert!(out.contains("host \"a\" (203.0.113.1): 1 ports"), "{out}");
    let (ok, out) = run(&["check", "--host", "b"])?;
    assert!(ok && out.contains("as host \"b\""), "{out}");
    let (ok, out) = run(&["run", "--host", "z"])?;
    assert!(
        !ok && out.contains("--host z: no such host (hosts: a (203.0.113.1), b (203.0.113.2))"),
        "{out}"
    );
    // Not found by address either: this machine has neither address.
    let (ok, out) = run(&["run"])?;
    assert!(!ok && out.contains("name this one with --host"), "{out}");
    Ok(())
}
