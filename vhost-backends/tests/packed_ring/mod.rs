//! Hostile packed rings (VIRTIO_F_RING_PACKED): a guest memory with a hole and an end, a
//! ring of any size (1 to 64, not only powers of two) whose descriptors, flags, ids,
//! indirect tables and starting position all come from the input bytes. Checked:
//!
//! - the fast path's walk (`vhost_backends::vring::PackedRing`) against a model written
//!   plainly from the virtio 1.1 spec (section 2.8) in this file: the same chains (first
//!   slot, buffer id, descriptors), the same end position, the same verdict on a ring
//!   without a chain end; never more than a ring's worth of slots;
//! - TX reads only, and a frame it accepts is exactly its chain's bytes after the header;
//! - RX writes only inside device-writable descriptors of the chains it used, a frame it
//!   accepts reads back exactly, a malformed chain comes back with length 0, a frame that
//!   does not fit gives its chains back untouched (the position unchanged);
//! - used descriptors are written only into the slots where their chains began.
//!
//! Shared by the proptest suite (`tests/hostile_packed_rings.rs`) and the cargo-fuzz target
//! `fuzz/fuzz_targets/packed_rings.rs` (through `#[path]`).

use vhost_backends::frame::{FrameInfo, SegStore, TxFrame, VNET_HDR_LEN, parse_tx_descs_into};
use vhost_backends::net::{RxDrop, place_rx_packed_for_test};
use vhost_backends::offload::Offloads;
use vhost_backends::vring::{Avail, GuestMap, PackedRing, RingChain, Used};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Where indirect tables and buffers start.
const TABLES: u64 = 0x400;
const DATA: u64 = 0x1000;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
const F_AVAIL: u16 = 1 << 7;
const F_USED: u16 = 1 << 15;
const WRAP: u16 = 1 << 15;

#[path = "../input/mod.rs"]
pub mod input;
use input::Input;
use input::guest::{self, A, B, address_of, snapshot};

fn put_desc(mem: &GuestMemoryMmap, at: u64, addr: u64, len: u32, id: u16, flags: u16) {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&addr.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b[12..14].copy_from_slice(&id.to_le_bytes());
    b[14..].copy_from_slice(&flags.to_le_bytes());
    mem.write_slice(&b, GuestAddress(at)).unwrap();
}

/// (addr, len, id, flags) at `at`, if readable.
fn get_desc(mem: &GuestMemoryMmap, at: u64) -> Option<(u64, u32, u16, u16)> {
    let mut b = [0u8; 16];
    mem.read_slice(&mut b, GuestAddress(at)).ok()?;
    Some((
        u64::from_le_bytes(b[..8].try_into().unwrap()),
        u32::from_le_bytes(b[8..12].try_into().unwrap()),
        u16::from_le_bytes([b[12], b[13]]),
        u16::from_le_bytes([b[14], b[15]]),
    ))
}

/// One chain: its first slot's position, its buffer id, its buffers (addr, len, writable),
/// and whether they are all of it (false: the chain is malformed).
#[derive(Debug, PartialEq, Eq)]
pub struct Chain {
    pub pos: u16,
    pub id: u16,
    pub bufs: Vec<(u64, u32, bool)>,
    pub whole: bool,
}

/// The spec's walk, written plainly: the chains available from `pos`, the position after
/// them, and whether a run of descriptors had no end.
pub fn model_walk(mem: &GuestMemoryMmap, size: u16, pos: u16) -> (Vec<Chain>, u16, bool) {
    let (mut i, mut w) = (pos & !WRAP, pos & WRAP != 0);
    let mut chains = Vec::new();
    if i >= size {
        return (chains, pos, true);
    }
    let mut consumed = 0u32;
    loop {
        let flags = match get_desc(mem, 16 * u64::from(i)) {
            Some(d) => d.3,
            None => return (chains, pos_of(i, w), true),
        };
        // Available: AVAIL matches the device's wrap counter, USED does not.
        if (flags & F_AVAIL != 0) != w || (flags & F_USED != 0) == w {
            return (chains, pos_of(i, w), false);
        }
        // The run of slots up to a descriptor without NEXT.
        let mut run = Vec::new();
        let mut j = i;
        loop {
            let d = get_desc(mem, 16 * u64::from(j)).unwrap();
            run.push(d);
            if d.3 & F_NEXT == 0 {
                break;
            }
            if run.len() == usize::from(size) {
                return (chains, pos_of(i, w), true);
            }
            j = (j + 1) % size;
        }
        let n = run.len() as u32;
        if consumed + n > u32::from(size) {
            return (chains, pos_of(i, w), false);
        }
        consumed += n;
        let id = run.last().unwrap().2;
        let mut bufs = Vec::new();
        let mut whole = true;
        let mut total = 0u64;
        let mut push = |bufs: &mut Vec<(u64, u32, bool)>, a: u64, l: u32, f: u16| {
            total += u64::from(l);
            if total > u64::from(u32::MAX) {
                return false;
            }
            bufs.push((a, l, f & F_WRITE != 0));
            true
        };
        let head = run[0];
        if head.3 & F_INDIRECT != 0 {
            // The sole descriptor of its chain, pointing to whole descriptors.
            let (a, l) = (head.0, head.1);
            if n != 1 || l == 0 || l % 16 != 0 || l / 16 > 0xffff {
                whole = false;
            } else {
                for k in 0..u64::from(l / 16) {
                    let d = a.checked_add(16 * k).and_then(|at| get_desc(mem, at));
                    match d {
                        Some(d) if push(&mut bufs, d.0, d.1, d.3) => {}
                        _ => {
                            whole = false;
                            break;
                        }
                    }
                }
            }
        } else {
            for d in &run {
                if d.3 & F_INDIRECT != 0 || !push(&mut bufs, d.0, d.1, d.3) {
                    whole = false;
                    break;
                }
            }
        }
        chains.push(Chain {
            pos: pos_of(i, w),
            id,
            bufs,
            whole,
        });
        let next = u32::from(i) + n;
        if next >= u32::from(size) {
            i = (next - u32::from(size)) as u16;
            w = !w;
        } else {
            i = next as u16;
        }
    }
}

fn pos_of(i: u16, w: bool) -> u16 {
    i | if w { WRAP } else { 0 }
}

/// The fast path's walk, in the model's terms.
fn fast_walk(mem: &GuestMemoryMmap, size: u16, pos: u16) -> (Vec<Chain>, u16, bool) {
    let map = GuestMap::new(mem);
    let ring = PackedRing::new(&map, 0, 0, 0, size);
    let mut avail = ring.avail(pos);
    let mut chains = Vec::new();
    for c in avail.by_ref() {
        let u = c.used(0);
        let descs: Vec<_> = c.collect();
        let whole = descs.last().is_some_and(|d| !d.has_next());
        chains.push(Chain {
            pos: u.pos,
            id: u.id,
            bufs: descs
                .iter()
                .map(|d| (d.addr, d.len, d.is_write_only()))
                .collect(),
            whole,
        });
    }
    (chains, avail.cursor(), avail.broken())
}

/// What one input led to.
#[derive(Debug)]
#[allow(dead_code)]
pub struct Outcome {
    pub chains: usize,
    pub tx_frames: usize,
    pub rx: Result<(), RxDrop>,
    pub broken: bool,
}

pub fn run(data: &[u8]) -> Outcome {
    thread_local! {
        static MEM: GuestMemoryMmap = guest::memory();
    }
    MEM.with(|mem| run_in(mem, data))
}

fn run_in(mem: &GuestMemoryMmap, data: &[u8]) -> Outcome {
    let mut r = Input(data);
    let size = 1 + u16::from(r.u8()) % 64;
    static PATTERN: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| (0..A.1 + B.1).map(|j| (j as u8) ^ (j >> 8) as u8).collect());
    mem.write_slice(&PATTERN[..A.1], GuestAddress(A.0)).unwrap();
    mem.write_slice(&PATTERN[A.1..], GuestAddress(B.0)).unwrap();
    mem.write_slice(&[0u8; DATA as usize], GuestAddress(A.0))
        .unwrap();
    // The driver's wrap counter for the slots before and from `start` (as a driver that has
    // made them available leaves them), with defects from the input.
    let start = u16::from(r.u8()) % size;
    let wrap = r.u8() & 1 == 0;
    let style = r.u8() % 4;
    let mut id = r.u16();
    for i in 0..size {
        let b = r.u8();
        let w = if i >= start { wrap } else { !wrap };
        let avail_bits = match b % 8 {
            // As a driver makes a slot available with its wrap counter w: AVAIL=w, USED=!w.
            0..=4 => {
                if w {
                    F_AVAIL
                } else {
                    F_USED
                }
            }
            5 => 0,
            6 => F_AVAIL | F_USED,
            _ => {
                if w {
                    F_USED
                } else {
                    F_AVAIL
                }
            }
        };
        let kind = match style {
            0 => u16::from(r.u8()) & (F_NEXT | F_WRITE | F_INDIRECT),
            1 => F_WRITE | u16::from(b & 0x30 == 0), // RX-like
            2 => u16::from(b & 0x30 == 0),           // TX-like
            _ => u16::from(r.u8()) & (F_NEXT | F_WRITE),
        };
        let (a, l) = if kind & F_INDIRECT != 0 && b & 0x40 != 0 {
            (
                TABLES + 16 * u64::from(r.u8() % 32),
                16 * (1 + u32::from(r.u8() % 8)),
            )
        } else if style != 0 && b & 0xc0 != 0 {
            (
                DATA + u64::from(r.u16()) % (A.1 as u64 - DATA - 0x800),
                u32::from(r.u16()) % 0x800,
            )
        } else {
            (guest::addr(&mut r, DATA), guest::len(&mut r, 0x1000))
        };
        if b & 0x20 != 0 {
            id = r.u16();
        }
        put_desc(mem, 16 * u64::from(i), a, l, id, kind | avail_bits);
    }
    // Indirect tables: 40 descriptors, readable or writable buffers.
    for k in 0..40u64 {
        let f = u16::from(r.u8()) & (F_NEXT | F_WRITE | F_INDIRECT);
        let (a, l) = (guest::addr(&mut r, DATA), guest::len(&mut r, 0x1000));
        put_desc(mem, TABLES + 16 * k, a, l, r.u16(), f);
    }
    // The device's position: where the driver's chains start (its wrap counter), or not.
    let pos = match r.u8() % 8 {
        0..=5 => pos_of(start, wrap),
        6 => pos_of(start, !wrap),
        _ => r.u16(),
    };
    let offloads = if r.u8() & 1 == 0 {
        Offloads::ALL
    } else {
        Offloads::default()
    };
    let frame_len = match r.u8() % 4 {
        0 => usize::from(r.u8()),
        1 | 2 => usize::from(r.u16()) % 0x1000,
        _ => usize::from(r.u16()) % 0x1_2000,
    };
    let mrg = r.u8() & 1 == 0;

    // The walk against the spec's model.
    let (chains, end, broken) = model_walk(mem, size, pos);
    let ours = fast_walk(mem, size, pos);
    assert_eq!(
        ours,
        (chains, end, broken),
        "the fast path's packed walk differs from the spec's"
    );
    let (chains, end, broken) = ours;

    // TX: reads only, and accepted frames are the chain's bytes.
    let before = snapshot(mem);
    let mut tx_frames = 0;
    {
        let map = GuestMap::new(mem);
        let ring = PackedRing::new(&map, 0, 0, 0, size);
        let mut store = SegStore::new();
        for (c, want) in ring.avail(pos).zip(&chains) {
            let mut info = FrameInfo::EMPTY;
            if parse_tx_descs_into(&map, c, offloads, &mut store, &mut info).is_ok() {
                tx_frames += 1;
                assert!(want.whole, "a TX frame from a malformed chain");
                let mut bytes = Vec::new();
                for &(a, l, w) in &want.bufs {
                    assert!(!w, "a TX frame took a device-writable buffer");
                    let mut b = vec![0u8; l as usize];
                    mem.read_slice(&mut b, GuestAddress(a))
                        .expect("an accepted TX frame lies in guest memory");
                    bytes.extend_from_slice(&b);
                }
                let f = TxFrame::new(&info, &store);
                assert_eq!(f.to_vec(), bytes[VNET_HDR_LEN..], "TX frame bytes");
            }
            // Each frame checked on its own: the store holds one batch's pieces.
            store.clear();
        }
    }
    assert!(snapshot(mem) == before, "the TX path wrote guest memory");

    // RX: one frame of any length.
    static FRAME: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| (0..0x1_2000).map(|i| (i * 7 + 3) as u8).collect());
    let frame = &FRAME[..frame_len];
    let placed = place_rx_packed_for_test(mem, 0, size, pos, frame, mrg);
    let after = snapshot(mem);
    let used = &placed.used;
    assert!(used.len() <= chains.len());
    for (u, c) in used.iter().zip(&chains) {
        assert_eq!(
            (u.pos, u.id),
            (c.pos, c.id),
            "used entries name the chains taken"
        );
    }
    let taken = &chains[..used.len()];
    let writable = |a: u64| {
        taken
            .iter()
            .flat_map(|c| &c.bufs)
            .any(|&(addr, len, w)| w && a >= addr && a - addr < u64::from(len))
    };
    if before != after {
        for (i, (x, y)) in before.iter().zip(&after).enumerate() {
            if x != y {
                assert!(
                    writable(address_of(i)),
                    "RX wrote {:#x}, outside the device-writable buffers it used",
                    address_of(i)
                );
            }
        }
    }
    if placed.res != Err(RxDrop::NoBuffer) {
        // Chains are contiguous: the position is where the first chain not used begins.
        let want = chains.get(used.len()).map_or(end, |c| c.pos);
        assert_eq!(placed.pos, want, "the position after the chains used");
    }
    match placed.res {
        Ok(()) => {
            let need = VNET_HDR_LEN + frame.len();
            assert!(!used.is_empty() && (mrg || used.len() == 1));
            let total: u64 = used.iter().map(|u| u64::from(u.len)).sum();
            assert_eq!(total, need as u64, "used lengths add up to header + frame");
            let ranges: Vec<(u64, u64)> = taken
                .iter()
                .flat_map(|c| &c.bufs)
                .filter(|d| d.1 > 0)
                .map(|&(a, l, _)| (a, a + u64::from(l)))
                .collect();
            let overlap = ranges
                .iter()
                .enumerate()
                .any(|(i, a)| ranges[i + 1..].iter().any(|b| a.0 < b.1 && b.0 < a.1));
            if !overlap {
                let mut got = Vec::new();
                for (c, u) in taken.iter().zip(used) {
                    let mut left = u.len as usize;
                    for &(a, l, w) in &c.bufs {
                        assert!(w || left == 0);
                        let m = (l as usize).min(left);
                        let mut b = vec![0u8; m];
                        mem.read_slice(&mut b, GuestAddress(a))
                            .expect("written buffer");
                        got.extend_from_slice(&b);
                        left -= m;
                    }
                    assert_eq!(left, 0, "a used length beyond its chain");
                }
                assert_eq!(&got[VNET_HDR_LEN..], frame, "RX frame bytes");
                assert_eq!(
                    u16::from_le_bytes([got[10], got[11]]) as usize,
                    used.len(),
                    "num_buffers"
                );
            }
        }
        Err(RxDrop::BadDescriptor) => {
            assert!(
                used.iter().all(|u| u.len == 0),
                "bad chains come back empty"
            );
        }
        Err(RxDrop::NoBuffer) => {
            assert!(used.is_empty(), "chains given back, not used");
            assert_eq!(placed.pos, pos, "given back to the ring");
            assert!(
                after == before,
                "nothing written for a frame that did not fit"
            );
        }
        Err(RxDrop::LinkDown) => panic!("a ring is not a link"),
    }

    // Used descriptors land only in the slots their chains began at (bytes 8..16).
    let before = snapshot(mem);
    let map = GuestMap::new(mem);
    PackedRing::new(&map, 0, 0, 0, size).publish(used);
    let after = snapshot(mem);
    for (i, (x, y)) in before.iter().zip(&after).enumerate() {
        if x != y {
            let a = address_of(i);
            assert!(
                a < 16 * u64::from(size)
                    && a % 16 >= 8
                    && used
                        .iter()
                        .any(|u: &Used| u64::from(u.pos & !WRAP) == a / 16),
                "a used descriptor written at {a:#x}"
            );
        }
    }
    Outcome {
        chains: chains.len(),
        tx_frames,
        rx: placed.res,
        broken,
    }
}
