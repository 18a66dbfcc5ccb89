//! The vhost-user virtio-net device and the switch, driven in-process by the `vhost` crate's
//! frontend playing the VMM (no VM): the message orders of QEMU and cloud-hypervisor,
//! frames through the switch, hostile descriptor chains, RX back-pressure, MRG_RXBUF and
//! reconnects.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use support::{
    BCAST, F_EVENT_IDX, F_GUEST_CSUM, F_GUEST_ECN, F_GUEST_TSO4, F_GUEST_TSO6, F_MRG_RXBUF, Guest,
    Order, QSIZE, frame, mac, wait_for,
};
use vhost::vhost_user::VhostUserFrontend;
use vhost::vhost_user::message::VhostUserConfigFlags;
use vhost_backends::counters::NetCountersSnapshot;
use vhost_backends::server::{Role, bind_socket};
use vswitch::fabric::Fabric;
use vswitch::topology;

const T: Duration = Duration::from_secs(5);

struct Lab {
    fabric: Arc<Fabric>,
    sockets: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Lab {
    /// A switch "lab" with ports p0..p(n-1); `extra` is appended to every port's table.
    fn new(n: usize, extra: &str) -> Lab {
        Lab::with_switch(n, "", extra)
    }

    /// Same, with `switch_extra` in the switch's table.
    fn with_switch(n: usize, switch_extra: &str, extra: &str) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let mut src = format!("[[switch]]\nname = \"lab\"\n{switch_extra}\n");
        for i in 0..n {
            src += &format!(
                "[[switch.port]]\nname = \"p{i}\"\ntype = \"vhost-user-net\"\nsocket = \"p{i}.sock\"\nqueues = 2\n{extra}\n"
            );
        }
        let topo = topology::parse(&dir.path().join("t.toml"), &src).unwrap();
        let fabric = Fabric::new(&topo).unwrap();
        fabric.start_pollers().unwrap();
        let mut sockets = Vec::new();
        for i in 0..fabric.switches()[0].ports().len() {
            let path = dir.path().join(format!("p{i}.sock"));
            let l = bind_socket(&path).unwrap();
            fabric
                .serve_vm_port(0, i, Role::Server(l), Some(path.clone()))
                .unwrap();
            sockets.push(path);
        }
        Lab {
            fabric,
            sockets,
            _dir: dir,
        }
    }

    fn guest(&self, i: usize, order: Order) -> Guest {
        Guest::connect(&self.sockets[i], 1, order, 0)
    }

    fn counters(&self, i: usize) -> NetCountersSnapshot {
        self.fabric.switches()[0]
            .port(i)
            .and_then(|p| p.vm().cloned())
            .unwrap()
            .counters()
    }

    fn wait_connected(&self, i: usize, want: bool) {
        let port = self.fabric.switches()[0].port(i).unwrap();
        wait_for(
            T,
            || port.is_connected() == want,
            || format!("port p{i} connected={want} never happened"),
        );
    }
}

#[test]
fn qemu_order_guests_exchange_frames_through_the_switch() {
    guests_exchange_frames(Lab::new(3, ""));
}

#[test]
fn busy_poll_switch_exchanges_frames_and_sleeps_when_idle() {
    let lab = Lab::with_switch(3, "busy_poll = true", "");
    guests_exchange_frames(lab);
}

#[test]
fn two_poll_threads_exchange_frames_on_every_pair_they_share_out() {
    let lab = Lab::with_switch(3, "busy_poll = true\npoll_threads = 2", "");
    // Pair q of port p belongs to thread (p + q) mod 2.
    let sw = &lab.fabric.switches()[0];
    assert_eq!(sw.poll_thread_of(0, 2), Some(vec![0, 1]));
    assert_eq!(sw.poll_thread_of(1, 2), Some(vec![1, 0]));
    // Both pairs of two ports, so each thread drains a ring of each: frames sent on either
    // pair arrive, whichever thread took them.
    let mut a = Guest::connect(&lab.sockets[0], 2, Order::Qemu, 0);
    let mut b = Guest::connect(&lab.sockets[1], 2, Order::Qemu, 0);
    for pair in 0..2 {
        b.post_rx(pair, 8, 2048);
        a.post_rx(pair, 8, 2048);
    }
    for pair in 0..2 {
        let f = frame(BCAST, mac(1), format!("a on pair {pair}").as_bytes());
        a.send(pair, &f);
        assert_eq!(b.recv(pair, 1, T), vec![(1, f)]);
        let g = frame(mac(1), mac(2), format!("b on pair {pair}").as_bytes());
        b.send(pair, &g);
        assert_eq!(a.recv(pair, 1, T), vec![(1, g)]);
    }
    assert_eq!(
        (lab.counters(0).rx_frames, lab.counters(1).rx_frames),
        (2, 2)
    );
}

#[test]
fn a_cached_flood_stops_once_the_destination_is_learned() {
    let lab = Lab::new(3, "");
    let mut a = lab.guest(0, Order::Qemu);
    let mut b = lab.guest(1, Order::Qemu);
    let mut c = lab.guest(2, Order::Qemu);
    for g in [&mut a, &mut b, &mut c] {
        g.post_rx(0, 32, 2048);
    }
    // To an unknown address: flooded, one batch after another (the later ones decided from
    // the sending thread's flow cache, without the switch's lock).
    let to_x = frame(mac(3), mac(1), b"to an address nobody has shown");
    for _ in 0..4 {
        a.send(0, &to_x);
        assert_eq!(b.recv(0, 1, T), vec![(1, to_x.clone())]);
        assert_eq!(c.recv(0, 1, T), vec![(1, to_x.clone())]);
    }
    // The address shows up behind C: the same flow now goes to C only.
    let from_x = frame(mac(1), mac(3), b"here I am");
    c.send(0, &from_x);
    assert_eq!(a.recv(0, 1, T), vec![(1, from_x)]);
    a.send(0, &to_x);
    assert_eq!(c.recv(0, 1, T), vec![(1, to_x.clone())]);
    let marker = frame(BCAST, mac(1), b"marker");
    a.send(0, &marker);
    assert_eq!(
        b.recv(0, 1, T),
        vec![(1, marker.clone())],
        "B got no stale flood"
    );
    // Decisions counted exactly, wherever they were made.
    let s = lab.fabric.switches()[0]
        .port_stats(vswitch::core::PortId(0))
        .unwrap();
    assert_eq!((s.flooded, s.unicast), (5, 1));
    // The first batch learned A's address (nothing cached), the second cached the flow,
    // the third and fourth hit; after X was learned the cache was stale.
    assert_eq!(
        lab.fabric.switches()[0].flow_cache_hits(vswitch::core::PortId(0)),
        2
    );
}

fn guests_exchange_frames(lab: Lab) {
    let mut a = lab.guest(0, Order::Qemu);
    let mut b = lab.guest(1, Order::Qemu);
    let mut c = lab.guest(2, Order::Qemu);
    for g in [&mut a, &mut b, &mut c] {
        g.post_rx(0, 32, 2048);
    }
    // Broadcast from A reaches B and C, not A.
    let hello = frame(BCAST, mac(1), b"who is there?");
    a.send(0, &hello);
    assert_eq!(b.recv(0, 1, T), vec![(1, hello.clone())]);
    assert_eq!(c.recv(0, 1, T), vec![(1, hello.clone())]);
    // B answers A by unicast: A learned -> only A gets it.
    let reply = frame(mac(1), mac(2), &[7u8; 1000]);
    b.send(0, &reply);
    assert_eq!(a.recv(0, 1, T), vec![(1, reply.clone())]);
    // A to B, now both known.
    let data = frame(mac(2), mac(1), &[9u8; 1486]);
    a.send(0, &data);
    assert_eq!(b.recv(0, 1, T), vec![(1, data.clone())]);
    // Nothing else arrived anywhere: a broadcast marker from C is the very next frame at A
    // and B (rings are FIFO), and one from A the next at C.
    let marker_c = frame(BCAST, mac(3), b"marker from c");
    c.send(0, &marker_c);
    assert_eq!(a.recv(0, 1, T), vec![(1, marker_c.clone())]);
    assert_eq!(b.recv(0, 1, T), vec![(1, marker_c.clone())]);
    let marker_a = frame(BCAST, mac(1), b"marker from a");
    a.send(0, &marker_a);
    assert_eq!(c.recv(0, 1, T), vec![(1, marker_a.clone())]);
    assert_eq!(b.recv(0, 1, T), vec![(1, marker_a.clone())]);
    // Every TX chain came back with used length 0.
    assert_eq!(a.wait_used(1, 3, T), vec![(0, 0), (2, 0), (4, 0)]);
    let (ca, cb, cc) = (lab.counters(0), lab.counters(1), lab.counters(2));
    assert_eq!(
        (ca.rx_frames, ca.rx_bytes),
        (3, (hello.len() + data.len() + marker_a.len()) as u64)
    );
    assert_eq!(
        (ca.tx_frames, ca.tx_bytes),
        (2, (reply.len() + marker_c.len()) as u64)
    );
    assert_eq!((cb.tx_frames, cb.rx_frames), (4, 1));
    assert_eq!((cc.tx_frames, cc.rx_frames), (2, 1));
    let sw = &lab.fabric.switches()[0];
    assert_eq!(sw.core().fdb().len(), 3);
    assert_eq!(sw.port_stats(vswitch::core::PortId(0)).unwrap().flooded, 2);
}

#[test]
fn cloud_hypervisor_order_reads_config_and_uses_queue_pair_1() {
    let lab = Lab::new(2, "mac = \"52:54:00:00:00:aa\"\n");
    let mut a = Guest::connect(&lab.sockets[0], 2, Order::CloudHypervisor, 0);
    let mut b = Guest::connect(&lab.sockets[1], 2, Order::CloudHypervisor, 0);
    // virtio_net_config: mac, status (LINK_UP), max_virtqueue_pairs.
    let (_, cfg) = a
        .frontend
        .get_config(0, 10, VhostUserConfigFlags::empty(), &[0u8; 10])
        .unwrap();
    assert_eq!(&cfg[0..6], &[0x52, 0x54, 0, 0, 0, 0xaa]);
    assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), 1, "link up");
    assert_eq!(u16::from_le_bytes([cfg[8], cfg[9]]), 2, "queue pairs");
    b.post_rx(0, 8, 2048);
    b.post_rx(1, 8, 2048);
    let f = frame(BCAST, mac(1), b"pair one");
    a.send(1, &f);
    // Delivered on B's pair 1 (the sender's pair), not pair 0.
    assert_eq!(b.recv(1, 1, T), vec![(1, f)]);
    assert!(b.used(0).is_empty());
}

#[test]
fn hostile_tx_chains_are_dropped_counted_and_returned() {
    let lab = Lab::new(2, "");
    let mut a = lab.guest(0, Order::Qemu);
    let mut b = lab.guest(1, Order::Qemu);
    b.post_rx(0, 16, 2048);
    let hdr = a.put(&[0u8; 12]);
    let good = frame(BCAST, mac(1), b"fine");
    let good_addr = a.put(&good);
    let runt = a.put(&[0u8; 12 + 10]);
    let big = a.put(&vec![0u8; 70_000]);
    let loopy = a.put(&[0u8; 100]);
    let mut bad_gso = [0u8; 12];
    bad_gso[1] = 1; // gso_type TCPV4 without HOST_TSO4
    let bad_hdr = a.put(&bad_gso);
    type Chain = (Vec<(u64, u32, bool)>, bool);
    let chains: Vec<Chain> = vec![
        (vec![(0xdead_0000_0000, 64, false)], false), // outside guest memory
        (vec![(hdr, 5, false)], false),               // no room for the header
        (vec![(runt, 22, false)], false),             // 10-byte frame
        (vec![(big, 70_000, false)], false),          // over 64 KiB
        (vec![(loopy, 100, false)], true),            // descriptor loop
        (vec![(hdr, 12, false), (good_addr, 20, true)], false), // device-writable in TX
        (
            vec![(bad_hdr, 12, false), (good_addr, good.len() as u32, false)],
            false,
        ), // GSO not negotiated
        (
            vec![(hdr, 12, false), (good_addr, good.len() as u32, false)],
            false,
        ), // the good one
    ];
    for (descs, looped) in &chains {
        a.add_chain(1, descs, *looped);
    }
    a.kick(1);
    assert_eq!(b.recv(0, 1, T), vec![(1, good)]);
    let used = a.wait_used(1, chains.len(), T);
    assert_eq!(used.len(), chains.len(), "every chain returned");
    assert!(used.iter().all(|&(_, len)| len == 0));
    let c = lab.counters(0);
    assert_eq!(c.rx_frames, 1);
    assert_eq!(
        c.rx_drop_bad_descriptor, 3,
        "outside memory, loop, writable: {c:?}"
    );
    assert_eq!(c.rx_drop_missing_header, 1);
    assert_eq!(c.rx_drop_runt, 1);
    assert_eq!(c.rx_drop_oversize, 1);
    assert_eq!(c.rx_drop_bad_offload, 1);
    // The port still works.
    let again = frame(BCAST, mac(1), b"still here");
    a.send(0, &again);
    assert_eq!(b.recv(0, 1, T), vec![(1, again)]);
}

#[test]
fn receiver_without_buffers_drops_and_counts_then_recovers() {
    let lab = Lab::new(2, "");
    let mut a = lab.guest(0, Order::Qemu);
    let mut b = lab.guest(1, Order::Qemu);
    for i in 0..5u8 {
        a.send(0, &frame(BCAST, mac(1), &[i; 50]));
    }
    wait_for(
        T,
        || lab.counters(1).tx_drop_no_buffer >= 5,
        || format!("{:?}", lab.counters(1)),
    );
    assert_eq!(lab.counters(1).tx_frames, 0);
    b.post_rx(0, 4, 2048);
    let f = frame(BCAST, mac(1), b"after");
    a.send(0, &f);
    assert_eq!(b.recv(0, 1, T), vec![(1, f)]);
}

#[test]
fn mergeable_rx_buffers_carry_a_frame_across_several() {
    let lab = Lab::new(2, "");
    let mut a = lab.guest(0, Order::Qemu);
    let mut b = lab.guest(1, Order::Qemu);
    assert_ne!(b.acked & F_MRG_RXBUF, 0);
    b.post_rx(0, 8, 256);
    let f = frame(
        BCAST,
        mac(1),
        &(0..1000u32).map(|i| i as u8).collect::<Vec<_>>(),
    );
    a.send(0, &f);
    let got = b.recv(0, 5, T);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, 5, "(1014 + 12) bytes in 256-byte buffers");
    assert_eq!(got[0].1, f);
}

#[test]
fn without_mrg_rxbuf_a_frame_must_fit_one_buffer() {
    let lab = Lab::new(2, "");
    let mut a = lab.guest(0, Order::Qemu);
    let mut b = Guest::connect(&lab.sockets[1], 1, Order::Qemu, F_MRG_RXBUF | F_EVENT_IDX);
    b.post_rx(0, 4, 256);
    a.send(0, &frame(BCAST, mac(1), &[1u8; 1000]));
    let small = frame(BCAST, mac(1), &[2u8; 100]);
    a.send(0, &small);
    assert_eq!(b.recv(0, 1, T), vec![(1, small)]);
    assert_eq!(lab.counters(1).tx_drop_no_buffer, 1);
}

#[test]
fn malformed_rx_chain_is_returned_empty_and_counted() {
    let lab = Lab::new(2, "");
    let mut a = lab.guest(0, Order::Qemu);
    let mut b = lab.guest(1, Order::Qemu);
    let buf = b.put(&[0u8; 2048]);
    b.add_chain(0, &[(buf, 2048, false)], false); // device-readable: wrong direction
    b.kick(0);
    a.send(0, &frame(BCAST, mac(1), b"x"));
    assert_eq!(b.wait_used(0, 1, T), vec![(0, 0)]);
    assert_eq!(lab.counters(1).tx_drop_bad_descriptor, 1);
    b.post_rx(0, 2, 2048);
    let f = frame(BCAST, mac(1), b"y");
    a.send(0, &f);
    assert_eq!(b.recv(0, 1, T), vec![(1, f)]);
}

#[test]
fn a_guest_that_reconnects_resumes_traffic_and_relearns() {
    let lab = Lab::new(2, "");
    let mut a = lab.guest(0, Order::Qemu);
    let mut b = lab.guest(1, Order::Qemu);
    a.post_rx(0, 8, 2048);
    b.post_rx(0, 8, 2048);
    b.send(0, &frame(BCAST, mac(2), b"b is here"));
    assert_eq!(a.recv(0, 1, T).len(), 1);
    assert_eq!(lab.fabric.switches()[0].core().fdb().len(), 1);
    // B goes away: its learned address is forgotten.
    drop(b);
    lab.wait_connected(1, false);
    assert_eq!(lab.fabric.switches()[0].core().fdb().len(), 0);
    // And comes back (a VMM reconnect replays the whole setup).
    let mut b = lab.guest(1, Order::Qemu);
    lab.wait_connected(1, true);
    b.post_rx(0, 8, 2048);
    let f = frame(mac(2), mac(1), b"welcome back");
    a.send(0, &f);
    assert_eq!(b.recv(0, 1, T), vec![(1, f)]);
    assert_eq!(lab.fabric.switches()[0].port(1).unwrap().connections(), 2);
}

#[test]
fn client_mode_dials_the_vmm_and_redials_when_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let src = "[[switch]]\nname = \"lab\"\n\
               [[switch.port]]\nname = \"srv\"\ntype = \"vhost-user-net\"\nsocket = \"srv.sock\"\n\
               [[switch.port]]\nname = \"cli\"\ntype = \"vhost-user-net\"\nsocket = \"vmm.sock\"\nclient = true\n";
    let topo = topology::parse(&dir.path().join("t.toml"), src).unwrap();
    let fabric = Fabric::new(&topo).unwrap();
    let srv_path = dir.path().join("srv.sock");
    let vmm_path = dir.path().join("vmm.sock");
    // The VMM listens (QEMU server=on); vfabric dials it, retrying until it exists.
    let l = bind_socket(&srv_path).unwrap();
    fabric
        .serve_vm_port(0, 0, Role::Server(l), Some(srv_path.clone()))
        .unwrap();
    fabric
        .serve_vm_port(0, 1, Role::Client(vmm_path.clone()), None)
        .unwrap();
    std::thread::sleep(Duration::from_millis(150)); // vfabric is retrying by now
    let vmm = std::os::unix::net::UnixListener::bind(&vmm_path).unwrap();
    let mut a = Guest::connect(&srv_path, 1, Order::Qemu, 0);
    a.post_rx(0, 8, 2048);
    for round in 0..2u8 {
        let (stream, _) = vmm.accept().unwrap();
        let mut b = Guest::setup(stream, 1, Order::Qemu, 0);
        b.post_rx(0, 8, 2048);
        let f = frame(BCAST, mac(9), &[round; 64]);
        b.send(0, &f);
        assert_eq!(a.recv(0, 1, T), vec![(1, f)], "round {round}");
        // The VMM goes away; vfabric dials again.
        drop(b);
    }
    assert_eq!(fabric.switches()[0].port(1).unwrap().connections(), 2);
}

/// An IPv4 TCP frame as a guest hands it with TSO: partial checksum (the pseudo-header sum)
/// in the TCP checksum field, and its virtio-net header (gso_size 1000).
fn tso_frame(payload: &[u8]) -> ([u8; 12], Vec<u8>) {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(mac(1), mac(2))
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 5201, 7, 512)
        .ack(1)
        .write(&mut f, payload)
        .unwrap();
    let tcp_len = (f.len() - 34) as u16;
    let pseudo = etherparse::checksum::Sum16BitWords::new()
        .add_4bytes([10, 0, 0, 1])
        .add_4bytes([10, 0, 0, 2])
        .add_2bytes([0, 6])
        .add_2bytes(tcp_len.to_be_bytes())
        .ones_complement()
        .to_be();
    f[50..52].copy_from_slice(&(!pseudo).to_be_bytes());
    let mut h = [0u8; 12];
    h[0] = 1; // NEEDS_CSUM
    h[1] = 1; // TCPV4
    h[2..4].copy_from_slice(&54u16.to_le_bytes());
    h[4..6].copy_from_slice(&1000u16.to_le_bytes());
    h[6..8].copy_from_slice(&34u16.to_le_bytes());
    h[8..10].copy_from_slice(&16u16.to_le_bytes());
    (h, f)
}

fn tcp_checksum_ok(f: &[u8]) -> bool {
    let p = etherparse::SlicedPacket::from_ethernet(f).unwrap();
    let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Tcp(t))) =
        (p.net, p.transport)
    else {
        return false;
    };
    t.checksum()
        == t.to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), t.payload())
            .unwrap()
}

#[test]
fn tso_frames_cross_whole_to_a_guest_that_takes_them() {
    let lab = Lab::new(2, "");
    let mut a = lab.guest(0, Order::Qemu);
    let mut b = lab.guest(1, Order::Qemu);
    b.post_rx(0, 16, 4096);
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let (h, f) = tso_frame(&payload);
    a.send_with_header(0, h, &f);
    let got = b.recv_full(0, 1, T);
    assert_eq!(got.len(), 1, "one super-frame");
    let (rh, rf) = &got[0];
    assert_eq!(rf, &f, "bytes unchanged (checksum still partial)");
    assert_eq!(rh[..10], h[..10], "offload fields passed through");
    assert_eq!(lab.counters(1).tx_sw_segmented, 0);
}

#[test]
fn tso_frames_are_segmented_for_a_guest_without_offloads() {
    let lab = Lab::new(2, "");
    let mut a = lab.guest(0, Order::Qemu);
    let no_offloads = F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6 | F_GUEST_ECN;
    let mut b = Guest::connect(&lab.sockets[1], 1, Order::Qemu, no_offloads);
    b.post_rx(0, 16, 2048);
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let (h, f) = tso_frame(&payload);
    a.send_with_header(0, h, &f);
    let got = b.recv_full(0, 3, T);
    assert_eq!(got.len(), 3, "3000 bytes in 1000-byte segments");
    let mut joined = Vec::new();
    for (rh, seg) in &got {
        assert_eq!(rh[..10], [0u8; 10], "plain frames");
        assert!(seg.len() <= 14 + 20 + 20 + 1000);
        assert!(tcp_checksum_ok(seg), "checksum completed");
        joined.extend_from_slice(&seg[54..]);
    }
    assert_eq!(joined, payload);
    let c = lab.counters(1);
    assert_eq!((c.tx_sw_segmented, c.tx_frames), (1, 3));

    // A frame with only a partial checksum gets it completed.
    let (mut h, f) = tso_frame(&payload[..500]);
    h[1] = 0;
    h[2..6].fill(0);
    a.send_with_header(0, h, &f);
    let got = b.recv_full(0, 1, T);
    assert!(tcp_checksum_ok(&got[0].1));
    assert_eq!(lab.counters(1).tx_sw_checksummed, 1);
}

/// A hostile guest on one port: zero-length and over-long chains, bogus offload headers, a
/// storm of kicks, and finally an avail index far ahead of what it made available. Its bad
/// chains are counted, vfabric does not panic, and the two other guests exchange every one of
/// their frames meanwhile.
#[test]
fn a_hostile_guest_does_not_disturb_the_others() {
    let lab = Lab::new(3, "");
    let mut evil = lab.guest(0, Order::Qemu);
    let mut b = lab.guest(1, Order::Qemu);
    let mut c = lab.guest(2, Order::Qemu);
    c.post_rx(0, 250, 2048);
    // Zero-length descriptors, and a chain longer than the queue (it wraps onto itself).
    let z = evil.alloc_raw(64);
    evil.add_chain(1, &[(z, 0, false), (z, 0, false)], false);
    let many: Vec<(u64, u32, bool)> = (0..(QSIZE as usize - 8)).map(|_| (z, 1, false)).collect();
    evil.add_chain(1, &many, true);
    evil.kick(1);
    let used = evil.wait_used(1, 2, T);
    assert!(used.iter().all(|&(_, len)| len == 0), "{used:?}");
    // Four offload headers with bogus GSO fields.
    evil.send_bogus_gso();
    // Meanwhile B sends C 200 frames, in four bursts, with a kick storm from the hostile
    // guest between them.
    let mut sent = Vec::new();
    for burst in 0..4u8 {
        for i in 0..50u8 {
            let f = frame(mac(3), mac(2), &[burst, i, 0xab]);
            b.send(0, &f);
            sent.push(f);
        }
        for _ in 0..10_000 {
            evil.kick(1);
        }
    }
    let got: Vec<Vec<u8>> = c.recv(0, 200, T).into_iter().map(|(_, f)| f).collect();
    assert_eq!(got.len(), 200, "every frame from B reached C");
    assert_eq!(got, sent, "in order, byte-exact");
    // The avail index leaps 1000 entries ahead: the hostile ring is dead, the others not.
    evil.set_avail_idx_raw(1, 1000);
    evil.kick(1);
    let f = frame(mac(3), mac(2), b"after the leap");
    b.send(0, &f);
    assert_eq!(c.recv(0, 1, T), vec![(1, f)]);
    let e = lab.counters(0);
    assert_eq!(
        e.rx_frames, 0,
        "nothing from the hostile guest was forwarded: {e:?}"
    );
    assert!(e.rx_drop_missing_header >= 1, "{e:?}");
    assert!(e.rx_drop_bad_descriptor >= 1, "{e:?}");
    assert_eq!(e.rx_drop_bad_offload, 4, "{e:?}");
    // The leap is counted once, however many kicks follow.
    evil.kick(1);
    wait_for(
        T,
        || lab.counters(0).ring_broken == 1,
        || format!("{:?}", lab.counters(0)),
    );
    assert_eq!(lab.counters(0).ring_broken, 1);
    let cc = lab.counters(2);
    assert_eq!(cc.tx_frames, 201);
    assert_eq!(cc.tx_drop_no_buffer + cc.tx_drop_bad_descriptor, 0);
}

/// A hostile layout: the avail ring laid over the used ring (every used entry would offer
/// more, a ring that never empties). The ring is judged broken once; the others keep going.
#[test]
fn a_ring_laid_over_its_used_ring_is_judged_broken_once() {
    let lab = Lab::new(3, "");
    let mut evil = lab.guest(0, Order::Qemu);
    let mut b = lab.guest(1, Order::Qemu);
    let mut c = lab.guest(2, Order::Qemu);
    c.post_rx(0, 64, 2048);
    evil.lay_avail_over_used(1);
    for _ in 0..100 {
        evil.kick(1);
    }
    wait_for(
        T,
        || lab.counters(0).ring_broken == 1,
        || format!("{:?}", lab.counters(0)),
    );
    let sent: Vec<Vec<u8>> = (0..20u8).map(|i| frame(mac(3), mac(2), &[i; 40])).collect();
    for f in &sent {
        b.send(0, f);
    }
    let got: Vec<Vec<u8>> = c.recv(0, 20, T).into_iter().map(|(_, f)| f).collect();
    assert_eq!(got, sent);
    let e = lab.counters(0);
    assert_eq!((e.ring_broken, e.rx_frames), (1, 0), "{e:?}");
}

/// A VMM that truncates its guest's memory file after handing it over: vfabric's next
/// access to the cut part faults (SIGBUS). Only that connection ends (nothing of its guest
/// is served any more, `memory_cut` counted once); this process, and so every other port,
/// lives on, and the other guests lose nothing.
#[test]
fn a_vmm_that_cuts_guest_memory_ends_only_its_own_connection() {
    let lab = Lab::new(3, "");
    let mut evil = lab.guest(0, Order::Qemu);
    let mut b = lab.guest(1, Order::Qemu);
    let mut c = lab.guest(2, Order::Qemu);
    evil.post_rx(0, 16, 2048);
    c.post_rx(0, 128, 2048);
    // Before the cut, the hostile guest is an ordinary one.
    let hello = frame(BCAST, mac(2), b"before");
    b.send(0, &hello);
    assert_eq!(c.recv(0, 1, T), vec![(1, hello.clone())]);
    assert_eq!(evil.recv(0, 1, T), vec![(1, hello)]);
    // The buffers' part of the file is cut; a frame from there is offered on TX, and
    // broadcasts go to its RX buffers, which are gone too.
    let hdr = evil.alloc_raw(12);
    let body = evil.alloc_raw(60);
    evil.cut_memory(Guest::buffers_offset());
    evil.add_chain(1, &[(hdr, 12, false), (body, 60, false)], false);
    evil.kick(1);
    let mut sent = Vec::new();
    for i in 0..100u8 {
        let f = frame(if i % 2 == 0 { BCAST } else { mac(3) }, mac(2), &[i; 50]);
        b.send(0, &f);
        sent.push(f);
    }
    let got: Vec<Vec<u8>> = c.recv(0, 100, T).into_iter().map(|(_, f)| f).collect();
    assert_eq!(got, sent, "the other guests lose nothing");
    wait_for(
        T,
        || lab.counters(0).memory_cut == 1,
        || format!("{:?}", lab.counters(0)),
    );
    let e = lab.counters(0);
    assert_eq!(
        e.rx_frames, 0,
        "nothing read from cut memory was forwarded: {e:?}"
    );
    assert_eq!(e.memory_cut, 1);
    // Still one cut counted, however much more comes its way.
    for i in 0..10u8 {
        b.send(0, &frame(BCAST, mac(2), &[i; 50]));
        evil.kick(1);
    }
    assert_eq!(c.recv(0, 10, T).len(), 10);
    assert_eq!(lab.counters(0).memory_cut, 1);
}

/// A VMM that would have vfabric map more guest memory than a connection may (1 TiB, in
/// sparse files): the connection is closed before anything is mapped, `vmm_refused` counts
/// it, and the port takes the next VMM as usual.
#[test]
fn a_vmm_over_the_memory_bound_is_refused_and_the_port_serves_the_next() {
    use std::os::fd::AsRawFd;
    use vhost::VhostBackend;
    use vhost::VhostUserMemoryRegionInfo;
    use vhost::vhost_user::Frontend;
    let lab = Lab::new(2, "");
    let sock = std::os::unix::net::UnixStream::connect(&lab.sockets[0]).unwrap();
    let f = Frontend::from_stream(sock, 4);
    f.set_owner().unwrap();
    let half = 600u64 << 30; // two of these: 1200 GiB
    let files: Vec<std::fs::File> = (0..2)
        .map(|_| {
            let fd =
                nix::sys::memfd::memfd_create("big", nix::sys::memfd::MFdFlags::empty()).unwrap();
            let file = std::fs::File::from(fd);
            file.set_len(half).unwrap();
            file
        })
        .collect();
    let regions: Vec<VhostUserMemoryRegionInfo> = files
        .iter()
        .enumerate()
        .map(|(i, file)| VhostUserMemoryRegionInfo {
            guest_phys_addr: i as u64 * half,
            memory_size: half,
            userspace_addr: 0x7f00_0000_0000 + i as u64 * half,
            mmap_offset: 0,
            mmap_handle: file.as_raw_fd(),
        })
        .collect();
    // The connection is closed under the call (an error, or the next one fails).
    let sent = f.set_mem_table(&regions);
    let after = f.get_features();
    assert!(
        sent.is_err() || after.is_err(),
        "the connection was not closed"
    );
    wait_for(
        T,
        || lab.counters(0).vmm_refused == 1,
        || format!("{:?}", lab.counters(0)),
    );
    // The port serves the next VMM.
    let mut a = lab.guest(0, Order::Qemu);
    let mut b = lab.guest(1, Order::Qemu);
    b.post_rx(0, 4, 2048);
    let hello = frame(BCAST, mac(1), b"next VMM");
    a.send(0, &hello);
    assert_eq!(b.recv(0, 1, T), vec![(1, hello)]);
    assert_eq!(lab.counters(0).vmm_refused, 1);
}
