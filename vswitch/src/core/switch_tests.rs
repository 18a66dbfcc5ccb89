//! Table tests of the forwarding decision (`switch.rs`).

use super::*;

fn mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 0, n])
}

fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0u8; 46]);
    f
}

/// A switch with `n` ports named p0..p(n-1).
fn switch(n: u32) -> Switch {
    let mut s = Switch::new("t", Duration::from_secs(300), 1 << 20);
    for i in 0..n {
        assert_eq!(s.add_port(format!("p{i}")), PortId(i));
    }
    s
}

fn secs(s: u64) -> Time {
    Time(s * 1000)
}

#[test]
fn table_of_decisions() {
    let mut s = switch(3);
    let (p0, p1, p2) = (PortId(0), PortId(1), PortId(2));
    // (time s, ingress, dst, src, verdict)
    let steps: Vec<(u64, PortId, MacAddr, MacAddr, Verdict)> = vec![
        // Unknown unicast floods; the source is learned.
        (0, p0, mac(2), mac(1), Verdict::Flood),
        // The reply goes straight back to the learned port.
        (1, p1, mac(1), mac(2), Verdict::Unicast(p0)),
        (2, p0, mac(2), mac(1), Verdict::Unicast(p1)),
        // Broadcast and multicast flood even when "known".
        (3, p0, MacAddr::BROADCAST, mac(1), Verdict::Flood),
        (
            3,
            p0,
            MacAddr([0x01, 0, 0x5e, 0, 0, 0xfb]),
            mac(1),
            Verdict::Flood,
        ),
        // A frame to an address on its own ingress port is not sent back.
        (4, p0, mac(1), mac(9), Verdict::Drop(DropReason::SamePort)),
        // mac(1) moves to p2: traffic follows.
        (5, p2, mac(2), mac(1), Verdict::Unicast(p1)),
        (6, p1, mac(1), mac(2), Verdict::Unicast(p2)),
        // A group source is dropped and not learned.
        (
            7,
            p1,
            mac(1),
            MacAddr::BROADCAST,
            Verdict::Drop(DropReason::InvalidSource),
        ),
        // 300 s of silence from mac(2) (last seen at 6 s): it ages out and floods again.
        (306, p2, mac(2), mac(1), Verdict::Flood),
    ];
    for (t, port, dst, src, want) in steps {
        assert_eq!(
            s.forward(secs(t), port, &frame(dst, src)),
            want,
            "at {t}s from {port:?}"
        );
    }
    assert_eq!(s.fdb_stats().moves, 1);
    let st0 = s.port_stats(p0).unwrap();
    assert_eq!((st0.flooded, st0.unicast, st0.drop_same_port), (3, 1, 1));
    assert_eq!(s.port_stats(p1).unwrap().drop_invalid_source, 1);
    assert_eq!(s.port_stats(p2).unwrap().mac_moves_in, 1);
}

#[test]
fn batches_decide_like_single_frames() {
    // The same sequence decided frame by frame and as one batch: same verdicts, same
    // counters, same table.
    let seq: Vec<(MacAddr, MacAddr)> = vec![
        (mac(2), mac(1)),
        (mac(2), mac(1)),
        (MacAddr::BROADCAST, mac(1)),
        (MacAddr::BROADCAST, mac(1)),
        (mac(1), mac(1)),
        (mac(1), mac(1)),
        (mac(3), MacAddr([1, 0, 0, 0, 0, 1])),
        (mac(3), MacAddr([1, 0, 0, 0, 0, 1])),
        (mac(3), mac(1)),
    ];
    let frames: Vec<Vec<u8>> = seq.iter().map(|&(d, s)| frame(d, s)).collect();
    let mut a = switch(3);
    let mut b = switch(3);
    for s in [&mut a, &mut b] {
        s.forward(secs(0), PortId(2), &frame(mac(9), mac(3)));
    }
    let one: Vec<Decision> = frames
        .iter()
        .map(|f| a.decide(secs(1), PortId(0), f))
        .collect();
    let mut batch = Vec::new();
    b.forward_batch(
        secs(1),
        PortId(0),
        frames.iter().map(|f| f.as_slice()),
        |v| batch.push(v),
    );
    assert_eq!(one, batch);
    assert_eq!(a.port_stats(PortId(0)), b.port_stats(PortId(0)));
    assert_eq!(a.fdb_stats(), b.fdb_stats());
    assert_eq!(a.fdb().len(), b.fdb().len());
}

#[test]
fn flood_never_includes_the_ingress_port() {
    let s = switch(4);
    let t: Vec<_> = s.flood_targets(PortId(2), VlanId::DEFAULT).collect();
    assert_eq!(t, vec![PortId(0), PortId(1), PortId(3)]);
}

#[test]
fn static_entry_wins_over_learning() {
    let mut s = switch(3);
    s.add_static(secs(0), VlanId::DEFAULT, mac(7), PortId(2));
    // mac(7) shows up as a source on p0: not learned there.
    assert_eq!(
        s.forward(secs(1), PortId(0), &frame(mac(1), mac(7))),
        Verdict::Flood
    );
    assert_eq!(
        s.forward(secs(2), PortId(1), &frame(mac(7), mac(1))),
        Verdict::Unicast(PortId(2))
    );
    // Still there long after the aging time.
    assert_eq!(
        s.forward(secs(10_000), PortId(1), &frame(mac(7), mac(1))),
        Verdict::Unicast(PortId(2))
    );
}

#[test]
fn runts_and_unknown_ports_are_dropped() {
    let mut s = switch(2);
    assert_eq!(
        s.forward(secs(0), PortId(0), &[0u8; 13]),
        Verdict::Drop(DropReason::Runt)
    );
    assert_eq!(
        s.forward(secs(0), PortId(0), &[]),
        Verdict::Drop(DropReason::Runt)
    );
    assert_eq!(s.port_stats(PortId(0)).unwrap().drop_runt, 2);
    assert_eq!(
        s.forward(secs(0), PortId(5), &frame(mac(1), mac(2))),
        Verdict::Drop(DropReason::UnknownPort)
    );
    assert!(s.fdb().is_empty());
}

#[test]
fn port_down_and_removal_forget_entries() {
    let mut s = switch(3);
    s.forward(secs(0), PortId(1), &frame(mac(9), mac(1)));
    assert_eq!(s.port_down(PortId(1)), 1);
    assert_eq!(
        s.forward(secs(1), PortId(0), &frame(mac(1), mac(2))),
        Verdict::Flood
    );
    s.remove_port(PortId(0));
    assert_eq!(
        s.flood_targets(PortId(1), VlanId::DEFAULT)
            .collect::<Vec<_>>(),
        vec![PortId(2)]
    );
    assert_eq!(s.add_port("again"), PortId(0));
}

fn v(n: u32) -> VlanId {
    VlanId::new(n).unwrap()
}

/// A frame with these tags (TPID, VID) after the addresses, then `ether_type` and `body`.
fn tagged(
    dst: MacAddr,
    src: MacAddr,
    tags: &[(u16, u16)],
    ether_type: u16,
    body: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    for &(tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(body);
    f.resize(f.len().max(60), 0);
    f
}

fn policy(vlan: PortVlan) -> PortPolicy {
    PortPolicy {
        vlan,
        ..PortPolicy::default()
    }
}

fn trunk(allowed: &[u32], native: Option<u32>) -> PortVlan {
    let mut set = VlanSet::new();
    for &a in allowed {
        set.insert(v(a));
    }
    PortVlan::Trunk {
        allowed: Box::new(set),
        native: native.map(v),
    }
}

const Q: u16 = 0x8100;
const AD: u16 = 0x88a8;

#[test]
fn vlans_separate_learning_and_flooding_and_tags_change_on_the_way_out() {
    let mut s = Switch::new("t", Duration::from_secs(300), 1 << 20);
    let a10 = s.add_port_with("a10", policy(PortVlan::Access(v(10))));
    let b10 = s.add_port_with("b10", policy(PortVlan::Access(v(10))));
    let a20 = s.add_port_with("a20", policy(PortVlan::Access(v(20))));
    let tr = s.add_port_with("trunk", policy(trunk(&[10, 20], Some(30))));
    let n30 = s.add_port_with("n30", policy(PortVlan::Access(v(30))));
    let bc = MacAddr::BROADCAST;
    // Untagged broadcast from an access port: VLAN 10 members only; tagged on the trunk.
    let d = s.decide(secs(0), a10, &tagged(bc, mac(1), &[], 0x0800, &[]));
    assert_eq!((d.verdict, d.vlan, d.strip), (Verdict::Flood, v(10), 0));
    assert_eq!(
        s.flood_targets(a10, v(10)).collect::<Vec<_>>(),
        vec![b10, tr]
    );
    assert_eq!(s.egress_edit(b10, &d), Some(Edit::NONE));
    assert_eq!(
        s.egress_edit(tr, &d),
        Some(Edit {
            strip: 0,
            push: Some(vlan::Tag::c(10))
        })
    );
    assert_eq!(s.egress_edit(a20, &d), None);
    // The same MAC in VLAN 20 is another entry.
    s.decide(secs(0), a20, &tagged(bc, mac(1), &[], 0x0800, &[]));
    // A tagged reply from the trunk reaches mac(1) in VLAN 10 only, tag removed.
    let d = s.decide(
        secs(1),
        tr,
        &tagged(mac(1), mac(5), &[(Q, 10)], 0x0800, &[]),
    );
    assert_eq!(
        (d.verdict, d.vlan, d.strip),
        (Verdict::Unicast(a10), v(10), 4)
    );
    assert_eq!(
        s.egress_edit(a10, &d),
        Some(Edit {
            strip: 4,
            push: None
        })
    );
    let d = s.decide(
        secs(1),
        tr,
        &tagged(mac(1), mac(5), &[(Q, 20)], 0x0800, &[]),
    );
    assert_eq!(d.verdict, Verdict::Unicast(a20));
    // Untagged on the trunk: native VLAN 30, untagged out of the access port.
    let d = s.decide(secs(2), tr, &tagged(bc, mac(5), &[], 0x0800, &[]));
    assert_eq!(d.vlan, v(30));
    assert_eq!(s.flood_targets(tr, v(30)).collect::<Vec<_>>(), vec![n30]);
    assert_eq!(s.egress_edit(n30, &d), Some(Edit::NONE));
    // Priority tag on an access port: untagged, the tag removed on the way out.
    let d = s.decide(secs(3), a10, &tagged(bc, mac(1), &[(Q, 0)], 0x0800, &[]));
    assert_eq!((d.vlan, d.strip), (v(10), 4));
    // Refusals, each counted.
    let drops = [
        (
            a10,
            tagged(bc, mac(1), &[(Q, 20)], 0x0800, &[]),
            VlanDrop::TaggedOnAccess,
        ),
        (
            a10,
            tagged(bc, mac(1), &[(Q, 0), (Q, 20)], 0x0800, &[]),
            VlanDrop::TaggedOnAccess,
        ),
        (
            a10,
            tagged(bc, mac(1), &[(AD, 20), (Q, 10)], 0x0800, &[]),
            VlanDrop::TaggedOnAccess,
        ),
        (
            tr,
            tagged(bc, mac(5), &[(Q, 99)], 0x0800, &[]),
            VlanDrop::NotAllowed(99),
        ),
    ];
    for (port, f, why) in drops {
        assert_eq!(
            s.forward(secs(4), port, &f),
            Verdict::Drop(DropReason::Vlan(why))
        );
    }
    assert_eq!(s.port_stats(a10).unwrap().drop_vlan_tagged, 3);
    assert_eq!(s.port_stats(tr).unwrap().drop_vlan_not_allowed, 1);
    // A trunk without native VLAN refuses untagged frames.
    let t2 = s.add_port_with("t2", policy(trunk(&[10], None)));
    assert_eq!(
        s.forward(secs(5), t2, &tagged(bc, mac(8), &[], 0x0800, &[])),
        Verdict::Drop(DropReason::Vlan(VlanDrop::UntaggedOnTrunk))
    );
}

#[test]
fn qinq_carries_customer_tags_inside_the_service_vlan() {
    let mut s = Switch::new("t", Duration::from_secs(300), 1 << 20);
    let c1 = s.add_port_with("c1", policy(PortVlan::Tunnel { svlan: v(300) }));
    let c2 = s.add_port_with("c2", policy(PortVlan::Tunnel { svlan: v(300) }));
    let other = s.add_port_with("c3", policy(PortVlan::Tunnel { svlan: v(301) }));
    let up = s.add_port_with("up", policy(trunk(&[300, 301], None)));
    let bc = MacAddr::BROADCAST;
    // A customer frame tagged 100 enters service VLAN 300 whole.
    let d = s.decide(secs(0), c1, &tagged(bc, mac(1), &[(Q, 100)], 0x0800, &[]));
    assert_eq!((d.vlan, d.strip), (v(300), 0));
    assert_eq!(
        s.flood_targets(c1, v(300)).collect::<Vec<_>>(),
        vec![c2, up]
    );
    assert_eq!(s.egress_edit(c2, &d), Some(Edit::NONE));
    // On the trunk it gets an S-tag (802.1ad) in front of the customer tag.
    assert_eq!(
        s.egress_edit(up, &d),
        Some(Edit {
            strip: 0,
            push: Some(vlan::Tag::s(300))
        })
    );
    assert_eq!(s.egress_edit(other, &d), None);
    // Back from the trunk: S-tag off, customer tag kept.
    let d = s.decide(
        secs(1),
        up,
        &tagged(mac(1), mac(2), &[(AD, 300), (Q, 100)], 0x0800, &[]),
    );
    assert_eq!(
        (d.verdict, d.vlan, d.strip),
        (Verdict::Unicast(c1), v(300), 4)
    );
    assert_eq!(
        s.egress_edit(c1, &d),
        Some(Edit {
            strip: 4,
            push: None
        })
    );
}

fn arp(sha: MacAddr, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut b = vec![0, 1, 0x08, 0, 6, 4, 0, 1];
    b.extend_from_slice(&sha.0);
    b.extend_from_slice(&spa);
    b.extend_from_slice(&[0; 6]);
    b.extend_from_slice(&tpa);
    b
}

fn ipv4(src: [u8; 4]) -> Vec<u8> {
    let mut h = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0];
    h.extend_from_slice(&src);
    h.extend_from_slice(&[10, 0, 0, 99]);
    h
}

#[test]
fn port_security_drops_spoofing_storms_and_mac_floods() {
    let mut s = Switch::new("t", Duration::from_secs(300), 1 << 20);
    let guarded = s.add_port_with(
        "g",
        PortPolicy {
            allowed_macs: Some(vec![mac(1)]),
            allowed_ips: Some(vec!["10.0.0.5".parse().unwrap()]),
            ..PortPolicy::default()
        },
    );
    let other = s.add_port("o");
    let bc = MacAddr::BROADCAST;
    let ok = Verdict::Flood;
    let spoof_ip = Verdict::Drop(DropReason::SpoofedIp);
    let cases: Vec<(Vec<u8>, Verdict)> = vec![
        (tagged(bc, mac(1), &[], 0x0800, &ipv4([10, 0, 0, 5])), ok),
        (tagged(bc, mac(1), &[], 0x0800, &ipv4([0, 0, 0, 0])), ok),
        (
            tagged(bc, mac(1), &[], 0x0800, &ipv4([10, 0, 0, 6])),
            spoof_ip,
        ),
        (
            tagged(
                bc,
                mac(1),
                &[],
                0x0806,
                &arp(mac(1), [10, 0, 0, 5], [10, 0, 0, 1]),
            ),
            ok,
        ),
        (
            tagged(
                bc,
                mac(1),
                &[],
                0x0806,
                &arp(mac(1), [10, 0, 0, 7], [10, 0, 0, 1]),
            ),
            spoof_ip,
        ),
        // ARP claiming another hardware address.
        (
            tagged(
                bc,
                mac(1),
                &[],
                0x0806,
                &arp(mac(2), [10, 0, 0, 5], [10, 0, 0, 1]),
            ),
            spoof_ip,
        ),
        // A tagged frame is checked behind its tag too.
        (
            tagged(bc, mac(1), &[(Q, 7)], 0x0800, &ipv4([10, 0, 0, 6])),
            spoof_ip,
        ),
        (
            tagged(bc, mac(2), &[], 0x0800, &ipv4([10, 0, 0, 5])),
            Verdict::Drop(DropReason::SpoofedMac),
        ),
    ];
    // One by one and as a batch (the batch shortcut must not skip the checks).
    for (f, want) in &cases {
        assert_eq!(s.forward(secs(0), guarded, f), *want);
    }
    let mut got = Vec::new();
    s.forward_batch(
        secs(0),
        guarded,
        cases.iter().map(|c| c.0.as_slice()),
        |d| got.push(d.verdict),
    );
    assert_eq!(got, cases.iter().map(|c| c.1).collect::<Vec<_>>());
    let st = s.port_stats(guarded).unwrap();
    assert_eq!((st.drop_spoofed_ip, st.drop_spoofed_mac), (8, 2));
    assert_eq!(s.fdb().lookup(secs(0), VlanId::DEFAULT, mac(2)), None);
    // Storm limit: 10 broadcasts a second, a second's burst.
    let stormy = s.add_port_with(
        "s",
        PortPolicy {
            storm_pps: Some(10),
            ..PortPolicy::default()
        },
    );
    let b = tagged(bc, mac(3), &[], 0x0800, &[]);
    let passed = |s: &mut Switch, t| {
        (0..20)
            .filter(|_| s.forward(t, stormy, &b) == Verdict::Flood)
            .count()
    };
    assert_eq!(passed(&mut s, Time(1000)), 10);
    assert_eq!(passed(&mut s, Time(1500)), 5);
    assert_eq!(s.port_stats(stormy).unwrap().drop_storm, 25);
    // Unicast is not limited.
    assert_eq!(
        s.forward(
            Time(1500),
            stormy,
            &tagged(mac(9), mac(3), &[], 0x0800, &[])
        ),
        Verdict::Flood
    );
    // max_macs: a port spraying sources learns 4 and drops the rest; others keep theirs.
    let sprayer = s.add_port_with(
        "x",
        PortPolicy {
            max_macs: Some(4),
            ..PortPolicy::default()
        },
    );
    s.forward(secs(2), other, &tagged(bc, mac(50), &[], 0x0800, &[]));
    for n in 0..100u8 {
        s.forward(
            secs(2),
            sprayer,
            &tagged(bc, MacAddr([2, 0, 0, 0, 1, n]), &[], 0x0800, &[]),
        );
    }
    // Even the other port's address cannot be pulled over.
    assert_eq!(
        s.forward(secs(2), sprayer, &tagged(bc, mac(50), &[], 0x0800, &[])),
        Verdict::Drop(DropReason::MacLimit)
    );
    assert_eq!(s.port_stats(sprayer).unwrap().drop_mac_limit, 97);
    assert_eq!(s.fdb().port_entries(sprayer), 4);
    assert_eq!(
        s.fdb().lookup(secs(2), VlanId::DEFAULT, mac(50)),
        Some(other)
    );
}

#[test]
fn isolated_ports_only_talk_to_others() {
    let mut s = Switch::new("t", Duration::from_secs(300), 1 << 20);
    let iso = PortPolicy {
        isolated: true,
        ..PortPolicy::default()
    };
    let i1 = s.add_port_with("i1", iso.clone());
    let i2 = s.add_port_with("i2", iso);
    let up = s.add_port("up");
    s.forward(secs(0), i2, &frame(MacAddr::BROADCAST, mac(2)));
    s.forward(secs(0), up, &frame(MacAddr::BROADCAST, mac(3)));
    assert_eq!(
        s.flood_targets(i1, VlanId::DEFAULT).collect::<Vec<_>>(),
        vec![up]
    );
    assert_eq!(
        s.flood_targets(up, VlanId::DEFAULT).collect::<Vec<_>>(),
        vec![i1, i2]
    );
    assert_eq!(
        s.forward(secs(1), i1, &frame(mac(2), mac(1))),
        Verdict::Drop(DropReason::Isolated)
    );
    assert_eq!(
        s.forward(secs(1), i1, &frame(mac(3), mac(1))),
        Verdict::Unicast(up)
    );
    assert_eq!(
        s.forward(secs(1), up, &frame(mac(2), mac(3))),
        Verdict::Unicast(i2)
    );
    assert_eq!(s.port_stats(i1).unwrap().drop_isolated, 1);
}

/// What a trace must leave alone: every port's counters, the FDB's entries and counters,
/// the version.
fn observable(s: &Switch, now: Time) -> (Vec<SwitchPortStats>, Vec<String>, FdbStats, u64) {
    let stats = s.ports().filter_map(|p| s.port_stats(p)).collect();
    let mut fdb: Vec<String> = s
        .fdb()
        .entries(now)
        .map(|(v, m, e)| format!("{v} {m} {e:?}"))
        .collect();
    fdb.sort();
    (stats, fdb, s.fdb_stats(), s.version())
}

proptest::proptest! {
    /// `trace` is `decide` without its effects: on any frame sequence over ports with every
    /// kind of policy, the traced decision is the one forwarding then makes, and tracing
    /// changes no counter, entry, storm budget or version.
    #[test]
    fn trace_decides_as_forwarding_does_and_changes_nothing(
        frames in proptest::collection::vec(
            (0u64..400, 0u32..7, 0u8..6, 0u8..6, proptest::option::of(1u16..4), 0u8..4),
            1..60,
        ),
    ) {
        let mut s = Switch::new("t", Duration::from_secs(120), 6);
        s.add_port_with("access", policy(PortVlan::Access(v(1))));
        s.add_port_with("trunk", policy(trunk(&[1, 2, 3], Some(1))));
        s.add_port_with("locked", PortPolicy {
            allowed_macs: Some(vec![mac(1), mac(2)]),
            allowed_ips: Some(vec!["10.0.0.1".parse().unwrap()]),
            ..PortPolicy::default()
        });
        s.add_port_with("stormy", PortPolicy { storm_pps: Some(2), max_macs: Some(2), ..PortPolicy::default() });
        s.add_port_with("iso1", PortPolicy { isolated: true, ..PortPolicy::default() });
        s.add_port_with("iso2", PortPolicy { isolated: true, vlan: PortVlan::Access(v(2)), ..PortPolicy::default() });
        s.add_static(secs(0), v(1), mac(5), PortId(0));
        let mut t = 0;
        for (dt, port, dst, src, vid, kind) in frames {
            t += dt;
            let now = Time(t * 100);
            let dst = if dst == 0 { MacAddr::BROADCAST } else { mac(dst) };
            let src = if src == 0 { MacAddr([1, 0, 0x5e, 0, 0, 1]) } else { mac(src) };
            let tags: Vec<(u16, u16)> = vid.map(|v| (Q, v)).into_iter().collect();
            let f = match kind {
                0 => tagged(dst, src, &tags, 0x88b5, &[]),
                1 => {
                    let mut ip = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, src.0[5], 10, 0, 0, 9];
                    ip.resize(28, 0);
                    tagged(dst, src, &tags, 0x0800, &ip)
                }
                2 => tagged(dst, src, &tags, 0x0800, &[0x45]),
                _ => tagged(dst, src, &tags, 0x88b5, &[])[..13].to_vec(),
            };
            let port = PortId(port);
            let before = observable(&s, now);
            let (traced, steps) = s.trace(now, port, &f);
            proptest::prop_assert_eq!(&observable(&s, now), &before);
            proptest::prop_assert!(!steps.is_empty());
            // Some step stops the frame exactly when it is dropped.
            let dropped = matches!(traced.verdict, Verdict::Drop(_));
            proptest::prop_assert_eq!(steps.iter().any(|s| !s.pass), dropped);
            let decided = s.decide(now, port, &f);
            proptest::prop_assert_eq!(traced, decided);
        }
    }
}

#[test]
fn a_trace_names_each_check_and_the_counter_a_drop_raises() {
    let mut s = Switch::new("t", Duration::from_secs(300), 1 << 20);
    let a = s.add_port_with("a", policy(PortVlan::Access(v(10))));
    let b = s.add_port_with("b", policy(PortVlan::Access(v(10))));
    s.forward(secs(0), b, &frame(mac(1), mac(2)));
    let (d, steps) = s.trace(secs(3), a, &frame(mac(2), mac(1)));
    assert_eq!(d.verdict, Verdict::Unicast(b));
    let names: Vec<&str> = steps.iter().map(|s| s.step).collect();
    assert_eq!(names, ["header", "vlan", "learn", "destination"]);
    assert!(steps.iter().all(|s| s.pass));
    assert_eq!(steps[1].text, "access 10: untagged, in VLAN 10");
    assert!(
        steps[2].text.contains("would be learned in VLAN 10"),
        "{}",
        steps[2].text
    );
    assert!(
        steps[3].text.contains("FDB hit") && steps[3].text.contains("on b (learned 3 s ago)"),
        "{}",
        steps[3].text
    );
    // Not learned by the trace: a second trace still says "would be learned".
    let (_, again) = s.trace(secs(4), a, &frame(mac(2), mac(1)));
    assert!(again[2].text.contains("would be learned"));
    // A tagged frame on an access port: the VLAN step stops it, naming the counter.
    let (d, steps) = s.trace(secs(5), a, &tagged(mac(2), mac(1), &[(Q, 10)], 0x0800, &[]));
    assert_eq!(
        d.verdict,
        Verdict::Drop(DropReason::Vlan(vlan::VlanDrop::TaggedOnAccess))
    );
    assert_eq!(
        steps.last().map(|s| (s.step, s.pass)),
        Some(("vlan", false))
    );
    assert_eq!(
        DropReason::Vlan(vlan::VlanDrop::TaggedOnAccess).counter(),
        "drop_vlan_tagged"
    );
    assert_eq!(s.port_stats(a).unwrap().drop_vlan_tagged, 0);
}
