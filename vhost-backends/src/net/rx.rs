//! The RX path: frames from the switch placed in a guest's RX buffers (mergeable buffers or
//! one chain per frame), each behind its virtio-net header, offloads passed through when the
//! guest took them and completed in software (checksummed, segmented) when it did not.
//!
//! Invariants: a frame that does not fit gives its chains back untouched; a malformed chain
//! is returned with length 0; used entries are written after all the copies of a batch.

use std::sync::atomic::Ordering;

use arrayvec::ArrayVec;
use vhost_user_backend::VringT;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryMmap, VolatileSlice};

use super::counters::NetCounters;
use crate::frame::{FrameEdit, MAX_RX_CHAINS, MAX_RX_SEGS, ScatterWriter, TxFrame, VNET_HDR_LEN};
use crate::offload::{self, Gso, OffloadMeta, Offloads};

use super::connection::Connection;
use super::counters::RxDrop;
use crate::vring::{
    Avail, GuestMap, PackedRing, RingChain, SplitRing, Used, copy_to_guest, publish_used_any,
    wants_interrupt_any,
};

impl Connection {
    /// Delivers `frames` (or, for a receiver that cannot take a frame's offloads, the frame
    /// completed in software: checksummed, or cut into TCP segments), counting what was
    /// delivered and what was dropped. One ring lock and one read of the avail index for the
    /// whole batch; the used entries are written after all the copies.
    pub(super) fn deliver_batch<'f, 'a: 'f>(
        &self,
        mut frames: impl Iterator<Item = RxItem<'f, 'a>>,
        hint: u16,
        c: &NetCounters,
        mut outcome: impl FnMut(Result<(), RxDrop>),
    ) {
        let link_down = |frames: &mut dyn Iterator<Item = RxItem<'f, 'a>>,
                         outcome: &mut dyn FnMut(Result<(), RxDrop>)| {
            for _ in frames {
                c.count_drop(RxDrop::LinkDown);
                outcome(Err(RxDrop::LinkDown));
            }
        };
        let Some(vrings) = self.vrings.get() else {
            return link_down(&mut frames, &mut outcome);
        };
        if self.memory_cut(c) {
            return link_down(&mut frames, &mut outcome);
        }
        let pairs = vrings.len() / 2;
        let mem = self.mem.memory();
        let features = self.features.load(Ordering::Relaxed);
        let mrg = features & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0;
        let rx_offloads = Offloads::for_guest_rx(features);
        let packed = Connection::is_packed(features);
        for i in 0..pairs {
            let q = if pairs == 1 {
                0
            } else {
                (hint as usize + i) % pairs
            };
            let vring = &vrings[2 * q];
            let mut st = vring.get_mut();
            if !st.is_enabled() || !st.get_queue().ready() {
                continue;
            }
            USED.with_borrow_mut(|used| {
                used.clear();
                // The ring walked and the buffers translated by the fast path
                // (`crate::vring`), through one map of the guest's memory for the batch.
                let map = GuestMap::new(&mem);
                let queue = st.get_queue();
                // (the position after the chains taken, whether the ring was found broken,
                // frames and bytes delivered)
                let walked = if packed {
                    PackedRing::of_queue(&map, queue).map(|(r, next)| {
                        let mut avail = r.avail(next);
                        let d = deliver_into(
                            &mut avail,
                            &map,
                            &mut frames,
                            mrg,
                            rx_offloads,
                            used,
                            c,
                            &mut outcome,
                        );
                        (avail.cursor(), avail.broken(), d)
                    })
                } else {
                    SplitRing::of_queue(&map, queue).map(|(r, next)| match r.avail(next) {
                        Some(mut avail) => {
                            let d = deliver_into(
                                &mut avail,
                                &map,
                                &mut frames,
                                mrg,
                                rx_offloads,
                                used,
                                c,
                                &mut outcome,
                            );
                            (avail.cursor(), false, d)
                        }
                        None => (next, true, (0, 0)),
                    })
                };
                let (broken, done) = match walked {
                    Some((pos, broken, done)) => {
                        st.get_queue_mut().set_next_avail(pos);
                        (broken, done)
                    }
                    None => (true, (0, 0)),
                };
                if broken {
                    // An avail index that leapt ahead, or a packed chain without an end: the
                    // frames left are the guest's loss.
                    self.ring_broken(2 * q, c);
                    for _ in frames.by_ref() {
                        c.count_drop(RxDrop::BadDescriptor);
                        outcome(Err(RxDrop::BadDescriptor));
                    }
                }
                publish_used_any(&mut st, &map, packed, false, used);
                if !used.is_empty() {
                    self.rx_pending[q].store(true, Ordering::Relaxed);
                }
                NetCounters::add(&c.tx_frames, done.0);
                NetCounters::add(&c.tx_bytes, done.1);
            });
            return;
        }
        link_down(&mut frames, &mut outcome)
    }

    /// Signals the RX rings with new used entries; returns how many interrupts were sent.
    pub(super) fn notify_rx(&self) -> u64 {
        let Some(vrings) = self.vrings.get() else {
            return 0;
        };
        let mem = self.mem.memory();
        let event_idx = self.event_idx.load(Ordering::Relaxed);
        let packed = self.packed();
        let mut sent = 0;
        for (q, pending) in self.rx_pending.iter().enumerate() {
            if !pending.swap(false, Ordering::Relaxed) {
                continue;
            }
            let vring = &vrings[2 * q];
            let wanted = {
                let st = vring.get_ref();
                let new = st.get_queue().next_used();
                let old = self.rx_checked[q].swap(new, Ordering::Relaxed);
                wants_interrupt_any(&st, &GuestMap::new(&mem), packed, event_idx, old, new)
            };
            if wanted && vring.signal_used_queue().is_ok() {
                sent += 1;
            }
        }
        sent
    }
}

/// Places `frames` in the chains of `avail` until they or the chains run out, reporting
/// each frame's outcome; used entries go to `used`. Returns (frames, bytes) delivered.
#[allow(clippy::too_many_arguments)]
fn deliver_into<'f, 'a: 'f, 'm, A>(
    avail: &mut A,
    map: &GuestMap<'m>,
    frames: &mut impl Iterator<Item = RxItem<'f, 'a>>,
    mrg: bool,
    rx_offloads: Offloads,
    used: &mut Vec<Used>,
    c: &NetCounters,
    outcome: &mut impl FnMut(Result<(), RxDrop>),
) -> (u64, u64)
where
    A: Avail,
    A::Item: RingChain,
{
    let mut done = (0u64, 0u64);
    let mut pending = Pending::new();
    for item in frames.by_ref() {
        let (frame, edit) = match item {
            RxItem::Frame(f, e) => (f, e),
            RxItem::Bytes(b) => {
                let r = place_rx(avail, map, Source::Bytes(b), [0; VNET_HDR_LEN], mrg, used);
                outcome(counted(r, b.len(), &mut done, c));
                continue;
            }
        };
        let meta = frame.meta().shifted(edit.shift());
        if meta.fits(rx_offloads) {
            // Chains taken now, bytes written with the batch's others (`Pending`).
            if pending.is_full() {
                pending.flush(used, &mut done, c, outcome);
            }
            let need = VNET_HDR_LEN + Source::Guest(frame, edit).len();
            let (slices, from) = (pending.slices.len(), used.len());
            match take_rx(avail, map, need, mrg, &mut pending.slices, used) {
                Ok(chains) => pending.frames.push(PendingFrame {
                    frame,
                    edit,
                    whole: whole(frame, edit),
                    hdr: with_buffers(meta.rx_header(), chains),
                    slices: slices..pending.slices.len(),
                    used: from..used.len(),
                }),
                Err(e) => {
                    c.count_drop(e);
                    outcome(Err(e));
                }
            }
            continue;
        }
        // Completed in software (the segments share one scratch buffer, so each is written
        // at once): delivered if any segment was.
        let mut any = false;
        let r = SCRATCH.with_borrow_mut(|(whole, seg)| {
            frame.copy_into(whole);
            edit.apply(whole);
            let put_seg = |bytes: &[u8]| {
                let r = place_rx(
                    avail,
                    map,
                    Source::Bytes(bytes),
                    [0; VNET_HDR_LEN],
                    mrg,
                    used,
                );
                let r = counted(r, bytes.len(), &mut done, c);
                any |= r.is_ok();
                r
            };
            complete_in_software(whole, seg, &meta, put_seg, c)
        });
        outcome(if any { Ok(()) } else { r });
    }
    pending.flush(used, &mut done, c, outcome);
    done
}

/// Counts a placed frame of `len` bytes in `done`, or its drop in `c`.
fn counted(
    r: Result<(), RxDrop>,
    len: usize,
    done: &mut (u64, u64),
    c: &NetCounters,
) -> Result<(), RxDrop> {
    match r {
        Ok(()) => {
            done.0 += 1;
            done.1 += len as u64;
        }
        Err(e) => c.count_drop(e),
    }
    r
}

/// Slices and frames a batch holds before writing (a frame takes at most `MAX_RX_SEGS`).
const PENDING_SLICES: usize = 4 * MAX_RX_SEGS;
const PENDING_FRAMES: usize = 64;
const _: () = assert!(PENDING_FRAMES <= 64, "one bit per frame in Pending::flush");

/// Frames whose chains are taken and whose bytes are not written yet. A batch's copies go out
/// back to back once its chains are taken: the stores into a guest's buffers wait for cache
/// lines its CPU holds, and the per-frame bookkeeping stored in between (the ring walk, the
/// stack) filled the CPU's store queue so that the lines came about one frame at a time.
/// Measured on the lab machine with the copies timed apart, while its two CPUs were ~500 ns
/// apart (`bench-core-rtt`): 300-360 cycles per frame interleaved, 155-175 back to back.
struct Pending<'m, 'f, 'a> {
    slices: ArrayVec<VolatileSlice<'m>, PENDING_SLICES>,
    frames: ArrayVec<PendingFrame<'f, 'a>, PENDING_FRAMES>,
}

struct PendingFrame<'f, 'a> {
    frame: &'f TxFrame<'a>,
    edit: FrameEdit,
    /// The frame's bytes when they are all in its checked head copy and not edited (most
    /// small frames): written with two inline copies.
    whole: Option<&'f [u8]>,
    hdr: [u8; VNET_HDR_LEN],
    /// Its buffers in `Pending::slices`, its used entries in the batch's.
    slices: std::ops::Range<usize>,
    used: std::ops::Range<usize>,
}

impl<'f, 'a> Pending<'_, 'f, 'a> {
    fn new() -> Self {
        Pending {
            slices: ArrayVec::new(),
            frames: ArrayVec::new(),
        }
    }

    /// Whether one more frame might not fit.
    fn is_full(&self) -> bool {
        self.frames.is_full() || self.slices.remaining_capacity() < MAX_RX_SEGS
    }

    /// Writes every pending frame, counting and reporting each. A write that fails (the
    /// buffers were counted with room for it, so it should not) returns the frame's chains
    /// with length 0, as for a malformed chain.
    fn flush(
        &mut self,
        used: &mut [Used],
        done: &mut (u64, u64),
        c: &NetCounters,
        outcome: &mut impl FnMut(Result<(), RxDrop>),
    ) {
        // Nothing but the copies is stored while they run (each store of a frame's state
        // to the stack would take a place in the store queue): frames are read in place and
        // failures kept in a register (one bit per frame: PENDING_FRAMES <= 64); the
        // tallies and outcomes come after.
        let mut failed = 0u64;
        for (i, p) in self.frames.iter().enumerate() {
            let dst = self.slices.get(p.slices.clone()).unwrap_or_default();
            let ok = match p.whole {
                Some(bytes) => write_contiguous(dst, &p.hdr, bytes),
                None => write_rx_scattered(dst, &p.hdr, Source::Guest(p.frame, p.edit)),
            };
            failed |= u64::from(!ok) << i;
        }
        for (i, p) in self.frames.iter().enumerate() {
            let r = if failed & (1 << i) == 0 {
                Ok(())
            } else {
                // The buffers were counted with room for it, so this should not happen.
                for u in used.get_mut(p.used.clone()).unwrap_or_default() {
                    *u = u.with_len(0);
                }
                Err(RxDrop::BadDescriptor)
            };
            let len = Source::Guest(p.frame, p.edit).len();
            outcome(counted(r, len, done, c));
        }
        self.frames.clear();
        self.slices.clear();
    }
}

thread_local! {
    /// Used entries of the RX batch being delivered.
    static USED: std::cell::RefCell<Vec<Used>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Buffers for completing offloads in software: the whole frame, and one segment.
    static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// `frame` with `edit` applied as plain Ethernet frames, offloads completed in software
/// (checksum filled in, TCP super-frames cut into segments), for a receiver that takes no
/// offloads (a VXLAN tunnel, a frame held back by an impairment). Counts the software work
/// in `counters`.
pub fn plain_frames(
    frame: &TxFrame<'_>,
    edit: FrameEdit,
    counters: &NetCounters,
    mut out: impl FnMut(&[u8]),
) {
    let meta = frame.meta().shifted(edit.shift());
    SCRATCH.with_borrow_mut(|(whole, seg)| {
        frame.copy_into(whole);
        edit.apply(whole);
        if meta.fits(Offloads::default()) {
            out(whole);
            return;
        }
        let _ = complete_in_software(
            whole,
            seg,
            &meta,
            |b| {
                out(b);
                Ok(())
            },
            counters,
        );
    });
}

/// Completes `whole` (a copy of `frame`) for a receiver without offloads and hands each
/// resulting frame to `put`. Returns the last error if nothing could be delivered.
pub(super) fn complete_in_software(
    whole: &mut [u8],
    seg: &mut Vec<u8>,
    meta: &OffloadMeta,
    mut put: impl FnMut(&[u8]) -> Result<(), RxDrop>,
    c: &NetCounters,
) -> Result<(), RxDrop> {
    let meta = *meta;
    if meta.gso != Gso::None {
        let mut last = Ok(());
        let res = offload::segment_tcp(whole, &meta, seg, |s| {
            let r = put(s);
            if r.is_err() {
                last = r;
            }
        });
        NetCounters::add(&c.tx_sw_segmented, 1);
        return res.map_err(|_| RxDrop::BadDescriptor).and(last);
    }
    if let Some((start, off)) = meta.csum {
        NetCounters::add(&c.tx_sw_checksummed, 1);
        if offload::complete_checksum(whole, start, off).is_err() {
            return Err(RxDrop::BadDescriptor);
        }
    }
    put(whole)
}

/// What a receiver is given: a frame in the sender's guest memory (with a VLAN edit), or
/// plain bytes vfabric holds (frames held back by an impairment).
pub(super) enum RxItem<'f, 'a> {
    Frame(&'f TxFrame<'a>, FrameEdit),
    Bytes(&'f [u8]),
}

/// What is written into an RX ring: a guest's frame, or bytes built here.
#[derive(Clone, Copy)]
pub(super) enum Source<'f, 'a> {
    Guest(&'f TxFrame<'a>, FrameEdit),
    Bytes(&'f [u8]),
}

impl Source<'_, '_> {
    fn len(&self) -> usize {
        match self {
            Source::Guest(f, e) => e.len_after(f.len()),
            Source::Bytes(b) => b.len(),
        }
    }
}

/// How many chains ahead of the one being filled or parsed the next buffer is prefetched.
pub(super) const PREFETCH_AHEAD: u16 = 2;

/// Places one frame in a guest's RX ring at once, behind the virtio-net header `hdr` (whose
/// num_buffers is filled in here): takes chains from `avail`, copies, and records the used
/// entries in `used` (written to the ring by the caller). Chains taken for a frame that does
/// not fit are given back untouched; a malformed chain is returned with length 0.
pub(super) fn place_rx<'m, A>(
    avail: &mut A,
    map: &GuestMap<'m>,
    frame: Source<'_, '_>,
    hdr: [u8; VNET_HDR_LEN],
    mrg: bool,
    used: &mut Vec<Used>,
) -> Result<(), RxDrop>
where
    A: Avail,
    A::Item: RingChain,
{
    let mut slices = ArrayVec::<VolatileSlice<'m>, MAX_RX_SEGS>::new();
    let from = used.len();
    let chains = take_rx(
        avail,
        map,
        VNET_HDR_LEN + frame.len(),
        mrg,
        &mut slices,
        used,
    )?;
    if !write_rx(&slices, &with_buffers(hdr, chains), frame) {
        for u in &mut used[from..] {
            *u = u.with_len(0);
        }
        return Err(RxDrop::BadDescriptor);
    }
    Ok(())
}

/// `hdr` with its num_buffers field set to `chains`.
fn with_buffers(mut hdr: [u8; VNET_HDR_LEN], chains: u16) -> [u8; VNET_HDR_LEN] {
    hdr[10..12].copy_from_slice(&chains.to_le_bytes());
    hdr
}

/// Takes the chains for a frame of `need` bytes (header included) from `avail`: appends their
/// writable pieces to `slices` (at most `MAX_RX_SEGS` for the frame) and their used entries,
/// with the bytes the frame will fill in each, to `used`; returns how many chains. Chains
/// taken for a frame that does not fit are given back untouched (`NoBuffer`); a malformed
/// chain is used with length 0 (`BadDescriptor`). Nothing stays in `slices` on error.
fn take_rx<'m, A, const N: usize>(
    avail: &mut A,
    map: &GuestMap<'m>,
    need: usize,
    mrg: bool,
    slices: &mut ArrayVec<VolatileSlice<'m>, N>,
    used: &mut Vec<Used>,
) -> Result<u16, RxDrop>
where
    A: Avail,
    A::Item: RingChain,
{
    let start = avail.cursor();
    let base = slices.len();
    // (used entry, capacity) of each chain taken.
    let mut chains = ArrayVec::<(Used, usize), MAX_RX_CHAINS>::new();
    let mut cap = 0usize;
    let mut bad = false;
    // The buffer of a frame or two later, on its way while this one is taken.
    avail.prefetch(PREFETCH_AHEAD, true);
    while cap < need && !chains.is_full() {
        let Some(chain) = avail.next() else {
            break;
        };
        let head = chain.used(0);
        let mut c = 0usize;
        let mut cut_short = false;
        for desc in chain {
            cut_short = desc.has_next();
            if !desc.is_write_only() {
                bad = true;
                break;
            }
            let resolved = map.pieces(desc.addr, desc.len as usize, |s| {
                // Pieces past the limit are not used; the chain just holds less.
                if !s.is_empty() && slices.len() - base < MAX_RX_SEGS && slices.try_push(s).is_ok()
                {
                    c += s.len();
                }
            });
            bad |= resolved.is_err();
            if bad {
                break;
            }
        }
        // A chain cut short (loop, bad `next`) or without room is malformed.
        bad |= cut_short || c == 0;
        chains.push((head, c));
        if bad {
            break;
        }
        cap += c;
        if !mrg {
            break;
        }
    }
    if bad {
        // The guest broke the ring's rules: return what was taken, empty, and drop.
        slices.truncate(base);
        used.extend(chains.iter().map(|&(head, _)| head));
        return Err(RxDrop::BadDescriptor);
    }
    if cap < need {
        // Not enough buffers: hand the chains back untouched for the next frame.
        slices.truncate(base);
        avail.rewind(start);
        return Err(RxDrop::NoBuffer);
    }
    let mut left = need;
    for &(head, c) in &chains {
        let n = c.min(left);
        left -= n;
        used.push(head.with_len(n as u32));
    }
    Ok(chains.len() as u16)
}

/// The bytes of `frame` with `edit` applied, when they are all in its checked head copy and
/// the edit changes nothing.
fn whole<'f>(frame: &'f TxFrame<'_>, edit: FrameEdit) -> Option<&'f [u8]> {
    (edit == FrameEdit::NONE && frame.head().len() == frame.len()).then(|| frame.head())
}

/// Writes `hdr` and then `src` into `dst`; false if they do not fit.
fn write_rx(dst: &[VolatileSlice<'_>], hdr: &[u8; VNET_HDR_LEN], src: Source<'_, '_>) -> bool {
    match src {
        Source::Guest(f, e) => match whole(f, e) {
            Some(bytes) => write_contiguous(dst, hdr, bytes),
            None => write_rx_scattered(dst, hdr, src),
        },
        Source::Bytes(b) => write_contiguous(dst, hdr, b),
    }
}

/// `write_rx` of contiguous bytes: two inline copies when `dst` is one buffer.
#[inline(always)]
fn write_contiguous(dst: &[VolatileSlice<'_>], hdr: &[u8; VNET_HDR_LEN], bytes: &[u8]) -> bool {
    if let [d] = dst
        && d.len() >= VNET_HDR_LEN + bytes.len()
        && let Ok(rest) = d.offset(VNET_HDR_LEN)
    {
        copy_to_guest(d, hdr);
        copy_to_guest(&rest, bytes);
        return true;
    }
    write_rx_scattered(dst, hdr, Source::Bytes(bytes))
}

#[inline(never)]
fn write_rx_scattered(
    dst: &[VolatileSlice<'_>],
    hdr: &[u8; VNET_HDR_LEN],
    src: Source<'_, '_>,
) -> bool {
    let mut w = ScatterWriter::new(dst);
    w.write_bytes(hdr)
        && match src {
            Source::Guest(f, e) => w.write_frame_edited(f, e),
            Source::Bytes(b) => w.write_bytes(b),
        }
}

/// Places `frame` in the RX ring `queue` exactly as delivery does, without publishing:
/// returns the outcome and the used entries (head, length) delivery would write. For the
/// hostile-ring property tests and fuzz targets, which build rings with any content.
#[doc(hidden)]
pub fn place_rx_for_test(
    queue: &mut virtio_queue::Queue,
    mem: &GuestMemoryMmap,
    frame: &[u8],
    mrg: bool,
) -> (Result<(), RxDrop>, Vec<(u16, u32)>) {
    let mut used = Vec::new();
    let map = GuestMap::new(mem);
    let ring = SplitRing::of_queue(&map, queue);
    let r = match ring.as_ref().and_then(|(r, next)| r.avail(*next)) {
        Some(mut avail) => {
            let r = place_rx(
                &mut avail,
                &map,
                Source::Bytes(frame),
                [0; VNET_HDR_LEN],
                mrg,
                &mut used,
            );
            queue.set_next_avail(avail.position());
            r
        }
        // An avail index more than a ring ahead: the ring is unusable.
        None => Err(RxDrop::BadDescriptor),
    };
    (r, used.iter().map(|u| (u.id, u.len)).collect())
}

/// What `place_rx_packed_for_test` did: the outcome, the used entries it would publish, the
/// device's position after it, and whether it found the ring broken.
#[doc(hidden)]
pub struct PackedPlaced {
    pub res: Result<(), RxDrop>,
    pub used: Vec<crate::vring::Used>,
    pub pos: u16,
    pub broken: bool,
}

/// `place_rx_for_test` for a packed ring at `ring` of `size` descriptors (event areas
/// unused), from position `pos`.
#[doc(hidden)]
pub fn place_rx_packed_for_test(
    mem: &GuestMemoryMmap,
    ring: u64,
    size: u16,
    pos: u16,
    frame: &[u8],
    mrg: bool,
) -> PackedPlaced {
    let mut used = Vec::new();
    let map = GuestMap::new(mem);
    let ring = PackedRing::new(&map, ring, 0, 0, size);
    let mut avail = ring.avail(pos);
    let res = place_rx(
        &mut avail,
        &map,
        Source::Bytes(frame),
        [0; VNET_HDR_LEN],
        mrg,
        &mut used,
    );
    PackedPlaced {
        res,
        used,
        pos: avail.cursor(),
        broken: avail.broken(),
    }
}
