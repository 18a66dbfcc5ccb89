//! Tests of tunnel endpoints shared by several tunnel ports (`tunnel_endpoint.rs`,
//! `vxlan.rs`).

use std::time::Instant;

use vhost_backends::frame::TxFrame;
use vhost_backends::net::{FrameSwitch, NetPort};

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::switch_port::{Ingress, PortKey, SwitchPort};
use super::vxlan::{VxlanPort, header};
use crate::topology::{Encap, VxlanConfig};

/// Records what reaches the switch: (port key, frame).
#[derive(Default)]
struct Rec(Mutex<Vec<(PortKey, Vec<u8>)>>);

impl FrameSwitch for Rec {
    fn tx_batch(&self, _: &NetPort, _: u16, _: &[TxFrame<'_>]) {}
    fn link_changed(&self, _: &NetPort, _: bool) {}
}

impl Ingress for Rec {
    fn forward(&self, key: PortKey, _: u16, frames: &[TxFrame<'_>]) {
        let mut r = self.0.lock().unwrap();
        r.extend(frames.iter().map(|f| (key, f.to_vec())));
    }
}

fn config(vni: u32, port: u16, vlan_vnis: Vec<(u16, u32)>) -> VxlanConfig {
    VxlanConfig {
        encap: Encap::Vxlan,
        vni,
        local: "127.0.0.1".parse().unwrap(),
        remote: vec!["127.0.0.3".parse().unwrap()],
        group: None,
        port,
        vlan_vnis,
    }
}

/// A broadcast frame (60 bytes) with EtherType 0x88b5, VLAN-tagged if asked.
fn frame(vlan: Option<u16>) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
    if let Some(v) = vlan {
        f.extend_from_slice(&[0x81, 0, (v >> 8) as u8, v as u8]);
    }
    f.extend_from_slice(&[0x88, 0xb5]);
    f.resize(f.len() + 46, 0x5a);
    f
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Two ports (two switches' meshes) on one local address and UDP port: each gets the
/// datagrams of its VNIs, a VLAN with its own VNI comes in tagged and leaves untagged
/// under that VNI, a VNI nobody has is counted, a taken VNI or another encapsulation on
/// the endpoint is refused, and a port that stopped gets nothing more.
#[test]
fn ports_on_one_endpoint_are_told_apart_by_vni() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The remote VTEP: sends to the endpoint and receives what the ports send.
    let remote = UdpSocket::bind(("127.0.0.3", port)).unwrap();
    remote
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let a = Arc::new(VxlanPort::open("ea", config(1, port, vec![(20, 2020)])).unwrap());
    let b = Arc::new(VxlanPort::open("eb", config(2, port, vec![])).unwrap());
    let taken = VxlanPort::open("ec", config(2020, port, vec![]))
        .err()
        .unwrap();
    assert!(taken.contains("VNI 2020"), "{taken}");
    let mut geneve = config(3, port, vec![]);
    geneve.encap = Encap::Geneve;
    let other = VxlanPort::open("eg", geneve).err().unwrap();
    assert!(other.contains("already a vxlan endpoint"), "{other}");
    let rec = Arc::new(Rec::default());
    let ingress: Arc<dyn Ingress> = rec.clone();
    assert!(a.start(1, &ingress).unwrap().is_empty());
    assert!(b.start(2, &ingress).unwrap().is_empty());
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let send = |vni: u32, f: &[u8]| {
        let mut d = header(vni).to_vec();
        d.extend_from_slice(f);
        remote.send_to(&d, to).unwrap();
    };
    send(1, &frame(None));
    send(2, &frame(None));
    send(2020, &frame(None));
    send(9, &frame(None));
    wait("three frames", || rec.0.lock().unwrap().len() == 3);
    wait("the unknown VNI counted", || {
        a.counters().rx_drop_bad_header.load(Relaxed) == 1
    });
    // Each port's frames in order (a batch is handed over port by port).
    let got = rec.0.lock().unwrap().clone();
    let of = |k: PortKey| {
        got.iter()
            .filter(|g| g.0 == k)
            .map(|g| g.1.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(of(1), [frame(None), frame(Some(20))]);
    assert_eq!(of(2), [frame(None)]);
    assert!(a.remotes()[0].1.is_some(), "the remote was heard");

    // Out: VLAN 20 untagged under VNI 2020, the rest as they are under the port's VNI.
    let mut buf = [0u8; 2048];
    a.deliver_bytes(&[frame(Some(20)), frame(Some(30))], 0);
    let (n, _) = remote.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..8], header(2020));
    assert_eq!(&buf[8..n], frame(None));
    let (n, _) = remote.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..8], header(1));
    assert_eq!(&buf[8..n], frame(Some(30)));

    // b leaves: its VNI is nobody's now.
    b.stop();
    send(2, &frame(None));
    wait("b's datagram counted as unknown", || {
        a.counters().rx_drop_bad_header.load(Relaxed) == 2
    });
    assert_eq!(rec.0.lock().unwrap().len(), 3);
    a.stop();
    drop((a, b));
    // Once every port is gone and the reader has ended, the address is free again.
    wait("the endpoint closed", || {
        VxlanPort::open("again", config(1, port, vec![])).is_ok()
    });
}
