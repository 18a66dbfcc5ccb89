//! `vfabric-cni` run the way a container runtime runs a CNI plugin: the CNI_* environment
//! and the network configuration on stdin, Debian's containernetworking-plugins (host-local)
//! for IPAM through the standard delegation, against network namespaces the test makes
//! (its "containers"). A container and a VM on one switch ping each other; a VLAN keeps
//! containers apart; CHECK verifies, DEL leaves no port, interface or address behind and is
//! idempotent; bad configurations get the spec's error codes.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use vfabric_tests::fabric::vfabric_cni_bin;
use vfabric_tests::lab::{CMD, GuestOpts, NetLab};
use vfabric_tests::netns::Netns;
use vfabric_tests::qemu::Qemu;

const CNI_PATH: &str = "/usr/lib/cni";

/// Runs the plugin: (exit code, stdout as JSON).
fn cni(command: &str, container: &str, ns: Option<&Netns>, conf: &Value) -> Result<(i32, Value)> {
    let mut c = Command::new(vfabric_cni_bin()?);
    c.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ns) = ns {
        c.env("CNI_NETNS", format!("/run/netns/{}", ns.name()));
    }
    let mut child = c.spawn()?;
    // VERSION answers without reading its stdin: a plugin gone already is no error here.
    let written = child
        .stdin
        .take()
        .context("stdin")?
        .write_all(conf.to_string().as_bytes());
    if let Err(e) = written
        && !(command == "VERSION" && e.kind() == std::io::ErrorKind::BrokenPipe)
    {
        return Err(e.into());
    }
    let out = child.wait_with_output()?;
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    Ok((out.status.code().unwrap_or(-1), v))
}

#[test]
fn containers_join_a_switch_through_cni_next_to_a_vm() -> Result<()> {
    assert!(
        std::path::Path::new(CNI_PATH).join("host-local").exists(),
        "containernetworking-plugins missing (scripts/install-deps.sh installs it)"
    );
    let mut lab = NetLab::start(1, &[Qemu::system()?], GuestOpts::default())?;
    let topology = lab.fabric.topology().to_path_buf();
    let ipam_dir = lab.dir().join("ipam");
    // The example network (examples/cni/vflab.conflist) as a runtime hands it to the plugin:
    // the list's name and version put into the plugin's configuration; here with this
    // test's topology and IPAM directory, and a VLAN when asked.
    let list: Value = serde_json::from_str(&std::fs::read_to_string(
        vfabric_tests::guest_image::workspace_root().join("examples/cni/vflab.conflist"),
    )?)?;
    let conf = |vlan: Option<u16>| {
        let mut c = list["plugins"][0].clone();
        c["cniVersion"] = list["cniVersion"].clone();
        c["name"] = list["name"].clone();
        c["topology"] = json!(topology);
        c["ipam"]["dataDir"] = json!(ipam_dir);
        if let Some(v) = vlan {
            c["vlan"] = json!(v);
        }
        c
    };
    let (c1, c2, c3) = (Netns::new("c1")?, Netns::new("c2")?, Netns::new("c3")?);
    // c1 and c2 untagged, with the VM; c3 in VLAN 10, alone.
    let (code, r1) = cni("ADD", "c1aaaaaaaaaaaaaa", Some(&c1), &conf(None))?;
    assert_eq!(code, 0, "{r1}");
    assert_eq!(r1["ips"][0]["address"], "10.0.0.100/24", "{r1}");
    assert_eq!(r1["interfaces"][0]["name"], "eth0", "{r1}");
    let (code, r2) = cni("ADD", "c2bbbbbbbbbbbbbb", Some(&c2), &conf(None))?;
    assert_eq!(code, 0, "{r2}");
    let (code, r3) = cni("ADD", "c3cccccccccccccc", Some(&c3), &conf(Some(10)))?;
    assert_eq!(code, 0, "{r3}");
    let ip3 = r3["ips"][0]["address"].as_str().context("c3 address")?;
    let ip3 = ip3.split('/').next().context("c3 address")?.to_string();
    // The MAC in the result is the interface's.
    let link = c1.exec(&["ip", "-j", "link", "show", "eth0"])?;
    assert!(
        link.contains(r1["interfaces"][0]["mac"].as_str().unwrap_or("?")),
        "{link} / {r1}"
    );

    // Container <-> VM, both ways; container <-> container.
    c1.exec(&["ping", "-c", "3", "-W", "5", "10.0.0.1"])?;
    let out = lab.vm(1).run_ok("ping -c 3 -W 5 10.0.0.100", CMD)?;
    assert!(out.contains("3 packets received"), "{out}");
    c2.exec(&["ping", "-c", "2", "-W", "5", "10.0.0.100"])?;
    // VLAN 10 keeps c3 apart from all of them.
    assert!(
        c3.exec(&["ping", "-c", "2", "-W", "2", "10.0.0.100"])
            .is_err()
    );
    let out = lab.vm(1).run(&format!("ping -c 2 -W 2 {ip3}"), CMD)?;
    assert_ne!(out.code, 0, "{}", out.output);
    let info = lab.fabric.port_info("cni-c3cccccccccc-eth0")?;
    assert_eq!(info["type"], "tap", "{info}");

    // CHECK with the ADD result as prevResult.
    let mut check = conf(None);
    check["prevResult"] = r1.clone();
    let (code, v) = cni("CHECK", "c1aaaaaaaaaaaaaa", Some(&c1), &check)?;
    assert_eq!(code, 0, "{v}");

    // DEL: port, interface and address gone; a second DEL (and one without a namespace)
    // succeeds; CHECK then fails.
    for _ in 0..2 {
        let (code, v) = cni("DEL", "c1aaaaaaaaaaaaaa", Some(&c1), &conf(None))?;
        assert_eq!(code, 0, "{v}");
    }
    let (code, v) = cni("DEL", "c1aaaaaaaaaaaaaa", None, &conf(None))?;
    assert_eq!(code, 0, "{v}");
    assert!(lab.fabric.port_info("cni-c1aaaaaaaaaa-eth0").is_err());
    assert!(c1.exec(&["ip", "link", "show", "eth0"]).is_err());
    assert!(!ipam_dir.join("vflab/10.0.0.100").exists());
    let (code, v) = cni("CHECK", "c1aaaaaaaaaaaaaa", Some(&c1), &check)?;
    assert_eq!((code, v["code"].as_u64()), (1, Some(11)), "{v}");

    // Errors: the spec's codes, the JSON on stdout.
    let (code, v) = cni("VERSION", "", None, &json!({}))?;
    assert_eq!(code, 0);
    assert_eq!(v["supportedVersions"], json!(["1.0.0", "1.1.0"]));
    let mut bad = conf(None);
    bad["cniVersion"] = json!("0.2.0");
    let (code, v) = cni("ADD", "c2bbbbbbbbbbbbbb", Some(&c2), &bad)?;
    assert_eq!((code, v["code"].as_u64()), (1, Some(1)), "{v}");
    let mut bad = conf(None);
    bad.as_object_mut().context("conf")?.remove("switch");
    let (code, v) = cni("ADD", "c2bbbbbbbbbbbbbb", Some(&c2), &bad)?;
    assert_eq!((code, v["code"].as_u64()), (1, Some(6)), "{v}");
    assert_eq!(v["msg"], "`switch` is missing", "{v}");
    let mut bad = conf(None);
    bad["switch"] = json!("nosuch");
    let (code, v) = cni("ADD", "c4dddddddddddddd", Some(&c1), &bad)?;
    assert_eq!((code, v["code"].as_u64()), (1, Some(11)), "{v}");
    let (code, v) = cni("ADD", "c4dddddddddddddd", None, &conf(None))?;
    assert_eq!((code, v["code"].as_u64()), (1, Some(4)), "{v}");
    assert_eq!(v["msg"], "CNI_NETNS is not set", "{v}");

    // Any IPAM plugin: `static` gives a container a fixed address (and route) on the same
    // switch; it reaches the VM.
    let c4 = Netns::new("c4")?;
    let mut fixed = conf(None);
    fixed["ipam"] = json!({
        "type": "static",
        "addresses": [{"address": "10.0.0.200/24"}],
        "routes": [{"dst": "10.99.0.0/16", "gw": "10.0.0.1"}],
    });
    let (code, v) = cni("ADD", "c4dddddddddddddd", Some(&c4), &fixed)?;
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ips"][0]["address"], "10.0.0.200/24", "{v}");
    let routes = c4.exec(&["ip", "route"])?;
    assert!(
        routes.contains("10.99.0.0/16 via 10.0.0.1 dev eth0"),
        "{routes}"
    );
    c4.exec(&["ping", "-c", "2", "-W", "5", "10.0.0.1"])?;
    let (code, v) = cni("DEL", "c4dddddddddddddd", Some(&c4), &fixed)?;
    assert_eq!(code, 0, "{v}");

    // The others leave nothing behind either.
    for (id, ns) in [("c2bbbbbbbbbbbbbb", &c2), ("c3cccccccccccccc", &c3)] {
        let (code, v) = cni("DEL", id, Some(ns), &conf(None))?;
        assert_eq!(code, 0, "{v}");
    }
    let ports = lab.fabric.ctl(&["ports"])?.1;
    assert!(!ports.contains("cni-"), "{ports}");
    let left: Vec<_> = std::fs::read_dir(ipam_dir.join("vflab"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("10."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    Ok(())
}
