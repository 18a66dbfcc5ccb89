//! The `vfabric` binary: `check` and `run` refuse bad input with file:line:column errors and
//! exit 1, start nothing on error (all or nothing), replace stale sockets, and remove their
//! sockets on SIGTERM.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_vfabric");

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `vfabric run FILE` until it prints "vfabric ready"; returns it and the lines before.
fn run_ready(topo: &Path) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(BIN)
        .arg("run")
        .arg(topo)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for l in BufReader::new(child.stdout.take().unwrap()).lines() {
        let l = l.unwrap();
        if l == "vfabric ready" {
            break;
        }
        seen.push(l);
    }
    (child, seen)
}

/// SIGTERM, then the exit status.
fn stop(mut child: std::process::Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap()
}

fn two_ports(a: &str, b: &str) -> String {
    format!(
        "[[switch]]\nname = \"lab\"\n[[switch.port]]\nname = \"a\"\ntype = \"vhost-user-net\"\nsocket = \"{a}\"\n\
         [[switch.port]]\nname = \"b\"\ntype = \"vhost-user-net\"\nsocket = \"{b}\"\n"
    )
}

#[test]
fn check_reports_errors_with_position_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.toml",
        "[[switch]]\nname = \"lab\"\nspeed = 10\n",
    );
    let out = Command::new(BIN).arg("check").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:3:1: parse: unknown field `speed`",
            bad.display()
        )),
        "{err}"
    );
    let good = write(dir.path(), "good.toml", &two_ports("a.sock", "b.sock"));
    let out = Command::new(BIN).arg("check").arg(&good).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("a.sock").exists(), "check starts nothing");
    let missing = Command::new(BIN)
        .arg("check")
        .arg(dir.path().join("nope.toml"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn run_refuses_a_bad_file_before_creating_any_socket() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "t.toml",
        &(two_ports("a.sock", "b.sock") + "mac = \"ff:ff:ff:ff:ff:ff\"\n"),
    );
    let out = Command::new(BIN).arg("run").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("t.toml:11:7: switch \"lab\" port \"b\": mac:"),
        "{err}"
    );
    assert!(!dir.path().join("a.sock").exists() && !dir.path().join("b.sock").exists());
}

#[test]
fn run_is_all_or_nothing_when_a_socket_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _busy = UnixListener::bind(dir.path().join("b.sock")).unwrap();
    let f = write(dir.path(), "t.toml", &two_ports("a.sock", "b.sock"));
    let out = Command::new(BIN).arg("run").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("port \"b\"") && err.contains("in use"),
        "{err}"
    );
    assert!(
        !dir.path().join("a.sock").exists(),
        "the socket made before the failure is removed"
    );
}

#[test]
fn run_replaces_stale_sockets_and_cleans_up_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // A socket file nobody listens on, as a SIGKILLed vfabric leaves behind.
    drop(UnixListener::bind(dir.path().join("a.sock")).unwrap());
    assert!(dir.path().join("a.sock").exists());
    let f = write(dir.path(), "t.toml", &two_ports("a.sock", "b.sock"));
    let (child, seen) = run_ready(&f);
    let text = seen.join("\n");
    assert!(text.contains("-netdev vhost-user,id=a,chardev=a"), "{text}");
    assert!(std::os::unix::net::UnixStream::connect(dir.path().join("a.sock")).is_ok());
    assert_eq!(stop(child).code(), Some(0));
    assert!(!dir.path().join("a.sock").exists() && !dir.path().join("b.sock").exists());
}

/// Every example topology is valid (images aside: the examples name images the reader
/// creates first).
#[test]
fn every_example_topology_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&p).unwrap();
            if let Err(e) = vswitch::topology::parse(&p, &text) {
                panic!("{e}");
            }
            n += 1;
        }
    }
    assert!(n >= 5, "only {n} examples");
}

/// Under systemd (`Type=notify`), `run` says READY=1 on $NOTIFY_SOCKET once serving.
#[test]
fn run_notifies_systemd_when_ready() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let topo = write(
        dir.path(),
        "t.toml",
        &two_ports(
            &dir.path().join("a.sock").to_string_lossy(),
            &dir.path().join("b.sock").to_string_lossy(),
        ),
    );
    let mut child = Command::new(BIN)
        .arg("run")
        .arg(&topo)
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf);
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let msg = String::from_utf8_lossy(&buf[..n.unwrap()]).to_string();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    // With the summary `systemctl status` shows.
    assert!(
        msg.lines()
            .any(|l| l
                == "STATUS=2 ports (0 up), 0 of 2 VM ports with a guest, 0 of 0 disks with a VMM"),
        "{msg:?}"
    );
    assert!(status.success(), "{status:?}");
    assert!(!dir.path().join("a.sock").exists(), "socket left behind");
}

/// `metrics = "..."`: a Prometheus endpoint with per-port counters, FDB sizes and drops by
/// reason; other paths are 404.
#[test]
fn metrics_endpoint_serves_counters() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut text = two_ports(
        &dir.path().join("a.sock").to_string_lossy(),
        &dir.path().join("b.sock").to_string_lossy(),
    );
    text.insert_str(0, "metrics = \"127.0.0.1:0\"\n");
    let topo = write(dir.path(), "m.toml", &text);
    let (child, seen) = run_ready(&topo);
    let addr = seen
        .iter()
        .find_map(|l| l.strip_prefix("metrics: http://")?.strip_suffix("/metrics"))
        .expect("vfabric printed its metrics address")
        .to_string();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let body = get("/metrics");
    let other = get("/other");
    stop(child);
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    for want in [
        "# TYPE vfabric_port_up gauge",
        "vfabric_port_up{switch=\"lab\",port=\"a\"} 0",
        "vfabric_port_rx_frames_total{switch=\"lab\",port=\"b\"} 0",
        "vfabric_port_drops_total{switch=\"lab\",port=\"a\",where=\"switch\",reason=\"vlan_tagged\"} 0",
        "vfabric_fdb_entries{switch=\"lab\"} 0",
        "# EOF",
    ] {
        assert!(body.contains(want), "missing {want}:\n{body}");
    }
}

/// `check` names a missing image with its position, like any other error.
#[test]
fn check_reports_a_missing_image() {
    let dir = tempfile::tempdir().unwrap();
    let topo = write(
        dir.path(),
        "d.toml",
        "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\npath = \"missing.img\"\n",
    );
    let out = Command::new(BIN).arg("check").arg(&topo).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:4:8: disk \"d\": path: {}: No such file or directory",
            topo.display(),
            dir.path().join("missing.img").display()
        )),
        "{err}"
    );
}

/// `socket_dir` places relative sockets; `mode`/`group` are applied to listening sockets; a
/// group that does not exist stops `run` with nothing left behind.
#[test]
fn socket_dir_mode_and_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let text = "socket_dir = \"socks\"\n[[switch]]\nname = \"lab\"\n\
                [[switch.port]]\nname = \"a\"\ntype = \"vhost-user-net\"\nsocket = \"a.sock\"\nmode = \"0660\"\ngroup = \"1\"\n\
                [[switch.port]]\nname = \"b\"\ntype = \"vhost-user-net\"\nsocket = \"b.sock\"\n";
    let topo = write(dir.path(), "s.toml", text);
    let (child, _) = run_ready(&topo);
    let a = std::fs::metadata(dir.path().join("socks/a.sock")).unwrap();
    let b = dir.path().join("socks/b.sock");
    stop(child);
    assert_eq!(a.permissions().mode() & 0o777, 0o660);
    assert_eq!(a.gid(), 1);
    assert!(!b.exists(), "b.sock left behind");
    // An unknown group: refused, no socket remains.
    let bad = write(
        dir.path(),
        "bad.toml",
        &text.replace("group = \"1\"", "group = \"no-such-group-vf\""),
    );
    let out = Command::new(BIN).arg("run").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no group `no-such-group-vf`"), "{err}");
    assert!(!dir.path().join("socks/a.sock").exists());
    // Not with client = true.
    let client = write(
        dir.path(),
        "client.toml",
        &text.replace("mode = \"0660\"", "client = true\nmode = \"0660\""),
    );
    let out = Command::new(BIN)
        .arg("check")
        .arg(&client)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("port \"a\": mode: only a socket vfabric listens on")
    );
}

/// SIGUSR1 (the counters dump) goes to any thread that does not block it: every thread must
/// block it, the qcow2 I/O threads too (they start when an image is opened), or its default
/// action ends vfabric.
#[test]
fn sigusr1_dumps_counters_and_never_ends_vfabric_with_a_qcow2_disk() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.qcow2");
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("16M")
        .output()
        .expect("qemu-img (scripts/install-deps.sh)");
    assert!(out.status.success(), "{out:?}");
    let topo = write(
        dir.path(),
        "t.toml",
        &format!(
            "{}[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\npath = \"{}\"\n",
            two_ports("a.sock", "b.sock"),
            img.display()
        ),
    );
    let mut child = Command::new(BIN)
        .arg("run")
        .arg(&topo)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for l in lines.by_ref() {
        if l.unwrap() == "vfabric ready" {
            break;
        }
    }
    for i in 0..50 {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
        // Each dump has one line for the disk.
        let got = lines
            .by_ref()
            .map(|l| l.unwrap())
            .find(|l| l.contains("\"disk\""));
        assert!(
            got.is_some(),
            "no counters after SIGUSR1 number {i}: vfabric ended"
        );
    }
    assert!(child.try_wait().unwrap().is_none(), "vfabric still runs");
    assert!(stop(child).success());
}

/// `run` prints, for every VM port and disk, the QEMU, libvirt and cloud-hypervisor forms;
/// `ctl attach NAME --as VMM` answers the same for one of them at any time, libvirt's with
/// the memory backing; what cannot be attached is an error naming it.
#[test]
fn attach_snippets_for_qemu_libvirt_and_cloud_hypervisor() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a'&.sock");
    let disk = dir.path().join("d.sock");
    let mut text = two_ports(
        &a.to_string_lossy(),
        &dir.path().join("b.sock").to_string_lossy(),
    );
    text.push_str("mac = \"52:54:00:00:00:0b\"\nqueues = 2\n");
    text.push_str(&format!(
        "[[switch.port]]\nname = \"h\"\ntype = \"tap\"\nifname = \"vf-att0\"\noptional = true\n\
         [[disk]]\nname = \"d\"\nformat = \"null\"\nsize = \"1M\"\nsocket = \"{}\"\n",
        disk.display()
    ));
    let topo = write(dir.path(), "t.toml", &text);
    let (child, seen) = run_ready(&topo);
    let esc = dir.path().join("a&apos;&amp;.sock").display().to_string();
    let b = dir.path().join("b.sock").display().to_string();
    let expect = [
        format!(
            "  libvirt: <interface type='vhostuser'><source type='unix' path='{esc}' mode='client'><reconnect enabled='yes' timeout='1'/></source><model type='virtio'/><driver queues='8'/></interface>"
        ),
        format!(
            "  libvirt: <interface type='vhostuser'><mac address='52:54:00:00:00:0b'/><source type='unix' path='{b}' mode='client'><reconnect enabled='yes' timeout='1'/></source><model type='virtio'/><driver queues='2'/></interface>"
        ),
        format!(
            "  libvirt: <disk type='vhostuser' device='disk'><driver name='qemu' type='raw' queues='1'/><source type='unix' path='{}'><reconnect enabled='yes' timeout='1'/></source><target dev='vdb' bus='virtio'/></disk>",
            disk.display()
        ),
        "libvirt domains also need: <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>".to_string(),
    ];
    for e in &expect {
        assert!(seen.contains(e), "no {e:?} in {seen:#?}");
    }
    let ctl = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["ctl", "-t"])
            .arg(&topo)
            .args(["attach"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = ctl(&["b", "--as", "libvirt"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        format!(
            "{}\n<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>\n",
            expect[1].trim_start_matches("  libvirt: ")
        )
    );
    let (code, out, err) = ctl(&["b"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("-object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem -chardev socket,id=b,path=")
            && out.trim_end().ends_with(
                "-netdev vhost-user,id=b,chardev=b,queues=2 -device virtio-net-pci,netdev=b,mac=52:54:00:00:00:0b,mq=on,vectors=6"
            ),
        "{out}"
    );
    let (code, out, err) = ctl(&["d", "--as", "cloud-hypervisor"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        format!(
            "--memory size=1G,shared=on --disk vhost_user=true,socket={},num_queues=1\n",
            disk.display()
        )
    );
    let (code, _, err) = ctl(&["h", "--as", "libvirt"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("port `h` is not a VM port"), "{err}");
    let (code, _, err) = ctl(&["nope"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no port or disk `nope`"), "{err}");
    assert!(stop(child).success());
}

/// contrib/systemd/vfabric@.service passes `systemd-analyze verify` (unknown keys and bad
/// values are errors with --recursive-errors), and its commands work as systemd runs them:
/// the check before start, `run` saying READY=1 and STATUS= on $NOTIFY_SOCKET with its
/// control socket in $RUNTIME_DIRECTORY, and the reload.
#[test]
fn systemd_unit_verifies_and_its_commands_work() {
    let unit_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/vfabric@.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bin = std::fs::canonicalize(BIN).unwrap();
    let local = unit.replace("/usr/local/bin/vfabric", &bin.to_string_lossy());
    let unit_dir = dir.path().join("units");
    std::fs::create_dir(&unit_dir).unwrap();
    std::fs::write(unit_dir.join("vfabric@.service"), &local).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--recursive-errors=yes"])
        .arg(unit_dir.join("vfabric@lab.service"))
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The commands, with the instance and the configuration directory of this test.
    let etc = dir.path().join("etc");
    let runtime = dir.path().join("run");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&runtime).unwrap();
    write(
        &etc,
        "lab.toml",
        &two_ports(
            &runtime.join("a.sock").to_string_lossy(),
            &runtime.join("b.sock").to_string_lossy(),
        ),
    );
    let exec = |key: &str| -> Vec<String> {
        let line = local
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}="));
        line.replace("/etc/vfabric/", &format!("{}/", etc.display()))
            .replace("%i", "lab")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let command = |argv: &[String]| {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..])
            .env("RUNTIME_DIRECTORY", &runtime)
            .env_remove("XDG_RUNTIME_DIR");
        c
    };
    let pre = command(&exec("ExecStartPre")).output().unwrap();
    assert!(
        pre.status.success(),
        "{}",
        String::from_utf8_lossy(&pre.stderr)
    );
    let notify = dir.path().join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let child = command(&exec("ExecStart"))
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let n = listener.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    assert!(
        msg.lines().any(|l| l.starts_with("STATUS=2 ports")),
        "{msg:?}"
    );
    // Every socket listens once READY=1 is said; the control socket is in the runtime
    // directory.
    for s in ["a.sock", "b.sock"] {
        assert!(
            std::os::unix::net::UnixStream::connect(runtime.join(s)).is_ok(),
            "{s}"
        );
    }
    let ctl_sockets: Vec<_> = std::fs::read_dir(&runtime)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ctl"))
        .collect();
    assert_eq!(ctl_sockets.len(), 1, "{ctl_sockets:?}");
    let reload = command(&exec("ExecReload")).output().unwrap();
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&reload.stdout), "nothing changed\n");
    assert!(stop(child).success());
}
