//! The vhost-user virtio-net device: feature negotiation, the TX path (guest -> switch) and
//! the RX path (switch -> guest). Which ports a frame goes to is not decided here: the TX
//! path hands batches to a `FrameSwitch`, which calls `NetPort::deliver` on the egress
//! ports and `NetPort::notify` once per batch.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwapOption;
use arrayvec::ArrayVec;
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU,
    VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, VRING_AVAIL_F_NO_INTERRUPT,
};
use virtio_queue::{AvailIter, QueueOwnedT, QueueT};
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
    VolatileSlice,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::counters::{NetCounters, NetCountersSnapshot};
use crate::frame::{
    FrameEdit, FrameInfo, MAX_RX_CHAINS, MAX_RX_SEGS, ScatterWriter, SegStore, TxError, TxFrame,
    VNET_HDR_LEN, for_each_piece, parse_tx_chain,
};
use crate::offload::{self, Gso, OffloadMeta, Offloads};

/// Guest TX chains taken per batch: one switch decision lock and one notification per batch.
pub const TX_BATCH: usize = 32;
/// Ring size offered to the VMM.
pub const QUEUE_SIZE: usize = 1024;
/// Upper bound on queue pairs per port.
pub const MAX_QUEUE_PAIRS: u16 = 16;

/// What the switch sees of a port's configuration.
#[derive(Clone, Debug)]
pub struct NetPortConfig {
    /// The port's name (for logs).
    pub name: String,
    /// The MAC offered in config space (VIRTIO_NET_F_MAC); `None` lets the VMM choose.
    pub mac: Option<[u8; 6]>,
    /// Queue pairs offered (VIRTIO_NET_F_MQ when more than one).
    pub queue_pairs: u16,
    /// Worker threads servicing the queue pairs (pairs are spread over them).
    pub threads: u16,
    /// MTU offered in config space (VIRTIO_NET_F_MTU), if set.
    pub mtu: Option<u16>,
    /// Offer checksum and TCP segmentation offloads (CSUM, GUEST_CSUM, HOST/GUEST_TSO4/6/ECN).
    pub offloads: bool,
    /// Busy-poll mode: the switch's poll thread drains this port's TX rings; kicks only wake it.
    pub poller: Option<Arc<Poller>>,
}

/// The switch's side of the data path.
pub trait FrameSwitch: Send + Sync + 'static {
    /// `frames` were taken from `port`'s TX queue of pair `queue_pair`. Deliver them with
    /// `NetPort::deliver` and call `NetPort::notify` on each port delivered to before
    /// returning: the guest buffers are handed back right after.
    fn tx_batch(&self, port: &NetPort, queue_pair: u16, frames: &[TxFrame<'_>]);

    /// The port's guest connected (`up`) or went away.
    fn link_changed(&self, port: &NetPort, up: bool);
}

/// Why `deliver` did not deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxDrop {
    LinkDown,
    NoBuffer,
    BadDescriptor,
}

/// One virtio-net port: lives as long as the topology says, across guest connections.
pub struct NetPort {
    config: NetPortConfig,
    /// The switch's handle for this port (opaque here).
    pub key: usize,
    counters: NetCounters,
    conn: ArcSwapOption<Connection>,
    /// Whether `conn` is set: a cheap check for the busy-poll loop.
    live: AtomicBool,
    connections: AtomicU64,
}

impl NetPort {
    /// A port with no guest connected yet.
    pub fn new(config: NetPortConfig, key: usize) -> Arc<NetPort> {
        Arc::new(NetPort {
            config,
            key,
            counters: NetCounters::default(),
            conn: ArcSwapOption::empty(),
            live: AtomicBool::new(false),
            connections: AtomicU64::new(0),
        })
    }

    /// The port's configuration.
    pub fn config(&self) -> &NetPortConfig {
        &self.config
    }

    /// The port's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// A copy of the counters.
    pub fn counters(&self) -> NetCountersSnapshot {
        self.counters.snapshot()
    }

    /// Whether a guest is connected right now.
    pub fn is_connected(&self) -> bool {
        self.conn.load().is_some()
    }

    /// How many guest connections this port has served.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Copies `frame` into this port's guest's RX ring (queue pair chosen from `hint`),
    /// counting the outcome. The guest is not interrupted until `notify`.
    pub fn deliver(&self, frame: &TxFrame<'_>, hint: u16) -> Result<(), RxDrop> {
        let mut res = Ok(());
        self.deliver_batch(std::iter::once((frame, FrameEdit::NONE)), hint, |r| res = r);
        res
    }

    /// `frame` with `edit` applied as plain Ethernet frames: offloads completed in software
    /// (checksum filled in, TCP super-frames cut into segments). For frames that must outlive
    /// the sender's ring (held back by an impairment).
    pub fn plain_frames(&self, frame: &TxFrame<'_>, edit: FrameEdit, out: impl FnMut(&[u8])) {
        plain_frames(frame, edit, &self.counters, out);
    }

    /// Copies plain frames (no offloads) into this port's guest's RX ring, in order, under
    /// one lock, counting each outcome. The guest is not interrupted until `notify`.
    pub fn deliver_bytes(&self, frames: &[Vec<u8>], hint: u16) {
        let c = &self.counters;
        match &*self.conn.load() {
            Some(conn) => {
                conn.deliver_batch(frames.iter().map(|f| RxItem::Bytes(f)), hint, c, |_| {})
            }
            None => {
                for _ in frames {
                    c.count_drop(RxDrop::LinkDown);
                }
            }
        }
    }

    /// Copies `frames`, in order, into this port's guest's RX ring under one lock of the
    /// ring (queue pair chosen from `hint`), counting each outcome and reporting it to
    /// `outcome`. The guest is not interrupted until `notify`.
    pub fn deliver_batch<'f, 'a: 'f>(
        &self,
        frames: impl Iterator<Item = (&'f TxFrame<'a>, FrameEdit)>,
        hint: u16,
        mut outcome: impl FnMut(Result<(), RxDrop>),
    ) {
        let c = &self.counters;
        match &*self.conn.load() {
            Some(conn) => {
                conn.deliver_batch(frames.map(|(f, e)| RxItem::Frame(f, e)), hint, c, outcome)
            }
            None => {
                for _ in frames {
                    c.count_drop(RxDrop::LinkDown);
                    outcome(Err(RxDrop::LinkDown));
                }
            }
        }
    }

    /// Interrupts the guest for every RX ring that got frames since the last call (and
    /// whose driver asked to be interrupted, under EVENT_IDX).
    pub fn notify(&self) {
        if let Some(conn) = &*self.conn.load() {
            let n = conn.notify_rx();
            NetCounters::add(&self.counters.tx_notifications, n);
        }
    }
}

/// One guest connection's view of its rings and memory, shared with other ports' workers.
struct Connection {
    mem: GuestMemoryAtomic<GuestMemoryMmap>,
    features: AtomicU64,
    event_idx: AtomicBool,
    /// Busy-poll mode: whether the guest's TX kicks are currently on.
    tx_kicks: AtomicBool,
    vrings: OnceLock<Vec<VringRwLock>>,
    rx_pending: Vec<AtomicBool>,
    /// Per RX queue: the used index at the last interrupt decision.
    rx_checked: Vec<AtomicU16>,
    /// Per ring: found unusable (see `NetCounters::ring_broken`).
    broken: Vec<AtomicBool>,
}

impl Connection {
    /// Ring `q`'s avail index is more than a ring ahead of what was used: the guest broke
    /// the ring. Counted once per ring and connection; the ring stays unused until the
    /// guest resets the device (a new connection).
    fn ring_broken(&self, q: usize, c: &NetCounters) {
        if let Some(b) = self.broken.get(q)
            && !b.swap(true, Ordering::Relaxed)
        {
            NetCounters::add(&c.ring_broken, 1);
        }
    }

    /// Delivers `frames` (or, for a receiver that cannot take a frame's offloads, the frame
    /// completed in software: checksummed, or cut into TCP segments), counting what was
    /// delivered and what was dropped. One ring lock and one read of the avail index for the
    /// whole batch; the used entries are written after all the copies.
    fn deliver_batch<'f, 'a: 'f>(
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
        let pairs = vrings.len() / 2;
        let mem = self.mem.memory();
        let features = self.features.load(Ordering::Relaxed);
        let mrg = features & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0;
        let rx_offloads = Offloads::for_guest_rx(features);
        for i in 0..pairs {
            let q = (hint as usize + i) % pairs;
            let vring = &vrings[2 * q];
            let mut st = vring.get_mut();
            if !st.is_enabled() || !st.get_queue().ready() {
                continue;
            }
            USED.with_borrow_mut(|used| {
                used.clear();
                let mut done = (0u64, 0u64);
                if let Ok(mut avail) = st.get_queue_mut().iter(&*mem) {
                    // Places one frame (counting it) and reports the outcome.
                    let mut put = |src: Source<'_, '_>, hdr: [u8; VNET_HDR_LEN]| {
                        let r = place_rx(&mut avail, &mem, src, hdr, mrg, used);
                        match r {
                            Ok(()) => {
                                done.0 += 1;
                                done.1 += src.len() as u64;
                            }
                            Err(e) => c.count_drop(e),
                        }
                        r
                    };
                    for item in frames.by_ref() {
                        let (frame, edit) = match item {
                            RxItem::Frame(f, e) => (f, e),
                            RxItem::Bytes(b) => {
                                outcome(put(Source::Bytes(b), [0; VNET_HDR_LEN]));
                                continue;
                            }
                        };
                        let meta = frame.meta().shifted(edit.shift());
                        let res = if meta.fits(rx_offloads) {
                            put(Source::Guest(frame, edit), meta.rx_header())
                        } else {
                            // Completed in software: delivered if any segment was.
                            let mut any = false;
                            let r = SCRATCH.with_borrow_mut(|(whole, seg)| {
                                frame.copy_into(whole);
                                edit.apply(whole);
                                let put_seg = |bytes: &[u8]| {
                                    let r = put(Source::Bytes(bytes), [0; VNET_HDR_LEN]);
                                    any |= r.is_ok();
                                    r
                                };
                                complete_in_software(whole, seg, &meta, put_seg, c)
                            });
                            if any { Ok(()) } else { r }
                        };
                        outcome(res);
                    }
                } else {
                    // An avail index that leapt ahead: the frames are the guest's loss.
                    self.ring_broken(2 * q, c);
                    for _ in frames.by_ref() {
                        c.count_drop(RxDrop::BadDescriptor);
                        outcome(Err(RxDrop::BadDescriptor));
                    }
                }
                publish_used(&mut st, &mem, used);
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
    fn notify_rx(&self) -> u64 {
        let Some(vrings) = self.vrings.get() else {
            return 0;
        };
        let mem = self.mem.memory();
        let event_idx = self.event_idx.load(Ordering::Relaxed);
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
                wants_interrupt(&st, &mem, event_idx, old, new)
            };
            if wanted && vring.signal_used_queue().is_ok() {
                sent += 1;
            }
        }
        sent
    }
}

thread_local! {
    /// Used entries (head, length) of the RX batch being delivered.
    static USED: std::cell::RefCell<Vec<(u16, u32)>> = const { std::cell::RefCell::new(Vec::new()) };
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
fn complete_in_software(
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
enum RxItem<'f, 'a> {
    Frame(&'f TxFrame<'a>, FrameEdit),
    Bytes(&'f [u8]),
}

/// What is written into an RX ring: a guest's frame, or bytes built here.
#[derive(Clone, Copy)]
enum Source<'f, 'a> {
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

/// Places one frame in a guest's RX ring, behind the virtio-net header `hdr` (whose
/// num_buffers is filled in here): takes chains from `avail`, copies, and records the used
/// entries in `used` (written to the ring by the caller). Chains taken for a frame that does
/// not fit are given back untouched; a malformed chain is returned with length 0.
fn place_rx(
    avail: &mut AvailIter<'_, &GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    frame: Source<'_, '_>,
    mut hdr: [u8; VNET_HDR_LEN],
    mrg: bool,
    used: &mut Vec<(u16, u32)>,
) -> Result<(), RxDrop> {
    let need = VNET_HDR_LEN + frame.len();
    let mut slices = ArrayVec::<VolatileSlice<'_>, MAX_RX_SEGS>::new();
    // (head, capacity) of each chain taken.
    let mut chains = ArrayVec::<(u16, usize), MAX_RX_CHAINS>::new();
    let mut cap = 0usize;
    let mut bad = false;
    while cap < need && !chains.is_full() {
        let Some(chain) = avail.next() else {
            break;
        };
        let head = chain.head_index();
        let mut c = 0usize;
        let mut cut_short = false;
        for desc in chain {
            cut_short = desc.has_next();
            if !desc.is_write_only() {
                bad = true;
                break;
            }
            let resolved = for_each_piece(mem, desc.addr(), desc.len() as usize, |s| {
                // Pieces past the limit are not used; the chain just holds less.
                if !s.is_empty() && slices.try_push(s).is_ok() {
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
        used.extend(chains.iter().map(|&(head, _)| (head, 0)));
        return Err(RxDrop::BadDescriptor);
    }
    if cap < need {
        // Not enough buffers: hand the chains back untouched for the next frame.
        for _ in 0..chains.len() {
            avail.go_to_previous_position();
        }
        return Err(RxDrop::NoBuffer);
    }
    hdr[10..12].copy_from_slice(&(chains.len() as u16).to_le_bytes());
    let mut w = ScatterWriter::new(&slices);
    let written = w.write_bytes(&hdr)
        && match frame {
            Source::Guest(f, e) => w.write_frame_edited(f, e),
            Source::Bytes(b) => w.write_bytes(b),
        };
    if !written {
        used.extend(chains.iter().map(|&(head, _)| (head, 0)));
        return Err(RxDrop::BadDescriptor);
    }
    let mut left = need;
    for &(head, c) in &chains {
        let n = c.min(left);
        left -= n;
        used.push((head, n as u32));
    }
    Ok(())
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
    let r = match queue.iter(mem) {
        Ok(mut avail) => place_rx(
            &mut avail,
            mem,
            Source::Bytes(frame),
            [0; VNET_HDR_LEN],
            mrg,
            &mut used,
        ),
        // An avail index more than a ring ahead: the ring is unusable.
        Err(_) => Err(RxDrop::BadDescriptor),
    };
    (r, used)
}

/// The worker thread (of `threads`) that serves queue pair `pair`: round-robin.
fn worker_of(pair: usize, threads: usize) -> usize {
    pair % threads.max(1)
}

/// Event ids above the queues (`num_queues` itself is the library's exit/enable event).
const ATTACH_EVENT_OFFSET: u16 = 1;
const RESUME_EVENT_OFFSET: u16 = 2;

/// TX batches one kick may drain before its worker gives way (and resumes it through its
/// resume eventfd): a guest that keeps its ring full, or a hostile ring that refills itself
/// (an avail ring laid over the used ring), cannot hold a worker thread, starve the other
/// queue pairs on it, or keep it from seeing the end of the connection.
const TX_BUDGET: usize = 64;

/// The `VhostUserBackend` for one connection of one port.
pub struct NetBackend {
    port: Arc<NetPort>,
    switch: Arc<dyn FrameSwitch>,
    conn: Arc<Connection>,
    masks: Vec<u64>,
    attach: Vec<EventFd>,
    /// Per worker thread: wakes it to resume TX rings that used up their budget.
    resume: Vec<EventFd>,
    /// Per queue pair: its TX ring gave way and must be resumed.
    tx_resume: Vec<AtomicBool>,
    /// The workers' exit events (closed when the connection ends: `crate::exit`).
    pub exit_events: Arc<crate::exit::ExitEvents>,
    attached_vrings: Mutex<Vec<Option<VringRwLock>>>,
    attached_threads: AtomicUsize,
    /// Set (and signalled) once every worker reported its rings.
    attached: (Mutex<bool>, std::sync::Condvar),
}

impl NetBackend {
    /// A backend for a new connection of `port`, sharing `mem` with the daemon.
    pub fn new(
        port: Arc<NetPort>,
        switch: Arc<dyn FrameSwitch>,
        mem: GuestMemoryAtomic<GuestMemoryMmap>,
    ) -> io::Result<Arc<NetBackend>> {
        let pairs = port.config.queue_pairs.clamp(1, MAX_QUEUE_PAIRS) as usize;
        let threads = (port.config.threads.max(1) as usize).min(pairs);
        // Spread pairs round-robin over the threads; each pair stays in one thread.
        let mut masks = vec![0u64; threads];
        for p in 0..pairs {
            masks[worker_of(p, threads)] |= 0b11 << (2 * p);
        }
        let attach = (0..threads)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        let resume = (0..threads)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Arc::new(NetBackend {
            conn: Arc::new(Connection {
                mem,
                features: AtomicU64::new(0),
                event_idx: AtomicBool::new(false),
                tx_kicks: AtomicBool::new(true),
                vrings: OnceLock::new(),
                rx_pending: (0..pairs).map(|_| AtomicBool::new(false)).collect(),
                rx_checked: (0..pairs).map(|_| AtomicU16::new(0)).collect(),
                broken: (0..2 * pairs).map(|_| AtomicBool::new(false)).collect(),
            }),
            port,
            switch,
            masks,
            attach,
            resume,
            tx_resume: (0..pairs).map(|_| AtomicBool::new(false)).collect(),
            exit_events: crate::exit::ExitEvents::new(),
            attached_vrings: Mutex::new(vec![None; 2 * pairs]),
            attached_threads: AtomicUsize::new(0),
            attached: (Mutex::new(false), std::sync::Condvar::new()),
        }))
    }

    /// The event id workers use to hand their vrings to this backend.
    pub fn attach_event(&self) -> u64 {
        (self.num_queues() as u64) + u64::from(ATTACH_EVENT_OFFSET)
    }

    /// The event id of the workers' resume eventfds (see `resume_fd`).
    pub fn resume_event(&self) -> u64 {
        (self.num_queues() as u64) + u64::from(RESUME_EVENT_OFFSET)
    }

    /// The eventfd that makes worker `thread` resume TX rings that gave way.
    pub fn resume_fd(&self, thread: usize) -> Option<&EventFd> {
        self.resume.get(thread)
    }

    /// The eventfd that makes worker `thread` report its vrings (see `attach_event`).
    pub fn attach_fd(&self, thread: usize) -> Option<&EventFd> {
        self.attach.get(thread)
    }

    /// Publishes this connection on the port: other ports can deliver from now on.
    fn publish(&self) {
        self.port.conn.store(Some(self.conn.clone()));
        self.port.live.store(true, Ordering::Release);
        self.port.connections.fetch_add(1, Ordering::Relaxed);
        self.switch.link_changed(&self.port, true);
    }

    /// Takes this connection off the port (the guest went away).
    pub fn unpublish(&self) {
        let current = self.port.conn.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.conn)) {
            self.port.live.store(false, Ordering::Release);
            self.port.conn.store(None);
            self.switch.link_changed(&self.port, false);
        }
    }

    /// Global queue index of a worker's local event index.
    fn global_queue(&self, thread: usize, local: u16) -> Option<usize> {
        let mask = *self.masks.get(thread)?;
        (0..64).filter(|b| mask & (1 << b) != 0).nth(local as usize)
    }

    fn on_attach(&self, thread: usize, vrings: &[VringRwLock]) -> io::Result<()> {
        if let Some(fd) = self.attach.get(thread) {
            let _ = fd.read();
        }
        let mut all = self
            .attached_vrings
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        for (local, v) in vrings.iter().enumerate() {
            if let Some(g) = self.global_queue(thread, local as u16) {
                all[g] = Some(v.clone());
            }
        }
        if self.attached_threads.fetch_add(1, Ordering::AcqRel) + 1 == self.masks.len() {
            let complete: Option<Vec<VringRwLock>> = all.iter().cloned().collect();
            if let Some(v) = complete {
                let _ = self.conn.vrings.set(v);
                drop(all);
                self.publish();
            }
            let (done, cv) = &self.attached;
            *done.lock().map_err(|_| io::Error::other("poisoned"))? = true;
            cv.notify_all();
        }
        Ok(())
    }

    /// Waits (at most `timeout`) until every worker has handed over its rings and the
    /// connection is published on the port. Called before the VMM's first message is relayed,
    /// so a guest whose setup completed can always be delivered to.
    pub fn wait_attached(&self, timeout: std::time::Duration) -> bool {
        let (done, cv) = &self.attached;
        let Ok(guard) = done.lock() else {
            return false;
        };
        cv.wait_timeout_while(guard, timeout, |d| !*d)
            .map(|(d, _)| *d)
            .unwrap_or(false)
    }

    /// Drains a guest TX ring in batches, handing frames to the switch, until it is empty
    /// with notifications re-enabled (EVENT_IDX) — or, in busy-poll mode, wakes the poller.
    fn process_tx(&self, pair: u16, vring: &VringRwLock) -> io::Result<()> {
        if let Some(poller) = &self.port.config.poller {
            poller.wake();
            return Ok(());
        }
        // No kicks while draining (VRING_USED_F_NO_NOTIFY, or EVENT_IDX's avail_event left
        // behind); on again when empty, and drain again if work raced in.
        let mut budget = TX_BUDGET;
        loop {
            vring.disable_notification().map_err(io::Error::other)?;
            while drain_tx_batch(&self.port, &self.conn, &*self.switch, pair, vring)? > 0 {
                budget -= 1;
                if budget == 0 {
                    return self.give_way(pair);
                }
            }
            if !vring.enable_notification().map_err(io::Error::other)? {
                return Ok(());
            }
            budget = budget.saturating_sub(1);
            if budget == 0 {
                return self.give_way(pair);
            }
        }
    }

    /// Leaves TX pair `pair` for now, notifications still off, and has its worker come back
    /// to it after the other events it has (other rings, the end of the connection).
    fn give_way(&self, pair: u16) -> io::Result<()> {
        if let Some(flag) = self.tx_resume.get(usize::from(pair)) {
            flag.store(true, Ordering::Relaxed);
        }
        match self
            .resume
            .get(worker_of(usize::from(pair), self.masks.len()))
        {
            Some(fd) => fd.write(1),
            None => Ok(()),
        }
    }

    /// Worker `thread` resumes the TX rings that gave way.
    fn on_resume(&self, thread: usize, vrings: &[VringRwLock]) -> io::Result<()> {
        if let Some(fd) = self.resume.get(thread) {
            let _ = fd.read();
        }
        for (local, vring) in vrings.iter().enumerate() {
            let Some(q) = self.global_queue(thread, local as u16) else {
                break;
            };
            let pair = q / 2;
            if q % 2 == 1
                && self
                    .tx_resume
                    .get(pair)
                    .is_some_and(|f| f.swap(false, Ordering::Relaxed))
            {
                self.process_tx(pair as u16, vring)?;
            }
        }
        Ok(())
    }
}

/// Puts `entries` (head, length) in the used ring of `st`'s queue and publishes them with a
/// single store of the used index, after the elements. (`virtio-queue`'s `add_used` stores
/// the index once per entry, a cache line bounced to the guest's CPU every time.) Returns
/// the used index before and after.
fn publish_used(
    st: &mut vhost_user_backend::VringState<GuestMemoryAtomic<GuestMemoryMmap>>,
    mem: &GuestMemoryMmap,
    entries: &[(u16, u32)],
) -> (u16, u16) {
    let q = st.get_queue_mut();
    let (ring, size) = (q.used_ring(), q.size());
    let old = q.next_used();
    if entries.is_empty() || size == 0 {
        return (old, old);
    }
    let mut idx = old;
    // One translation of the used ring for the whole batch (per entry if the ring straddles
    // two memory regions).
    match mem.get_slice(GuestAddress(ring), 4 + 8 * usize::from(size)) {
        Ok(used) => {
            for &(head, len) in entries {
                let at = 4 + 8 * usize::from(idx % size);
                let _ = used.write_obj(u32::from(head).to_le(), at);
                let _ = used.write_obj(len.to_le(), at + 4);
                idx = idx.wrapping_add(1);
            }
        }
        Err(_) => {
            for &(head, len) in entries {
                let at = ring + 4 + 8 * u64::from(idx % size);
                let _ = mem.write_obj(u32::from(head).to_le(), GuestAddress(at));
                let _ = mem.write_obj(len.to_le(), GuestAddress(at + 4));
                idx = idx.wrapping_add(1);
            }
        }
    }
    let _ = mem.store(
        idx.to_le(),
        GuestAddress(ring + 2),
        std::sync::atomic::Ordering::Release,
    );
    q.set_next_used(idx);
    (old, idx)
}

/// Whether the guest wants an interrupt for used entries `old..new` of the queue: under
/// EVENT_IDX when its `used_event` lies in that range, otherwise unless it set
/// VRING_AVAIL_F_NO_INTERRUPT (polling drivers, such as DPDK's, do).
fn wants_interrupt(
    st: &vhost_user_backend::VringState<GuestMemoryAtomic<GuestMemoryMmap>>,
    mem: &GuestMemoryMmap,
    event_idx: bool,
    old: u16,
    new: u16,
) -> bool {
    if old == new {
        return false;
    }
    let q = st.get_queue();
    let avail = q.avail_ring();
    if event_idx {
        // The used index must be visible before used_event is read.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let at = GuestAddress(avail + 4 + 2 * u64::from(q.size()));
        let Ok(event) = mem.load::<u16>(at, std::sync::atomic::Ordering::Acquire) else {
            return true;
        };
        let event = u16::from_le(event);
        new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
    } else {
        let flags: u16 = mem.read_obj(GuestAddress(avail)).unwrap_or(0);
        u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0
    }
}

/// Takes up to `TX_BATCH` chains from a guest TX ring, hands the good frames to the switch,
/// returns the chains to the guest and interrupts it if it asked. Returns how many chains
/// were taken (0: the ring is empty or stopped).
fn drain_tx_batch(
    port: &NetPort,
    conn: &Connection,
    switch: &dyn FrameSwitch,
    pair: u16,
    vring: &VringRwLock,
) -> io::Result<usize> {
    let mem = conn.mem.memory();
    let offloads = Offloads::from_guest_tx(conn.features.load(Ordering::Relaxed));
    let c = &port.counters;
    let mut heads = ArrayVec::<u16, TX_BATCH>::new();
    let mut infos = ArrayVec::<FrameInfo, TX_BATCH>::new();
    let mut store = SegStore::new();
    {
        let mut st = vring.get_mut();
        if !st.is_enabled() || !st.get_queue().ready() {
            return Ok(0);
        }
        // One read of the avail index for the whole batch.
        let Ok(mut avail) = st.get_queue_mut().iter(&*mem) else {
            conn.ring_broken(2 * usize::from(pair) + 1, c);
            return Ok(0);
        };
        while !heads.is_full() {
            let Some(chain) = avail.next() else {
                break;
            };
            heads.push(chain.head_index());
            match parse_tx_chain(&mem, chain, offloads, &mut store) {
                Ok(info) => infos.push(info),
                Err(e) => NetCounters::add(
                    match e {
                        TxError::BadDescriptor => &c.rx_drop_bad_descriptor,
                        TxError::MissingHeader => &c.rx_drop_missing_header,
                        TxError::Runt => &c.rx_drop_runt,
                        TxError::Oversize => &c.rx_drop_oversize,
                        TxError::TooFragmented => &c.rx_drop_too_fragmented,
                        TxError::BadOffload => &c.rx_drop_bad_offload,
                    },
                    1,
                ),
            }
        }
    }
    let taken = heads.len();
    if taken == 0 {
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
    let used: ArrayVec<(u16, u32), TX_BATCH> = heads.iter().map(|&h| (h, 0)).collect();
    let wanted = {
        let mut st = vring.get_mut();
        let (old, new) = publish_used(&mut st, &mem, &used);
        wants_interrupt(&st, &mem, conn.event_idx.load(Ordering::Relaxed), old, new)
    };
    if wanted && vring.signal_used_queue().is_ok() {
        NetCounters::add(&c.rx_notifications, 1);
    }
    Ok(taken)
}

/// The busy-poll thread's handle: guests' kicks wake it when it sleeps.
#[derive(Debug)]
pub struct Poller {
    wake: EventFd,
    sleeping: AtomicBool,
}

impl Poller {
    /// A poller handle (the thread itself is the switch's).
    pub fn new() -> io::Result<Arc<Poller>> {
        Ok(Arc::new(Poller {
            wake: EventFd::new(EFD_NONBLOCK)?,
            sleeping: AtomicBool::new(false),
        }))
    }

    /// A guest kicked a TX ring: wake the poller if it sleeps.
    pub fn wake(&self) {
        if self.sleeping.load(Ordering::Acquire) {
            let _ = self.wake.write(1);
        }
    }

    /// Sleeps until a kick (or `timeout`). Call `prepare_sleep` first, then re-enable the
    /// rings' notifications, then this.
    pub fn sleep(&self, timeout: std::time::Duration) {
        use std::os::fd::AsRawFd;
        // SAFETY: the eventfd is owned by self and outlives the call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.wake.as_raw_fd()) };
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
        let _ = self.wake.read();
        self.sleeping.store(false, Ordering::Release);
    }

    /// Marks the poller as going to sleep: kicks from now on write the eventfd.
    pub fn prepare_sleep(&self) {
        self.sleeping.store(true, Ordering::Release);
    }
}

impl NetPort {
    /// Busy-poll mode: drains one batch from each running TX ring of this port's guest.
    /// Returns the number of chains taken.
    pub fn poll_tx(&self, switch: &dyn FrameSwitch) -> usize {
        if !self.live.load(Ordering::Relaxed) {
            return 0;
        }
        let Some(conn) = &*self.conn.load() else {
            return 0;
        };
        let Some(vrings) = conn.vrings.get() else {
            return 0;
        };
        if conn.tx_kicks.swap(false, Ordering::Relaxed) {
            for vring in vrings.iter().skip(1).step_by(2) {
                let _ = vring.disable_notification();
            }
        }
        let mut n = 0;
        for (q, vring) in vrings.iter().enumerate().skip(1).step_by(2) {
            n += drain_tx_batch(self, conn, switch, (q / 2) as u16, vring).unwrap_or(0);
        }
        n
    }

    /// Busy-poll mode: turns the guest's TX kicks on (before sleeping) or off (while
    /// polling). Returns true if work arrived meanwhile (do not sleep then).
    pub fn set_tx_notifications(&self, on: bool) -> bool {
        let Some(conn) = &*self.conn.load() else {
            return false;
        };
        let Some(vrings) = conn.vrings.get() else {
            return false;
        };
        conn.tx_kicks.store(on, Ordering::Relaxed);
        let mut more = false;
        for vring in vrings.iter().skip(1).step_by(2) {
            if on {
                more |= vring.enable_notification().unwrap_or(false);
            } else {
                let _ = vring.disable_notification();
            }
        }
        more
    }
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        2 * self.conn.rx_pending.len()
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        let mut f = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_NET_F_MRG_RXBUF)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_NET_F_STATUS)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if self.port.config.offloads {
            // Checksum and TCP segmentation offloads both ways: a guest's TSO frame reaches a
            // guest that takes it as is, and is completed in software for one that does not.
            for b in [
                VIRTIO_NET_F_CSUM,
                VIRTIO_NET_F_GUEST_CSUM,
                VIRTIO_NET_F_HOST_TSO4,
                VIRTIO_NET_F_HOST_TSO6,
                VIRTIO_NET_F_HOST_ECN,
                VIRTIO_NET_F_GUEST_TSO4,
                VIRTIO_NET_F_GUEST_TSO6,
                VIRTIO_NET_F_GUEST_ECN,
            ] {
                f |= 1 << b;
            }
        }
        if self.conn.rx_pending.len() > 1 {
            f |= 1 << VIRTIO_NET_F_MQ;
        }
        if self.port.config.mac.is_some() {
            f |= 1 << VIRTIO_NET_F_MAC;
        }
        if self.port.config.mtu.is_some() {
            f |= 1 << VIRTIO_NET_F_MTU;
        }
        f
    }

    fn acked_features(&self, features: u64) {
        self.conn.features.store(features, Ordering::Relaxed);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&self, enabled: bool) {
        self.conn.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // virtio_net_config: mac[6], status u16, max_virtqueue_pairs u16, mtu u16.
        let mut cfg = [0u8; 12];
        cfg[0..6].copy_from_slice(&self.port.config.mac.unwrap_or_default());
        cfg[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        cfg[8..10].copy_from_slice(&(self.conn.rx_pending.len() as u16).to_le_bytes());
        cfg[10..12].copy_from_slice(&self.port.config.mtu.unwrap_or(0).to_le_bytes());
        let mut out = vec![0u8; size as usize];
        let start = (offset as usize).min(cfg.len());
        let n = (cfg.len() - start).min(out.len());
        out[..n].copy_from_slice(&cfg[start..start + n]);
        out
    }

    fn update_memory(&self, _mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        // The daemon updates the same GuestMemoryAtomic we hold; nothing to do.
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        self.masks.clone()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // A fresh pair per worker and per connection: a reused one would stop the next
        // connection's workers at once.
        self.exit_events.pair()
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        thread_id: usize,
    ) -> io::Result<()> {
        if u64::from(device_event) == self.attach_event() {
            return self.on_attach(thread_id, vrings);
        }
        if u64::from(device_event) == self.resume_event() {
            return self.on_resume(thread_id, vrings);
        }
        if evset != EventSet::IN {
            return Ok(());
        }
        let Some(q) = self.global_queue(thread_id, device_event) else {
            return Ok(());
        };
        let Some(vring) = vrings.get(device_event as usize) else {
            return Ok(());
        };
        if q % 2 == 1 {
            self.process_tx((q / 2) as u16, vring)?;
        } else {
            // RX kicks only say the guest posted buffers: frames are never queued waiting for
            // them, so ask the guest not to kick RX at all (each kick costs it an exit and us
            // a wake-up).
            let _ = vring.disable_notification();
        }
        Ok(())
    }
}
