//! Tests of topologies across hosts: `[[host]]`, `host` keys, VNIs, `[mesh]`, and each
//! host's share (`localize`, `choose_host`).

use std::net::IpAddr;
use std::path::Path;

use super::*;

fn errors(src: &str) -> Vec<String> {
    match parse(Path::new("/etc/t.toml"), src) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

const HOSTS: &str = r#"
[[host]]
name = "a"
address = "192.0.2.1"

[[host]]
name = "b"
address = "192.0.2.2"

[[host]]
name = "c"
address = "192.0.2.3"
"#;

fn lab() -> String {
    format!(
        r#"{HOSTS}
[[switch]]
name = "lab"
vni_map = {{ 20 = 2020, 10 = 1010 }}

[[switch.port]]
name = "vm1"
host = "a"
type = "vhost-user-net"
socket = "vm.sock"

[[switch.port]]
name = "vm2"
host = "c"
type = "vhost-user-net"
socket = "vm.sock"

[[switch]]
name = "solo"
vni = 77

[[switch.port]]
name = "s1"
host = "b"
type = "vhost-user-net"
socket = "s1.sock"

[[disk]]
name = "d1"
host = "b"
socket = "d1.sock"
format = "null"
size = "1M"
"#
    )
}

#[test]
fn hosts_placement_and_vnis() {
    let t = parse(Path::new("/etc/t.toml"), &lab()).unwrap();
    let h = &t.hosts;
    let names: Vec<_> = h.list.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(h.placement["vm1"], "a");
    assert_eq!(h.placement["vm2"], "c");
    assert_eq!(h.placement["d1"], "b");
    assert_eq!(h.mesh, MeshConfig::default());
    assert_eq!(h.vnis["lab"].vni, derived_vni("lab"));
    assert_eq!(h.vnis["lab"].vlans, [(10, 1010), (20, 2020)]);
    assert_eq!(h.vnis["solo"].vni, 77);
    assert_eq!(h.local, None);
}

#[test]
fn each_host_serves_its_ports_and_a_mesh_to_the_hosts_of_each_switch() {
    let t = parse(Path::new("/etc/t.toml"), &lab()).unwrap();
    let a = localize(&t, "a");
    assert_eq!(a.hosts.local.as_deref(), Some("a"));
    let ports: Vec<_> = a.switches[0]
        .ports
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(ports, ["vm1", "mesh-lab"]);
    let PortKind::Vxlan(m) = &a.switches[0].ports[1].kind else {
        panic!("the mesh is a tunnel port")
    };
    assert_eq!(m.local, "192.0.2.1".parse::<IpAddr>().unwrap());
    // Only the hosts with ports on the switch: c, not b.
    assert_eq!(m.remote, ["192.0.2.3".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        (m.vni, m.port, m.encap),
        (derived_vni("lab"), 4789, Encap::Vxlan)
    );
    assert_eq!(m.vlan_vnis, [(10, 1010), (20, 2020)]);
    assert_eq!(
        a.switches[0].ports[1].policy,
        crate::core::PortPolicy::default()
    );
    // A switch on one host only has no mesh; every switch is kept, empty here.
    assert!(a.switches[1].ports.is_empty());
    assert!(a.disks.is_empty());
    let b = localize(&t, "b");
    assert!(b.switches[0].ports.is_empty());
    let ports: Vec<_> = b.switches[1]
        .ports
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(ports, ["s1"]);
    assert_eq!(b.disks.len(), 1);
    // Without hosts, localize changes nothing.
    let one = parse(Path::new("/t.toml"), "[[switch]]\nname = \"x\"\n").unwrap();
    assert_eq!(localize(&one, "a"), one);
}

#[test]
fn sockets_and_endpoints_are_unique_per_host() {
    // vm1 (a) and vm2 (c) share a socket path: two machines. Same host: an error.
    let src = lab().replace("host = \"c\"", "host = \"a\"");
    let e = errors(&src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("is already the socket of port \"vm1\""),
        "{e:?}"
    );
    // A tunnel port of the file on a host's mesh endpoint.
    let src = format!(
        "{}\n[[switch.port]]\nname = \"t\"\nhost = \"b\"\ntype = \"vxlan\"\nvni = 5\nlocal = \"192.0.2.2\"\nremote = [\"198.51.100.1\"]\n",
        lab().split("[[disk]]").next().unwrap()
    );
    let e = errors(&src);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("already the endpoint of port \"(the mesh)\""),
        "{e:?}"
    );
}

#[test]
fn host_errors_name_the_field() {
    let port = |extra: &str| {
        format!(
            "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"p\"\ntype = \"vhost-user-net\"\nsocket = \"p.sock\"\n{extra}\n"
        )
    };
    let cases: &[(String, &str)] = &[
        (
            format!("{HOSTS}{}", port("")),
            "switch \"s\" port \"p\": host: missing",
        ),
        (
            format!("{HOSTS}{}", port("host = \"z\"")),
            "no [[host]] named \"z\" (hosts: a, b, c)",
        ),
        (
            port("host = \"a\""),
            "no [[host]] named \"a\" (the topology has none)",
        ),
        (
            format!(
                "{HOSTS}[[host]]\nname = \"d\"\naddress = \"192.0.2.1\"\n{}",
                port("host = \"a\"")
            ),
            "host \"d\": address: 192.0.2.1 is already the address of host \"a\"",
        ),
        (
            format!(
                "{HOSTS}[[host]]\nname = \"d\"\naddress = \"2001:db8::1\"\n{}",
                port("host = \"a\"")
            ),
            "not of the same family",
        ),
        (
            format!(
                "[[host]]\nname = \"d\"\naddress = \"127.0.0.1\"\n{}",
                port("host = \"d\"")
            ),
            "not a unicast, non-loopback address",
        ),
        (
            format!("[[host]]\nname = \"d\"\n{}", port("host = \"d\"")),
            "host \"d\": address: missing",
        ),
        (
            port("").replace("name = \"s\"\n", "name = \"s\"\nvni = 5\n"),
            "switch \"s\": vni: a switch's VNIs are for the mesh between hosts",
        ),
        (
            format!("{HOSTS}{}", port("host = \"a\""))
                .replace("name = \"s\"\n", "name = \"s\"\nvni_map = { 4095 = 9 }\n"),
            "`4095` is not a VLAN id",
        ),
        (
            format!("{HOSTS}{}", port("host = \"a\"")).replace(
                "name = \"s\"\n",
                "name = \"s\"\nvni = 9\nvni_map = { 10 = 9 }\n",
            ),
            "switch \"s\": vni_map: VNI 9 is already switch \"s\"'s",
        ),
        (
            format!("[mesh]\ntype = \"vxlan\"\n{}", port("")),
            "mesh: a mesh joins hosts",
        ),
        (
            format!("{HOSTS}[mesh]\ntype = \"gre\"\n{}", port("host = \"a\"")),
            "mesh: type: unknown overlay `gre`",
        ),
    ];
    for (src, want) in cases {
        let e = errors(src);
        assert!(
            e.iter().any(|e| e.contains(want)),
            "want {want:?} in {e:?}\n{src}"
        );
    }
    // Two switches whose derived VNIs would collide cannot be written by hand easily:
    // an explicit VNI equal to another switch's derived one is refused at the later one.
    let derived = derived_vni("s");
    let src = format!(
        "{HOSTS}{}[[switch]]\nname = \"t\"\nvni = {derived}\n",
        port("host = \"a\"")
    );
    let e = errors(&src);
    assert!(
        e.iter().any(|e| e.contains(&format!(
            "switch \"t\": vni: VNI {derived} is already switch \"s\"'s (derived from its name)"
        ))),
        "{e:?}"
    );
}

#[test]
fn a_geneve_mesh_on_another_port() {
    let src = lab().replace(
        "[[switch]]\nname = \"lab\"",
        "[mesh]\ntype = \"geneve\"\nport = 7000\n\n[[switch]]\nname = \"lab\"",
    );
    let t = parse(Path::new("/etc/t.toml"), &src).unwrap();
    assert_eq!(
        t.hosts.mesh,
        MeshConfig {
            encap: Encap::Geneve,
            port: 7000
        }
    );
    let c = localize(&t, "c");
    let PortKind::Vxlan(m) = &c.switches[0].ports[1].kind else {
        panic!("the mesh is a tunnel port")
    };
    assert_eq!((m.encap, m.port), (Encap::Geneve, 7000));
    assert_eq!(m.remote, ["192.0.2.1".parse::<IpAddr>().unwrap()]);
}

#[test]
fn which_host_this_is() {
    let t = parse(Path::new("/etc/t.toml"), &lab()).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(choose_host(&t, Some("b"), &[]), Ok(Some("b".into())));
    assert!(
        choose_host(&t, Some("z"), &[])
            .unwrap_err()
            .contains("--host z: no such host")
    );
    let here = [ip("127.0.0.1"), ip("192.0.2.3")];
    assert_eq!(choose_host(&t, None, &here), Ok(Some("c".into())));
    assert!(
        choose_host(&t, None, &[ip("127.0.0.1")])
            .unwrap_err()
            .contains("none of their addresses")
    );
    let both = [ip("192.0.2.1"), ip("192.0.2.2")];
    assert!(
        choose_host(&t, None, &both)
            .unwrap_err()
            .contains("several hosts")
    );
    let one = parse(Path::new("/t.toml"), "[[switch]]\nname = \"x\"\n").unwrap();
    assert_eq!(choose_host(&one, None, &here), Ok(None));
    assert!(
        choose_host(&one, Some("a"), &here)
            .unwrap_err()
            .contains("no [[host]] tables")
    );
}
