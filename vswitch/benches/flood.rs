//! Flood cost of a VXLAN port (head-end replication): `ROUNDS` rounds of 64-byte broadcast
//! frames sent to 1, 8 and 64 static remote VTEPs (sink sockets on 127.0.1.N that never
//! read; loopback only). Prints frames/s and datagrams/s per case, the medians over rounds:
//! what one more remote host costs a flood (one remote is what a unicast frame costs).
//!
//! Usage: `cargo bench -p vswitch --bench flood -- [ROUNDS] [FRAMES]` (default 5 rounds of
//! 200000 frames).

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::Instant;

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
    Ok(())
}
