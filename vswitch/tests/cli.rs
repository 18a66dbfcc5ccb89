//! The `vfabric` binary: `check` and `run` refuse bad input with file:line:column errors and
//! exit 1, start nothing on error (all or nothing), replace stale sockets, and remove their
//! sockets on SIGTERM.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};

mod daemon;
use daemon::{BIN, ctl, run_ready, run_ready_with, stop};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
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

/// `ctl trace` of a flow from port a: 10.0.0.1 (52:54:00:00:00:01) to 10.0.0.2
/// (52:54:00:00:00:02).
const FLOW: [&str; 9] = [
    "trace",
    "a",
    "--src",
    "52:54:00:00:00:01",
    "--dst",
    "52:54:00:00:00:02",
    "--ip",
    "10.0.0.1",
    "10.0.0.2",
];

/// A `vfabric run` stopped when dropped (a failing test leaves nothing running).
struct Stopped(Option<std::process::Child>);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            stop(c);
        }
    }
}

/// One HTTP/1.1 GET (or `method`) to `addr` naming `host`: (status line, headers, body).
fn http(addr: &str, method: &str, path: &str, host: &str) -> (String, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    (
        status.to_string(),
        headers.to_string(),
        out[split + 4..].to_vec(),
    )
}

/// `ctl trace` explains a frame's path with the switch's own decision (flood, then unicast
/// once the destination is known, drops naming their counter) and learns nothing; the web
/// console (`run --http`) serves its page, the same trace and port pages as JSON, pcap
/// downloads, and refuses changes and foreign host names.
#[test]
fn trace_and_the_web_console() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[switch]]\nname = \"lab\"\n\
         [[switch.port]]\nname = \"a\"\ntype = \"vhost-user-net\"\nsocket = \"{}\"\nvlan = 10\n\
         [[switch.port]]\nname = \"b\"\ntype = \"vhost-user-net\"\nsocket = \"{}\"\nvlan = 10\n\
         [[switch.port]]\nname = \"c\"\ntype = \"vhost-user-net\"\nsocket = \"{}\"\nvlan = 20\n",
        dir.path().join("a.sock").display(),
        dir.path().join("b.sock").display(),
        dir.path().join("c.sock").display(),
    );
    let topo = write(dir.path(), "t.toml", &text);
    let (child, seen) = run_ready_with(&["--http", "127.0.0.1:0"], &topo);
    // Ended (SIGTERM) whatever happens to the test.
    let mut child = Stopped(Some(child));
    let addr = seen
        .iter()
        .find_map(|l| l.strip_prefix("console: http://")?.strip_suffix('/'))
        .expect("vfabric printed its console address")
        .to_string();
    let sock = seen
        .iter()
        .find_map(|l| l.strip_prefix("control: ")?.split(' ').next())
        .expect("the control socket")
        .to_string();
    let sock = Path::new(&sock);

    // Unknown destination: flooded to b (VLAN 10) only, b has no guest.
    let (code, out, err) = ctl(sock, &FLOW);
    assert_eq!(code, Some(0), "{err}");
    for want in [
        "52:54:00:00:00:01 > 52:54:00:00:00:02, IPv4 10.0.0.1 > 10.0.0.2",
        "vlan          access 10: untagged, in VLAN 10",
        "learn         52:54:00:00:00:01 would be learned in VLAN 10 here",
        "FDB miss: 52:54:00:00:00:02 unknown in VLAN 10: flooded",
        "verdict: flooded in VLAN 10 to 1 port(s) (counter switch_flooded on a)",
        "-> to b, unchanged, link down: dropped there (tx_drop_link_down)",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
    // A trace learns nothing.
    let (_, fdb, _) = ctl(sock, &["--json", "fdb", "show"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&fdb).unwrap(),
        serde_json::json!([])
    );
    // Known destination (a static entry): unicast; on c's VLAN: not a member.
    assert_eq!(
        ctl(
            sock,
            &[
                "fdb",
                "add",
                "lab",
                "52:54:00:00:00:02",
                "b",
                "--vlan",
                "10"
            ]
        )
        .0,
        Some(0)
    );
    let (_, j, _) = ctl(
        sock,
        &["--json", "trace", "a", "--dst", "52:54:00:00:00:02"],
    );
    let j: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(j["verdict"]["action"], "unicast");
    assert_eq!(j["verdict"]["counter"], "switch_unicast");
    assert_eq!(j["outputs"][0]["port"], "b");
    assert!(
        j["steps"][3]["text"]
            .as_str()
            .unwrap()
            .contains("FDB hit: 52:54:00:00:00:02 in VLAN 10 is on b (static entry)"),
        "{j}"
    );
    // A tagged frame on an access port: dropped at the VLAN step, naming the counter.
    let (_, out, _) = ctl(
        sock,
        &["trace", "a", "--dst", "52:54:00:00:00:02", "--vlan", "10"],
    );
    assert!(
        out.contains("STOP vlan          access 10: a VLAN-tagged frame on an access port"),
        "{out}"
    );
    assert!(
        out.contains("verdict: dropped, counted as drop_vlan_tagged on a"),
        "{out}"
    );
    // A frame from a pcap file (its second frame), and the errors of bad arguments.
    let mut pcap = vec![
        0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0,
    ];
    for dst in [[0xffu8; 6], [0x52, 0x54, 0, 0, 0, 2]] {
        let mut f = dst.to_vec();
        f.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 3, 0x88, 0xb5]);
        f.resize(60, 0);
        pcap.extend_from_slice(&[0; 8]);
        pcap.extend_from_slice(&(f.len() as u32).to_le_bytes());
        pcap.extend_from_slice(&(f.len() as u32).to_le_bytes());
        pcap.extend_from_slice(&f);
    }
    let file = write(dir.path(), "f.pcap", "");
    std::fs::write(&file, &pcap).unwrap();
    let (code, out, err) = ctl(
        sock,
        &[
            "trace",
            "b",
            "--pcap",
            file.to_str().unwrap(),
            "--frame",
            "2",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("FDB hit: 52:54:00:00:00:02 in VLAN 10 is on b (static entry)"),
        "{out}"
    );
    assert!(
        out.contains("STOP egress        the destination is on the ingress port itself"),
        "{out}"
    );
    assert!(out.contains("counted as drop_same_port on b"), "{out}");
    let (code, _, err) = ctl(
        sock,
        &[
            "trace",
            "b",
            "--pcap",
            file.to_str().unwrap(),
            "--frame",
            "3",
        ],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("has 2 frame(s), not 3"), "{err}");
    let (code, _, err) = ctl(sock, &["trace", "a", "--dst", "nope"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("dst:"), "{err}");
    let (code, _, err) = ctl(
        sock,
        &[
            "trace",
            "a",
            "--dst",
            "52:54:00:00:00:02",
            "--ethertype",
            "ipv4",
        ],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("needs --ip"), "{err}");
    let (code, _, err) = ctl(sock, &["trace", "zz", "--dst", "52:54:00:00:00:02"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no port `zz`"), "{err}");

    // The console: page, assets, and the same answers as the control socket.
    let host = addr.as_str();
    let (status, headers, body) = http(&addr, "GET", "/", host);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("Content-Type: text/html"), "{headers}");
    assert!(String::from_utf8_lossy(&body).contains("/app.js"));
    for asset in ["/app.js", "/app.css"] {
        let (status, _, body) = http(&addr, "GET", asset, "localhost");
        assert_eq!(status, "HTTP/1.1 200 OK", "{asset}");
        assert!(!body.is_empty());
    }
    let (_, _, body) = http(
        &addr,
        "GET",
        "/api/trace?port=a&src=52:54:00:00:00:01&dst=52:54:00:00:00:02&ip_src=10.0.0.1&ip_dst=10.0.0.2",
        host,
    );
    let web: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let (_, cli, _) = ctl(sock, &[&["--json"][..], &FLOW].concat());
    assert_eq!(
        web,
        serde_json::from_str::<serde_json::Value>(&cli).unwrap()
    );
    let (status, _, body) = http(&addr, "GET", "/api/trace?port=a&dst=xx", host);
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert!(String::from_utf8_lossy(&body).contains("dst:"));
    let (status, _, body) = http(&addr, "GET", "/api/port/b", host);
    assert_eq!(status, "HTTP/1.1 200 OK");
    let b: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(b["port"]["port"], "b");
    assert_eq!(b["policy"]["vlan"], "access 10");
    assert_eq!(b["guest"], serde_json::Value::Null);
    assert_eq!(b["fdb"][0]["mac"], "52:54:00:00:00:02");
    assert_eq!(b["counters"]["tx_frames"], 0);
    let (_, cli, _) = ctl(sock, &["--json", "port", "show", "b"]);
    assert_eq!(b, serde_json::from_str::<serde_json::Value>(&cli).unwrap());
    assert_eq!(
        http(&addr, "GET", "/api/port/zz", host).0,
        "HTTP/1.1 404 Not Found"
    );
    for (path, key) in [
        ("/api/ports", "port"),
        ("/api/stats", "port"),
        ("/api/fdb", "mac"),
    ] {
        let (status, _, body) = http(&addr, "GET", path, host);
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            v.as_array().unwrap().iter().any(|l| l.get(key).is_some()),
            "{path}: {v}"
        );
    }
    // A capture download: a pcap header and nothing else when nothing passes (1 s).
    let (status, headers, body) = http(&addr, "GET", "/api/capture?port=a&count=5&seconds=1", host);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("Content-Type: application/vnd.tcpdump.pcap"),
        "{headers}"
    );
    assert!(headers.contains("filename=\"a.pcap\""), "{headers}");
    assert_eq!(body.len(), 24);
    assert_eq!(
        &body[..4],
        &0xa1b2_3c4du32.to_ne_bytes(),
        "nanosecond pcap magic"
    );
    assert_eq!(
        http(&addr, "GET", "/api/capture?port=a&count=0", host).0,
        "HTTP/1.1 400 Bad Request"
    );
    // Read-only, and not for pages that name another host (DNS rebinding).
    assert_eq!(
        http(&addr, "POST", "/api/ports", host).0,
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(
        http(&addr, "GET", "/api/ports", "evil.example").0,
        "HTTP/1.1 403 Forbidden"
    );
    assert_eq!(
        http(&addr, "GET", "/metrics", "prometheus.example").0,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        http(&addr, "GET", "/nothing", host).0,
        "HTTP/1.1 404 Not Found"
    );
    assert!(stop(child.0.take().unwrap()).success());
    // `--http` takes a port alone (loopback) and refuses what is not an address.
    let out = Command::new(BIN)
        .args(["run", "--http", "nowhere"])
        .arg(&topo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not PORT, ADDRESS:PORT"));
}
