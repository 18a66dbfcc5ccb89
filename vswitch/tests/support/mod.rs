//! A test "guest": shared memory, split virtqueues driven from this process, and a vhost-user
//! frontend (the `vhost` crate's `Frontend`) that sets the device up the way QEMU or
//! cloud-hypervisor do. Frames go in through the TX ring and come out of the RX ring.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

pub const QSIZE: u16 = 256;
const MEM_BASE: u64 = 0x10_0000;
const MEM_SIZE: usize = 8 << 20;
/// Per ring: descriptors (16*256) + avail + used, 16 KiB apart.
const RING_AREA: u64 = 0x4000;
const BUF_BASE: u64 = MEM_BASE + 0x10_0000;

pub const F_MRG_RXBUF: u64 = 1 << 15;
pub const F_EVENT_IDX: u64 = 1 << 29;
pub const F_PROTOCOL: u64 = 1 << 30;
pub const F_MAC: u64 = 1 << 5;
pub const F_MQ: u64 = 1 << 22;
pub const F_VERSION_1: u64 = 1 << 32;
pub const F_GUEST_CSUM: u64 = 1 << 1;
pub const F_GUEST_TSO4: u64 = 1 << 7;
pub const F_GUEST_TSO6: u64 = 1 << 8;
pub const F_GUEST_ECN: u64 = 1 << 9;

/// Message order of a VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// QEMU 7.2/10.0 for virtio-net: SET_VRING_ENABLE for every ring *before* SET_FEATURES,
    /// with NEED_REPLY (REPLY_ACK), and none after.
    Qemu,
    /// cloud-hypervisor: SET_FEATURES first, rings set up, then SET_VRING_ENABLE.
    CloudHypervisor,
}

pub struct Ring {
    pub index: usize,
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    last_used: u16,
    /// head -> (buffer address, length) for RX buffers we posted
    pub bufs: Vec<(u64, u32)>,
}

pub struct Guest {
    pub frontend: Frontend,
    raw: UnixStream,
    pub mem: GuestMemoryMmap,
    _file: File,
    pub rings: Vec<Ring>,
    kicks: Vec<EventFd>,
    pub calls: Vec<EventFd>,
    next_buf: u64,
    pub acked: u64,
    pub pairs: usize,
}

/// SET_VRING_ADDR's payload for a ring of QSIZE whose parts are at these guest addresses;
/// `host` is where guest memory (from MEM_BASE) is mapped in this process.
fn ring_addrs(host: u64, desc: u64, used: u64, avail: u64) -> VringConfigData {
    let to_host = |gpa: u64| host + (gpa - MEM_BASE);
    VringConfigData {
        queue_max_size: QSIZE,
        queue_size: QSIZE,
        flags: 0,
        desc_table_addr: to_host(desc),
        used_ring_addr: to_host(used),
        avail_ring_addr: to_host(avail),
        log_addr: None,
    }
}

fn raw_enable(raw: &mut UnixStream, index: u32, on: bool) {
    // SET_VRING_ENABLE = 18, flags: version 1 | NEED_REPLY 0x8, size 8.
    let mut m = Vec::new();
    m.extend_from_slice(&18u32.to_le_bytes());
    m.extend_from_slice(&(0x1u32 | 0x8).to_le_bytes());
    m.extend_from_slice(&8u32.to_le_bytes());
    m.extend_from_slice(&index.to_le_bytes());
    m.extend_from_slice(&(on as u32).to_le_bytes());
    raw.write_all(&m).unwrap();
    let mut reply = [0u8; 20];
    raw.read_exact(&mut reply).unwrap();
    assert_eq!(
        u32::from_le_bytes(reply[0..4].try_into().unwrap()),
        18,
        "reply to SET_VRING_ENABLE"
    );
    assert_eq!(
        u32::from_le_bytes(reply[4..8].try_into().unwrap()) & 0x4,
        0x4,
        "is a reply"
    );
    assert_eq!(
        u64::from_le_bytes(reply[12..20].try_into().unwrap()),
        0,
        "success"
    );
}

impl Guest {
    /// Connects to `path` and sets up `pairs` queue pairs in the given order, acking the
    /// offered features minus `drop_features`.
    pub fn connect(path: &Path, pairs: usize, order: Order, drop_features: u64) -> Guest {
        let deadline = Instant::now() + Duration::from_secs(10);
        let sock = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("connect {}: {e}", path.display()),
            }
        };
        Self::setup(sock, pairs, order, drop_features)
    }

    pub fn setup(sock: UnixStream, pairs: usize, order: Order, drop_features: u64) -> Guest {
        Self::setup_queues(sock, 2 * pairs, order, drop_features)
    }

    /// `setup` for a device with `nq` queues of its own kind (a disk: one request queue).
    pub fn setup_queues(sock: UnixStream, nq: usize, order: Order, drop_features: u64) -> Guest {
        let mut raw = sock.try_clone().unwrap();
        let pairs = nq / 2;
        let mut frontend = Frontend::from_stream(sock, nq as u64);
        let offered = frontend.get_features().unwrap();
        assert_ne!(offered & F_PROTOCOL, 0, "PROTOCOL_FEATURES offered");
        let proto = frontend.get_protocol_features().unwrap();
        assert!(proto.contains(VhostUserProtocolFeatures::REPLY_ACK));
        assert!(proto.contains(VhostUserProtocolFeatures::MQ));
        frontend.set_protocol_features(proto).unwrap();
        frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        assert!(frontend.get_queue_num().unwrap() >= nq as u64);
        frontend.set_owner().unwrap();

        let memfd =
            nix::sys::memfd::memfd_create("guest", nix::sys::memfd::MFdFlags::empty()).unwrap();
        let file = File::from(memfd);
        file.set_len(MEM_SIZE as u64).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files(&[(
            GuestAddress(MEM_BASE),
            MEM_SIZE,
            Some(FileOffset::new(file.try_clone().unwrap(), 0)),
        )])
        .unwrap();
        let kicks: Vec<EventFd> = (0..nq)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
            .collect();
        let calls: Vec<EventFd> = (0..nq)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
            .collect();
        // A split-ring frontend: it never takes VIRTIO_F_RING_PACKED (bit 34).
        let acked = offered & !drop_features & !(1 << 34);

        if order == Order::Qemu {
            for (q, call) in calls.iter().enumerate() {
                frontend.set_vring_call(q, call).unwrap();
                frontend.set_vring_err(q, call).unwrap();
            }
            for q in 0..nq {
                raw_enable(&mut raw, q as u32, true);
            }
        }
        frontend.set_features(acked).unwrap();
        let host = mem.get_host_address(GuestAddress(MEM_BASE)).unwrap() as u64;
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: MEM_BASE,
            memory_size: MEM_SIZE as u64,
            userspace_addr: host,
            mmap_offset: 0,
            mmap_handle: file.as_raw_fd(),
        };
        frontend.set_mem_table(&[region]).unwrap();
        let mut rings = Vec::new();
        for q in 0..nq {
            let base = MEM_BASE + q as u64 * RING_AREA;
            let ring = Ring {
                index: q,
                desc: base,
                avail: base + 0x1000,
                used: base + 0x2000,
                next_desc: 0,
                avail_idx: 0,
                last_used: 0,
                bufs: vec![(0, 0); QSIZE as usize],
            };
            frontend.set_vring_num(q, QSIZE).unwrap();
            frontend.set_vring_base(q, 0).unwrap();
            frontend
                .set_vring_addr(q, &ring_addrs(host, ring.desc, ring.used, ring.avail))
                .unwrap();
            frontend.set_vring_kick(q, &kicks[q]).unwrap();
            frontend.set_vring_call(q, &calls[q]).unwrap();
            rings.push(ring);
        }
        if order == Order::CloudHypervisor {
            for q in 0..nq {
                frontend.set_vring_enable(q, true).unwrap();
            }
        }
        Guest {
            frontend,
            raw,
            mem,
            _file: file,
            rings,
            kicks,
            calls,
            next_buf: BUF_BASE,
            acked,
            pairs,
        }
    }

    fn alloc(&mut self, len: u32) -> u64 {
        let a = self.next_buf;
        self.next_buf += (u64::from(len) + 63) & !63;
        if self.next_buf >= MEM_BASE + MEM_SIZE as u64 {
            self.next_buf = BUF_BASE;
            return self.alloc(len);
        }
        a
    }

    /// Writes a chain of raw descriptors (addr, len, write) and makes it available; returns
    /// its head. `next` links follow the slice order; `link` overrides the last `next`.
    pub fn add_chain(&mut self, q: usize, descs: &[(u64, u32, bool)], loop_to_self: bool) -> u16 {
        let ring = &mut self.rings[q];
        let head = ring.next_desc;
        let n = descs.len() as u16;
        for (i, &(addr, len, write)) in descs.iter().enumerate() {
            let idx = (head + i as u16) % QSIZE;
            let last = i as u16 == n - 1;
            let mut flags: u16 = if write { 2 } else { 0 };
            let mut next = (idx + 1) % QSIZE;
            if !last {
                flags |= 1;
            } else if loop_to_self {
                flags |= 1;
                next = idx;
            }
            let d = ring.desc + 16 * u64::from(idx);
            self.mem.write_obj(addr, GuestAddress(d)).unwrap();
            self.mem.write_obj(len, GuestAddress(d + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
            self.mem.write_obj(next, GuestAddress(d + 14)).unwrap();
        }
        ring.next_desc = (head + n) % QSIZE;
        let slot = ring.avail + 4 + 2 * u64::from(ring.avail_idx % QSIZE);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        ring.avail_idx = ring.avail_idx.wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.mem
            .write_obj(ring.avail_idx, GuestAddress(ring.avail + 2))
            .unwrap();
        // used_event (EVENT_IDX): ask to be interrupted for every used entry.
        let ue = ring.avail + 4 + 2 * u64::from(QSIZE);
        self.mem
            .write_obj(ring.last_used, GuestAddress(ue))
            .unwrap();
        head
    }

    /// Writes `idx` as ring `q`'s avail index, whatever was really made available (a
    /// hostile driver).
    pub fn set_avail_idx_raw(&mut self, q: usize, idx: u16) {
        let ring = &self.rings[q];
        self.mem
            .write_obj(idx, GuestAddress(ring.avail + 2))
            .unwrap();
    }

    /// A hostile layout: ring `q`'s avail ring moved 2 bytes below its used ring, so that the
    /// avail index is the used ring's flags. The device turning notifications off makes an
    /// entry available (index 1); turning them on again takes it away (index 0), and finding
    /// the ring "not empty" it turns them off again... Then a kick.
    pub fn lay_avail_over_used(&mut self, q: usize) {
        let host = self.mem.get_host_address(GuestAddress(MEM_BASE)).unwrap() as u64;
        let ring = &self.rings[q];
        let addrs = ring_addrs(host, ring.desc, ring.used, ring.used - 2);
        self.frontend.set_vring_addr(q, &addrs).unwrap();
        self.kick(q);
    }

    /// A hostile VMM: truncates the guest's shared memory file to its first `keep` bytes
    /// (the rings stay; buffers, from `BUF_BASE` on, are gone). This process must not touch
    /// the cut part afterwards (its own mapping would fault).
    pub fn cut_memory(&mut self, keep: u64) {
        self._file.set_len(keep).unwrap();
    }

    /// Where buffers start, as an offset into the memory file.
    pub fn buffers_offset() -> u64 {
        BUF_BASE - MEM_BASE
    }

    /// Guest memory for `len` bytes (not written).
    pub fn alloc_raw(&mut self, len: u32) -> u64 {
        self.alloc(len)
    }

    pub fn kick(&self, q: usize) {
        self.kicks[q].write(1).unwrap();
    }

    /// Sends one frame on pair `pair`'s TX ring (header and frame in separate descriptors).
    pub fn send(&mut self, pair: usize, frame: &[u8]) {
        self.send_with_header(pair, [0u8; 12], frame)
    }

    /// Sends a 200-byte TCP-sized frame four times, behind virtio-net headers with bogus GSO
    /// fields (HOST_TSO4 negotiated): a zero segment size, a checksum start past the frame, a
    /// header length beyond it, an unknown GSO type. Each must be dropped as a bad offload.
    pub fn send_bogus_gso(&mut self) {
        let tcp = frame(mac(3), mac(1), &[0u8; 200]);
        for hdr in [
            [1u8, 1, 54, 0, 0, 0, 34, 0, 16, 0, 0, 0],
            [1u8, 1, 54, 0, 0x5c, 5, 0xff, 0x7f, 16, 0, 0, 0],
            [1u8, 1, 0xff, 0xff, 0x5c, 5, 34, 0, 16, 0, 0, 0],
            [1u8, 0x7f, 54, 0, 0x5c, 5, 34, 0, 16, 0, 0, 0],
        ] {
            self.send_with_header(0, hdr, &tcp);
        }
    }

    /// Sends one frame behind the virtio-net header `hdr` (offload fields).
    pub fn send_with_header(&mut self, pair: usize, hdr: [u8; 12], frame: &[u8]) {
        let h = self.alloc(12);
        self.mem.write_slice(&hdr, GuestAddress(h)).unwrap();
        let f = self.alloc(frame.len() as u32);
        self.mem.write_slice(frame, GuestAddress(f)).unwrap();
        let q = 2 * pair + 1;
        self.add_chain(q, &[(h, 12, false), (f, frame.len() as u32, false)], false);
        self.kick(q);
    }

    /// Posts `n` RX buffers of `size` bytes on pair `pair`.
    pub fn post_rx(&mut self, pair: usize, n: usize, size: u32) {
        let q = 2 * pair;
        for _ in 0..n {
            let a = self.alloc(size);
            let head = self.add_chain(q, &[(a, size, true)], false);
            self.rings[q].bufs[head as usize] = (a, size);
        }
        self.kick(q);
    }

    /// New used entries of ring `q` (id, len).
    pub fn used(&mut self, q: usize) -> Vec<(u32, u32)> {
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let ring = &mut self.rings[q];
        let idx: u16 = self.mem.read_obj(GuestAddress(ring.used + 2)).unwrap();
        let mut out = Vec::new();
        while ring.last_used != idx {
            let e = ring.used + 4 + 8 * u64::from(ring.last_used % QSIZE);
            let id: u32 = self.mem.read_obj(GuestAddress(e)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(e + 4)).unwrap();
            out.push((id, len));
            ring.last_used = ring.last_used.wrapping_add(1);
        }
        out
    }

    /// Waits until ring `q` has at least `n` new used entries in total.
    pub fn wait_used(&mut self, q: usize, n: usize, timeout: Duration) -> Vec<(u32, u32)> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            got.extend(self.used(q));
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            // SAFETY: the eventfd outlives this borrow.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.calls[q].as_raw_fd()) };
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(10u16));
            let _ = self.calls[q].read();
        }
    }

    /// Receives `n` frames on pair `pair` (each: header num_buffers, frame bytes).
    pub fn recv(&mut self, pair: usize, n: usize, timeout: Duration) -> Vec<(u16, Vec<u8>)> {
        self.recv_full(pair, n, timeout)
            .into_iter()
            .map(|(h, f)| (u16::from_le_bytes([h[10], h[11]]), f))
            .collect()
    }

    /// Receives `n` used buffers' worth of frames on pair `pair`: (virtio-net header, frame).
    pub fn recv_full(
        &mut self,
        pair: usize,
        n: usize,
        timeout: Duration,
    ) -> Vec<([u8; 12], Vec<u8>)> {
        let q = 2 * pair;
        let used = self.wait_used(q, n, timeout);
        let mut frames = Vec::new();
        let mut it = used.into_iter();
        while let Some((id, len)) = it.next() {
            let (addr, _) = self.rings[q].bufs[id as usize];
            let mut data = vec![0u8; len as usize];
            self.mem.read_slice(&mut data, GuestAddress(addr)).unwrap();
            let nb = u16::from_le_bytes([data[10], data[11]]);
            let hdr: [u8; 12] = data[..12].try_into().unwrap();
            let mut frame = data[12..].to_vec();
            for _ in 1..nb {
                let (id, len) = it.next().expect("merged buffers");
                let (addr, _) = self.rings[q].bufs[id as usize];
                let mut more = vec![0u8; len as usize];
                self.mem.read_slice(&mut more, GuestAddress(addr)).unwrap();
                frame.extend_from_slice(&more);
            }
            frames.push((hdr, frame));
        }
        frames
    }

    /// Writes bytes at a fresh place in guest memory; returns the guest address.
    pub fn put(&mut self, bytes: &[u8]) -> u64 {
        let a = self.alloc(bytes.len() as u32);
        self.mem.write_slice(bytes, GuestAddress(a)).unwrap();
        a
    }
}

/// Waits (polling every 5 ms) until `ready` holds; panics with `what()` after `timeout`.
pub fn wait_for(timeout: Duration, mut ready: impl FnMut() -> bool, what: impl FnOnce() -> String) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "{}", what());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An Ethernet frame dst, src, ethertype 0x88b5 (local experimental), payload.
pub fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(payload);
    f
}

pub fn mac(n: u8) -> [u8; 6] {
    [0x52, 0x54, 0, 0, 0, n]
}

pub const BCAST: [u8; 6] = [0xff; 6];
