//! The TX path: a guest's TX ring drained in batches of up to `TX_BATCH` chains, each
//! parsed into a `TxFrame` (the header copied, the rest left in guest memory), handed to the
//! switch, then returned to the guest with one used-index store and at most one interrupt.
//! In busy-poll mode the switch's poll thread drains every port's rings here.

use std::io;
use std::sync::atomic::Ordering;

use arrayvec::ArrayVec;
use vhost_user_backend::{VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_IN_ORDER;
use virtio_queue::QueueT;
use vm_memory::GuestAddressSpace;

use super::counters::NetCounters;
use crate::frame::{FrameInfo, MAX_TX_SEGS, SegStore, TxError, TxFrame, parse_tx_descs_into};
use crate::offload::Offloads;
use crate::vring::{
    Avail, GuestMap, PackedRing, RingChain, SplitRing, Used, publish_used_any, set_kicks,
    wants_interrupt_any,
};

use super::connection::Connection;
use super::port::{FrameSwitch, NetPort, TX_BATCH};

/// Takes up to `TX_BATCH` chains from a guest TX ring, hands the good frames to the switch,
/// returns the chains to the guest and interrupts it if it asked. Returns how many chains
/// were taken (0: the ring is empty or stopped).
pub(super) fn drain_tx_batch(
    port: &NetPort,
    conn: &Connection,
    switch: &dyn FrameSwitch,
    pair: u16,
    vring: &VringRwLock,
) -> io::Result<usize> {
    let c = &port.counters;
    if conn.memory_cut(c) {
        return Ok(0);
    }
    let mem = conn.mem.memory();
    let features = conn.features.load(Ordering::Relaxed);
    let offloads = Offloads::from_guest_tx(features);
    let packed = Connection::is_packed(features);
    let in_order = features & (1 << VIRTIO_F_IN_ORDER) != 0;
    let mut heads = ArrayVec::<Used, TX_BATCH>::new();
    let mut infos = ArrayVec::<FrameInfo, TX_BATCH>::new();
    let mut store = SegStore::new();
    // One map of the guest's memory for the batch: the walk and the used-ring publish.
    let map = GuestMap::new(&mem);
    {
        let mut st = vring.get_mut();
        if !st.is_enabled() || !st.get_queue().ready() {
            return Ok(0);
        }
        // One read of the avail index (split) for the whole batch; the ring walked and the
        // buffers translated by the fast path (`crate::vring`).
        // (the position after the chains taken, whether the ring was found broken)
        let q = st.get_queue();
        let walked = if packed {
            PackedRing::of_queue(&map, q).map(|(r, next)| {
                let mut avail = r.avail(next);
                take_tx(
                    &mut avail, &map, offloads, &mut store, &mut heads, &mut infos, c,
                );
                (avail.cursor(), avail.broken())
            })
        } else {
            SplitRing::of_queue(&map, q).map(|(r, next)| match r.avail(next) {
                Some(mut avail) => {
                    take_tx(
                        &mut avail, &map, offloads, &mut store, &mut heads, &mut infos, c,
                    );
                    (avail.cursor(), false)
                }
                None => (next, true),
            })
        };
        let Some((pos, broken)) = walked else {
            return Ok(0);
        };
        st.get_queue_mut().set_next_avail(pos);
        if broken {
            conn.ring_broken(2 * usize::from(pair) + 1, c);
        }
    }
    let taken = heads.len();
    // What was read from cut memory (zeros) is never forwarded.
    if taken == 0 || conn.memory_cut(c) {
        return Ok(0);
    }
    let frames: ArrayVec<TxFrame<'_>, TX_BATCH> =
        infos.iter().map(|i| TxFrame::new(i, &store)).collect();
    NetCounters::add(&c.rx_frames, frames.len() as u64);
    NetCounters::add(&c.rx_bytes, frames.iter().map(|f| f.len() as u64).sum());
    if !frames.is_empty() {
        switch.tx_batch(port, pair, &frames);
    }
    // The frames borrow guest buffers: done with them before handing them back.
    drop(frames);
    let wanted = {
        let mut st = vring.get_mut();
        let (old, new) = publish_used_any(&mut st, &map, packed, in_order, &heads);
        let event_idx = conn.event_idx.load(Ordering::Relaxed);
        wants_interrupt_any(&st, &map, packed, event_idx, old, new)
    };
    if wanted && vring.signal_used_queue().is_ok() {
        NetCounters::add(&c.rx_notifications, 1);
    }
    Ok(taken)
}

/// Takes up to `TX_BATCH` chains from `avail`, parsing each into the batch's next slot; a
/// chain that is not a good frame is counted and still returned (length 0).
fn take_tx<'m, A>(
    avail: &mut A,
    map: &GuestMap<'m>,
    offloads: Offloads,
    store: &mut SegStore<'m>,
    heads: &mut ArrayVec<Used, TX_BATCH>,
    infos: &mut ArrayVec<FrameInfo, TX_BATCH>,
    c: &NetCounters,
) where
    A: Avail,
    A::Item: RingChain,
{
    // A batch ends when the store might not hold one more frame's pieces.
    while !heads.is_full() && store.remaining_capacity() >= MAX_TX_SEGS {
        avail.prefetch(super::rx::PREFETCH_AHEAD, false);
        let Some(chain) = avail.next() else {
            break;
        };
        heads.push(chain.used(0));
        // Parsed straight into the batch's next slot (never moved afterwards).
        infos.push(FrameInfo::EMPTY);
        let slot = infos.len() - 1;
        if let Err(e) = parse_tx_descs_into(map, chain, offloads, store, &mut infos[slot]) {
            infos.truncate(slot);
            NetCounters::add(
                match e {
                    TxError::BadDescriptor => &c.rx_drop_bad_descriptor,
                    TxError::MissingHeader => &c.rx_drop_missing_header,
                    TxError::Runt => &c.rx_drop_runt,
                    TxError::Oversize => &c.rx_drop_oversize,
                    TxError::TooFragmented => &c.rx_drop_too_fragmented,
                    TxError::BadOffload => &c.rx_drop_bad_offload,
                },
                1,
            );
        }
    }
}

impl NetPort {
    /// Busy-poll mode: drains one batch from each running TX ring of this port's guest
    /// among pairs `first`, `first + step`, ... (the ones this poll thread serves).
    /// Returns the number of chains taken.
    pub fn poll_tx(&self, switch: &dyn FrameSwitch, first: u16, step: u16) -> usize {
        if !self.live.load(Ordering::Relaxed) {
            return 0;
        }
        let Some(conn) = &*self.conn.load() else {
            return 0;
        };
        let Some(vrings) = conn.vrings.get() else {
            return 0;
        };
        let mut n = 0;
        for pair in pairs(vrings.len() / 2, first, step) {
            let Some(vring) = vrings.get(2 * pair + 1) else {
                continue;
            };
            // A new connection starts with kicks on: off while polling.
            // (Loaded first: a locked swap on every pass would wait for the pass's stores.)
            if conn
                .tx_kicks
                .get(pair)
                .is_some_and(|k| k.load(Ordering::Relaxed) && k.swap(false, Ordering::Relaxed))
            {
                let _ = set_kicks(vring, &conn.mem.memory(), conn.packed(), false);
            }
            n += drain_tx_batch(self, conn, switch, pair as u16, vring).unwrap_or(0);
        }
        n
    }

    /// Busy-poll mode: turns the guest's TX kicks on (before sleeping) or off (while
    /// polling) for pairs `first`, `first + step`, ... Returns true if work arrived
    /// meanwhile (do not sleep then).
    pub fn set_tx_notifications(&self, on: bool, first: u16, step: u16) -> bool {
        let Some(conn) = &*self.conn.load() else {
            return false;
        };
        let Some(vrings) = conn.vrings.get() else {
            return false;
        };
        let mut more = false;
        let (mem, packed) = (conn.mem.memory(), conn.packed());
        for pair in pairs(vrings.len() / 2, first, step) {
            let Some(vring) = vrings.get(2 * pair + 1) else {
                continue;
            };
            if let Some(k) = conn.tx_kicks.get(pair) {
                k.store(on, Ordering::Relaxed);
            }
            more |= set_kicks(vring, &mem, packed, on).unwrap_or(false);
        }
        more
    }
}

/// Pairs `first`, `first + step`, ... below `count`.
fn pairs(count: usize, first: u16, step: u16) -> impl Iterator<Item = usize> {
    (usize::from(first)..count).step_by(usize::from(step.max(1)))
}
