//! `vfabric run` under its default seccomp filters (`--seccomp kill`): every thread carries
//! one, and a reload that starts ports of every kind (NAT with a port forward, VXLAN, and a
//! TAP in a namespace of the test's own when run as root) works under the control plane's
//! filter, the new ports' threads carry their own, and the process is never killed.

use std::path::PathBuf;
use std::process::Command;

mod daemon;
use daemon::{ctl, run_ready, stop};

/// The control socket `vfabric run` printed among its first lines.
fn control_socket(lines: &[String]) -> PathBuf {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("control: "))
        .and_then(|rest| rest.split(' ').next())
        .map(PathBuf::from)
        .expect("the control socket is printed")
}

/// Every thread of `pid`: (name, seccomp mode from /proc, 2 meaning filtered).
fn threads(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue; // a thread that just ended
        };
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .map(|m| m.trim().to_string())
            .unwrap_or_default();
        out.push((comm.trim().to_string(), mode));
    }
    out
}

/// A free TCP port on loopback (bound, read, released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The vfabric under test, killed (and reaped) if an assertion ends the test first.
struct Daemon(Option<std::process::Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A network namespace of the test's own, deleted when dropped.
struct Netns(String);

impl Netns {
    fn add(name: String) -> Option<Netns> {
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Netns(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn a_reload_starts_every_port_kind_under_the_default_filters() {
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "[[switch]]\nname = \"lab\"\n[[switch.port]]\nname = \"vm1\"\ntype = \"vhost-user-net\"\nsocket = \"{}\"\n",
        dir.path().join("vm1.sock").display()
    );
    let topo = dir.path().join("lab.toml");
    std::fs::write(&topo, &base).unwrap();
    let (child, lines) = run_ready(&topo);
    let mut daemon = Daemon(Some(child));
    let sock = control_socket(&lines);
    let pid = daemon.0.as_ref().map_or(0, |c| c.id());

    // Every thread is filtered from the start, the main thread included.
    let before = threads(pid);
    for (comm, mode) in &before {
        assert_eq!(mode, "2", "thread {comm} carries no filter: {before:?}");
    }
    for name in [
        "vfabric",
        "port-vm1",
        "control",
        "socket-keeper",
        "fdb-aging",
    ] {
        assert!(before.iter().any(|(c, _)| c == name), "{name}: {before:?}");
    }

    // Added by reload: a NAT port with a forward on loopback, a VXLAN port, and (as root) a
    // TAP in a namespace of ours.
    let fwd = free_port();
    let mut added = format!(
        "{base}[[switch.port]]\nname = \"out\"\ntype = \"nat\"\nsubnet = \"10.9.0.0/24\"\n\
         dns_upstream = \"127.0.0.1:53\"\nforward = [\"tcp:127.0.0.1:{fwd}-10.9.0.10:22\"]\n\
         [[switch.port]]\nname = \"tun\"\ntype = \"vxlan\"\nvni = 42\nlocal = \"127.0.0.1\"\n\
         remote = [\"127.0.0.2\"]\nport = {}\n",
        free_port()
    );
    let ns = is_root()
        .then(|| Netns::add(format!("vf-sc-{}", std::process::id())))
        .flatten();
    if let Some(ns) = &ns {
        added.push_str(&format!(
            "[[switch.port]]\nname = \"host\"\ntype = \"tap\"\nifname = \"vfsc0\"\nnetns = \"{}\"\n",
            ns.0
        ));
    }
    std::fs::write(&topo, &added).unwrap();
    let (code, out, err) = ctl(&sock, &["reload"]);
    assert_eq!(code, Some(0), "{out}{err}");
    for port in ["out", "tun"] {
        assert!(out.contains(&format!("port \"{port}\" added")), "{out}");
    }
    // The NAT port's forward listens: its listener was bound under the control filter.
    let c = std::net::TcpStream::connect(("127.0.0.1", fwd)).expect("the forward listens");
    drop(c);
    if let Some(ns) = &ns {
        assert!(out.contains("port \"host\" added"), "{out}");
        let link = Command::new("ip")
            .args(["-n", &ns.0, "link", "show", "vfsc0"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&link.stdout);
        assert!(text.contains("UP"), "{text}");
    }
    let (code, ports, err) = ctl(&sock, &["ports"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(ports.contains("out") && ports.contains("tun"), "{ports}");

    // The new ports' threads carry their filters; the process is alive.
    let after = threads(pid);
    for (comm, mode) in &after {
        assert_eq!(mode, "2", "thread {comm} carries no filter: {after:?}");
    }
    for prefix in ["nat-out", "vxlan-tun"] {
        assert!(
            after.iter().any(|(c, _)| c.starts_with(prefix)),
            "{prefix}: {after:?}"
        );
    }
    if ns.is_some() {
        assert!(
            after.iter().any(|(c, _)| c.starts_with("tap-host")),
            "{after:?}"
        );
    }

    // Removed again by reload; still served.
    std::fs::write(&topo, &base).unwrap();
    let (code, out, err) = ctl(&sock, &["reload"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("port \"out\" removed"), "{out}");
    let (code, _, err) = ctl(&sock, &["ports"]);
    assert_eq!(code, Some(0), "{err}");

    // SIGTERM: a clean exit (a process killed by its filter would show SIGSYS).
    let status = stop(daemon.0.take().expect("still ours"));
    assert_eq!(status.code(), Some(0), "{status:?}");
    drop(ns);
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
