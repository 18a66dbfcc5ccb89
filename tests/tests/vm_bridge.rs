//! Bridging the switch out of the process: TAP ports into network namespaces the tests create
//! (with an address, or enslaved to a Linux bridge there), and VXLAN tunnels between two
//! vfabric instances and to the Linux kernel's vxlan device, over veth pairs between
//! namespaces. Needs root (namespaces, TAP, veth). Traffic stays in the guests and in the
//! namespaces created here.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use vfabric_tests::lab::{CMD, GuestOpts, NetLab, ip};
use vfabric_tests::netns::{Netns, pattern, sha256_hex};
use vfabric_tests::qemu::Qemu;

fn qemu() -> Qemu {
    Qemu::system().expect("QEMU (run scripts/install-deps.sh)")
}

/// The address the namespace side of a TAP gets.
const HOST_IP: &str = "10.0.0.254";

fn counter(lab: &mut NetLab, port: &str, name: &str) -> Result<u64> {
    lab.fabric.counter(port, name)
}

/// A guest downloads `size` bytes from an HTTP server in `ns` at HOST_IP and must get them
/// byte for byte.
fn download_exact(
    lab: &mut NetLab,
    guest: usize,
    ns: &Netns,
    size: usize,
    seed: u64,
) -> Result<()> {
    let data = pattern(size, seed);
    let want = sha256_hex(&data);
    let addr: SocketAddr = format!("{HOST_IP}:8080").parse()?;
    let server = ns.serve_http_once(addr, data, Duration::from_secs(120))?;
    let out = lab.vm(guest).run_ok(
        &format!("wget -q -O - http://{HOST_IP}:8080/d | sha256sum | cut -d' ' -f1"),
        Duration::from_secs(180),
    )?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    if out.trim() != want {
        bail!("vm{guest} got {} for {size} bytes, want {want}", out.trim());
    }
    Ok(())
}

/// The namespace side downloads `size` bytes from a guest's httpd, byte for byte.
fn upload_exact(lab: &mut NetLab, guest: usize, ns: &Netns, size: usize) -> Result<()> {
    let mib = size / (1 << 20);
    let want = lab.vm(guest).run_ok(
        &format!(
            "mkdir -p /tmp/www && head -c {size} /dev/urandom > /tmp/www/u && httpd -p 8081 -h /tmp/www && sha256sum /tmp/www/u | cut -d' ' -f1"
        ),
        CMD,
    )?;
    lab.wait_listening(guest, 8081)?;
    let (len, got) = ns.http_get(
        format!("{}:8081", ip(guest)).parse()?,
        "/u",
        Duration::from_secs(180),
    )?;
    if (len, got.as_str()) != (size, want.trim()) {
        bail!(
            "{mib} MiB from vm{guest}: got {len} bytes {got}, want {size} {}",
            want.trim()
        );
    }
    Ok(())
}

#[test]
fn tap_into_a_namespace_ping_and_20mb_both_ways_with_and_without_guest_offloads() -> Result<()> {
    let ns = Netns::new("tap")?;
    // A qcow2 disk too: its I/O threads start when the image is opened, before the
    // capabilities are dropped, and must give theirs up as well.
    let disk = tempfile::tempdir()?;
    let img = disk.path().join("scratch.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("16M")
        .output()?;
    anyhow::ensure!(out.status.success(), "qemu-img create: {out:?}");
    let opts = GuestOpts {
        // Guest 2 negotiates no offloads: the kernel's TCP super-frames are cut for it.
        port_extra: vec![(2, "offloads = false".into())],
        topology_extra: format!(
            "[[switch.port]]\nname = \"host\"\ntype = \"tap\"\nifname = \"vf-host0\"\nnetns = \"{}\"\naddress = \"{HOST_IP}/24\"\n\
             [[disk]]\nname = \"scratch\"\nsocket = \"{}\"\npath = \"{}\"\n",
            ns.name(),
            disk.path().join("scratch.sock").display(),
            img.display()
        ),
        ..Default::default()
    };
    let mut lab = NetLab::start(2, &[qemu()], opts)?;
    // The TAP's reader and writers work under the data-path seccomp filter too (a system
    // call outside it would kill vfabric).
    lab.fabric.restart_with_args(&["--seccomp", "kill"])?;
    // Once the TAP exists vfabric holds no capability, in any of its threads (the qcow2 I/O
    // threads give theirs up as soon as they are told, right after the start).
    let pid = lab.fabric.pid().context("vfabric pid")?;
    let with_caps = || -> Result<(usize, Vec<String>)> {
        let (mut threads, mut left) = (0, Vec::new());
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let dir = t?.path();
            let status = std::fs::read_to_string(dir.join("status"))?;
            for set in ["CapEff:", "CapPrm:"] {
                let line = status
                    .lines()
                    .find(|l| l.starts_with(set))
                    .context("no capability line")?;
                if !line.ends_with("0000000000000000") {
                    let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
                    left.push(format!("{}: {line}", comm.trim()));
                }
            }
            threads += 1;
        }
        Ok((threads, left))
    };
    vfabric_tests::wait_until(
        Duration::from_secs(10),
        || Ok(with_caps()?.1.is_empty()),
        || format!("threads with capabilities: {:?}", with_caps().map(|c| c.1)),
    )?;
    let (threads, _) = with_caps()?;
    assert!(threads > 1);
    let comms: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .collect();
    assert!(
        comms.iter().any(|c| c.starts_with("vf-qcow2")),
        "the qcow2 I/O threads run: {comms:?}"
    );
    // The TAP exists in the namespace, up, with its address; nothing appeared outside it.
    let link = ns.exec(&["ip", "-o", "addr", "show", "dev", "vf-host0"])?;
    assert!(link.contains(&format!("{HOST_IP}/24")), "{link}");
    assert!(
        !std::path::Path::new("/sys/class/net/vf-host0").exists(),
        "the TAP leaked into the host's namespace"
    );
    for g in [1, 2] {
        let out = lab
            .vm(g)
            .run_ok(&format!("ping -c 3 -W 5 {HOST_IP}"), CMD)?;
        assert!(out.contains("3 packets received"), "vm{g}: {out}");
    }
    // And from the namespace to a guest.
    let out = ns.exec(&["ping", "-c", "3", "-W", "5", &ip(1)])?;
    assert!(out.contains("3 received"), "{out}");

    // 20 MB from the namespace to each guest, byte-exact.
    let before = counter(&mut lab, "vm2", "tx_sw_segmented")?;
    download_exact(&mut lab, 1, &ns, 20 << 20, 7)?;
    download_exact(&mut lab, 2, &ns, 20 << 20, 8)?;
    // The kernel handed super-frames to the switch (TSO through the TAP): far fewer frames
    // than 1448-byte segments; guest 1 took them whole, guest 2 got them cut in software.
    let rx_frames = counter(&mut lab, "host", "rx_frames")?;
    let rx_bytes = counter(&mut lab, "host", "rx_bytes")?;
    assert!(
        rx_bytes / rx_frames.max(1) > 1514,
        "no super-frames from the kernel: {rx_bytes} bytes in {rx_frames} frames"
    );
    assert!(counter(&mut lab, "vm2", "tx_sw_segmented")? > before);
    assert_eq!(counter(&mut lab, "host", "rx_drop_bad_offload")?, 0);

    // 20 MB from a guest to the namespace: its TSO frames go to the kernel unsegmented.
    upload_exact(&mut lab, 1, &ns, 20 << 20)?;
    let tx_frames = counter(&mut lab, "host", "tx_frames")?;
    let tx_bytes = counter(&mut lab, "host", "tx_bytes")?;
    assert!(
        tx_bytes / tx_frames.max(1) > 1514,
        "guest super-frames were not passed to the kernel whole: {tx_bytes} bytes in {tx_frames} frames"
    );
    for c in ["tx_drop_error", "tx_drop_link_down", "rx_drop_runt"] {
        assert_eq!(counter(&mut lab, "host", c)?, 0, "{c}");
    }
    Ok(())
}

#[test]
fn tap_enslaved_to_a_bridge_in_a_namespace() -> Result<()> {
    let ns = Netns::new("br")?;
    ns.sh(&format!(
        "ip link add br0 type bridge && ip addr add {HOST_IP}/24 dev br0 && ip link set br0 up"
    ))?;
    let opts = GuestOpts {
        topology_extra: format!(
            "[[switch.port]]\nname = \"host\"\ntype = \"tap\"\nifname = \"vf-br0p\"\nnetns = \"{}\"\nbridge = \"br0\"\n",
            ns.name()
        ),
        ..Default::default()
    };
    let mut lab = NetLab::start(1, &[qemu()], opts)?;
    let link = ns.exec(&["ip", "-o", "link", "show", "vf-br0p"])?;
    assert!(link.contains("master br0"), "{link}");
    let out = lab
        .vm(1)
        .run_ok(&format!("ping -c 3 -W 5 {HOST_IP}"), CMD)?;
    assert!(out.contains("3 packets received"), "{out}");
    download_exact(&mut lab, 1, &ns, 20 << 20, 9)?;
    Ok(())
}

#[test]
fn a_missing_tap_namespace_is_a_check_error_and_an_optional_tap_lets_the_rest_run() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("vf").tempdir_in("/tmp")?;
    let topo = dir.path().join("t.toml");
    std::fs::write(
        &topo,
        "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"h\"\ntype = \"tap\"\nifname = \"vf-x0\"\nnetns = \"vft-no-such-ns\"\n",
    )?;
    let out = std::process::Command::new(vfabric_tests::fabric::vfabric_bin()?)
        .arg("check")
        .arg(&topo)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(":7:9: switch \"s\" port \"h\": netns: no network namespace `vft-no-such-ns`"),
        "{err}"
    );
    // An interface name the kernel refuses for a TAP (a loopback exists in every
    // namespace): required, vfabric refuses to start; optional, it starts without it.
    let ns = Netns::new("opt")?;
    for (optional, starts) in [(false, false), (true, true)] {
        std::fs::write(
            &topo,
            format!(
                "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"h\"\ntype = \"tap\"\nifname = \"lo\"\nnetns = \"{}\"\noptional = {optional}\n[[switch.port]]\nname = \"vm\"\ntype = \"vhost-user-net\"\nsocket = \"vm.sock\"\n",
                ns.name()
            ),
        )?;
        let mut child = std::process::Command::new(vfabric_tests::fabric::vfabric_bin()?)
            .arg("run")
            .arg(&topo)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let ready = lines.any(|l| l.is_ok_and(|l| l == "vfabric ready"));
        assert_eq!(ready, starts, "optional = {optional}");
        if ready {
            assert!(dir.path().join("vm.sock").exists());
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let st = child.wait()?;
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().context("stderr")?, &mut err)?;
        assert!(err.contains("port \"h\": creating TAP `lo`"), "{err}");
        if !starts {
            assert!(!st.success());
            assert!(
                !dir.path().join("vm.sock").exists(),
                "a socket was left behind"
            );
        }
    }
    Ok(())
}

/// Two namespaces joined by a veth pair, `a` 192.168.77.1 and `b` 192.168.77.2.
fn underlay(tag: &str) -> Result<(Netns, Netns)> {
    let a = Netns::new(&format!("{tag}a"))?;
    let b = Netns::new(&format!("{tag}b"))?;
    let (va, vb) = (format!("vx{tag}a"), format!("vx{tag}b"));
    a.exec(&[
        "ip",
        "link",
        "add",
        &va,
        "type",
        "veth",
        "peer",
        "name",
        &vb,
        "netns",
        b.name(),
    ])?;
    a.sh(&format!(
        "ip addr add 192.168.77.1/24 dev {va} && ip link set {va} up"
    ))?;
    b.sh(&format!(
        "ip addr add 192.168.77.2/24 dev {vb} && ip link set {vb} up"
    ))?;
    Ok((a, b))
}

fn vxlan_port(local: &str, remote: &str) -> String {
    tunnel_port("vxlan", local, remote)
}

fn tunnel_port(kind: &str, local: &str, remote: &str) -> String {
    format!(
        "[[switch.port]]\nname = \"tunnel\"\ntype = \"{kind}\"\nvni = 100\nlocal = \"{local}\"\nremote = [\"{remote}\"]\n"
    )
}

/// Two vfabrics in namespaces joined by a veth underlay and a `kind` tunnel port, one guest
/// behind each (at MTU 1450: the 1500-byte underlay carries 1450 + 14 + 36 bytes), which
/// ping each other both ways. Returns the namespaces and the labs.
fn two_sites(tag: &str, kind: &str) -> Result<(Netns, Netns, NetLab, NetLab)> {
    let (a, b) = underlay(tag)?;
    let side = |ns: &Netns, first: usize, local: &str, remote: &str| GuestOpts {
        first,
        fabric_netns: Some(ns.name().to_string()),
        topology_extra: tunnel_port(kind, local, remote),
        extra_cmdline: "vf.mtu=eth0:1450".into(),
        ..Default::default()
    };
    let mut la = NetLab::start(1, &[qemu()], side(&a, 1, "192.168.77.1", "192.168.77.2"))?;
    let mut lb = NetLab::start(1, &[qemu()], side(&b, 2, "192.168.77.2", "192.168.77.1"))?;
    let out = la.vm(1).run_ok(&format!("ping -c 3 -W 5 {}", ip(2)), CMD)?;
    assert!(out.contains("3 packets received"), "{out}");
    let out = lb.vm(2).run_ok(&format!("ping -c 3 -W 5 {}", ip(1)), CMD)?;
    assert!(out.contains("3 packets received"), "{out}");
    Ok((a, b, la, lb))
}

/// 4 MiB of random bytes from `lb`'s guest 2 to `la`'s guest 1 over HTTP, byte-exact.
fn transfer_4mib(la: &mut NetLab, lb: &mut NetLab) -> Result<()> {
    let want = lb.vm(2).run_ok(
        "mkdir -p /tmp/www && head -c 4194304 /dev/urandom > /tmp/www/d && httpd -p 8080 -h /tmp/www && sha256sum /tmp/www/d | cut -d' ' -f1",
        CMD,
    )?;
    lb.wait_listening(2, 8080)?;
    let got = la.vm(1).run_ok(
        &format!(
            "wget -q -O - http://{}:8080/d | sha256sum | cut -d' ' -f1",
            ip(2)
        ),
        Duration::from_secs(180),
    )?;
    assert_eq!(got.trim(), want.trim());
    Ok(())
}

/// Guest 1 of `lab` serves 4 MiB of random bytes over HTTP at `addr` (its address, port
/// 8080); `ns` fetches them, byte-exact.
fn guest_serves_4mib(lab: &mut NetLab, ns: &Netns, addr: &str) -> Result<()> {
    let want = lab.vm(1).run_ok(
        "mkdir -p /tmp/www && head -c 4194304 /dev/urandom > /tmp/www/d && httpd -p 8080 -h /tmp/www && sha256sum /tmp/www/d | cut -d' ' -f1",
        CMD,
    )?;
    lab.wait_listening(1, 8080)?;
    let (len, got) = ns.http_get(addr.parse()?, "/d", Duration::from_secs(180))?;
    assert_eq!((len, got.as_str()), (4 << 20, want.trim()));
    Ok(())
}

/// GENEVE (RFC 8926) between two vfabrics: guests ping both ways and move 4 MiB byte-exact
/// over TCP, the remote MAC is learned behind its VTEP, and a datagram from the peer's
/// address with a critical option (which vfabric does not understand) is dropped and
/// counted as such.
#[test]
fn two_vfabrics_joined_by_geneve_and_a_critical_option_is_dropped_and_counted() -> Result<()> {
    let (a, _b, mut la, mut lb) = two_sites("g", "geneve")?;
    transfer_4mib(&mut la, &mut lb)?;
    let tunnel = la.fabric.port_info("tunnel")?;
    assert_eq!(tunnel["type"], "geneve");
    assert_eq!(tunnel["udp_port"], 6081);
    assert_eq!(tunnel["learned"], 1, "{tunnel}");
    // From a's address: version 0, one 4-byte option whose type has the critical bit, VNI
    // 100, then an Ethernet frame.
    let mut d = vec![0x01, 0x00, 0x65, 0x58, 0, 0, 100, 0, 0x01, 0x02, 0x80, 0x00];
    d.extend_from_slice(&[0xff; 6]);
    d.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99, 0x08, 0x00]);
    d.extend_from_slice(&[0u8; 46]);
    a.run_in(move || {
        let s = std::net::UdpSocket::bind("192.168.77.1:0")?;
        s.send_to(&d, "192.168.77.2:6081")?;
        Ok(())
    })
    .join()
    .expect("the sender thread")?;
    vfabric_tests::wait_until(
        Duration::from_secs(10),
        || Ok(lb.fabric.counter("tunnel", "rx_drop_critical_option")? == 1),
        || "the critical option was not counted".into(),
    )?;
    assert_eq!(lb.fabric.counter("tunnel", "rx_drop_bad_header")?, 0);
    Ok(())
}

#[test]
fn two_vfabrics_joined_by_vxlan_guests_reach_each_other_and_big_frames_are_dropped_and_counted()
-> Result<()> {
    let (_a, _b, mut la, mut lb) = two_sites("t", "vxlan")?;
    // Full-size frames at the guests' MTU, and TCP (guest TSO cut in software before the
    // tunnel): 4 MiB byte-exact.
    la.vm(1)
        .run_ok(&format!("ping -c 2 -W 5 -s 1422 {}", ip(2)), CMD)?;
    transfer_4mib(&mut la, &mut lb)?;
    // The download's segments came in batches: runs of them were merged into TCP
    // super-frames (receive coalescing) before the guest got them, byte-exact as checked.
    assert!(la.fabric.counter("tunnel", "rx_coalesced")? > 0);
    // The remote guest's MAC is learned behind the peer VTEP: unicast is not flooded.
    let tunnel = la.fabric.port_info("tunnel")?;
    assert_eq!(tunnel["type"], "vxlan");
    assert_eq!(tunnel["learned"], 1, "{tunnel}");

    // A guest with a 1500-byte MTU: its full-size frames do not fit the tunnel and are
    // dropped and counted, never fragmented.
    let before = la.fabric.counter("tunnel", "tx_drop_too_big")?;
    la.vm(1).run_ok("ip link set eth0 mtu 1500", CMD)?;
    let out = la
        .vm(1)
        .run(&format!("ping -c 2 -W 2 -s 1472 {}", ip(2)), CMD)?;
    assert_ne!(out.code, 0, "oversized pings went through: {}", out.output);
    assert_eq!(la.fabric.counter("tunnel", "tx_drop_too_big")? - before, 2);
    assert_eq!(lb.fabric.counter("tunnel", "rx_drop_bad_header")?, 0);
    Ok(())
}

#[test]
fn vfabric_vxlan_and_the_linux_vxlan_device_carry_one_segment_both_ways() -> Result<()> {
    let (a, k) = underlay("k")?;
    // The kernel's end: vxlan100 on the veth in namespace k, in the guests' subnet.
    k.sh(
        "ip link add vxlan100 type vxlan id 100 local 192.168.77.2 remote 192.168.77.1 dstport 4789 dev vxkb \
         && ip addr add 10.0.0.99/24 dev vxlan100 && ip link set vxlan100 up",
    )?;
    // Frames crossing a veth keep their checksum "to be filled in by hardware"; a VTEP that
    // reads the tunnel through a UDP socket (vfabric, like OVS's userspace datapath) never
    // sees them filled. A kernel peer on the same host turns its checksum offload off.
    k.exec(&["ethtool", "-K", "vxlan100", "tx", "off"])?;
    let mtu = k.exec(&["cat", "/sys/class/net/vxlan100/mtu"])?;
    assert_eq!(mtu.trim(), "1450", "the kernel's rule agrees with ours");
    let opts = GuestOpts {
        fabric_netns: Some(a.name().to_string()),
        topology_extra: vxlan_port("192.168.77.1", "192.168.77.2"),
        extra_cmdline: "vf.mtu=eth0:1450".into(),
        ..Default::default()
    };
    let mut lab = NetLab::start(1, &[qemu()], opts)?;
    let out = lab.vm(1).run_ok("ping -c 3 -W 5 10.0.0.99", CMD)?;
    assert!(out.contains("3 packets received"), "{out}");
    let out = k.exec(&["ping", "-c", "3", "-W", "5", "-s", "1422", &ip(1)])?;
    assert!(out.contains("3 received"), "{out}");
    // TCP from the kernel's side to the guest, byte-exact.
    let (len, got) = {
        let want = lab.vm(1).run_ok(
            "mkdir -p /tmp/www && head -c 4194304 /dev/urandom > /tmp/www/d && httpd -p 8080 -h /tmp/www && sha256sum /tmp/www/d | cut -d' ' -f1",
            CMD,
        )?;
        lab.wait_listening(1, 8080)?;
        let r = k.http_get(
            format!("{}:8080", ip(1)).parse()?,
            "/d",
            Duration::from_secs(180),
        )?;
        assert_eq!(r.1, want.trim());
        r
    };
    assert_eq!(len, 4 << 20, "{got}");
    for c in [
        "rx_drop_bad_header",
        "rx_drop_unknown_vtep",
        "tx_drop_too_big",
    ] {
        assert_eq!(lab.fabric.counter("tunnel", c)?, 0, "{c}");
    }
    Ok(())
}

/// vfabric's GENEVE port against the Linux kernel's geneve device, run in a guest (this
/// host's kernel has no geneve module; the guests' Debian kernel has). The guest's underlay
/// is its eth0 on switch `lab`, which reaches vfabric's own namespace through the TAP `under`
/// (10.0.0.254); the overlay is switch `over`: the GENEVE port to the guest's geneve0
/// (10.50.0.2) and the TAP `ov` (10.50.0.1). Pings both ways, 4 MiB byte-exact both ways, the
/// guest's overlay MAC learned behind its VTEP, nothing dropped.
#[test]
fn vfabric_geneve_and_the_linux_geneve_device_carry_one_segment_both_ways() -> Result<()> {
    let ns = Netns::new("kg")?;
    let extra = "[[switch.port]]\nname = \"under\"\ntype = \"tap\"\nifname = \"vfkgu\"\naddress = \"10.0.0.254/24\"\n\
                 [[switch]]\nname = \"over\"\n\
                 [[switch.port]]\nname = \"tunnel\"\ntype = \"geneve\"\nvni = 100\nlocal = \"10.0.0.254\"\nremote = [\"10.0.0.1\"]\n\
                 [[switch.port]]\nname = \"ov\"\ntype = \"tap\"\nifname = \"vfkgo\"\naddress = \"10.50.0.1/24\"\nmtu = 1450\n";
    let opts = GuestOpts {
        fabric_netns: Some(ns.name().to_string()),
        topology_extra: extra.into(),
        ..Default::default()
    };
    let mut lab = NetLab::start(1, &[qemu()], opts)?;
    lab.vm(1).run_ok(
        "modprobe geneve && ip-full link add geneve0 type geneve id 100 remote 10.0.0.254 dstport 6081 \
         && ip-full link set geneve0 mtu 1450 up && ip-full addr add 10.50.0.2/24 dev geneve0",
        CMD,
    )?;
    let out = lab.vm(1).run_ok("ping -c 3 -W 5 10.50.0.1", CMD)?;
    assert!(out.contains("3 packets received"), "{out}");
    let out = ns.exec(&["ping", "-c", "3", "-W", "5", "-s", "1422", "10.50.0.2"])?;
    assert!(out.contains("3 received"), "{out}");
    // Guest to host: the guest serves, the namespace fetches.
    guest_serves_4mib(&mut lab, &ns, "10.50.0.2:8080")?;
    // Host to guest: the namespace serves, the guest fetches.
    let data = pattern(4 << 20, 7);
    let server = ns.serve_http_once(
        "10.50.0.1:8081".parse()?,
        data.clone(),
        Duration::from_secs(180),
    )?;
    let got = lab.vm(1).run_ok(
        "wget -q -O - http://10.50.0.1:8081/d | sha256sum | cut -d' ' -f1",
        Duration::from_secs(180),
    )?;
    assert_eq!(got.trim(), sha256_hex(&data));
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the server thread panicked"))??;
    let tunnel = lab.fabric.port_info("tunnel")?;
    assert_eq!(tunnel["type"], "geneve");
    assert_eq!(tunnel["learned"], 1, "{tunnel}");
    // (The port is on the second switch: its counters from `ctl port show`.)
    let (code, out, err) = lab.fabric.ctl(&["--json", "port", "show", "tunnel"])?;
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out)?;
    for c in [
        "rx_drop_bad_header",
        "rx_drop_critical_option",
        "rx_drop_unknown_vtep",
        "tx_drop_too_big",
    ] {
        assert_eq!(shown["counters"][c], 0, "{c}: {shown}");
    }
    Ok(())
}

/// vfabric's VXLAN and GENEVE ports against Open vSwitch: Debian's OVS with the userspace
/// (`netdev`) datapath in its own namespace, its tunnel port on `br-int` and the underlay veth
/// on `br-phy` (OVS's userspace tunneling), an internal port 10.0.0.99 in the guests' subnet.
/// For each encapsulation: pings both ways (full-size from OVS's side), 4 MiB byte-exact both
/// ways, each side's MAC learned by the other (vfabric behind its VTEP, OVS on its tunnel
/// port), nothing dropped.
#[test]
fn vfabric_vxlan_and_geneve_interoperate_with_open_vswitch() -> Result<()> {
    for kind in ["vxlan", "geneve"] {
        with_ovs(kind).with_context(|| format!("{kind} against Open vSwitch"))?;
    }
    Ok(())
}

fn with_ovs(kind: &str) -> Result<()> {
    let tag = format!("o{}", &kind[..1]);
    let (a, b) = underlay(&tag)?;
    let dir = tempfile::Builder::new()
        .prefix("vfovs")
        .tempdir_in("/tmp")?;
    let ovs = vfabric_tests::ovs::Ovs::start(&b, dir.path())?;
    let vb = format!("vx{tag}b");
    b.exec(&["ip", "addr", "flush", "dev", &vb])?;
    for br in ["br-phy", "br-int"] {
        ovs.vsctl(&[
            "add-br",
            br,
            "--",
            "set",
            "bridge",
            br,
            "datapath_type=netdev",
        ])?;
    }
    ovs.vsctl(&["add-port", "br-phy", &vb])?;
    b.sh("ip addr add 192.168.77.2/24 dev br-phy && ip link set br-phy up")?;
    ovs.vsctl(&[
        "add-port",
        "br-int",
        "tun0",
        "--",
        "set",
        "interface",
        "tun0",
        &format!("type={kind}"),
        "options:remote_ip=192.168.77.1",
        "options:key=100",
    ])?;
    ovs.vsctl(&[
        "add-port",
        "br-int",
        "ovsin",
        "--",
        "set",
        "interface",
        "ovsin",
        "type=internal",
    ])?;
    b.sh("ip addr add 10.0.0.99/24 dev ovsin && ip link set ovsin mtu 1450 up")?;
    let opts = GuestOpts {
        fabric_netns: Some(a.name().to_string()),
        topology_extra: tunnel_port(kind, "192.168.77.1", "192.168.77.2"),
        extra_cmdline: "vf.mtu=eth0:1450".into(),
        ..Default::default()
    };
    let mut lab = NetLab::start(1, &[qemu()], opts)?;
    let out = lab.vm(1).run_ok("ping -c 3 -W 5 10.0.0.99", CMD)?;
    assert!(out.contains("3 packets received"), "{out}\n{}", ovs.log());
    let out = b.exec(&["ping", "-c", "3", "-W", "5", "-s", "1422", &ip(1)])?;
    assert!(out.contains("3 received"), "{out}");
    // The guest serves, OVS's side fetches; then the other way.
    guest_serves_4mib(&mut lab, &b, &format!("{}:8080", ip(1)))?;
    let data = pattern(4 << 20, 11);
    let server = b.serve_http_once(
        "10.0.0.99:8081".parse()?,
        data.clone(),
        Duration::from_secs(180),
    )?;
    let got = lab.vm(1).run_ok(
        "wget -q -O - http://10.0.0.99:8081/d | sha256sum | cut -d' ' -f1",
        Duration::from_secs(180),
    )?;
    assert_eq!(got.trim(), sha256_hex(&data));
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the server thread panicked"))??;
    // Each side learned the other's MAC behind its tunnel.
    let tunnel = lab.fabric.port_info("tunnel")?;
    assert_eq!(tunnel["type"], kind);
    assert_eq!(tunnel["learned"], 1, "{tunnel}");
    let ofport = ovs.vsctl(&["get", "interface", "tun0", "ofport"])?;
    let fdb = ovs.appctl(&["fdb/show", "br-int"])?;
    let guest = vfabric_tests::lab::mac(1);
    assert!(
        fdb.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 3 && f[0] == ofport.trim() && f[2] == guest
        }),
        "OVS did not learn {guest} on its tunnel port {}: {fdb}",
        ofport.trim()
    );
    for c in [
        "rx_drop_bad_header",
        "rx_drop_unknown_vtep",
        "tx_drop_too_big",
    ] {
        assert_eq!(lab.fabric.counter("tunnel", c)?, 0, "{c}");
    }
    Ok(())
}

/// A multicast underlay: vfabric's VXLAN port with `group = "239.1.1.1"` and no static
/// remote, against a Linux vxlan device on the same group (`group 239.1.1.1 dev ...`). ARP
/// and other floods go through the group, each side learns the other's VTEP from what it
/// receives, and unicast then goes VTEP to VTEP: pings both ways, 4 MiB byte-exact, the
/// guest's MAC in the kernel's FDB behind vfabric's address, the kernel's MAC learned by
/// vfabric.
#[test]
fn a_vxlan_multicast_group_carries_floods_and_both_sides_learn_their_vteps() -> Result<()> {
    let (a, k) = underlay("m")?;
    k.sh(
        "ip link add vxlan100 type vxlan id 100 local 192.168.77.2 group 239.1.1.1 dev vxmb dstport 4789 \
         && ip addr add 10.0.0.99/24 dev vxlan100 && ip link set vxlan100 up",
    )?;
    // (As for the unicast test above: a kernel peer on the same host fills its checksums.)
    k.exec(&["ethtool", "-K", "vxlan100", "tx", "off"])?;
    let opts = GuestOpts {
        fabric_netns: Some(a.name().to_string()),
        topology_extra: "[[switch.port]]\nname = \"tunnel\"\ntype = \"vxlan\"\nvni = 100\nlocal = \"192.168.77.1\"\ngroup = \"239.1.1.1\"\n".into(),
        extra_cmdline: "vf.mtu=eth0:1450".into(),
        ..Default::default()
    };
    let mut lab = NetLab::start(1, &[qemu()], opts)?;
    let out = lab.vm(1).run_ok("ping -c 3 -W 5 10.0.0.99", CMD)?;
    assert!(out.contains("3 packets received"), "{out}");
    let out = k.exec(&["ping", "-c", "3", "-W", "5", &ip(1)])?;
    assert!(out.contains("3 received"), "{out}");
    guest_serves_4mib(&mut lab, &k, &format!("{}:8080", ip(1)))?;
    // Learned both ways: the kernel has the guest behind 192.168.77.1, vfabric the kernel's
    // MAC behind 192.168.77.2.
    let fdb = k.exec(&["bridge", "fdb", "show", "dev", "vxlan100"])?;
    let guest = vfabric_tests::lab::mac(1);
    assert!(
        fdb.lines()
            .any(|l| l.starts_with(&guest) && l.contains("dst 192.168.77.1")),
        "{fdb}"
    );
    let tunnel = lab.fabric.port_info("tunnel")?;
    assert_eq!(tunnel["learned"], 1, "{tunnel}");
    // `ctl fdb show` says behind which VTEP (host) the tunnel's MAC was learned.
    let (code, out, err) = lab.fabric.ctl(&["--json", "fdb", "show"])?;
    assert_eq!(code, 0, "{err}");
    let fdb: serde_json::Value = serde_json::from_str(&out)?;
    assert!(
        fdb.as_array()
            .into_iter()
            .flatten()
            .any(|e| e["port"] == "tunnel" && e["via"] == "192.168.77.2"),
        "{fdb}"
    );
    for c in ["rx_drop_bad_header", "rx_drop_unknown_vtep"] {
        assert_eq!(lab.fabric.counter("tunnel", c)?, 0, "{c}");
    }
    Ok(())
}

#[test]
fn a_tap_without_cap_net_admin_is_refused_with_the_port_and_the_capability_named() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::Builder::new().prefix("vf").tempdir_in("/tmp")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
    let topo = dir.path().join("t.toml");
    std::fs::write(
        &topo,
        "[[switch]]\nname = \"s\"\n[[switch.port]]\nname = \"up\"\ntype = \"tap\"\nifname = \"vf-noperm0\"\n[[switch.port]]\nname = \"vm\"\ntype = \"vhost-user-net\"\nsocket = \"vm.sock\"\n",
    )?;
    std::fs::set_permissions(&topo, std::fs::Permissions::from_mode(0o644))?;
    // As nobody: no capabilities.
    let out = std::process::Command::new(vfabric_tests::fabric::vfabric_bin()?)
        .arg("run")
        .arg(&topo)
        .uid(65534)
        .gid(65534)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("switch \"s\" port \"up\": creating TAP `vf-noperm0`")
            && err.contains("needs CAP_NET_ADMIN"),
        "{err}"
    );
    assert!(!dir.path().join("vm.sock").exists());
    assert!(!std::path::Path::new("/sys/class/net/vf-noperm0").exists());
    Ok(())
}
