//! Hostile split rings: a guest memory with a hole and an end, a virtqueue laid out by
//! virtio-queue's `MockSplitQueue`, and descriptors, avail entries and indexes all taken
//! from the input bytes (addresses inside, across, beyond and between the memory regions,
//! on the ring itself, any length, any flags, any `next`, indirect tables, an avail index
//! anywhere). The TX path (`parse_tx_chain`) and the RX path (`place_rx_for_test`) then run
//! over it, and what they did is checked against the memory:
//!
//! - the fast path (`vhost_backends::vring`) walks the ring exactly as virtio-queue does:
//!   the same verdict on the available index, the same chains and descriptors;
//! - TX never writes guest memory, and a frame it accepts is exactly the bytes of its
//!   chain's descriptors after the 12-byte header, all of them device-readable;
//! - RX writes only inside device-writable descriptors of the chains it returned; a frame
//!   it accepts reads back from those chains exactly (header, `num_buffers`, frame), with
//!   used lengths that add up; a malformed chain comes back with length 0; a frame that
//!   does not fit gives its chains back untouched.
//!
//! Shared by the proptest suite (`tests/hostile_rings.rs`, in CI) and the cargo-fuzz target
//! `fuzz/fuzz_targets/rings.rs` (through `#[path]`): one input is any byte string.

use vhost_backends::frame::{SegStore, TxFrame, VNET_HDR_LEN, parse_tx_chain};
use vhost_backends::net::{RxDrop, place_rx_for_test};
use vhost_backends::offload::Offloads;
use vhost_backends::vring::{Desc, GuestMap, SplitRing};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Where buffers start in region A (`input::guest`), past the largest ring.
const DATA: u64 = 0x2000;

#[path = "../input/mod.rs"]
pub mod input;
use input::Input;
use input::guest::{self, A, B, address_of, snapshot};

/// One chain as the RX path sees it: its head and its descriptors (address, length,
/// device-writable).
type Chain = (u16, Vec<(u64, u32, bool)>);

/// The chains the queue would yield, in order.
fn chains_of(q: &mut Queue, mem: &GuestMemoryMmap) -> Vec<Chain> {
    let Ok(iter) = q.iter(mem) else {
        return Vec::new();
    };
    iter.map(|c| {
        let head = c.head_index();
        (
            head,
            c.map(|d| (d.addr().0, d.len(), d.is_write_only()))
                .collect(),
        )
    })
    .collect()
}

/// What one input led to (for checking that the inputs reach every outcome).
#[derive(Debug)]
#[allow(dead_code)] // read by the proptest suite, not by the fuzz target
pub struct Outcome {
    /// TX frames accepted.
    pub tx_frames: usize,
    /// Chains the TX path took.
    pub tx_chains: usize,
    /// The RX frame's fate.
    pub rx: Result<(), RxDrop>,
}

/// Builds the hostile ring from `data`, runs the TX and RX paths over it, and checks them.
/// Panics on a broken property.
pub fn run(data: &[u8]) -> Outcome {
    // One memory per thread, its contents all rewritten for each input.
    thread_local! {
        static MEM: GuestMemoryMmap = guest::memory();
    }
    MEM.with(|mem| run_in(mem, data))
}

fn run_in(mem: &GuestMemoryMmap, data: &[u8]) -> Outcome {
    let mem = mem.clone();
    let mut r = Input(data);
    let size: u16 = 1 << (r.u8() % 9);
    let mock = MockSplitQueue::create(&mem, GuestAddress(0), size);
    // Fresh contents: a zeroed ring area and patterned buffers, so that copies are visible.
    static PATTERN: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| (0..A.1 + B.1).map(|j| (j as u8) ^ (j >> 8) as u8).collect());
    let pattern = &*PATTERN;
    mem.write_slice(&pattern[..A.1], GuestAddress(A.0)).unwrap();
    mem.write_slice(&pattern[A.1..], GuestAddress(B.0)).unwrap();
    mem.write_slice(&[0u8; DATA as usize], GuestAddress(A.0))
        .unwrap();
    // Rings shaped like a driver's RX or TX ring (mostly valid, with defects), or raw.
    let style = r.u8() % 4;
    for i in 0..size {
        let b = r.u8();
        let flags = match style {
            0 => u16::from(b & 0x7),           // NEXT | WRITE | INDIRECT, any
            1 => 2 | u16::from(b & 0x30 == 0), // WRITE, sometimes NEXT
            2 => u16::from(b & 0x30 == 0),     // readable, sometimes NEXT
            _ => u16::from(b & 0x3),           // no indirect tables
        };
        let next = r.u16() % (size + 2);
        let addr = if style != 0 && b & 0xc0 != 0 {
            DATA + u64::from(r.u16()) % (A.1 as u64 - DATA - 0x800)
        } else {
            guest::addr(&mut r, DATA)
        };
        let len = if style != 0 && b & 0xc0 != 0 {
            u32::from(r.u16()) % 0x800
        } else {
            guest::len(&mut r, 0x2000)
        };
        let d = SplitDescriptor::new(addr, len, flags, next);
        mock.desc_table().store(i, RawDescriptor::from(d)).unwrap();
    }
    for i in 0..size {
        let head = r.u16() % (size + u16::from(style == 0));
        mock.avail()
            .ring()
            .ref_at(usize::from(i))
            .unwrap()
            .store(head.to_le());
    }
    let next_avail = r.u16();
    let ahead = match r.u8() % 8 {
        7 => r.u16(), // anywhere, often more than a ring ahead
        n => u16::from(n) * size / 4,
    };
    mock.avail()
        .idx()
        .store(next_avail.wrapping_add(ahead).to_le());
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
    let queue = || {
        let mut q: Queue = mock.create_queue().unwrap();
        q.set_next_avail(next_avail);
        q.set_next_used(next_avail);
        q
    };

    // The fast path's ring walk against virtio-queue's: the same verdict on the available
    // index, the same chains, the same descriptors in the same order.
    {
        let mut q = queue();
        let theirs: Option<Vec<(u16, Vec<Desc>)>> = q.iter(&mem).ok().map(|it| {
            it.map(|c| {
                let head = c.head_index();
                let descs = c.map(Desc::from).collect();
                (head, descs)
            })
            .collect()
        });
        let map = GuestMap::new(&mem);
        let ring = SplitRing::new(&map, q.desc_table(), q.avail_ring(), q.size());
        let ours: Option<Vec<(u16, Vec<Desc>)>> = ring
            .avail(next_avail)
            .map(|it| it.map(|c| (c.head(), c.collect())).collect());
        assert_eq!(
            ours, theirs,
            "the fast path's walk differs from virtio-queue's"
        );
    }

    // TX: reads only, and accepted frames are the chain's bytes.
    let before = snapshot(&mem);
    let mut q = queue();
    let (mut tx_frames, mut tx_chains) = (0, 0);
    if let Ok(iter) = q.iter(&mem) {
        let mut store = SegStore::new();
        for chain in iter {
            let oracle = chain.clone();
            tx_chains += 1;
            if let Ok(info) = parse_tx_chain(&mem, chain, offloads, &mut store) {
                tx_frames += 1;
                let mut bytes = Vec::new();
                for d in oracle {
                    assert!(
                        !d.is_write_only(),
                        "a TX frame took a device-writable buffer"
                    );
                    let mut b = vec![0u8; d.len() as usize];
                    mem.read_slice(&mut b, d.addr())
                        .expect("an accepted TX frame lies in guest memory");
                    bytes.extend_from_slice(&b);
                }
                let f = TxFrame::new(&info, &store);
                assert!(bytes.len() >= VNET_HDR_LEN);
                assert_eq!(f.to_vec(), bytes[VNET_HDR_LEN..], "TX frame bytes");
            }
            // Each frame checked on its own: the store holds one batch's pieces.
            store.clear();
        }
    }
    assert!(snapshot(&mem) == before, "the TX path wrote guest memory");

    // RX: one frame of any length.
    static FRAME: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| (0..0x1_2000).map(|i| (i * 7 + 3) as u8).collect());
    let frame = &FRAME[..frame_len];
    let chains = chains_of(&mut queue(), &mem);
    let mut q = queue();
    let (res, used) = place_rx_for_test(&mut q, &mem, frame, mrg);
    let after = snapshot(&mem);
    assert!(used.len() <= chains.len());
    // Used entries name the chains taken, in order (a head outside the ring, which the
    // guest wrote, comes back to it as it was, with length 0).
    for (&(head, _), (want, _)) in used.iter().zip(&chains) {
        assert_eq!(
            head, *want,
            "used entries in the order the chains were taken"
        );
    }
    let taken: Vec<&Vec<(u64, u32, bool)>> = chains[..used.len()].iter().map(|c| &c.1).collect();
    // Only device-writable buffers of the chains returned were written.
    let writable = |a: u64| {
        taken
            .iter()
            .copied()
            .flatten()
            .any(|&(addr, len, w)| w && a >= addr && a - addr < u64::from(len))
    };
    let changed = before != after;
    for (i, (x, y)) in before.iter().zip(&after).enumerate() {
        if changed && x != y {
            assert!(
                writable(address_of(i)),
                "RX wrote {:#x}, outside the device-writable buffers it returned",
                address_of(i)
            );
        }
    }
    match res {
        Ok(()) => {
            let need = VNET_HDR_LEN + frame.len();
            assert!(!used.is_empty());
            assert!(mrg || used.len() == 1, "one buffer without MRG_RXBUF");
            let total: u64 = used.iter().map(|&(_, n)| u64::from(n)).sum();
            assert_eq!(total, need as u64, "used lengths add up to header + frame");
            // When the buffers do not overlap each other, the frame reads back exactly.
            let ranges: Vec<(u64, u64)> = taken
                .iter()
                .copied()
                .flatten()
                .filter(|d| d.1 > 0)
                .map(|&(a, l, _)| (a, a + u64::from(l)))
                .collect();
            let overlap = ranges
                .iter()
                .enumerate()
                .any(|(i, a)| ranges[i + 1..].iter().any(|b| a.0 < b.1 && b.0 < a.1));
            if !overlap {
                let mut got = Vec::new();
                for (chain, &(_, n)) in taken.iter().zip(&used) {
                    let mut left = n as usize;
                    for &(addr, len, w) in *chain {
                        assert!(w || left == 0);
                        let m = (len as usize).min(left);
                        let mut b = vec![0u8; m];
                        mem.read_slice(&mut b, GuestAddress(addr))
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
                used.iter().all(|&(_, n)| n == 0),
                "bad chains come back empty"
            );
        }
        Err(RxDrop::NoBuffer) => {
            assert!(used.is_empty(), "chains given back, not used");
            assert_eq!(q.next_avail(), next_avail, "given back to the ring");
            assert!(
                after == before,
                "nothing written for a frame that did not fit"
            );
        }
        Err(RxDrop::LinkDown) => panic!("a ring is not a link"),
    }
    Outcome {
        tx_frames,
        tx_chains,
        rx: res,
    }
}
