//! The vhost-user virtio-net device: feature negotiation, the TX path (guest -> switch) and
//! the RX path (switch -> guest). Which ports a frame goes to is not decided here: the TX
//! path hands batches to a `FrameSwitch`, which calls `NetPort::deliver` on the egress
//! ports and `NetPort::notify` once per batch.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{
    GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::counters::{NetCounters, NetCountersSnapshot};
use crate::frame::{
    MAX_RX_CHAINS, MAX_RX_SEGS, ScatterWriter, TxError, TxFrame, VNET_HDR_LEN, parse_tx_chain,
};
use crate::offload::{self, Gso, Offloads};

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
        let c = &self.counters;
        match &*self.conn.load() {
            Some(conn) => conn.deliver(frame, hint, c),
            None => {
                c.count_drop(RxDrop::LinkDown);
                Err(RxDrop::LinkDown)
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
    vrings: OnceLock<Vec<VringRwLock>>,
    rx_pending: Vec<AtomicBool>,
}

impl Connection {
    /// Delivers `frame` (or, for a receiver that cannot take its offloads, the frame completed
    /// in software: checksummed, or cut into TCP segments), counting what was delivered and
    /// what was dropped.
    fn deliver(&self, frame: &TxFrame<'_>, hint: u16, c: &NetCounters) -> Result<(), RxDrop> {
        let Some(vrings) = self.vrings.get() else {
            c.count_drop(RxDrop::LinkDown);
            return Err(RxDrop::LinkDown);
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
            let mut delivered = 0u64;
            let res = if frame.meta.fits(rx_offloads) {
                let r = write_rx(
                    &mut st,
                    &mem,
                    Source::Guest(frame),
                    frame.meta.rx_header(),
                    mrg,
                );
                match r {
                    Ok(()) => {
                        delivered = 1;
                        NetCounters::add(&c.tx_bytes, frame.len() as u64);
                    }
                    Err(e) => c.count_drop(e),
                }
                r
            } else {
                SCRATCH.with_borrow_mut(|(whole, seg)| {
                    frame.copy_into(whole);
                    complete_in_software(
                        whole,
                        seg,
                        frame,
                        |bytes| {
                            let r = write_rx(
                                &mut st,
                                &mem,
                                Source::Bytes(bytes),
                                [0; VNET_HDR_LEN],
                                mrg,
                            );
                            if r.is_ok() {
                                delivered += 1;
                                NetCounters::add(&c.tx_bytes, bytes.len() as u64);
                            } else if let Err(e) = r {
                                c.count_drop(e);
                            }
                            r
                        },
                        c,
                    )
                })
            };
            drop(st);
            NetCounters::add(&c.tx_frames, delivered);
            if delivered > 0 || res == Err(RxDrop::BadDescriptor) {
                self.rx_pending[q].store(true, Ordering::Relaxed);
            }
            return if delivered > 0 { Ok(()) } else { res };
        }
        c.count_drop(RxDrop::LinkDown);
        Err(RxDrop::LinkDown)
    }

    /// Signals the RX rings with new used entries; returns how many interrupts were sent.
    fn notify_rx(&self) -> u64 {
        let Some(vrings) = self.vrings.get() else {
            return 0;
        };
        let mut sent = 0;
        for (q, pending) in self.rx_pending.iter().enumerate() {
            if pending.swap(false, Ordering::Relaxed) {
                let vring = &vrings[2 * q];
                if vring.needs_notification().unwrap_or(true) && vring.signal_used_queue().is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    }
}

thread_local! {
    /// Buffers for completing offloads in software: the whole frame, and one segment.
    static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Completes `whole` (a copy of `frame`) for a receiver without offloads and hands each
/// resulting frame to `put`. Returns the last error if nothing could be delivered.
fn complete_in_software(
    whole: &mut [u8],
    seg: &mut Vec<u8>,
    frame: &TxFrame<'_>,
    mut put: impl FnMut(&[u8]) -> Result<(), RxDrop>,
    c: &NetCounters,
) -> Result<(), RxDrop> {
    let meta = frame.meta;
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

/// What is written into an RX ring: a guest's frame, or bytes built here.
#[derive(Clone, Copy)]
enum Source<'f, 'a> {
    Guest(&'f TxFrame<'a>),
    Bytes(&'f [u8]),
}

impl Source<'_, '_> {
    fn len(&self) -> usize {
        match self {
            Source::Guest(f) => f.len(),
            Source::Bytes(b) => b.len(),
        }
    }
}

/// Places one frame in a guest's RX ring (the ring's lock is held by the caller), behind the
/// virtio-net header `hdr` (whose num_buffers is filled in here).
fn write_rx(
    st: &mut vhost_user_backend::VringState<GuestMemoryAtomic<GuestMemoryMmap>>,
    mem: &GuestMemoryMmap,
    frame: Source<'_, '_>,
    mut hdr: [u8; VNET_HDR_LEN],
    mrg: bool,
) -> Result<(), RxDrop> {
    let need = VNET_HDR_LEN + frame.len();
    let mut slices = ArrayVec::<VolatileSlice<'_>, MAX_RX_SEGS>::new();
    // (head, capacity) of each chain taken.
    let mut chains = ArrayVec::<(u16, usize), MAX_RX_CHAINS>::new();
    let mut cap = 0usize;
    let mut bad = false;
    {
        let queue = st.get_queue_mut();
        while cap < need && !chains.is_full() {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
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
                for piece in mem.get_slices(desc.addr(), desc.len() as usize) {
                    match piece {
                        Ok(s) if !s.is_empty() => {
                            // Pieces past the limit are not used; the chain just holds less.
                            if slices.try_push(s).is_ok() {
                                c += s.len();
                            }
                        }
                        Ok(_) => {}
                        Err(_) => bad = true,
                    }
                }
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
        if !bad && cap < need {
            // Not enough buffers: hand the chains back untouched for the next frame.
            for _ in 0..chains.len() {
                queue.go_to_previous_position();
            }
            return Err(RxDrop::NoBuffer);
        }
    }
    if bad {
        // The guest broke the ring's rules: return what was taken, empty, and drop.
        for &(head, _) in &chains {
            let _ = st.add_used(head, 0);
        }
        return Err(RxDrop::BadDescriptor);
    }
    hdr[10..12].copy_from_slice(&(chains.len() as u16).to_le_bytes());
    let mut w = ScatterWriter::new(&slices);
    let written = w.write_bytes(&hdr)
        && match frame {
            Source::Guest(f) => w.write_frame(f),
            Source::Bytes(b) => w.write_bytes(b),
        };
    if !written {
        for &(head, _) in &chains {
            let _ = st.add_used(head, 0);
        }
        return Err(RxDrop::BadDescriptor);
    }
    let mut left = need;
    for &(head, c) in &chains {
        let n = c.min(left);
        left -= n;
        let _ = st.add_used(head, n as u32);
    }
    Ok(())
}

/// Event ids above the queues (`num_queues` itself is the library's exit/enable event).
const ATTACH_EVENT_OFFSET: u16 = 1;

/// The `VhostUserBackend` for one connection of one port.
pub struct NetBackend {
    port: Arc<NetPort>,
    switch: Arc<dyn FrameSwitch>,
    conn: Arc<Connection>,
    event_idx: AtomicBool,
    masks: Vec<u64>,
    attach: Vec<EventFd>,
    attached_vrings: Mutex<Vec<Option<VringRwLock>>>,
    attached_threads: AtomicUsize,
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
            masks[p % threads] |= 0b11 << (2 * p);
        }
        let attach = (0..threads)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Arc::new(NetBackend {
            conn: Arc::new(Connection {
                mem,
                features: AtomicU64::new(0),
                vrings: OnceLock::new(),
                rx_pending: (0..pairs).map(|_| AtomicBool::new(false)).collect(),
            }),
            port,
            switch,
            event_idx: AtomicBool::new(false),
            masks,
            attach,
            attached_vrings: Mutex::new(vec![None; 2 * pairs]),
            attached_threads: AtomicUsize::new(0),
        }))
    }

    /// The event id workers use to hand their vrings to this backend.
    pub fn attach_event(&self) -> u64 {
        (self.num_queues() as u64) + u64::from(ATTACH_EVENT_OFFSET)
    }

    /// The eventfd that makes worker `thread` report its vrings (see `attach_event`).
    pub fn attach_fd(&self, thread: usize) -> Option<&EventFd> {
        self.attach.get(thread)
    }

    /// Publishes this connection on the port: other ports can deliver from now on.
    fn publish(&self) {
        self.port.conn.store(Some(self.conn.clone()));
        self.port.connections.fetch_add(1, Ordering::Relaxed);
        self.switch.link_changed(&self.port, true);
    }

    /// Takes this connection off the port (the guest went away).
    pub fn unpublish(&self) {
        let current = self.port.conn.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.conn)) {
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
        }
        Ok(())
    }

    /// Drains a guest TX ring in batches, handing frames to the switch.
    fn process_tx(&self, pair: u16, vring: &VringRwLock) -> io::Result<()> {
        let mem = self.conn.mem.memory();
        let event_idx = self.event_idx.load(Ordering::Relaxed);
        let offloads = Offloads::from_guest_tx(self.conn.features.load(Ordering::Relaxed));
        let c = &self.port.counters;
        loop {
            if event_idx {
                vring.disable_notification().map_err(io::Error::other)?;
            }
            loop {
                let mut heads = ArrayVec::<u16, TX_BATCH>::new();
                let mut frames = ArrayVec::<TxFrame<'_>, TX_BATCH>::new();
                let mut bytes = 0u64;
                {
                    let mut st = vring.get_mut();
                    if !st.is_enabled() || !st.get_queue().ready() {
                        return Ok(());
                    }
                    while !heads.is_full() {
                        let Some(chain) = st.get_queue_mut().pop_descriptor_chain(&*mem) else {
                            break;
                        };
                        heads.push(chain.head_index());
                        match parse_tx_chain(&mem, chain, offloads) {
                            Ok(f) => {
                                bytes += f.len() as u64;
                                frames.push(f);
                            }
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
                if heads.is_empty() {
                    break;
                }
                NetCounters::add(&c.rx_frames, frames.len() as u64);
                NetCounters::add(&c.rx_bytes, bytes);
                if !frames.is_empty() {
                    self.switch.tx_batch(&self.port, pair, &frames);
                }
                // The frames borrow guest buffers: done with them before handing them back.
                drop(frames);
                {
                    let mut st = vring.get_mut();
                    for h in heads {
                        st.add_used(h, 0).map_err(io::Error::other)?;
                    }
                }
                if vring.needs_notification().unwrap_or(true) {
                    vring.signal_used_queue()?;
                    NetCounters::add(&c.rx_notifications, 1);
                }
            }
            if !event_idx || !vring.enable_notification().map_err(io::Error::other)? {
                return Ok(());
            }
        }
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
        self.event_idx.store(enabled, Ordering::Relaxed);
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
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
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
        }
        // RX kicks only say the guest posted buffers; frames are not queued for it.
        Ok(())
    }
}
