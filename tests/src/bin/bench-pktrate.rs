//! Packet rate between two vhost-user ports, no VMs: DPDK's virtio-user PMD (dpdk-testpmd on
//! CPU 1) plays both VMs and loops frames through the switch under test (pinned to CPU 0) in
//! io forwarding mode, with 32 bursts per port in flight. Contenders, alternating round by
//! round: vfabric (busy-poll, then notification mode), OVS-DPDK (netdev bridge, two
//! dpdkvhostuserclient ports, NORMAL action, inside a network namespace of its own) and
//! dpdk-testpmd io forwarding (a wire, no switching). vfabric and OVS-DPDK run a second time
//! with the generator on packed virtqueues (virtio-user `packed_vq=1`). Prints Mpps, ratios
//! of medians and the medians of per-round ratios.
//!
//! Usage: bench-pktrate [ROUNDS] [SIZES...]   e.g. `bench-pktrate 3 64 1518` (frame sizes
//! include the 4-byte FCS, as RFC 2544 counts them). Run it with `benches/pktrate.sh`.
//!
//! `bench-pktrate --scale [ROUNDS]`: vfabric only, 64 B frames, a switch with 64 ports and
//! 10^6 forwarding entries against one with 2 ports and 1 entry (alternating), plus vfabric's
//! resident memory per idle port and per 10^6 entries.
//!
//! `bench-pktrate --vlan [ROUNDS]`: vfabric only, 64 B frames, untagged forwarding against
//! an access port and a trunk (every frame gets an 802.1Q tag pushed or popped).
//!
//! `bench-pktrate --against OTHER_VFABRIC [--notify] [--packed] [ROUNDS] [SIZES...]`: this
//! vfabric against another build of it (an older commit), alternating rounds, two ports,
//! busy-poll (and notification mode with `--notify`; the generator on packed rings with
//! `--packed`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vfabric_tests::dpdk::{testpmd_io, wait_for_paths};
use vfabric_tests::median;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Vfabric,
    /// vfabric busy-polling, the generator on packed rings.
    VfabricPacked,
    /// vfabric in notification mode (its default: no busy-poll thread).
    VfabricNotify,
    Ovs,
    /// OVS-DPDK, the generator on packed rings.
    OvsPacked,
    Testpmd,
}

impl Who {
    /// Whether the generator's rings are packed.
    fn packed(self) -> bool {
        matches!(self, Who::VfabricPacked | Who::OvsPacked)
    }
}

const MAC0: &str = "52:54:00:00:00:01";
const MAC1: &str = "52:54:00:00:00:02";

/// A process killed (and reaped) when dropped, plus cleanup commands.
struct Proc {
    child: Option<Child>,
    cleanup: Vec<Vec<String>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        for cmd in &self.cleanup {
            let _ = Command::new(&cmd[0])
                .args(&cmd[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("{cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?}: {st}");
    }
    Ok(())
}

/// A vfabric topology for the benchmark: `ports` ports (p0 and p1 are the generator's) and
/// `entries` static forwarding entries spread over the ports the generator does not use.
fn topology(dir: &Path, ports: usize, entries: usize) -> Result<PathBuf> {
    use std::fmt::Write as _;
    let mut t = String::from("[[switch]]\nname = \"bench\"\nbusy_poll = true\n");
    let per_port = if ports > 2 {
        entries.div_ceil(ports - 2)
    } else {
        0
    };
    let mut made = 0;
    for p in 0..ports {
        write!(
            t,
            "[[switch.port]]\nname = \"p{p}\"\ntype = \"vhost-user-net\"\nsocket = \"{}\"\nqueues = 1\n",
            dir.join(format!("p{p}.sock")).display()
        )?;
        if p >= 2 && made < entries {
            t.push_str("static_macs = [");
            for _ in 0..per_port.min(entries - made) {
                let b = (made as u32).to_be_bytes();
                write!(
                    t,
                    "\"02:00:{:02x}:{:02x}:{:02x}:{:02x}\",",
                    b[0], b[1], b[2], b[3]
                )?;
                made += 1;
            }
            t.push_str("]\n");
        }
    }
    let path = dir.join("t.toml");
    std::fs::write(&path, t)?;
    Ok(path)
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

/// Starts vfabric on CPU 0 with `topo`; waits for the generator's two sockets.
fn start_vfabric(dir: &Path, vfabric: &Path, topo: &Path) -> Result<Proc> {
    let log = std::fs::File::create(dir.join("vfabric.log"))?;
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(vfabric)
        .arg("run")
        .arg(topo)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let p = Proc {
        child: Some(child),
        cleanup: vec![],
    };
    wait_for_paths(&[dir.join("p0.sock"), dir.join("p1.sock")], "vfabric")?;
    Ok(p)
}

/// Starts the switch under test on CPU 0. Returns it and whether the generator must be the
/// socket server (OVS's dpdkvhostuserclient ports dial out).
fn start_switch(who: Who, dir: &Path, vfabric: &Path) -> Result<(Proc, bool)> {
    let socks = [dir.join("p0.sock"), dir.join("p1.sock")];
    let log = std::fs::File::create(dir.join(format!("{who:?}.log")))?;
    match who {
        Who::Vfabric | Who::VfabricPacked | Who::VfabricNotify => {
            drop(log);
            let topo = topology(dir, 2, 0)?;
            if who == Who::VfabricNotify {
                let t = std::fs::read_to_string(&topo)?;
                std::fs::write(&topo, t.replace("busy_poll = true", "busy_poll = false"))?;
            }
            Ok((start_vfabric(dir, vfabric, &topo)?, false))
        }
        Who::Testpmd => {
            drop(log);
            let child = testpmd_io(&socks, "0@0,1@0", "vfb-sw", &dir.join("Testpmd.log"))?;
            Ok((
                Proc {
                    child: Some(child),
                    cleanup: vec![],
                },
                false,
            ))
        }
        Who::Ovs | Who::OvsPacked => {
            // A private OVS: its database, sockets and logs in `dir`, its datapath's internal
            // port inside a namespace made for it.
            let ns = format!("vfb-ovs-{}", std::process::id());
            run(Command::new("ip").args(["netns", "add", &ns]))?;
            let mut p = Proc {
                child: None,
                cleanup: vec![vec!["ip".into(), "netns".into(), "del".into(), ns.clone()]],
            };
            let d = dir.display().to_string();
            let db = format!("unix:{d}/db.sock");
            run(Command::new("ovsdb-tool").args([
                "create",
                &format!("{d}/conf.db"),
                "/usr/share/openvswitch/vswitch.ovsschema",
            ]))?;
            run(Command::new("ovsdb-server")
                .arg(format!("--remote=punix:{d}/db.sock"))
                .arg(format!("--pidfile={d}/ovsdb.pid"))
                .arg("--detach")
                .arg(format!("--log-file={d}/ovsdb.log"))
                .arg(format!("{d}/conf.db"))
                .env("OVS_RUNDIR", &d))?;
            p.cleanup.insert(
                0,
                vec![
                    "sh".into(),
                    "-c".into(),
                    format!("kill $(cat {d}/ovsdb.pid)"),
                ],
            );
            let vsctl = |args: &[&str]| {
                run(Command::new("ovs-vsctl")
                    .arg(format!("--db={db}"))
                    .args(args))
            };
            vsctl(&["--no-wait", "init"])?;
            vsctl(&[
                "--no-wait",
                "set",
                "Open_vSwitch",
                ".",
                "other_config:dpdk-init=true",
                "other_config:dpdk-socket-mem=512",
                "other_config:pmd-cpu-mask=0x1",
                "other_config:dpdk-lcore-mask=0x1",
                "other_config:dpdk-extra=--no-pci --file-prefix=vfb-ovs",
            ])?;
            run(Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "taskset",
                    "-c",
                    "0",
                    "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk",
                    &db,
                ])
                .arg(format!("--pidfile={d}/vswitchd.pid"))
                .arg("--detach")
                .arg(format!("--log-file={d}/vswitchd.log"))
                .env("OVS_RUNDIR", &d))?;
            p.cleanup.insert(
                0,
                vec![
                    "sh".into(),
                    "-c".into(),
                    format!("kill $(cat {d}/vswitchd.pid)"),
                ],
            );
            vsctl(&[
                "add-br",
                "br0",
                "--",
                "set",
                "bridge",
                "br0",
                "datapath_type=netdev",
            ])?;
            for (i, s) in socks.iter().enumerate() {
                vsctl(&[
                    "add-port",
                    "br0",
                    &format!("vhu{i}"),
                    "--",
                    "set",
                    "Interface",
                    &format!("vhu{i}"),
                    "type=dpdkvhostuserclient",
                    &format!("options:vhost-server-path={}", s.display()),
                ])?;
            }
            Ok((p, true))
        }
    }
}

/// Runs the generator on CPU 1 and returns the total received packet rate (both ports).
fn generate(dir: &Path, frame_len: usize, server: bool) -> Result<f64> {
    generate_with(dir, frame_len, server, false, false)
}

/// `generate`; with `tagged`, the generator's port 1 sends 802.1Q VLAN 10 frames and
/// strips the tag of what it receives (port 0 stays untagged); with `packed`, its rings are
/// packed virtqueues.
fn generate_with(
    dir: &Path,
    frame_len: usize,
    server: bool,
    tagged: bool,
    packed: bool,
) -> Result<f64> {
    let socks = [dir.join("p0.sock"), dir.join("p1.sock")];
    let log_path = dir.join("gen.log");
    let log = std::fs::File::create(&log_path)?;
    let srv = match (server, packed) {
        (false, false) => "",
        (true, false) => ",server=1",
        (false, true) => ",packed_vq=1",
        (true, true) => ",server=1,packed_vq=1",
    };
    let mut child = Command::new("dpdk-testpmd")
        .args([
            "--lcores",
            "0@1,1@1",
            "-n",
            "1",
            "--no-pci",
            "--single-file-segments",
            "-m",
            "256",
            "--file-prefix",
            "vfb-gen",
        ])
        .arg("--vdev")
        .arg(format!(
            "net_virtio_user0,path={},queue_size=1024,mac={MAC0}{srv}",
            socks[0].display()
        ))
        .arg("--vdev")
        .arg(format!(
            "net_virtio_user1,path={},queue_size=1024,mac={MAC1}{srv}",
            socks[1].display()
        ))
        .args([
            "--",
            "-i",
            "--forward-mode=io",
            "--nb-cores=1",
            "--txd=1024",
            "--rxd=1024",
        ])
        .arg(format!("--txpkts={}", frame_len - 4))
        .arg(format!("--eth-peer=0,{MAC1}"))
        .arg(format!("--eth-peer=1,{MAC0}"))
        .stdin(Stdio::piped())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("dpdk-testpmd")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut say = |s: &str, then: Duration| -> Result<()> {
        writeln!(stdin, "{s}")?;
        stdin.flush()?;
        std::thread::sleep(then);
        Ok(())
    };
    // Let both sides connect (OVS dials every second), fill the loop, settle, measure 5 s.
    std::thread::sleep(Duration::from_secs(6));
    if tagged {
        say("port stop 1", Duration::from_millis(500))?;
        say("vlan set strip on 1", Duration::from_millis(200))?;
        say("tx_vlan set 1 10", Duration::from_millis(200))?;
        say("port start 1", Duration::from_secs(2))?;
    }
    say("start tx_first 32", Duration::from_secs(3))?;
    say("show port stats all", Duration::from_secs(5))?;
    say("show port stats all", Duration::from_millis(500))?;
    say("stop", Duration::from_millis(300))?;
    say("quit", Duration::from_millis(300))?;
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let out = std::fs::read_to_string(&log_path)?;
    let pps: Vec<f64> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Rx-pps:"))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    if pps.len() < 4 {
        bail!("generator printed no rates; see {}", log_path.display());
    }
    // The second "show port stats all" covers the 5-second window: its two Rx-pps lines.
    Ok(pps[pps.len() - 2] + pps[pps.len() - 1])
}

/// The scale benchmark: 2 ports / 1 entry against 64 ports / 10^6 entries, and memory.
fn scale(rounds: usize, vfabric: &Path) -> Result<()> {
    let configs = [(2usize, 0usize), (64, 1_000_000)];
    let mut rates: Vec<(usize, f64)> = Vec::new();
    let mut rss: Vec<(usize, usize, u64)> = Vec::new();
    for r in 0..rounds {
        for &(ports, entries) in &configs {
            let dir = tempfile::Builder::new().prefix("vfsc").tempdir_in("/tmp")?;
            let topo = topology(dir.path(), ports, entries)?;
            let sw = start_vfabric(dir.path(), vfabric, &topo)?;
            let pid = sw.child.as_ref().map(|c| c.id()).unwrap_or(0);
            if r == 0 {
                rss.push((ports, entries, rss_kib(pid)?));
            }
            let pps = generate(dir.path(), 64, false)?;
            drop(sw);
            println!(
                "round {r} {ports:>3} ports {entries:>8} entries {:>7.3} Mpps",
                pps / 1e6
            );
            rates.push((ports, pps));
        }
    }
    let m = |p| median(rates.iter().filter(|r| r.0 == p).map(|r| r.1).collect());
    let (small, big) = (m(2), m(64));
    // Each round ran both, one after the other: their ratio is less exposed to this
    // machine's slow and fast phases than the ratio of medians.
    let per_round = median(
        rates
            .chunks(2)
            .filter(|c| c.len() == 2 && c[0].1 > 0.0)
            .map(|c| c[1].1 / c[0].1)
            .collect(),
    );
    println!();
    println!(
        "| 64 B, busy-poll | 2 ports, 1 entry | 64 ports, 10^6 entries | ratio | per-round ratio |"
    );
    println!(
        "|-----------------|------------------|------------------------|-------|-----------------|"
    );
    println!(
        "| Mpps            | {:>16.3} | {:>22.3} | {:>5.2} | {:>15.2} |",
        small / 1e6,
        big / 1e6,
        big / small,
        per_round
    );
    // Idle memory: 2 and 64 ports without entries, 64 ports with 10^6 entries.
    let dir = tempfile::Builder::new().prefix("vfsc").tempdir_in("/tmp")?;
    let topo = topology(dir.path(), 64, 0)?;
    let sw = start_vfabric(dir.path(), vfabric, &topo)?;
    let rss64 = rss_kib(sw.child.as_ref().map(|c| c.id()).unwrap_or(0))?;
    drop(sw);
    let rss2 = rss.iter().find(|r| r.0 == 2).map(|r| r.2).unwrap_or(0);
    let rss_big = rss.iter().find(|r| r.0 == 64).map(|r| r.2).unwrap_or(0);
    println!();
    println!(
        "RSS (before traffic): 2 ports {rss2} KiB, 64 ports {rss64} KiB, 64 ports + 10^6 entries {rss_big} KiB"
    );
    println!(
        "=> {:.1} KiB per idle port, {:.1} MiB per 10^6 forwarding entries",
        (rss64 as f64 - rss2 as f64) / 62.0,
        (rss_big as f64 - rss64 as f64) / 1024.0
    );
    Ok(())
}

/// Tag push/pop cost: two default (untagged) ports against an access port (VLAN 10) and a
/// trunk (VLAN 10), where every frame gets a tag pushed or popped; 64 B, alternating.
fn vlan_cost(rounds: usize, vfabric: &Path) -> Result<()> {
    let mut plain = Vec::new();
    let mut tagged = Vec::new();
    for r in 0..rounds {
        for vlan in [false, true] {
            let dir = tempfile::Builder::new().prefix("vfvl").tempdir_in("/tmp")?;
            let topo = topology(dir.path(), 2, 0)?;
            if vlan {
                let t = std::fs::read_to_string(&topo)?;
                let mut out = String::new();
                for (i, part) in t.split("[[switch.port]]").enumerate() {
                    if i > 0 {
                        out.push_str("[[switch.port]]");
                    }
                    out.push_str(part);
                    if i == 1 {
                        out.push_str("vlan = 10\n");
                    } else if i == 2 {
                        out.push_str("trunk = [10]\n");
                    }
                }
                std::fs::write(&topo, out)?;
            }
            let sw = start_vfabric(dir.path(), vfabric, &topo)?;
            let pps = generate_with(dir.path(), 64, false, vlan, false)?;
            drop(sw);
            println!(
                "round {r} {:<8} {:>7.3} Mpps",
                if vlan { "push/pop" } else { "untagged" },
                pps / 1e6
            );
            if vlan {
                tagged.push(pps)
            } else {
                plain.push(pps)
            }
        }
    }
    let (p, t) = (median(plain), median(tagged));
    println!();
    println!("| 64 B | untagged Mpps | push/pop Mpps | cost |");
    println!("|------|---------------|---------------|------|");
    println!(
        "|      | {:>13.3} | {:>13.3} | {:>4.1}% |",
        p / 1e6,
        t / 1e6,
        (1.0 - t / p) * 100.0
    );
    Ok(())
}

/// Old build against new: this vfabric ($VFABRIC_BIN) and `other`, alternating round by
/// round on the same two-port topology, for each frame size, busy-poll and (with `notify`)
/// notification mode too; with `packed`, the generator on packed rings. For refactors that
/// must not cost packet rate.
fn against(
    other: &Path,
    rounds: usize,
    sizes: &[usize],
    vfabric: &Path,
    notify: bool,
    packed: bool,
) -> Result<()> {
    let modes: &[bool] = if notify { &[true, false] } else { &[true] };
    // (size, busy-poll, other, pps)
    let mut results: Vec<(usize, bool, bool, f64)> = Vec::new();
    for r in 0..rounds {
        for &size in sizes {
            for &busy in modes {
                for (is_other, bin) in [(false, vfabric), (true, other)] {
                    let dir = tempfile::Builder::new().prefix("vfag").tempdir_in("/tmp")?;
                    let topo = topology(dir.path(), 2, 0)?;
                    if !busy {
                        let t = std::fs::read_to_string(&topo)?;
                        std::fs::write(&topo, t.replace("busy_poll = true", "busy_poll = false"))?;
                    }
                    let sw = start_vfabric(dir.path(), bin, &topo)?;
                    let pps = generate_with(dir.path(), size, false, false, packed)?;
                    drop(sw);
                    println!(
                        "round {r} {size:>5} B {:<6} {:<6} {:>7.3} Mpps",
                        if busy { "poll" } else { "notify" },
                        if is_other { "other" } else { "this" },
                        pps / 1e6
                    );
                    results.push((size, busy, is_other, pps));
                }
            }
        }
    }
    println!();
    println!("this:  {}", vfabric.display());
    println!("other: {}", other.display());
    // The machine's speed drifts between rounds (fast and slow phases): the ratio of the
    // two builds within each round is the fair comparison; medians and bests are shown too.
    println!(
        "| frame | mode   | this Mpps (median, best) | other Mpps (median, best) | this/other (median of rounds) |"
    );
    println!(
        "|-------|--------|--------------------------|---------------------------|-------------------------------|"
    );
    for &size in sizes {
        for &busy in modes {
            let rates = |o: bool| -> Vec<f64> {
                let r = results
                    .iter()
                    .filter(|r| r.0 == size && r.1 == busy && r.2 == o);
                r.map(|r| r.3).collect()
            };
            let (t, o) = (rates(false), rates(true));
            let ratios: Vec<f64> = t.iter().zip(&o).map(|(a, b)| a / b).collect();
            let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
            println!(
                "| {size:>5} | {:<6} | {:>10.3}, {:>11.3} | {:>11.3}, {:>11.3} | {:>29.3} |",
                if busy { "poll" } else { "notify" },
                median(t.clone()) / 1e6,
                best(&t) / 1e6,
                median(o.clone()) / 1e6,
                best(&o) / 1e6,
                median(ratios)
            );
        }
    }
    Ok(())
}

/// The median rate of the rounds of `who` at frame size `size`.
fn median_of<W: PartialEq>(results: &[(usize, W, f64)], size: usize, who: W) -> f64 {
    median(
        results
            .iter()
            .filter(|(s, w, _)| *s == size && *w == who)
            .map(|r| r.2)
            .collect(),
    )
}

/// The vfabric binary under test ($VFABRIC_BIN, else the release build).
fn vfabric_bin() -> PathBuf {
    PathBuf::from(std::env::var("VFABRIC_BIN").unwrap_or_else(|_| "target/release/vfabric".into()))
}

fn main() -> Result<()> {
    let mode = std::env::args().nth(1);
    if matches!(mode.as_deref(), Some("--vlan" | "--scale")) {
        let rounds = std::env::args()
            .nth(2)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(3);
        let vfabric = vfabric_bin();
        return if mode.as_deref() == Some("--vlan") {
            vlan_cost(rounds, &vfabric)
        } else {
            scale(rounds, &vfabric)
        };
    }
    if mode.as_deref() == Some("--against") {
        let notify = std::env::args().any(|a| a == "--notify");
        let packed = std::env::args().any(|a| a == "--packed");
        let mut args = std::env::args()
            .skip(2)
            .filter(|a| a != "--notify" && a != "--packed");
        let other = PathBuf::from(args.next().context("--against needs a vfabric binary")?);
        let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
        let mut sizes: Vec<usize> = args.map(|s| s.parse()).collect::<Result<_, _>>()?;
        if sizes.is_empty() {
            sizes = vec![64, 1518];
        }
        return against(&other, rounds, &sizes, &vfabric_bin(), notify, packed);
    }
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let mut sizes: Vec<usize> = args.map(|s| s.parse()).collect::<Result<_, _>>()?;
    if sizes.is_empty() {
        sizes = vec![64, 1518];
    }
    let vfabric = vfabric_bin();
    let contenders = [
        Who::Vfabric,
        Who::VfabricPacked,
        Who::VfabricNotify,
        Who::Ovs,
        Who::OvsPacked,
        Who::Testpmd,
    ];
    let mut results: Vec<(usize, Who, f64)> = Vec::new();
    for r in 0..rounds {
        for &size in &sizes {
            for &who in &contenders {
                let dir = tempfile::Builder::new().prefix("vfpr").tempdir_in("/tmp")?;
                let (switch, gen_is_server) = start_switch(who, dir.path(), &vfabric)?;
                let pps = generate_with(dir.path(), size, gen_is_server, false, who.packed())?;
                drop(switch);
                println!(
                    "round {r} {size:>5} B {:<13} {:>7.3} Mpps",
                    format!("{who:?}"),
                    pps / 1e6
                );
                results.push((size, who, pps));
            }
        }
    }
    // The machine's speed drifts between rounds: besides ratios of medians, the median of
    // each round's own ratio (contenders of one round ran back to back).
    let round_ratio = |size: usize, a: Who, b: Who| {
        let of = |w: Who| -> Vec<f64> {
            results
                .iter()
                .filter(|r| r.0 == size && r.1 == w)
                .map(|r| r.2)
                .collect()
        };
        median(of(a).iter().zip(of(b)).map(|(x, y)| x / y).collect())
    };
    println!();
    println!(
        "| frame | vfabric poll Mpps | vfabric notify Mpps | OVS-DPDK Mpps | testpmd io Mpps | poll/OVS | notify/OVS | poll/testpmd | per-round poll/OVS, notify/OVS, poll/testpmd |"
    );
    println!(
        "|-------|-------------------|---------------------|---------------|-----------------|----------|------------|--------------|----------------------------------------------|"
    );
    for &size in &sizes {
        let m = |who| median_of(&results, size, who);
        let (v, n, o, t) = (
            m(Who::Vfabric),
            m(Who::VfabricNotify),
            m(Who::Ovs),
            m(Who::Testpmd),
        );
        println!(
            "| {size:>5} | {:>17.3} | {:>19.3} | {:>13.3} | {:>15.3} | {:>8.2} | {:>10.2} | {:>12.2} | {:.2}, {:.2}, {:.2} |",
            v / 1e6,
            n / 1e6,
            o / 1e6,
            t / 1e6,
            v / o,
            n / o,
            v / t,
            round_ratio(size, Who::Vfabric, Who::Ovs),
            round_ratio(size, Who::VfabricNotify, Who::Ovs),
            round_ratio(size, Who::Vfabric, Who::Testpmd),
        );
    }
    println!();
    println!(
        "| frame | packed rings: vfabric poll Mpps | OVS-DPDK Mpps | vfabric/OVS | per-round vfabric/OVS | per-round vfabric packed/split |"
    );
    println!(
        "|-------|---------------------------------|---------------|-------------|-----------------------|--------------------------------|"
    );
    for &size in &sizes {
        let m = |who| median_of(&results, size, who);
        let (vp, op) = (m(Who::VfabricPacked), m(Who::OvsPacked));
        println!(
            "| {size:>5} | {:>31.3} | {:>13.3} | {:>11.2} | {:>21.2} | {:>30.2} |",
            vp / 1e6,
            op / 1e6,
            vp / op,
            round_ratio(size, Who::VfabricPacked, Who::OvsPacked),
            round_ratio(size, Who::VfabricPacked, Who::Vfabric),
        );
    }
    Ok(())
}
