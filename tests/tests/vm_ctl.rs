//! `vfabric ctl` against a running fabric with guests: ports, stats, the forwarding table
//! (show, add, del, flush), graph, and a peer without access refused.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use anyhow::Result;
use serde_json::Value;
use vfabric_tests::fabric::vfabric_bin;
use vfabric_tests::lab::{CMD, GuestOpts, NetLab, mac};
use vfabric_tests::qemu::Qemu;
use vfabric_tests::wait_until;

fn json(lab: &NetLab, args: &[&str]) -> Result<Value> {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let (code, out, err) = lab.fabric.ctl(&a)?;
    anyhow::ensure!(code == 0, "ctl {args:?}: exit {code}: {err}");
    Ok(serde_json::from_str(&out)?)
}

fn fdb_has(v: &Value, mac: &str, port: &str) -> bool {
    v.as_array()
        .into_iter()
        .flatten()
        .any(|e| e["mac"] == mac && e["port"] == port)
}

#[test]
fn ctl_reads_and_changes_a_running_fabric() -> Result<()> {
    let mut lab = NetLab::start(2, &[Qemu::system()?], GuestOpts::default())?;
    lab.ping(1, 2, 3)?;
    // ports: both up, default VLAN mode.
    let ports = json(&lab, &["ports"])?;
    let ports = ports.as_array().unwrap();
    assert_eq!(ports.len(), 2);
    assert!(
        ports
            .iter()
            .all(|p| p["connected"] == true && p["vlan"] == "trunk all native 1"),
        "{ports:?}"
    );
    // stats: the pings were counted on both sides.
    let st = json(&lab, &["stats", "vm1"])?;
    assert!(
        st[0]["counters"]["rx_frames"].as_u64().unwrap_or(0) >= 3,
        "{st}"
    );
    assert!(
        st[0]["counters"]["tx_frames"].as_u64().unwrap_or(0) >= 3,
        "{st}"
    );
    let (code, _, err) = lab.fabric.ctl(&["stats", "nope"])?;
    assert_eq!(code, 1);
    assert!(err.contains("no port or disk `nope`"), "{err}");
    // fdb show: each guest learned on its port.
    let fdb = json(&lab, &["fdb", "show", "lab"])?;
    assert!(
        fdb_has(&fdb, &mac(1), "vm1") && fdb_has(&fdb, &mac(2), "vm2"),
        "{fdb}"
    );
    // add / del a static entry.
    json(
        &lab,
        &[
            "fdb",
            "add",
            "lab",
            "52:54:00:00:00:77",
            "vm2",
            "--vlan",
            "1",
        ],
    )?;
    let fdb = json(&lab, &["fdb", "show"])?;
    assert!(
        fdb.as_array()
            .unwrap()
            .iter()
            .any(|e| e["mac"] == "52:54:00:00:00:77" && e["static"] == true)
    );
    json(&lab, &["fdb", "del", "lab", "52:54:00:00:00:77"])?;
    let (code, _, err) = lab
        .fabric
        .ctl(&["fdb", "del", "lab", "52:54:00:00:00:77"])?;
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = lab
        .fabric
        .ctl(&["fdb", "add", "lab", "ff:ff:ff:ff:ff:ff", "vm1"])?;
    assert_eq!(code, 1, "{err}");
    // flush one port: its entries go, the other's stay.
    let r = json(&lab, &["fdb", "flush", "lab", "vm1"])?;
    assert!(r["removed"].as_u64().unwrap_or(0) >= 1, "{r}");
    let fdb = json(&lab, &["fdb", "show", "lab"])?;
    assert!(
        !fdb_has(&fdb, &mac(1), "vm1") && fdb_has(&fdb, &mac(2), "vm2"),
        "{fdb}"
    );
    // Traffic still flows (flooded until relearned), and vm1 is learned again.
    lab.ping(1, 2, 2)?;
    assert!(fdb_has(&json(&lab, &["fdb", "show"])?, &mac(1), "vm1"));
    // graph: dot with both ports up.
    let (code, dot, _) = lab.fabric.ctl(&["graph"])?;
    assert_eq!(code, 0);
    assert!(dot.starts_with("graph vfabric {"), "{dot}");
    assert!(
        dot.contains("\"sw:lab\" -- \"port:vm1\"") && dot.contains("up"),
        "{dot}"
    );
    // capture: vm2's port, both directions, into a pcap file a reader takes back.
    let pcap = lab.dir().join("vm2.pcap");
    let mut cap = std::process::Command::new(vfabric_bin()?)
        .arg("ctl")
        .arg("-t")
        .arg(lab.fabric.topology())
        .args(["capture", "vm2"])
        .arg(&pcap)
        .args(["--count", "6"])
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut err = std::io::BufReader::new(cap.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut err, &mut first)?;
    assert!(first.starts_with("capturing vm2"), "{first}");
    lab.ping(1, 2, 3)?;
    let ended = wait_until(
        std::time::Duration::from_secs(30),
        || Ok(cap.try_wait()?.is_some()),
        || "capture did not end after 6 frames".into(),
    );
    if ended.is_err() {
        cap.kill()?;
    }
    ended?;
    assert!(cap.wait()?.success());
    let mut reader = pcap_file::pcap::PcapReader::new(std::fs::File::open(&pcap)?)?;
    let (mut frames, mut requests, mut replies) = (0, 0, 0);
    while let Some(p) = reader.next_packet() {
        let p = p?;
        frames += 1;
        let d = &p.data;
        // ICMP echo request from vm1 to vm2 / reply back (IPv4 protocol 1, type 8 / 0).
        if d.len() > 34 && d[12..14] == [0x08, 0x00] && d[23] == 1 {
            if d[34] == 8 && d[6..12] == [0x52, 0x54, 0, 0, 0, 1] {
                requests += 1;
            }
            if d[34] == 0 && d[6..12] == [0x52, 0x54, 0, 0, 0, 2] {
                replies += 1;
            }
        }
    }
    assert_eq!(frames, 6);
    assert!(
        requests >= 2 && replies >= 2,
        "{requests} requests, {replies} replies"
    );
    // A user without access: refused by the file mode, and by vfabric itself when the
    // mode is opened up.
    let sock = lab
        .fabric
        .control_socket()
        .expect("vfabric announced its control socket")
        .to_path_buf();
    let nobody = |args: &[&str]| -> Result<(i32, String)> {
        let out = std::process::Command::new(vfabric_bin()?)
            .arg("ctl")
            .arg("-s")
            .arg(&sock)
            .args(args)
            .uid(65534)
            .gid(65534)
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (code, err) = nobody(&["ports"])?;
    assert_eq!(code, 1);
    assert!(err.contains("Permission denied"), "{err}");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666))?;
    let (code, err) = nobody(&["fdb", "flush"])?;
    assert_eq!(code, 1);
    assert!(err.contains("permission denied"), "{err}");
    assert!(
        fdb_has(&json(&lab, &["fdb", "show"])?, &mac(2), "vm2"),
        "a refused flush flushed"
    );
    // Guests with shared memory never trigger the "no shared memory" diagnosis.
    let log = std::fs::read_to_string(lab.dir().join("vfabric.log"))?;
    assert!(!log.contains("shared no guest memory"), "{log}");
    Ok(())
}

#[test]
fn reload_applies_vlan_changes_live_and_refuses_replumbing() -> Result<()> {
    let mut lab = NetLab::start(3, &[Qemu::system()?], GuestOpts::default())?;
    lab.ping(1, 3, 2)?;
    let topo = lab.fabric.topology().to_path_buf();
    let original = std::fs::read_to_string(&topo)?;
    // vm1 pings vm2 throughout (10 s); meanwhile vm3 moves to VLAN 20.
    lab.vm(1).spawn_bg(
        "ping -c 100 -i 0.1 10.0.0.2 > /tmp/through.log 2>&1; echo done >> /tmp/through.log",
    )?;
    let moved = original.replace(
        "socket = \"vm3.sock\"\n",
        "socket = \"vm3.sock\"\nvlan = 20\n",
    );
    assert_ne!(moved, original);
    std::fs::write(&topo, &moved)?;
    let (code, out, err) = lab.fabric.ctl(&["reload"])?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("applied: port \"vm3\": VLAN/security policy"),
        "{out}"
    );
    let gone = lab.vm(1).run("ping -c 2 -W 1 10.0.0.3", CMD)?;
    assert!(
        gone.output.contains(" 0 packets received"),
        "{}",
        gone.output
    );
    // Re-plumbing a port needs a restart: refused, nothing applied (vm3 stays in VLAN 20).
    std::fs::write(
        &topo,
        moved.replace("socket = \"vm1.sock\"", "socket = \"vm1-new.sock\""),
    )?;
    let (code, _, err) = lab.fabric.ctl(&["reload"])?;
    assert_eq!(code, 1);
    assert!(
        err.contains("reload refused, nothing changed") && err.contains("port \"vm1\""),
        "{err}"
    );
    let still = lab.vm(1).run("ping -c 1 -W 1 10.0.0.3", CMD)?;
    assert_ne!(still.code, 0);
    // SIGHUP with the original file: vm3 is back.
    std::fs::write(&topo, &original)?;
    let pid = lab.fabric.pid().unwrap();
    // SAFETY: kill(2) on the pid of the vfabric child the harness spawned.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    lab.wait_reachable(1, 3, std::time::Duration::from_secs(30))?;
    // The ping that ran throughout lost nothing; vm2 kept its one connection.
    let log = background_log(&mut lab)?;
    assert!(
        log.contains("100 packets transmitted, 100 packets received"),
        "{log}"
    );
    let ports = json(&lab, &["ports"])?;
    let vm2 = ports
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == "vm2")
        .unwrap();
    assert_eq!(vm2["connections"], 1, "{vm2}");
    Ok(())
}

/// The output of vm1's background ping (`/tmp/through.log`), once it ended.
fn background_log(lab: &mut NetLab) -> Result<String> {
    let mut log = String::new();
    wait_until(
        std::time::Duration::from_secs(60),
        || {
            log = lab.vm(1).run_ok("cat /tmp/through.log", CMD)?;
            Ok(log.contains("done"))
        },
        || "background ping did not end".into(),
    )?;
    Ok(log)
}

/// The minimum RTT (ms) of a busybox ping summary.
fn min_rtt(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.contains("min/avg/max"))?;
    line.split('=')
        .nth(1)?
        .trim()
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[test]
fn impairments_delay_and_drop_pings() -> Result<()> {
    let mut lab = NetLab::start(2, &[Qemu::system()?], GuestOpts::default())?;
    lab.ping(1, 2, 3)?;
    // 100 ms each way on vm2's link: every round trip takes at least 200 ms.
    json(&lab, &["impair", "vm2", "--delay", "100"])?;
    let out = lab.ping(1, 2, 5)?;
    let min = min_rtt(&out).unwrap_or(0.0);
    assert!(
        min >= 195.0,
        "min RTT {min} ms with 100 ms each way:\n{out}"
    );
    // 50 % loss each way: about a quarter of 100 pings come back.
    json(&lab, &["impair", "vm2", "--loss", "50"])?;
    let out = lab
        .vm(1)
        .run(
            "ping -c 100 -i 0.05 -W 1 10.0.0.2",
            std::time::Duration::from_secs(120),
        )?
        .output;
    let got: u32 = out
        .lines()
        .find(|l| l.contains("packets received"))
        .and_then(|l| l.split(", ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or(999);
    assert!(
        (5..=60).contains(&got),
        "{got} of 100 with 50% loss each way:\n{out}"
    );
    let st = json(&lab, &["stats", "vm2"])?;
    assert!(
        st[0]["counters"]["impair_lost"].as_u64().unwrap_or(0) >= 40,
        "{st}"
    );
    // Cleared: nothing lost, fast again.
    json(&lab, &["impair", "vm2", "--clear"])?;
    let out = lab.ping(1, 2, 5)?;
    assert!(min_rtt(&out).unwrap_or(1e9) < 100.0, "{out}");
    Ok(())
}

#[test]
fn ports_come_and_go_by_reload_and_ctl_while_a_guest_keeps_pinging() -> Result<()> {
    let qemu = Qemu::system()?;
    let mut lab = NetLab::start(2, std::slice::from_ref(&qemu), GuestOpts::default())?;
    lab.ping(1, 2, 2)?;
    let topo = lab.fabric.topology().to_path_buf();
    let original = std::fs::read_to_string(&topo)?;
    lab.vm(1).spawn_bg(
        "ping -c 300 -i 0.1 10.0.0.2 > /tmp/through.log 2>&1; echo done >> /tmp/through.log",
    )?;
    // A port added to the file and reloaded: its socket appears and a guest uses it.
    let added = format!(
        "{original}\n[[switch.port]]\nname = \"vm3\"\ntype = \"vhost-user-net\"\nsocket = \"vm3.sock\"\n"
    );
    std::fs::write(&topo, &added)?;
    let (code, out, err) = lab.fabric.ctl(&["reload"])?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("applied: switch \"lab\": port \"vm3\" added"),
        "{out}"
    );
    assert!(lab.fabric.socket("vm3").exists());
    let mut vm3 = lab.boot(3, qemu.clone())?;
    vm3.wait_ready(vfabric_tests::lab::BOOT)?;
    let out = vm3.run_ok("ping -c 3 -W 5 10.0.0.1", CMD)?;
    assert!(out.contains("3 packets received"), "{out}");
    // Removed from the file: the socket goes, the guest is cut off.
    std::fs::write(&topo, &original)?;
    let (code, out, err) = lab.fabric.ctl(&["reload"])?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("applied: switch \"lab\": port \"vm3\" removed"),
        "{out}"
    );
    assert!(!lab.fabric.socket("vm3").exists());
    let gone = lab.vm(1).run("ping -c 2 -W 1 10.0.0.3", CMD)?;
    assert_ne!(gone.code, 0, "{}", gone.output);
    drop(vm3);

    // The same through `ctl port add|del`, with a relative socket path (the caller's).
    let dir = lab.dir().to_path_buf();
    let ctl_in_dir = |args: &[&str]| -> Result<(i32, String, String)> {
        let out = std::process::Command::new(vfabric_tests::fabric::vfabric_bin()?)
            .arg("ctl")
            .arg("-t")
            .arg(&topo)
            .args(args)
            .current_dir(&dir)
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (code, out, err) = ctl_in_dir(&[
        "port",
        "add",
        "lab",
        "vm4",
        "type=vhost-user-net",
        "socket=vm4.sock",
        "queues=1",
    ])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("port vm4 added"), "{out}");
    let mut vm4 = lab.boot(4, qemu)?;
    vm4.wait_ready(vfabric_tests::lab::BOOT)?;
    let out = vm4.run_ok("ping -c 3 -W 5 10.0.0.2", CMD)?;
    assert!(out.contains("3 packets received"), "{out}");
    let ports = json(&lab, &["ports"])?;
    assert!(
        ports.as_array().unwrap().iter().any(|p| p["port"] == "vm4"),
        "{ports}"
    );
    // Checked like the file, and against the running ports.
    let (code, _, err) = lab.fabric.ctl(&[
        "port",
        "add",
        "lab",
        "vm5",
        "type=vhost-user-net",
        &format!("socket={}", lab.fabric.socket("vm4").display()),
    ])?;
    assert_eq!(code, 1);
    assert!(err.contains("is already the socket of \"vm4\""), "{err}");
    let (code, _, err) = lab.fabric.ctl(&[
        "port",
        "add",
        "lab",
        "vm5",
        "type=vhost-user-net",
        "vlan=5000",
    ])?;
    assert_eq!(code, 1);
    assert!(err.contains("switch \"lab\" port \"vm5\": vlan"), "{err}");
    let (code, out, err) = lab.fabric.ctl(&["port", "del", "vm4"])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("port vm4 removed"), "{out}");
    assert!(!lab.fabric.socket("vm4").exists());
    let ports = json(&lab, &["ports"])?;
    assert!(
        !ports.as_array().unwrap().iter().any(|p| p["port"] == "vm4"),
        "{ports}"
    );
    drop(vm4);

    // The ping that ran throughout lost nothing; vm2 kept its one connection.
    let log = background_log(&mut lab)?;
    assert!(
        log.contains("300 packets transmitted, 300 packets received"),
        "{log}"
    );
    let vm2 = ports
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == "vm2")
        .cloned()
        .unwrap();
    assert_eq!(vm2["connections"], 1, "{vm2}");
    Ok(())
}
