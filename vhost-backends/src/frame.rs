//! Frames in guest memory: reading a guest's TX descriptor chain into a `TxFrame` (a header
//! copy plus the frame's place in guest memory), and scatter-copying a frame into another
//! guest's RX buffers. No switching logic here.
//!
//! Guest memory is hostile. Every descriptor is resolved through `vm-memory`, which checks
//! the address range against the guest's regions; a chain that points outside, mixes
//! directions, lacks the virtio-net header or is too long is an error, never a panic.
//! Decisions are made on `TxFrame::head()`, a copy: the guest can rewrite its buffers while
//! we forward them, so the bytes that were checked are the bytes that are delivered.

use arrayvec::ArrayVec;
use virtio_queue::DescriptorChain;
use vm_memory::{GuestMemoryMmap, VolatileSlice};

use crate::offload::{Gso, OffloadMeta, Offloads};
pub(crate) use crate::vring::for_each_piece;
use crate::vring::{Desc, GuestMap, copy_from_guest, copy_guest_to_guest, copy_to_guest};

/// The virtio-net header of a VERSION_1 device: 12 bytes, with or without MRG_RXBUF.
pub const VNET_HDR_LEN: usize = 12;
/// How many bytes of a frame are copied out for the forwarding decision: Ethernet, VLAN
/// tags, and the IP or ARP header behind them.
pub const HEAD_COPY: usize = 64;
/// How many bytes are copied to check the headers of a segmentation offload (Ethernet +
/// VLAN tags + IP + TCP with options).
pub const GSO_HEAD_COPY: usize = 160;
/// The largest Ethernet frame accepted from a guest: a 64 KiB IP packet plus Ethernet and
/// two VLAN tags. Anything longer is dropped.
pub const MAX_FRAME_LEN: usize = 65535 + 14 + 8;
/// Guest memory pieces one TX frame may span (Linux uses at most MAX_SKB_FRAGS + 2 = 19 per
/// chain; kept small because frames are built on the stack in batches).
pub const MAX_TX_SEGS: usize = 24;
/// Guest memory pieces the RX buffers of one frame may span.
pub const MAX_RX_SEGS: usize = 64;
/// RX chains one frame may span with MRG_RXBUF.
pub const MAX_RX_CHAINS: usize = 64;

/// Why a guest's TX chain was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxError {
    /// A descriptor outside guest memory, or a device-writable descriptor in a TX chain.
    BadDescriptor,
    /// Fewer bytes than the 12-byte virtio-net header.
    MissingHeader,
    /// Fewer than 14 bytes of Ethernet frame after the header.
    Runt,
    /// Longer than `MAX_FRAME_LEN`.
    Oversize,
    /// Spread over more than `MAX_TX_SEGS` pieces of guest memory.
    TooFragmented,
    /// Offload fields (GSO, checksum) the device did not negotiate.
    BadOffload,
}

/// What is known of one guest frame after its chain was read: small, so batches of them are
/// cheap to build (the pieces of guest memory live in the batch's shared `SegStore`).
#[derive(Clone, Copy, Debug)]
pub struct FrameInfo {
    vnet: [u8; VNET_HDR_LEN],
    meta: OffloadMeta,
    head: [u8; HEAD_COPY],
    head_len: u16,
    len: u32,
    seg_start: u16,
    seg_count: u16,
}

impl FrameInfo {
    /// A slot to parse a frame into.
    pub const EMPTY: FrameInfo = FrameInfo {
        vnet: [0; VNET_HDR_LEN],
        meta: OffloadMeta {
            csum: None,
            gso: Gso::None,
            ecn: false,
            gso_size: 0,
            hdr_len: 0,
            l3: 0,
            l4: 0,
        },
        head: [0; HEAD_COPY],
        head_len: 0,
        len: 0,
        seg_start: 0,
        seg_count: 0,
    };
}

/// The pieces of guest memory of a batch of frames.
pub type SegStore<'a> = ArrayVec<VolatileSlice<'a>, SEG_STORE>;

/// Pieces of guest memory one batch of TX frames may span in all: 4 per frame of a full
/// batch (frames take 1 or 2). A batch ends early when fewer than `MAX_TX_SEGS` are left,
/// so no frame is refused for want of room. (Room for 64 frames of 24 pieces made a 36 KiB
/// stack frame whose pages were probed on every batch, seen in the profile.)
pub const SEG_STORE: usize = 256;

/// A frame a guest transmitted, still in its memory, with a copy of its first bytes.
#[derive(Clone, Copy)]
pub struct TxFrame<'a> {
    info: &'a FrameInfo,
    segs: &'a [VolatileSlice<'a>],
}

impl<'a> TxFrame<'a> {
    /// The frame described by `info`, whose pieces are in `store`.
    pub fn new(info: &'a FrameInfo, store: &'a [VolatileSlice<'a>]) -> TxFrame<'a> {
        let (s, n) = (usize::from(info.seg_start), usize::from(info.seg_count));
        TxFrame {
            info,
            segs: store.get(s..s + n).unwrap_or(&[]),
        }
    }

    /// The first `min(len, HEAD_COPY)` bytes of the Ethernet frame, copied out of guest
    /// memory: what forwarding decisions are made on.
    pub fn head(&self) -> &'a [u8] {
        &self.info.head[..usize::from(self.info.head_len)]
    }

    /// The validated offloads of the frame (partial checksum, TCP segmentation).
    pub fn meta(&self) -> &'a OffloadMeta {
        &self.info.meta
    }

    /// The Ethernet frame's length (without the virtio-net header).
    pub fn len(&self) -> usize {
        self.info.len as usize
    }

    /// Frames are never empty (at least 14 bytes); provided for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.info.len == 0
    }

    /// The virtio-net header the guest sent (copied).
    pub fn vnet_header(&self) -> &'a [u8; VNET_HDR_LEN] {
        &self.info.vnet
    }

    /// The frame as owned bytes: the checked head, then the rest from guest memory.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.copy_into(&mut v);
        v
    }

    /// Replaces the contents of `v` with the frame (reusing its allocation).
    pub fn copy_into(&self, v: &mut Vec<u8>) {
        v.clear();
        v.resize(self.len(), 0);
        let h = self.head();
        v[..h.len()].copy_from_slice(h);
        let mut off = h.len();
        self.for_each_tail_piece(|s| {
            let n = copy_from_guest(&s, &mut v[off..]);
            off += n;
        });
    }

    /// Calls `f` with the pieces of guest memory holding the frame past `head()`.
    pub fn for_each_tail_piece(&self, mut f: impl FnMut(VolatileSlice<'a>)) {
        let mut skip = usize::from(self.info.head_len);
        for s in self.segs {
            if skip >= s.len() {
                skip -= s.len();
                continue;
            }
            // In range by the check above; offset() cannot fail.
            if let Ok(rest) = s.offset(skip) {
                f(rest);
            }
            skip = 0;
        }
    }
}

/// Reads a guest's TX chain, appending its pieces of guest memory to `store`. `offloads`
/// are the checksum/GSO offloads the guest negotiated; a header asking for another one, or
/// not matching the frame, is a `BadOffload`. On error `store` is left as it was.
pub fn parse_tx_chain<'a>(
    mem: &'a GuestMemoryMmap,
    chain: DescriptorChain<&'a GuestMemoryMmap>,
    offloads: Offloads,
    store: &mut SegStore<'a>,
) -> Result<FrameInfo, TxError> {
    parse_tx_descs(&GuestMap::new(mem), chain.map(Desc::from), offloads, store)
}

/// `parse_tx_chain` for a chain walked by the fast path (`crate::vring`), its buffers
/// translated through `map`.
pub fn parse_tx_descs<'a>(
    map: &GuestMap<'a>,
    descs: impl Iterator<Item = Desc>,
    offloads: Offloads,
    store: &mut SegStore<'a>,
) -> Result<FrameInfo, TxError> {
    let mut info = FrameInfo::EMPTY;
    parse_tx_descs_into(map, descs, offloads, store, &mut info).map(|()| info)
}

/// `parse_tx_descs` writing the frame's description into `out` (a slot of the batch), so
/// the per-frame state is never moved: `out` is undefined on error.
#[inline]
pub fn parse_tx_descs_into<'a>(
    map: &GuestMap<'a>,
    descs: impl Iterator<Item = Desc>,
    offloads: Offloads,
    store: &mut SegStore<'a>,
    out: &mut FrameInfo,
) -> Result<(), TxError> {
    let start = store.len();
    let res = parse_into(map, descs, offloads, store, start, out);
    if res.is_err() {
        store.truncate(start);
    }
    res
}

#[inline]
fn parse_into<'a>(
    map: &GuestMap<'a>,
    chain: impl Iterator<Item = Desc>,
    offloads: Offloads,
    store: &mut SegStore<'a>,
    start: usize,
    out: &mut FrameInfo,
) -> Result<(), TxError> {
    let vnet = &mut out.vnet;
    let mut vnet_got = 0usize;
    let mut total = 0usize;
    // The chain iterator stops quietly at a loop (after queue-size descriptors), a `next`
    // past the table or a bad indirect table: a last descriptor that still says "next"
    // means the chain was cut short.
    let mut cut_short = false;
    let mut too_fragmented = false;
    for desc in chain {
        cut_short = desc.has_next();
        if desc.is_write_only() {
            return Err(TxError::BadDescriptor);
        }
        let len = desc.len as usize;
        total += len;
        if total > MAX_FRAME_LEN + VNET_HDR_LEN {
            return Err(TxError::Oversize);
        }
        map.pieces(desc.addr, len, |mut piece| {
            if vnet_got < VNET_HDR_LEN {
                let n = (VNET_HDR_LEN - vnet_got).min(piece.len());
                if let Ok((h, rest)) = piece.split_at(n) {
                    copy_from_guest(&h, &mut vnet[vnet_got..vnet_got + n]);
                    vnet_got += n;
                    piece = rest;
                }
            }
            if !piece.is_empty() {
                // Keep walking a chain that is too fragmented: a loop is the better diagnosis.
                too_fragmented |=
                    store.len() - start >= MAX_TX_SEGS || store.try_push(piece).is_err();
            }
        })
        .map_err(|_| TxError::BadDescriptor)?;
    }
    if cut_short {
        return Err(TxError::BadDescriptor);
    }
    if too_fragmented {
        return Err(TxError::TooFragmented);
    }
    if vnet_got < VNET_HDR_LEN {
        return Err(TxError::MissingHeader);
    }
    let len = total - VNET_HDR_LEN;
    if len < 14 {
        return Err(TxError::Runt);
    }
    let segs = &store[start..];
    let head_len = gather(segs, &mut out.head);
    out.head_len = head_len as u16;
    if OffloadMeta::asks_nothing(&out.vnet) {
        // Written in place: a result moved in from a temporary stalled on store forwarding.
        out.meta = OffloadMeta::default();
    } else {
        out.meta = parse_offloads(out, segs, len, offloads)?;
    }
    out.len = len as u32;
    out.seg_start = start as u16;
    out.seg_count = (store.len() - start) as u16;
    Ok(())
}

/// The offloads a frame's header asks for, checked against the frame's headers.
#[inline(never)]
fn parse_offloads(
    out: &FrameInfo,
    segs: &[VolatileSlice<'_>],
    len: usize,
    offloads: Offloads,
) -> Result<OffloadMeta, TxError> {
    // A segmentation offload's headers (up to ~140 bytes) are checked on a longer copy.
    if out.vnet[1] != 0 {
        let mut hdrs = [0u8; GSO_HEAD_COPY];
        let n = gather(segs, &mut hdrs);
        OffloadMeta::from_tx_header(&out.vnet, &hdrs[..n], len, offloads)
    } else {
        OffloadMeta::from_tx_header(
            &out.vnet,
            &out.head[..usize::from(out.head_len)],
            len,
            offloads,
        )
    }
    .map_err(|_| TxError::BadOffload)
}

/// Reads a frame vfabric holds in its own memory (read from a TAP device or a VXLAN socket):
/// `vnet` is its virtio-net header (all zero for a plain frame), `frame` the Ethernet frame.
/// Checked like a guest's frame: the offloads must be among `offloads` and match the
/// headers. Appends one piece to `store`.
pub fn parse_host_frame<'a>(
    vnet: [u8; VNET_HDR_LEN],
    frame: &'a mut [u8],
    offloads: Offloads,
    store: &mut SegStore<'a>,
) -> Result<FrameInfo, TxError> {
    let len = frame.len();
    if len < 14 {
        return Err(TxError::Runt);
    }
    if len > MAX_FRAME_LEN {
        return Err(TxError::Oversize);
    }
    let mut head = [0u8; HEAD_COPY];
    let head_len = len.min(HEAD_COPY);
    head[..head_len].copy_from_slice(&frame[..head_len]);
    let meta = OffloadMeta::from_tx_header(&vnet, &frame[..len.min(GSO_HEAD_COPY)], len, offloads)
        .map_err(|_| TxError::BadOffload)?;
    let start = store.len();
    store
        .try_push(VolatileSlice::from(frame))
        .map_err(|_| TxError::TooFragmented)?;
    Ok(FrameInfo {
        vnet,
        meta,
        head,
        head_len: head_len as u16,
        len: len as u32,
        seg_start: start as u16,
        seg_count: 1,
    })
}

/// Copies the start of `segs` into `buf`; returns the bytes copied.
fn gather(segs: &[VolatileSlice<'_>], buf: &mut [u8]) -> usize {
    let mut n = 0;
    for s in segs {
        if n == buf.len() {
            break;
        }
        n += copy_from_guest(s, &mut buf[n..]);
    }
    n
}

/// A destination made of guest memory pieces, written front to back.
/// A VLAN tag change applied while a frame is copied to a receiver: `strip` bytes of tags
/// removed at offset 12, then `push` (a 4-byte tag) inserted there. The switch decides it;
/// the copy does it, so an edited frame still costs one copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameEdit {
    pub strip: u8,
    pub push: Option<[u8; 4]>,
}

/// Where tags sit: right after the two MAC addresses.
const TAG_AT: usize = 12;

impl FrameEdit {
    /// No change.
    pub const NONE: FrameEdit = FrameEdit {
        strip: 0,
        push: None,
    };

    /// How far the bytes after the tags move (for checksum starts and header lengths).
    pub fn shift(&self) -> i32 {
        i32::from(self.push.is_some()) * 4 - i32::from(self.strip)
    }

    /// Length of a `len`-byte frame after the edit.
    pub fn len_after(&self, len: usize) -> usize {
        (len as isize + self.shift() as isize).max(0) as usize
    }

    /// Applies the edit to a frame held in `v`.
    pub fn apply(&self, v: &mut Vec<u8>) {
        if v.len() < TAG_AT + usize::from(self.strip) {
            return;
        }
        let push: &[u8] = match &self.push {
            Some(t) => t,
            None => &[],
        };
        v.splice(
            TAG_AT..TAG_AT + usize::from(self.strip),
            push.iter().copied(),
        );
    }
}

pub struct ScatterWriter<'s, 'a> {
    dst: &'s [VolatileSlice<'a>],
    idx: usize,
    off: usize,
    written: usize,
}

impl<'s, 'a> ScatterWriter<'s, 'a> {
    /// A writer over `dst`, starting at its first byte.
    pub fn new(dst: &'s [VolatileSlice<'a>]) -> Self {
        ScatterWriter {
            dst,
            idx: 0,
            off: 0,
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    fn current(&mut self) -> Option<VolatileSlice<'a>> {
        while let Some(d) = self.dst.get(self.idx) {
            if self.off < d.len() {
                return d.offset(self.off).ok();
            }
            self.idx += 1;
            self.off = 0;
        }
        None
    }

    fn advance(&mut self, n: usize) {
        self.off += n;
        self.written += n;
    }

    /// Writes `src`; returns false if the destination ran out of room.
    #[inline]
    pub fn write_bytes(&mut self, mut src: &[u8]) -> bool {
        while !src.is_empty() {
            let Some(d) = self.current() else {
                return false;
            };
            let n = d.len().min(src.len());
            copy_to_guest(&d, &src[..n]);
            self.advance(n);
            src = &src[n..];
        }
        true
    }

    /// Copies `src` (guest memory, possibly another guest's); false if out of room.
    pub fn write_slice(&mut self, mut src: VolatileSlice<'_>) -> bool {
        while !src.is_empty() {
            let Some(d) = self.current() else {
                return false;
            };
            let n = d.len().min(src.len());
            let (Ok(part), Ok(rest)) = (src.subslice(0, n), src.offset(n)) else {
                return false;
            };
            copy_guest_to_guest(&d, &part);
            self.advance(n);
            src = rest;
        }
        true
    }

    /// Writes a whole frame: the checked head copy, then the rest from guest memory.
    pub fn write_frame(&mut self, frame: &TxFrame<'_>) -> bool {
        self.write_frame_edited(frame, FrameEdit::NONE)
    }

    /// Copies `frame` with `edit` applied (the tags are always inside the checked head).
    pub fn write_frame_edited(&mut self, frame: &TxFrame<'_>, edit: FrameEdit) -> bool {
        let head = frame.head();
        let cut = TAG_AT + usize::from(edit.strip);
        let written = if edit == FrameEdit::NONE || head.len() < cut {
            self.write_bytes(head)
        } else {
            self.write_bytes(&head[..TAG_AT])
                && edit.push.is_none_or(|t| self.write_bytes(&t))
                && self.write_bytes(&head[cut..])
        };
        if !written {
            return false;
        }
        let mut ok = true;
        frame.for_each_tail_piece(|s| ok = ok && self.write_slice(s));
        ok
    }
}
