//! Tests of the topology file: values, errors at file:line:col, cross-checks.

use super::*;
use std::path::Path;

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
    assert_eq!(sw.poll_threads, 1);
    let PortKind::VhostUserNet(p1) = &sw.ports[0].kind else {
        panic!("port 0 is vhost-user-net")
    };
    assert_eq!(p1.socket, PathBuf::from("/run/vfabric/vm1.sock"));
    assert_eq!(p1.mac, Some("52:54:00:00:00:01".parse().unwrap()));
    assert_eq!((p1.client, p1.queues), (false, DEFAULT_QUEUES));
    let PortKind::VhostUserNet(p2) = &sw.ports[1].kind else {
        panic!("port 1 is vhost-user-net")
    };
    assert_eq!(
        p2.socket,
        PathBuf::from("/etc/vf/vm2.sock"),
        "relative to the file"
    );
    assert_eq!((p2.client, p2.queues), (true, 2));
}

#[test]
fn tap_and_vxlan_ports() {
    let src = r#"
[[switch]]
name = "lab"
[[switch.port]]
name = "host"
type = "tap"
ifname = "vf-host0"
address = "10.8.0.254/24"
bridge = "br0"
mtu = 9000
queues = 2
vlan = 10
[[switch.port]]
name = "dc2"
type = "vxlan"
vni = 100
local = "192.0.2.1"
remote = ["192.0.2.2", "192.0.2.3"]
"#;
    let t = parse(Path::new("/t.toml"), src).unwrap();
    let sw = &t.switches[0];
    assert_eq!(
        sw.ports[0].kind,
        PortKind::Tap(TapConfig {
            ifname: "vf-host0".into(),
            netns: None,
            address: Some(("10.8.0.254".parse().unwrap(), 24)),
            bridge: Some("br0".into()),
            mtu: Some(9000),
            queues: 2,
            optional: false,
        })
    );
    assert_eq!(
        sw.ports[0].policy.vlan,
        vlan::PortVlan::Access(vlan::VlanId::new(10).unwrap())
    );
    assert_eq!(
        sw.ports[1].kind,
        PortKind::Vxlan(VxlanConfig {
            encap: crate::topology::Encap::Vxlan,
            vni: 100,
            local: "192.0.2.1".parse().unwrap(),
            remote: vec!["192.0.2.2".parse().unwrap(), "192.0.2.3".parse().unwrap()],
            group: None,
            port: 4789,
            vlan_vnis: Vec::new(),
        })
    );
}

/// `type = "geneve"`: the VXLAN keys, UDP port 6081 unless set; one tunnel per local
/// address and UDP port, whichever the encapsulation.
#[test]
fn geneve_ports() {
    let port = |name: &str, kind: &str, port: &str| {
        format!(
            "[[switch.port]]\nname = \"{name}\"\ntype = \"{kind}\"\nvni = 5\nlocal = \"192.0.2.1\"\nremote = [\"192.0.2.2\"]\n{port}"
        )
    };
    let t = parse(
        Path::new("t.toml"),
        &format!("[[switch]]\nname = \"s\"\n{}", port("g", "geneve", "")),
    )
    .unwrap();
    let PortKind::Vxlan(g) = &t.switches[0].ports[0].kind else {
        panic!("{:?}", t.switches[0].ports[0].kind)
    };
    assert_eq!(
        (g.encap, g.port, g.vni),
        (crate::topology::Encap::Geneve, 6081, 5)
    );
    assert_eq!(t.switches[0].ports[0].kind.type_name(), "geneve");
    // A multicast group instead of static remotes.
    let t = parse(
        Path::new("t.toml"),
        "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"m\"\ntype = \"vxlan\"\nvni = 5\nlocal = \"192.0.2.1\"\ngroup = \"239.1.1.1\"\n",
    )
    .unwrap();
    let PortKind::Vxlan(m) = &t.switches[0].ports[0].kind else {
        panic!()
    };
    assert_eq!(m.group, Some("239.1.1.1".parse().unwrap()));
    assert!(m.remote.is_empty());
    // One tunnel port per group and UDP port (its socket binds group:port).
    let two = "[[switch]]\nname = \"s\"\n\
        [[switch.port]]\nname = \"m\"\ntype = \"vxlan\"\nvni = 5\nlocal = \"192.0.2.1\"\ngroup = \"239.1.1.1\"\n\
        [[switch.port]]\nname = \"n\"\ntype = \"vxlan\"\nvni = 6\nlocal = \"192.0.2.7\"\ngroup = \"239.1.1.1\"\n";
    let e = parse(Path::new("t.toml"), two).unwrap_err().to_string();
    assert!(
        e.contains("239.1.1.1 port 4789 is already the group of port \"m\""),
        "{e}"
    );
    let clash = format!(
        "[[switch]]\nname = \"s\"\n{}{}",
        port("g", "geneve", "port = 4789\n"),
        port("v", "vxlan", "")
    );
    let e = parse(Path::new("t.toml"), &clash).unwrap_err().to_string();
    assert!(e.contains("is already the endpoint of port \"g\""), "{e}");
}

#[test]
fn tap_and_vxlan_errors() {
    let head = "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\n";
    let table: &[(&str, &str)] = &[
        (
            "type = \"tap\"\nifname = \"t0\"\nsocket = \"a.sock\"\n",
            "/t.toml:7:10: switch \"s\" port \"p\": socket: not a key of a tap port",
        ),
        (
            "type = \"tap\"\n",
            "/t.toml:4:8: switch \"s\" port \"p\": ifname: missing",
        ),
        (
            "type = \"tap\"\nifname = \"much-too-long-name\"\n",
            "/t.toml:6:10: switch \"s\" port \"p\": ifname: `much-too-long-name` is not an interface name",
        ),
        (
            "type = \"tap\"\nifname = \"t0\"\naddress = \"10.0.0.1\"\n",
            "/t.toml:7:11: switch \"s\" port \"p\": address: `10.0.0.1` is not an address with a prefix length",
        ),
        (
            "type = \"tap\"\nifname = \"t0\"\nmtu = 20\n",
            "/t.toml:7:7: switch \"s\" port \"p\": mtu: 20: must be 68-65535",
        ),
        (
            "type = \"vxlan\"\nvni = 16777216\nlocal = \"192.0.2.1\"\nremote = [\"192.0.2.2\"]\n",
            "/t.toml:6:7: switch \"s\" port \"p\": vni: 16777216: a VNI is 0-16777215",
        ),
        (
            "type = \"vxlan\"\nvni = 1\nlocal = \"192.0.2.1\"\nremote = [\"2001:db8::1\"]\n",
            "/t.toml:8:11: switch \"s\" port \"p\": remote: 2001:db8::1 is not of the same family",
        ),
        (
            "type = \"vxlan\"\nvni = 1\nlocal = \"192.0.2.1\"\ngroup = \"192.0.2.9\"\n",
            "/t.toml:8:9: switch \"s\" port \"p\": group: `192.0.2.9` is not a multicast group",
        ),
        (
            "type = \"vxlan\"\nvni = 1\nlocal = \"2001:db8::1\"\ngroup = \"ff05::9\"\n",
            "/t.toml:8:9: switch \"s\" port \"p\": group: ff05::9: multicast underlays are IPv4",
        ),
        (
            "type = \"geneve\"\nvni = 1\nlocal = \"192.0.2.1\"\n",
            "/t.toml:4:8: switch \"s\" port \"p\": remote: missing (a geneve port needs `remote = [\"192.0.2.2\"]`, its peer VTEPs, or a multicast `group`)",
        ),
        (
            "type = \"vxlan\"\nvni = 1\nlocal = \"192.0.2.1\"\nremote = []\n",
            "/t.toml:8:10: switch \"s\" port \"p\": remote: empty",
        ),
        (
            "type = \"vxlan\"\nvni = 1\nremote = [\"192.0.2.2\"]\n",
            "/t.toml:4:8: switch \"s\" port \"p\": local: missing",
        ),
        (
            "type = \"vhost-user-net\"\nsocket = \"a.sock\"\nvni = 3\n",
            "/t.toml:7:7: switch \"s\" port \"p\": vni: not a key of a vhost-user-net port",
        ),
    ];
    for (body, want) in table {
        let src = format!("{head}{body}");
        let err = parse(Path::new("/t.toml"), &src).unwrap_err().to_string();
        assert!(err.starts_with(want), "{src}\n got: {err}\nwant: {want}");
    }
    // Two VXLAN ports cannot share an endpoint; two TAPs cannot share a name.
    let src = "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"a\"\ntype = \"vxlan\"\nvni = 1\nlocal = \"192.0.2.1\"\nremote = [\"192.0.2.2\"]\n[[switch.port]]\nname = \"b\"\ntype = \"vxlan\"\nvni = 2\nlocal = \"192.0.2.1\"\nremote = [\"192.0.2.3\"]\n[[switch.port]]\nname = \"c\"\ntype = \"tap\"\nifname = \"t0\"\n[[switch.port]]\nname = \"d\"\ntype = \"tap\"\nifname = \"t0\"\n";
    let err = parse(Path::new("/t.toml"), src).unwrap_err().to_string();
    assert!(
        err.contains(
            "port \"b\": local: 192.0.2.1 port 4789 is already the endpoint of port \"a\""
        ),
        "{err}"
    );
    assert!(
        err.contains("port \"d\": ifname: t0 is already the TAP of port \"c\""),
        "{err}"
    );
}

#[test]
fn nat_ports() {
    let src = "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"up\"\ntype = \"nat\"\nsubnet = \"10.0.2.0/24\"\ngateway = \"10.0.2.1\"\ndns = \"10.0.2.53\"\ndhcp_range = \"10.0.2.100-10.0.2.110\"\nreservations = [{ mac = \"52:54:00:00:00:01\", ip = \"10.0.2.10\" }]\nforward = [\"tcp:127.0.0.1:2222-10.0.2.10:22\"]\ndns_upstream = \"127.0.0.1\"\nrestrict = true\nipv6 = \"fd00:2::/64\"\n";
    let t = parse(Path::new("/t.toml"), src).unwrap();
    let PortKind::Nat(n) = &t.switches[0].ports[0].kind else {
        panic!("not nat")
    };
    assert_eq!(n.gateway, std::net::Ipv4Addr::new(10, 0, 2, 1));
    assert_eq!(n.dns, std::net::Ipv4Addr::new(10, 0, 2, 53));
    assert_eq!(n.dhcp_first, std::net::Ipv4Addr::new(10, 0, 2, 100));
    assert_eq!(n.reservations.len(), 1);
    assert_eq!(n.forwards.len(), 1);
    assert_eq!(n.dns_upstream, "127.0.0.1:53".parse().unwrap());
    assert!(n.restrict);
    assert_eq!(n.gateway6(), Some("fd00:2::2".parse().unwrap()));
    let head = "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\ntype = \"nat\"\n";
    for (body, want) in [
        (
            "subnet = \"10.0.2.1/24\"\n",
            "/t.toml:6:10: switch \"s\" port \"p\": subnet: 10.0.2.1/24 has host bits set",
        ),
        (
            "subnet = \"10.0.2.0/24\"\ndhcp_range = \"10.0.2.1-10.0.2.9\"\n",
            "/t.toml:7:14: switch \"s\" port \"p\": dhcp_range: 10.0.2.1-10.0.2.9 includes the gateway",
        ),
        (
            "subnet = \"10.0.2.0/24\"\ngateway = \"10.0.3.1\"\n",
            "/t.toml:7:11: switch \"s\" port \"p\": gateway: 10.0.3.1 is not a host address of the subnet",
        ),
        (
            "subnet = \"10.0.2.0/24\"\nforward = [\"tcp:127.0.0.1:1-10.9.9.9:2\"]\n",
            "/t.toml:7:12: switch \"s\" port \"p\": forward: 10.9.9.9:2 is not an address of the subnet",
        ),
        (
            "subnet = \"10.0.2.0/24\"\nipv6 = \"fd00::/48\"\n",
            "/t.toml:7:8: switch \"s\" port \"p\": ipv6: fd00::/48: SLAAC needs a /64 prefix",
        ),
        ("", "/t.toml:4:8: switch \"s\" port \"p\": subnet: missing"),
    ] {
        let src = format!("{head}{body}");
        let err = parse(Path::new("/t.toml"), &src).unwrap_err().to_string();
        assert!(err.starts_with(want), "{src}\n got: {err}\nwant: {want}");
    }
    // Two NAT ports with overlapping subnets.
    let src = "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"a\"\ntype = \"nat\"\nsubnet = \"10.0.0.0/16\"\n[[switch.port]]\nname = \"b\"\ntype = \"nat\"\nsubnet = \"10.0.2.0/24\"\n";
    let err = parse(Path::new("/t.toml"), src).unwrap_err().to_string();
    assert!(
        err.contains("port \"b\": subnet: 10.0.2.0/24 overlaps 10.0.0.0/16 of port \"a\""),
        "{err}"
    );
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
        // poll threads
        (
            "[[switch]]\nname = \"s\"\nbusy_poll = true\npoll_threads = 0\n",
            "/etc/t.toml:4:16: switch \"s\": poll_threads: `0` is not a number from 1 to 64",
        ),
        (
            "[[switch]]\nname = \"s\"\npoll_threads = 2\n",
            "/etc/t.toml:3:16: switch \"s\": poll_threads: poll threads need `busy_poll = true`",
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
    assert!(got[3].contains(
        "13:10: switch \"a\" port \"p\": socket: /x.sock is already the socket of port \"p\""
    ));
    assert!(
        got[2].contains("14:16: switch \"a\" port \"p\": static_macs: `zz` is not a MAC address")
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
