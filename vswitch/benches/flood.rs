//! Flood cost of a VXLAN port (head-end replication): `ROUNDS` rounds of 64-byte broadcast
//! frames sent to 1, 8 and 64 static remote VTEPs (sink sockets on 127.0.1.N that never
//! read; loopback only). Prints frames/s and datagrams/s per case, the medians over rounds:
//! what one more remote host costs a flood (one remote is what a unicast frame costs).
//!
//! Then the cost of the tunnel itself per frame: two VXLAN ports on 127.0.0.1 and 127.0.0.2
//! facing each other, 64-byte frames sent into one (encapsulated, sent from the flow's
//! source socket) and counted as they come out of the other's reader (received, checked,
//! decapsulated, handed to the switch): frames/s delivered, and the share lost when the
//! sender outruns the reader.
//!
//! Usage: `cargo bench -p vswitch --bench flood -- [ROUNDS] [FRAMES]` (default 5 rounds of
//! 200000 frames).

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use vhost_backends::frame::TxFrame;
use vhost_backends::net::{FrameSwitch, NetPort};
use vswitch::ports::{Ingress, PortKey};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;
use vswitch::ports::SwitchPort;
use vswitch::ports::vxlan::VxlanPort;
use vswitch::topology::{Encap, VxlanConfig};

/// A 64-byte Ethernet frame from `src` to `dst` (an IPv4 ethertype, zero payload).
fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

/// Frames per second sending `frames` copies of `f` through `port`, in batches of 32.
fn rate(port: &VxlanPort, f: &[u8], frames: usize) -> f64 {
    let batch: Vec<Vec<u8>> = (0..32).map(|_| f.to_vec()).collect();
    let start = Instant::now();
    for _ in 0..frames / 32 {
        port.deliver_bytes(&batch, 0);
    }
    (frames / 32 * 32) as f64 / start.elapsed().as_secs_f64()
}

/// Counts the frames a port hands to the switch.
#[derive(Default)]
struct Count(AtomicU64);

impl FrameSwitch for Count {
    fn tx_batch(&self, _: &NetPort, _: u16, _: &[TxFrame<'_>]) {}
    fn link_changed(&self, _: &NetPort, _: bool) {}
}

impl Ingress for Count {
    fn forward(&self, _: PortKey, _: u16, frames: &[TxFrame<'_>]) {
        self.0.fetch_add(frames.len() as u64, Relaxed);
    }
}

/// One tunnel round: `frames` 64-byte frames into `from`, counted out of `count`'s port.
/// Returns (frames/s delivered, share lost): the time runs from the first send to the last
/// frame out (the count stops moving for 50 ms).
fn tunnel_round(from: &VxlanPort, count: &Count, frames: usize) -> (f64, f64) {
    let before = count.0.load(Relaxed);
    let f = frame([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]);
    let batch: Vec<Vec<u8>> = (0..32).map(|_| f.clone()).collect();
    let start = Instant::now();
    for _ in 0..frames / 32 {
        from.deliver_bytes(&batch, 0);
    }
    let (mut last, mut last_at) = (count.0.load(Relaxed), Instant::now());
    while last_at.elapsed() < Duration::from_millis(50) {
        std::thread::sleep(Duration::from_millis(1));
        let now = count.0.load(Relaxed);
        if now != last {
            (last, last_at) = (now, Instant::now());
        }
    }
    let got = (last - before) as f64;
    let sent = (frames / 32 * 32) as f64;
    let took = last_at.duration_since(start).as_secs_f64();
    (got / took, 1.0 - got / sent)
}

/// The tunnel pair: ports on 127.0.0.1 and 127.0.0.2 (UDP port 47891), the second started
/// with a counting switch.
fn tunnel(rounds: usize, frames: usize) -> Result<()> {
    let cfg = |local: [u8; 4], remote: [u8; 4]| VxlanConfig {
        encap: Encap::Vxlan,
        vni: 7,
        local: IpAddr::from(local),
        remote: vec![IpAddr::from(remote)],
        group: None,
        port: 47891,
        vlan_vnis: Vec::new(),
    };
    let a = VxlanPort::open("ta", cfg([127, 0, 0, 1], [127, 0, 0, 2]))?;
    let b = Arc::new(VxlanPort::open("tb", cfg([127, 0, 0, 2], [127, 0, 0, 1]))?);
    let count = Arc::new(Count::default());
    let ingress: Arc<dyn Ingress> = count.clone();
    b.start(0, &ingress)?;
    let runs: Vec<(f64, f64)> = (0..rounds)
        .map(|_| tunnel_round(&a, &count, frames))
        .collect();
    b.stop();
    let rate = median(runs.iter().map(|r| r.0).collect());
    let lost = median(runs.iter().map(|r| r.1).collect());
    println!();
    println!(
        "| tunnel pair (VXLAN over loopback) | frames/s delivered (median of {rounds}) | ns per frame | lost |"
    );
    println!("|---|---|---|---|");
    println!(
        "| 64-byte unicast, one flow | {rate:.0} | {:.0} | {:.1} % |",
        1e9 / rate,
        lost * 100.0
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; without it (`cargo test --all-targets` runs benches
    // too) one short round checks that the bench works.
    let bench = std::env::args().any(|a| a == "--bench");
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let rounds: Option<usize> = args.next().map(|a| a.parse()).transpose()?;
    let rounds = rounds.unwrap_or(if bench { 5 } else { 1 });
    let frames: Option<usize> = args.next().map(|a| a.parse()).transpose()?;
    let frames = frames.unwrap_or(if bench { 200_000 } else { 320 });
    // Sinks: bound, never read (their buffers fill and the kernel drops the rest, after
    // our send has cost what it costs).
    let sinks: Vec<UdpSocket> = (1..=64)
        .map(|i| UdpSocket::bind((Ipv4Addr::new(127, 0, 1, i), 47890)))
        .collect::<Result<_, _>>()?;
    let open = |n: usize, port_no: u16| {
        VxlanPort::open(
            &format!("flood{n}"),
            VxlanConfig {
                encap: Encap::Vxlan,
                vni: 1,
                local: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
                remote: sinks[..n]
                    .iter()
                    .map(|s| s.local_addr().map(|a| a.ip()))
                    .collect::<Result<_, _>>()?,
                group: None,
                port: port_no,
                vlan_vnis: Vec::new(),
            },
        )
        .map_err(Box::<dyn std::error::Error>::from)
    };
    let broadcast = frame([0xff; 6], [2, 0, 0, 0, 0, 1]);
    println!("| case | remotes | frames/s (median of {rounds}) | datagrams/s |");
    println!("|---|---|---|---|");
    for n in [1usize, 8, 64] {
        // The port binds 127.0.0.1 on the sinks' port number and sends to them there.
        let port = open(n, 47890)?;
        let r = median(
            (0..rounds)
                .map(|_| rate(&port, &broadcast, frames))
                .collect(),
        );
        println!("| broadcast | {n} | {:.0} | {:.0} |", r, r * n as f64);
    }
    tunnel(rounds, frames)
}
