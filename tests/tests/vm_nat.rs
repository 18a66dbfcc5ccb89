//! The NAT port with real guests: DHCP leases, downloads from a server on the host's
//! loopback through the gateway address, DNS through a test resolver on loopback, UDP, a
//! port forward from the host into a guest, three guests at once, and restrict mode. Every
//! server is one the test starts, on loopback or inside a namespace it creates.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};
use vfabric_tests::lab::{CMD, GuestOpts, NetLab};
use vfabric_tests::netns::{Netns, http_get, pattern, serve_dns, serve_http, sha256_hex};
use vfabric_tests::qemu::Qemu;

fn qemu() -> Qemu {
    Qemu::system().expect("QEMU (run scripts/install-deps.sh)")
}

/// The udhcpc script: applies the lease (address, default route, resolver).
const DHCP_SCRIPT: &str = "cat > /tmp/dhcp.sh <<'EOF'\n#!/bin/sh\ncase \"$1\" in\n  bound|renew)\n    ip addr flush dev \"$interface\"\n    ip addr add \"$ip/$mask\" dev \"$interface\"\n    [ -n \"$router\" ] && ip route replace default via \"$router\"\n    echo \"nameserver $dns\" > /etc/resolv.conf\n    echo \"lease $ip/$mask router $router dns $dns mtu $mtu\" > /tmp/lease\n    ;;\nesac\nEOF\nchmod +x /tmp/dhcp.sh";

/// Runs DHCP in guest `i` and returns what it leased ("lease IP/MASK router R dns D mtu M").
fn dhcp(lab: &mut NetLab, i: usize) -> Result<String> {
    let vm = lab.vm(i);
    vm.run_ok(DHCP_SCRIPT, CMD)?;
    vm.run_ok(
        "ip link set eth0 up && udhcpc -i eth0 -n -q -t 10 -T 2 -s /tmp/dhcp.sh >/dev/null 2>&1 && cat /tmp/lease",
        CMD,
    )
}

/// The test resolver on the host's loopback: `vfabric.test` is 10.9.8.7.
struct Resolver {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<usize>>,
}

impl Resolver {
    fn start() -> Result<Resolver> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        let addr = sock.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            serve_dns(sock, "vfabric.test", Ipv4Addr::new(10, 9, 8, 7), s)
        });
        Ok(Resolver { addr, stop, thread })
    }

    /// Stops it; how many queries it answered.
    fn finish(self) -> Result<usize> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the resolver panicked"))?
    }
}

/// A loopback port nobody uses right now.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[test]
fn dhcp_loopback_downloads_dns_udp_and_a_forward_for_three_guests() -> Result<()> {
    // The host side: an HTTP server and a DNS server on loopback.
    let http = TcpListener::bind("127.0.0.1:0")?;
    let http_port = http.local_addr()?.port();
    let resolver = Resolver::start()?;
    let dns_addr = resolver.addr;
    let fwd_port = free_port()?;
    let opts = GuestOpts {
        no_address: true,
        topology_extra: format!(
            "[[switch.port]]\nname = \"uplink\"\ntype = \"nat\"\nsubnet = \"10.0.2.0/24\"\n\
             dns_upstream = \"{dns_addr}\"\n\
             reservations = [{{ mac = \"52:54:00:00:00:03\", ip = \"10.0.2.10\" }}]\n\
             forward = [\"tcp:127.0.0.1:{fwd_port}-10.0.2.15:8080\"]\n"
        ),
        ..Default::default()
    };
    let mut lab = NetLab::start(3, &[qemu()], opts)?;
    // Leases: the pool from .15 in order of asking; the reservation for guest 3.
    let l1 = dhcp(&mut lab, 1)?;
    assert!(
        l1.contains("lease 10.0.2.15/24 router 10.0.2.2 dns 10.0.2.3 mtu 1500"),
        "{l1}"
    );
    let l2 = dhcp(&mut lab, 2)?;
    assert!(l2.contains("lease 10.0.2.16/24"), "{l2}");
    let l3 = dhcp(&mut lab, 3)?;
    assert!(l3.contains("lease 10.0.2.10/24"), "{l3}");
    // The gateway answers pings.
    let out = lab.vm(1).run_ok("ping -c 2 -W 5 10.0.2.2", CMD)?;
    assert!(out.contains("2 packets received"), "{out}");

    // Three guests download at once from the host's loopback through 10.0.2.2:
    // 20 MB each, byte-exact.
    let data = Arc::new(pattern(20 << 20, 11));
    let want = sha256_hex(&data);
    let server = std::thread::spawn(move || serve_http(http, data, 3, Duration::from_secs(180)));
    let mut jobs = Vec::new();
    for g in 1..=3 {
        jobs.push(lab.vm(g).spawn_bg(&format!(
            "wget -q -O - http://10.0.2.2:{http_port}/d | sha256sum | cut -d' ' -f1 > /tmp/got; echo done >> /tmp/got"
        ))?);
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    // Each guest waits for its own download to end (at most 200 s): one command, not a
    // poll of commands competing with the busy guest (TCG guests on a loaded 2-core host
    // can be slow to answer a poll while hashing 20 MB).
    for g in 1..=3 {
        let got = lab.vm(g).run_ok(
            "for i in $(seq 1 200); do grep -q done /tmp/got 2>/dev/null && break; sleep 1; done; cat /tmp/got 2>/dev/null || true",
            Duration::from_secs(240),
        )?;
        assert!(got.contains("done"), "vm{g}'s download did not end: {got}");
        assert_eq!(got.lines().next().unwrap_or(""), want, "vm{g}");
    }
    let _ = jobs;

    // DNS through the relay at 10.0.2.3 to the test resolver.
    let out = lab.vm(2).run_ok("nslookup vfabric.test", CMD)?;
    assert!(out.contains("10.9.8.7"), "{out}");

    // UDP both ways: iperf3 on the host's loopback, a guest as the client (no datagram lost).
    let iperf_port = free_port()?;
    let mut iperf = std::process::Command::new("iperf3")
        .args(["-s", "-B", "127.0.0.1", "-p", &iperf_port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("iperf3 (scripts/install-deps.sh installs it)")?;
    vfabric_tests::wait_until(
        Duration::from_secs(10),
        || Ok(std::net::TcpStream::connect(("127.0.0.1", iperf_port)).is_ok()),
        || "iperf3 server did not listen".into(),
    )?;
    let out = lab.vm(3).run(
        &format!("iperf3 -u -c 10.0.2.2 -p {iperf_port} -b 2M -l 1000 -n 100K"),
        CMD,
    );
    let _ = iperf.kill();
    let _ = iperf.wait();
    let out = out?;
    assert_eq!(out.code, 0, "{}", out.output);
    assert!(out.output.contains(" 0/"), "datagrams lost: {}", out.output);

    // The forward: the host's 127.0.0.1:fwd_port reaches guest 1's port 8080.
    lab.vm(1).run_ok(
        "mkdir -p /tmp/www && echo served-by-vm1-through-nat > /tmp/www/index.html && httpd -p 8080 -h /tmp/www",
        CMD,
    )?;
    lab.wait_listening(1, 8080)?;
    let body = http_get(
        SocketAddr::from(([127, 0, 0, 1], fwd_port)),
        "/index.html",
        Duration::from_secs(30),
    )?;
    assert_eq!(
        String::from_utf8_lossy(&body).trim(),
        "served-by-vm1-through-nat"
    );

    assert!(resolver.finish()? >= 1);
    let mut c = |n: &str| lab.fabric.counter("uplink", n);
    assert!(c("nat_dhcp_replies")? >= 6);
    assert!(c("nat_dns_queries")? >= 1);
    assert!(c("nat_tcp_flows")? >= 5);
    assert_eq!(c("nat_restricted")?, 0);
    assert_eq!(c("nat_queue_drops")?, 0);
    Ok(())
}

#[test]
fn outbound_nat_reaches_the_world_and_restrict_keeps_a_guest_in() -> Result<()> {
    // The "world": a namespace where vfabric runs, with an address outside the NAT subnet
    // and a server on it, and one on the namespace's loopback.
    let ns = Netns::new("nat")?;
    ns.sh(
        "ip link add w0 type veth peer name w1 && ip addr add 198.51.100.1/24 dev w0 \
         && ip link set w0 up && ip link set w1 up",
    )?;
    // Unprivileged ping sockets for everyone in this namespace (the sysctl is per
    // namespace): pings are relayed through them.
    ns.exec(&[
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ping_group_range=0 2147483647",
    ])?;
    for (restrict, name) in [(false, "open"), (true, "restricted")] {
        let opts = GuestOpts {
            no_address: true,
            fabric_netns: Some(ns.name().to_string()),
            topology_extra: format!(
                "[[switch.port]]\nname = \"uplink\"\ntype = \"nat\"\nsubnet = \"10.0.2.0/24\"\n\
                 dns_upstream = \"127.0.0.1:53\"\nrestrict = {restrict}\n"
            ),
            ..Default::default()
        };
        let mut lab = NetLab::start(1, &[qemu()], opts)?;
        dhcp(&mut lab, 1)?;
        // The host's loopback through the gateway works either way.
        let local = ns.serve_http_once(
            "127.0.0.1:8081".parse::<SocketAddr>()?,
            b"from-loopback".to_vec(),
            Duration::from_secs(60),
        )?;
        let out = lab
            .vm(1)
            .run_ok("wget -q -O - http://10.0.2.2:8081/", CMD)?;
        assert!(out.contains("from-loopback"), "{name}: {out}");
        local.join().map_err(|_| anyhow::anyhow!("panic"))??;
        // The world: reached when open; when restricted, refused at once and nobody comes
        // to its server (which gives up 10 s after the refusal).
        let world = ns.serve_http_once(
            "198.51.100.1:8080".parse::<SocketAddr>()?,
            b"from-the-world".to_vec(),
            Duration::from_secs(if restrict { 10 } else { 60 }),
        )?;
        let out = lab
            .vm(1)
            .run("wget -q -O - http://198.51.100.1:8080/", CMD)?;
        let ping = lab.vm(1).run("ping -c 3 -W 3 198.51.100.1", CMD)?;
        if restrict {
            assert_ne!(ping.code, 0, "{}", ping.output);
            assert_ne!(out.code, 0, "{name}: {}", out.output);
            assert!(out.output.contains("refused"), "{}", out.output);
            assert!(lab.fabric.counter("uplink", "nat_restricted")? >= 1);
            let r = world.join().map_err(|_| anyhow::anyhow!("panic"))?;
            assert!(r.is_err(), "a connection reached the world");
        } else {
            assert_eq!(out.code, 0, "{name}: {}", out.output);
            assert!(out.output.contains("from-the-world"), "{}", out.output);
            assert!(
                ping.output.contains("3 packets received"),
                "{}",
                ping.output
            );
            assert_eq!(lab.fabric.counter("uplink", "nat_icmp_relayed")?, 3);
            world.join().map_err(|_| anyhow::anyhow!("panic"))??;
            assert_eq!(lab.fabric.counter("uplink", "nat_restricted")?, 0);
        }
    }
    Ok(())
}

#[test]
fn ipv6_router_advertisements_slaac_tcp_and_dns_through_the_gateway() -> Result<()> {
    let http = TcpListener::bind("[::1]:0")?;
    let http_port = http.local_addr()?.port();
    let resolver = Resolver::start()?;
    let dns_addr = resolver.addr;
    let opts = GuestOpts {
        no_address: true,
        topology_extra: format!(
            "[[switch.port]]\nname = \"uplink\"\ntype = \"nat\"\nsubnet = \"10.0.2.0/24\"\n\
             ipv6 = \"fd00:2::/64\"\ndns_upstream = \"{dns_addr}\"\n"
        ),
        ..Default::default()
    };
    let mut lab = NetLab::start(1, &[qemu()], opts)?;
    lab.vm(1).run_ok("ip link set eth0 up", CMD)?;
    // SLAAC from the router advertisement: an address in the prefix, the router's
    // link-local address as the default route.
    let addrs = std::cell::RefCell::new(String::new());
    vfabric_tests::wait_until(
        Duration::from_secs(30),
        || {
            let a = lab
                .vm(1)
                .run_ok("ip -6 addr show dev eth0; ip -6 route", CMD)?;
            let ok = a.contains("inet6 fd00:2:")
                && !a.contains("tentative")
                && a.contains("default via fe80::2");
            *addrs.borrow_mut() = a;
            Ok(ok)
        },
        || format!("no SLAAC address or default route: {}", addrs.borrow()),
    )?;
    let out = lab.vm(1).run_ok("ping -c 2 -W 5 fd00:2::2", CMD)?;
    assert!(out.contains("2 packets received"), "{out}");
    // TCP to the host's ::1 through the gateway's address, byte-exact.
    let data = Arc::new(pattern(4 << 20, 21));
    let want = sha256_hex(&data);
    let server = std::thread::spawn(move || serve_http(http, data, 1, Duration::from_secs(120)));
    let got = lab.vm(1).run_ok(
        &format!("wget -q -O - 'http://[fd00:2::2]:{http_port}/d' | sha256sum | cut -d' ' -f1"),
        Duration::from_secs(120),
    )?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    assert_eq!(got.trim(), want);
    // DNS over IPv6 to the relay's fd00:2::3.
    let out = lab.vm(1).run_ok("nslookup vfabric.test fd00:2::3", CMD)?;
    assert!(out.contains("10.9.8.7"), "{out}");
    resolver.finish()?;
    Ok(())
}
