//! Real guests on VLANs and behind port security: access VLANs isolated even on one IP
//! subnet, a trunk guest with 802.1Q subinterfaces reaching both, the native VLAN, QinQ
//! carrying a customer trunk, spoofed source MAC/IP dropped, and a guest spraying 100 000
//! random source MACs (the kernel's pktgen) without hurting anyone else.

use anyhow::Result;
use vfabric_tests::lab::{CMD, GuestOpts, NetLab};
use vfabric_tests::qemu::Qemu;

fn qemu() -> Qemu {
    Qemu::system().expect("QEMU (run scripts/install-deps.sh)")
}

fn opts(ports: &[(usize, &str)]) -> GuestOpts {
    GuestOpts {
        port_extra: ports.iter().map(|(i, s)| (*i, s.to_string())).collect(),
        ..GuestOpts::default()
    }
}

/// Pings `addr` from guest `from`: true if every one of 3 came back, false if none did.
fn reaches(lab: &mut NetLab, from: usize, addr: &str) -> Result<bool> {
    let out = lab.vm(from).run(&format!("ping -c 3 -W 1 {addr}"), CMD)?;
    if out.output.contains("3 packets received") {
        return Ok(true);
    }
    anyhow::ensure!(
        out.output.contains(" 0 packets received"),
        "vm{from} -> {addr}: some pings came back:\n{}",
        out.output
    );
    Ok(false)
}

fn counter(lab: &mut NetLab, port: &str, name: &str) -> Result<u64> {
    lab.fabric.counter(port, name)
}

/// Adds 802.1Q subinterface `eth0.<vid>` with `cidr` in guest `i`.
fn subif(lab: &mut NetLab, i: usize, vid: u16, cidr: &str) -> Result<()> {
    lab.vm(i).run_ok(
        &format!(
            "ip link add link eth0 name eth0.{vid} type vlan id {vid} && \
             ip addr add {cidr} dev eth0.{vid} && ip link set eth0.{vid} up"
        ),
        CMD,
    )?;
    Ok(())
}

#[test]
fn access_vlans_are_isolated_and_a_trunk_reaches_them_all() -> Result<()> {
    // vm1, vm2: VLAN 10; vm3: VLAN 20 (same IP subnet 10.0.0.0/24 as vm1 and vm2);
    // vm4: trunk of 10 and 20, native VLAN 30; vm5: VLAN 30.
    let mut lab = NetLab::start(
        5,
        &[qemu()],
        opts(&[
            (1, "vlan = 10"),
            (2, "vlan = 10"),
            (3, "vlan = 20"),
            (4, "trunk = [10, 20]\nnative_vlan = 30"),
            (5, "vlan = 30"),
        ]),
    )?;
    assert!(reaches(&mut lab, 1, "10.0.0.2")?, "same VLAN");
    assert!(
        !reaches(&mut lab, 1, "10.0.0.3")?,
        "VLAN 10 reached VLAN 20"
    );
    assert!(
        !reaches(&mut lab, 3, "10.0.0.2")?,
        "VLAN 20 reached VLAN 10"
    );
    assert!(
        !reaches(&mut lab, 5, "10.0.0.1")?,
        "VLAN 30 reached VLAN 10"
    );
    // The trunk guest talks to each VLAN through its own subinterface.
    lab.vm(1).run_ok("ip addr add 10.0.10.1/24 dev eth0", CMD)?;
    lab.vm(3).run_ok("ip addr add 10.0.20.3/24 dev eth0", CMD)?;
    subif(&mut lab, 4, 10, "10.0.10.4/24")?;
    subif(&mut lab, 4, 20, "10.0.20.4/24")?;
    assert!(reaches(&mut lab, 4, "10.0.10.1")?, "trunk -> VLAN 10");
    assert!(reaches(&mut lab, 4, "10.0.20.3")?, "trunk -> VLAN 20");
    // Untagged on the trunk is the native VLAN 30.
    assert!(reaches(&mut lab, 4, "10.0.0.5")?, "trunk native -> VLAN 30");
    // A tag sent into an access port is dropped and counted.
    subif(&mut lab, 1, 20, "10.0.20.1/24")?;
    let before = counter(&mut lab, "vm1", "drop_vlan_tagged")?;
    assert!(
        !reaches(&mut lab, 1, "10.0.20.3")?,
        "a tag crossed an access port"
    );
    assert!(counter(&mut lab, "vm1", "drop_vlan_tagged")? > before);
    Ok(())
}

#[test]
fn qinq_carries_a_customer_trunk() -> Result<()> {
    // vm1 and vm2 in service VLAN 300, vm3 in 301; each has customer VLAN 100 too.
    let mut lab = NetLab::start(
        3,
        &[qemu()],
        opts(&[(1, "qinq = 300"), (2, "qinq = 300"), (3, "qinq = 301")]),
    )?;
    for i in 1..=3 {
        subif(&mut lab, i, 100, &format!("10.1.0.{i}/24"))?;
    }
    assert!(
        reaches(&mut lab, 1, "10.0.0.2")?,
        "untagged customer traffic"
    );
    assert!(
        reaches(&mut lab, 1, "10.1.0.2")?,
        "customer VLAN 100 inside S-VLAN 300"
    );
    assert!(
        !reaches(&mut lab, 1, "10.0.0.3")?,
        "service VLANs 300 and 301 met"
    );
    assert!(
        !reaches(&mut lab, 1, "10.1.0.3")?,
        "service VLANs 300 and 301 met"
    );
    Ok(())
}

#[test]
fn spoofing_and_mac_floods_are_contained() -> Result<()> {
    // vm1: one MAC and one IP allowed; vm3: at most 4 learned MACs.
    let mut lab = NetLab::start(
        3,
        &[qemu()],
        opts(&[
            (
                1,
                "allowed_macs = [\"52:54:00:00:00:01\"]\nallowed_ips = [\"10.0.0.1\"]",
            ),
            (3, "max_macs = 4"),
        ]),
    )?;
    lab.ping(1, 2, 3)?;
    // Another source IP: dropped.
    lab.vm(1).run_ok("ip addr add 10.0.0.9/24 dev eth0", CMD)?;
    lab.vm(2).run_ok("ip neigh flush all", CMD)?;
    let before = counter(&mut lab, "vm1", "drop_spoofed_ip")?;
    assert!(
        !reaches(&mut lab, 1, "-I 10.0.0.9 10.0.0.2")?,
        "spoofed IP got through"
    );
    assert!(counter(&mut lab, "vm1", "drop_spoofed_ip")? > before);
    lab.vm(1).run_ok("ip addr del 10.0.0.9/24 dev eth0", CMD)?;
    // Another source MAC: dropped.
    lab.vm(1).run_ok(
        "ip link set eth0 address 52:54:00:00:00:99 && ip neigh flush all",
        CMD,
    )?;
    let before = counter(&mut lab, "vm1", "drop_spoofed_mac")?;
    assert!(
        !reaches(&mut lab, 1, "10.0.0.2")?,
        "spoofed MAC got through"
    );
    assert!(counter(&mut lab, "vm1", "drop_spoofed_mac")? > before);
    lab.vm(1).run_ok(
        "ip link set eth0 address 52:54:00:00:00:01 && ip neigh flush all",
        CMD,
    )?;
    lab.ping(1, 2, 3)?;
    // vm3 sprays 100 000 frames from random source MACs (pktgen) at vm2.
    lab.vm(3).run_ok(
        "modprobe pktgen && \
         echo 'add_device eth0' > /proc/net/pktgen/kpktgend_0 && \
         P=/proc/net/pktgen/eth0 && \
         echo 'count 100000' > $P && echo 'pkt_size 60' > $P && echo 'delay 0' > $P && \
         echo 'dst 10.0.0.2' > $P && echo 'dst_mac 52:54:00:00:00:02' > $P && \
         echo 'src_mac 02:00:00:00:00:00' > $P && echo 'src_mac_count 1000000' > $P && \
         echo 'flag MACSRC_RND' > $P && \
         echo start > /proc/net/pktgen/pgctrl && grep -E 'pkts-sofar|Result' $P",
        std::time::Duration::from_secs(600),
    )?;
    let s = lab.fabric.stats()?;
    let sent = s["vm3"]["rx_frames"].as_u64().unwrap_or(0);
    assert!(sent >= 100_000, "vfabric got {sent} frames from vm3");
    assert_eq!(
        s["vm3"]["fdb_port_entries"].as_u64(),
        Some(4),
        "{}",
        s["vm3"]
    );
    assert!(
        s["vm3"]["drop_mac_limit"].as_u64().unwrap_or(0) >= 99_000,
        "{}",
        s["vm3"]
    );
    // Everyone else is untouched: their entries are still there, and they still talk.
    assert!(s["vm1"]["fdb_port_entries"].as_u64().unwrap_or(0) >= 1);
    assert!(s["vm2"]["fdb_port_entries"].as_u64().unwrap_or(0) >= 1);
    lab.ping(1, 2, 3)?;
    lab.ping(2, 1, 3)?;
    Ok(())
}

#[test]
fn isolated_ports_and_a_broadcast_storm() -> Result<()> {
    // vm1 and vm2 isolated (they only reach vm3); vm1 may send 50 broadcasts a second.
    let mut lab = NetLab::start(
        3,
        &[qemu()],
        opts(&[
            (1, "isolated = true\nstorm_limit = \"50pps\""),
            (2, "isolated = true"),
        ]),
    )?;
    assert!(reaches(&mut lab, 1, "10.0.0.3")?, "isolated -> open port");
    assert!(reaches(&mut lab, 2, "10.0.0.3")?, "isolated -> open port");
    assert!(!reaches(&mut lab, 1, "10.0.0.2")?, "two isolated ports met");
    // 2000 broadcast frames as fast as pktgen goes: at most a second's burst plus 50/s pass.
    let before = lab.fabric.stats()?;
    let got_before = before["vm3"]["tx_frames"].as_u64().unwrap_or(0);
    lab.vm(1).run_ok(
        "modprobe pktgen && \
         echo 'add_device eth0' > /proc/net/pktgen/kpktgend_0 && \
         P=/proc/net/pktgen/eth0 && \
         echo 'count 2000' > $P && echo 'pkt_size 60' > $P && echo 'delay 0' > $P && \
         echo 'dst 10.0.0.255' > $P && echo 'dst_mac ff:ff:ff:ff:ff:ff' > $P && \
         echo start > /proc/net/pktgen/pgctrl",
        std::time::Duration::from_secs(300),
    )?;
    let s = lab.fabric.stats()?;
    let dropped = s["vm1"]["drop_storm"].as_u64().unwrap_or(0);
    let passed = s["vm3"]["tx_frames"].as_u64().unwrap_or(0) - got_before;
    assert!(
        dropped >= 1500,
        "only {dropped} of 2000 broadcasts dropped: {}",
        s["vm1"]
    );
    assert!(passed <= 500, "{passed} broadcasts reached vm3");
    // The isolated peer got none of the broadcasts that passed (at most a stray frame of
    // its own neighbours' traffic).
    let to_vm2 = s["vm2"]["tx_frames"].as_u64().unwrap_or(0)
        - before["vm2"]["tx_frames"].as_u64().unwrap_or(0);
    assert!(
        to_vm2 < 10 && passed >= 50,
        "vm2 got {to_vm2}, vm3 got {passed}"
    );
    assert!(reaches(&mut lab, 1, "10.0.0.3")?, "unicast still flows");
    Ok(())
}
