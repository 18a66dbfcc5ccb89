//! The virtio-blk device over vhost-user: one worker thread and one I/O engine per queue.
//!
//! A kick makes the queue's worker take every available chain, check it (`request::parse`),
//! mark it in flight in the VMM-kept region, and hand it to the engine; completions wake the
//! same worker through the engine's eventfd, which writes the status, publishes the used
//! entries and interrupts the guest (EVENT_IDX honoured). A ring being stopped
//! (GET_VRING_BASE) first waits for its requests to finish. After a backend restart the
//! requests still marked in flight are resubmitted, oldest first.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES};
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

pub use super::disk::{
    BlkCounters, Disk, DiskConfig, MAX_QUEUE_SIZE, MAX_QUEUES, MAX_RANGE_SECTORS, MAX_RANGES,
    SEG_MAX, SIZE_MAX,
};
use super::disk::{add, stalled};
use super::engine::QueueIo;
use super::image::{Done, Job};
use super::inflight::{self, Inflight, InflightMsg, QueueInflight};
use super::request::{self, Limits, Op, Parsed, S_IOERR, S_OK, SECTOR, Seg};
use crate::relay::RelayHooks;
use crate::vring::{Desc, GuestMap, SplitRing, UsedRing, wants_interrupt};

/// Chains taken from the avail ring per hold of the ring's lock.
const BATCH: usize = 64;

/// A request between submission and completion.
struct Pending {
    head: u16,
    status: GuestAddress,
    /// Bytes written into guest buffers, status byte included.
    used_len: u32,
    op: OpKind,
    bytes: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Read,
    Write,
    Flush,
    Discard,
    WriteZeroes,
}

/// One queue's state, owned by its worker (the lock is for `stop_vring`).
struct QueueState {
    io: Option<QueueIo>,
    /// Requests in the engine, by its slot number (slots are small and reused).
    pending: Vec<Option<Pending>>,
    /// Scratch for the chain being started.
    descs: Vec<Desc>,
    counter: u64,
    /// Resubmission after a restart is done (or not needed) for this connection.
    recovered: bool,
    done: Vec<Done>,
    /// Requests answered without the engine, published with the next batch.
    answered: Vec<(u16, u32)>,
}

/// How long a worker keeps polling its ring and engine after the last request or
/// completion before it sleeps until the next kick.
const POLL_WINDOW: std::time::Duration = std::time::Duration::from_micros(32);

/// Event ids after the queues (`num_queues` itself is the library's exit event).
const COMPLETION_OFFSET: u64 = 1;
const ENABLED_OFFSET: u64 = 2;

/// The `VhostUserBackend` of one connection of one disk.
pub struct BlkBackend {
    disk: Arc<Disk>,
    mem: GuestMemoryAtomic<GuestMemoryMmap>,
    acked: AtomicU64,
    event_idx: AtomicBool,
    queues: Vec<Mutex<QueueState>>,
    /// Per queue: written when the relay saw the ring enabled (time to resubmit).
    enabled_fds: Vec<EventFd>,
    inflight: Mutex<Option<Arc<Inflight>>>,
    /// Each queue's ring, once its worker saw it (for `stop_vring`).
    vrings: Mutex<Vec<Option<VringRwLock>>>,
    /// The workers' exit events (closed when the connection ends: `crate::exit`).
    pub exit_events: Arc<crate::exit::ExitEvents>,
    /// Guest memory under the SIGBUS guard: a VMM that cuts it ends only this connection.
    guarded: crate::vring::sigbus::GuardedMemory,
}

impl BlkBackend {
    pub fn new(disk: Arc<Disk>, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<Arc<Self>> {
        let n = disk.config.queues.clamp(1, MAX_QUEUES) as usize;
        let mut queues = Vec::with_capacity(n);
        let mut enabled_fds = Vec::with_capacity(n);
        for _ in 0..n {
            let io = disk.image.queue_io(MAX_QUEUE_SIZE as u32)?;
            enabled_fds.push(EventFd::new(EFD_NONBLOCK)?);
            queues.push(Mutex::new(QueueState {
                io: Some(io),
                pending: Vec::new(),
                descs: Vec::new(),
                counter: 1,
                recovered: false,
                done: Vec::new(),
                answered: Vec::new(),
            }));
        }
        add(&disk.counters.connections, 1);
        Ok(Arc::new(BlkBackend {
            disk,
            mem,
            acked: AtomicU64::new(0),
            event_idx: AtomicBool::new(false),
            queues,
            enabled_fds,
            inflight: Mutex::new(None),
            vrings: Mutex::new(vec![None; n]),
            exit_events: crate::exit::ExitEvents::new(),
            guarded: Default::default(),
        }))
    }

    /// The fd each worker thread must listen on for completions, and its event id.
    pub fn completion_listener(&self, q: usize) -> Option<(std::os::fd::RawFd, u64)> {
        let st = self.queues.get(q)?.lock().ok()?;
        Some((
            st.io.as_ref()?.fd(),
            self.num_queues() as u64 + COMPLETION_OFFSET,
        ))
    }

    /// The fd a worker listens on for "your ring was enabled", and its event id.
    pub fn enabled_listener(&self, q: usize) -> Option<(std::os::fd::RawFd, u64)> {
        use std::os::fd::AsRawFd;
        Some((
            self.enabled_fds.get(q)?.as_raw_fd(),
            self.num_queues() as u64 + ENABLED_OFFSET,
        ))
    }

    fn limits(&self) -> Limits {
        let acked = self.acked.load(Ordering::Relaxed);
        Limits {
            capacity: self.disk.image.capacity / SECTOR,
            readonly: self.disk.image.readonly,
            discard: acked & (1 << VIRTIO_BLK_F_DISCARD) != 0,
            write_zeroes: acked & (1 << VIRTIO_BLK_F_WRITE_ZEROES) != 0,
            max_ranges: MAX_RANGES,
            max_range_sectors: MAX_RANGE_SECTORS,
        }
    }

    fn inflight(&self) -> Option<Arc<Inflight>> {
        self.inflight.lock().ok()?.clone()
    }

    /// Splits a chain into its device-readable and device-writable buffers.
    fn buffers(descs: &[Desc]) -> (Vec<Seg>, Vec<Seg>) {
        let (mut r, mut w) = (Vec::new(), Vec::new());
        for d in descs {
            let seg = (GuestAddress(d.addr), d.len);
            if d.is_write_only() {
                w.push(seg)
            } else {
                r.push(seg)
            }
        }
        (r, w)
    }

    /// Checks one chain and submits it, or answers it at once (queued in `st.answered`,
    /// published with the batch's completions).
    fn start(
        &self,
        map: &GuestMap<'_>,
        iq: Option<&QueueInflight<'_>>,
        st: &mut QueueState,
        head: u16,
        descs: &[Desc],
        resubmit: bool,
    ) {
        let c = &self.disk.counters;
        let (r, w) = Self::buffers(descs);
        if let (false, Some(iq)) = (resubmit, iq) {
            st.counter += 1;
            iq.begin(head, st.counter);
        }
        let parsed = request::parse(&r, &w, &self.limits(), |a, out| map.read(a.0, out));
        let answer = |st: &mut QueueState, code: u8, status: GuestAddress, len: u32| {
            let _ = map.write(status.0, &[code]);
            st.answered.push((head, len));
        };
        let req = match parsed {
            Parsed::Bad => {
                add(&c.bad_chains, 1);
                st.answered.push((head, 0));
                return;
            }
            Parsed::Fail { status, code } => {
                add(
                    if code == S_IOERR {
                        &c.io_errors
                    } else {
                        &c.unsupported
                    },
                    1,
                );
                answer(st, code, status, 1);
                return;
            }
            Parsed::Ok(req) => req,
        };
        let (job, op) = match req.op {
            Op::GetId => {
                add(&c.get_ids, 1);
                let id = request::id_bytes(&self.disk.config.serial);
                let mut at = 0usize;
                for &(a, l) in &req.data {
                    let n = (l as usize).min(id.len() - at);
                    if n == 0 || !map.write(a.0, &id[at..at + n]) {
                        break;
                    }
                    at += n;
                }
                answer(st, S_OK, req.status, at as u32 + 1);
                return;
            }
            Op::Read { offset } => (
                Job::Read {
                    offset,
                    data: req.data,
                },
                OpKind::Read,
            ),
            Op::Write { offset } => (
                Job::Write {
                    offset,
                    data: req.data,
                },
                OpKind::Write,
            ),
            Op::Flush => (Job::Flush, OpKind::Flush),
            Op::Discard(r) => (Job::Discard(r), OpKind::Discard),
            Op::WriteZeroes(r) => (Job::WriteZeroes(r), OpKind::WriteZeroes),
        };
        let used_len = if op == OpKind::Read {
            req.data_len as u32 + 1
        } else {
            1
        };
        let Some(io) = st.io.as_mut() else {
            answer(st, S_IOERR, req.status, 1);
            return;
        };
        let slot = io.submit(&self.mem, job);
        add(&c.in_flight, 1);
        let i = slot as usize;
        if st.pending.len() <= i {
            st.pending.resize_with(i + 1, || None);
        }
        st.pending[i] = Some(Pending {
            head,
            status: req.status,
            used_len,
            op,
            bytes: req.data_len,
        });
    }

    /// Publishes used entries (the inflight region told first) and interrupts the guest if
    /// it wants to be (EVENT_IDX or the avail flags, through `crate::vring`).
    fn publish(&self, q: usize, vring: &VringRwLock, entries: &[(u16, u32)]) {
        if entries.is_empty() {
            return;
        }
        let mem = self.mem.memory();
        let map = GuestMap::new(&mem);
        let inflight = self.inflight();
        let iq = inflight.as_ref().and_then(|i| i.queue(q));
        let wanted = {
            let mut st = vring.get_mut();
            let queue = st.get_queue_mut();
            let used = UsedRing::new(&map, queue.used_ring(), queue.size());
            let old = queue.next_used();
            let new = match &iq {
                // With an inflight region, one entry and one index store at a time: the
                // region names the single publication a crash can cut short.
                Some(iq) => entries.iter().fold(old, |idx, &(head, len)| {
                    iq.publishing(head);
                    let idx = used.publish(idx, &[(head, len)]);
                    iq.published(head, idx);
                    idx
                }),
                // Otherwise the batch's elements, then the index once.
                None => used.publish(old, entries),
            };
            queue.set_next_used(new);
            wants_interrupt(&st, &map, self.event_idx.load(Ordering::Relaxed), old, new)
        };
        if wanted {
            let _ = vring.signal_used_queue();
        }
    }

    /// Takes up to `BATCH` available chains of the queue (one hold of the ring's lock, one
    /// read of the avail index) and starts each. Returns how many.
    fn take_batch(
        &self,
        vring: &VringRwLock,
        map: &GuestMap<'_>,
        iq: Option<&QueueInflight<'_>>,
        st: &mut QueueState,
    ) -> usize {
        let mut vst = vring.get_mut();
        // Not ready, or an avail index more than a ring ahead: nothing to take (as
        // virtio-queue's walk refuses it).
        let Some((ring, next)) = SplitRing::of_queue(map, vst.get_queue()) else {
            return 0;
        };
        let Some(mut avail) = ring.avail(next) else {
            return 0;
        };
        let mut descs = std::mem::take(&mut st.descs);
        let mut n = 0;
        while n < BATCH {
            let Some(chain) = avail.next() else { break };
            let head = chain.head();
            descs.clear();
            descs.extend(chain);
            self.start(map, iq, st, head, &descs, false);
            n += 1;
        }
        st.descs = descs;
        vst.get_queue_mut().set_next_avail(avail.position());
        n
    }

    /// Takes every available chain of queue `q` and starts it, answering what completes,
    /// and keeps polling the ring and the engine (notifications off) until nothing happened
    /// for `POLL_WINDOW`: at high request rates the guest need not kick and this thread need
    /// not be woken for every request (QEMU's iothreads poll the same way).
    fn process_queue(&self, q: usize, vring: &VringRwLock) -> io::Result<()> {
        let Ok(mut st) = self.queues[q].lock() else {
            return Err(io::Error::other("poisoned"));
        };
        if !st.recovered {
            self.recover(q, &mut st, vring);
        }
        let mem = self.mem.memory();
        let inflight = self.inflight();
        let iq = inflight.as_ref().and_then(|i| i.queue(q));
        let mut last_work = Instant::now();
        loop {
            // A VMM that cut the guest's memory is no longer served (counted once).
            let (cut, first) = self.guarded.is_cut();
            if first {
                add(&self.disk.counters.memory_cut, 1);
                log::warn!(
                    "disk {}: the VMM cut its guest's memory: no longer served",
                    self.disk.config.name
                );
            }
            if cut {
                return Ok(());
            }
            let _ = vring.disable_notification();
            let mut started = 0;
            {
                let map = GuestMap::new(&mem);
                loop {
                    let n = self.take_batch(vring, &map, iq.as_ref(), &mut st);
                    started += n;
                    if n < BATCH {
                        break;
                    }
                }
            }
            if started > 0
                && let Some(io) = st.io.as_mut()
            {
                io.kick();
            }
            // What finished already (page-cache hits complete inside io_uring_enter, the
            // null engine at once) is answered in one publication with the immediate answers.
            let completed = self.complete(q, vring, &mut st);
            let now = Instant::now();
            if started + completed > 0 {
                last_work = now;
            }
            if now.duration_since(last_work) < POLL_WINDOW {
                std::hint::spin_loop();
                continue;
            }
            // Going to sleep: notifications on, and one more look for work that raced in.
            if !vring.enable_notification().unwrap_or(false) {
                break;
            }
        }
        if let Some(io) = st.io.as_mut() {
            io.clear_notify();
        }
        // Completions that arrived after the last look wake this thread through the
        // engine's eventfd, which was just cleared: look once more.
        let completed = self.complete(q, vring, &mut st);
        if completed > 0 {
            log::trace!(
                "disk {}: {completed} late completions",
                self.disk.config.name
            );
        }
        Ok(())
    }

    /// Completes what the engine finished; returns how many.
    fn complete(&self, q: usize, vring: &VringRwLock, st: &mut QueueState) -> usize {
        let mut done = std::mem::take(&mut st.done);
        done.clear();
        if let Some(io) = st.io.as_mut() {
            io.reap(&mut done);
        }
        let n = done.len();
        self.finish(q, vring, st, &done);
        st.done = done;
        n
    }

    fn finish(&self, q: usize, vring: &VringRwLock, st: &mut QueueState, done: &[Done]) {
        if done.is_empty() && st.answered.is_empty() {
            return;
        }
        if !done.is_empty() && stalled(&self.disk.counters) {
            // Fault injection (tests only): the requests stay in flight, unanswered.
            return;
        }
        let mem = self.mem.memory();
        let map = GuestMap::new(&mem);
        let c = &self.disk.counters;
        let mut used = std::mem::take(&mut st.answered);
        for d in done {
            let Some(p) = st.pending.get_mut(d.slot as usize).and_then(Option::take) else {
                continue;
            };
            c.in_flight.fetch_sub(1, Ordering::Relaxed);
            let ok = d.result >= 0;
            match (p.op, ok) {
                (OpKind::Read, true) => {
                    add(&c.reads, 1);
                    add(&c.read_bytes, p.bytes);
                }
                (OpKind::Write, true) => {
                    add(&c.writes, 1);
                    add(&c.write_bytes, p.bytes);
                }
                (OpKind::Flush, true) => add(&c.flushes, 1),
                (OpKind::Discard, true) => add(&c.discards, 1),
                (OpKind::WriteZeroes, true) => add(&c.write_zeroes, 1),
                (_, false) => {
                    add(&c.io_errors, 1);
                    log::debug!(
                        "disk {}: request failed: {}",
                        self.disk.config.name,
                        io::Error::from_raw_os_error(-d.result)
                    );
                }
            }
            let _ = map.write(p.status.0, &[if ok { S_OK } else { S_IOERR }]);
            used.push((p.head, if ok { p.used_len } else { 1 }));
        }
        self.publish(q, vring, &used);
        used.clear();
        st.answered = used;
    }

    /// After a backend restart: resubmits the requests the region still has in flight, and
    /// makes the ring continue after them.
    fn recover(&self, q: usize, st: &mut QueueState, vring: &VringRwLock) {
        let ready = {
            let s = vring.get_ref();
            s.get_queue().ready()
        };
        if !ready {
            return;
        }
        st.recovered = true;
        let Some(inflight) = self.inflight() else {
            return;
        };
        let Some(iq) = inflight.queue(q) else {
            return;
        };
        let mem = self.mem.memory();
        let (used_idx, desc_table, size) = {
            let s = vring.get_ref();
            let queue = s.get_queue();
            let used = queue.used_idx(&*mem, Ordering::Acquire).map(|w| w.0);
            (used, queue.desc_table(), queue.size())
        };
        let Ok(used_idx) = used_idx else {
            return;
        };
        let (heads, max_counter) = iq.recover(used_idx);
        st.counter = st.counter.max(max_counter);
        // Everything taken from the avail ring is either answered or in flight.
        let next_avail = used_idx.wrapping_add(heads.len() as u16);
        vring.set_queue_next_avail(next_avail);
        if heads.is_empty() {
            return;
        }
        log::info!(
            "disk {}: queue {q}: resubmitting {} requests after a restart",
            self.disk.config.name,
            heads.len()
        );
        // The chains are read straight from the descriptor table: after a restart the
        // avail entries that named them may be overwritten.
        let map = GuestMap::new(&mem);
        let ring = SplitRing::new(&map, desc_table, 0, size);
        for head in heads {
            add(&self.disk.counters.resubmitted, 1);
            let descs: Vec<Desc> = ring.chain(head).collect();
            // A chain the walk cut short (a loop, an index or a table outside the ring or
            // guest memory) ends on a descriptor that still says NEXT.
            if descs.last().is_some_and(|d| !d.has_next()) {
                self.start(&map, Some(&iq), st, head, &descs, true);
            } else {
                add(&self.disk.counters.bad_chains, 1);
                st.answered.push((head, 0));
            }
        }
        if let Some(io) = st.io.as_mut() {
            io.kick();
        }
    }
}

impl VhostUserBackend for BlkBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        self.queues.len()
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        self.disk.features()
    }

    fn acked_features(&self, features: u64) {
        self.acked.store(features, Ordering::Relaxed);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg = self.disk.config_space();
        let start = (offset as usize).min(cfg.len());
        let end = (start + size as usize).min(cfg.len());
        let mut out = cfg[start..end].to_vec();
        out.resize(size as usize, 0);
        out
    }

    fn update_memory(&self, _mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        // The daemon updates the GuestMemoryAtomic we hold: its regions go under the guard.
        self.guarded.guard(&self.mem.memory());
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.queues.len()).map(|q| 1u64 << q).collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        self.exit_events.pair()
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        // Answer every request of the ring before the VMM reads its base.
        let q = queue_index as usize;
        let vring = self
            .vrings
            .lock()
            .ok()
            .and_then(|v| v.get(q).cloned().flatten());
        let (Some(vring), Some(m)) = (vring, self.queues.get(q)) else {
            return Ok(());
        };
        let Ok(mut st) = m.lock() else {
            return Ok(());
        };
        let mut done = Vec::new();
        if let Some(io) = st.io.as_mut() {
            io.drain(&mut done);
        }
        self.finish(q, &vring, &mut st, &done);
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Ok(());
        }
        let q = thread_id;
        let Some(vring) = vrings.first() else {
            return Ok(());
        };
        if let Ok(mut v) = self.vrings.lock()
            && let Some(slot @ None) = v.get_mut(q)
        {
            *slot = Some(vring.clone());
        }
        let n = self.num_queues() as u64;
        match u64::from(device_event) {
            0 => self.process_queue(q, vring),
            e if e == n + COMPLETION_OFFSET => {
                {
                    let Ok(mut st) = self.queues[q].lock() else {
                        return Ok(());
                    };
                    if let Some(io) = st.io.as_mut() {
                        io.clear_notify();
                    }
                    self.complete(q, vring, &mut st);
                }
                // The guest may have queued more meanwhile: serve (and poll) the ring.
                self.process_queue(q, vring)
            }
            e if e == n + ENABLED_OFFSET => {
                if let Some(fd) = self.enabled_fds.get(q) {
                    let _ = fd.read();
                }
                // Resubmits what a restart left in flight, then serves the ring.
                self.process_queue(q, vring)
            }
            _ => Ok(()),
        }
    }
}

/// The relay's hooks for a disk: inflight regions and ring enables.
pub struct BlkHooks(pub Arc<BlkBackend>);

const PROTOCOL_INFLIGHT_SHMFD: u64 = 1 << 12;

impl RelayHooks for BlkHooks {
    fn label(&self) -> String {
        format!("disk {}", self.0.disk.config.name)
    }

    fn refused(&self, _why: &str) {
        add(&self.0.disk.counters.vmm_refused, 1);
    }

    fn extra_protocol_features(&self) -> u64 {
        PROTOCOL_INFLIGHT_SHMFD
    }

    fn get_inflight_fd(&self, request: &[u8]) -> io::Result<(Vec<u8>, OwnedFd)> {
        let m =
            InflightMsg::parse(request).ok_or_else(|| io::Error::other("short GET_INFLIGHT_FD"))?;
        let (msg, fd) = inflight::create(m.num_queues, m.queue_size)?;
        Ok((msg.to_bytes(), fd))
    }

    fn set_inflight_fd(&self, request: &[u8], fd: OwnedFd) -> io::Result<()> {
        let m =
            InflightMsg::parse(request).ok_or_else(|| io::Error::other("short SET_INFLIGHT_FD"))?;
        let region = Inflight::map(m, fd)?;
        if let Ok(mut g) = self.0.inflight.lock() {
            *g = Some(Arc::new(region));
        }
        Ok(())
    }

    fn ring_enabled(&self, index: u32) {
        if let Some(fd) = self.0.enabled_fds.get(index as usize) {
            let _ = fd.write(1);
        }
    }
}

impl Drop for BlkBackend {
    fn drop(&mut self) {
        // Nothing may still point into guest memory: wait for the engines.
        for m in &self.queues {
            if let Ok(mut st) = m.lock() {
                let mut done = Vec::new();
                if let Some(io) = st.io.as_mut() {
                    io.drain(&mut done);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blk::image::Image;
    use virtio_bindings::virtio_blk::VIRTIO_BLK_F_RO;

    #[test]
    fn config_space_layout() {
        let img = Image::open(&super::super::image::ImageSpec {
            path: "/dev/null".into(),
            format: super::super::image::Format::Null,
            readonly: false,
            null_size: 1 << 30,
        })
        .unwrap();
        let d = Disk::new(
            DiskConfig {
                name: "d".into(),
                queues: 4,
                serial: "s".into(),
            },
            img,
        );
        let c = d.config_space();
        assert_eq!(
            u64::from_le_bytes(c[0..8].try_into().unwrap()),
            2 * 1024 * 1024
        );
        assert_eq!(u32::from_le_bytes(c[12..16].try_into().unwrap()), SEG_MAX);
        assert_eq!(u32::from_le_bytes(c[20..24].try_into().unwrap()), 512);
        assert_eq!(u16::from_le_bytes(c[34..36].try_into().unwrap()), 4);
        assert_eq!(c[56], 1);
        let f = d.features();
        assert!(f & (1 << VIRTIO_BLK_F_DISCARD) != 0 && f & (1 << VIRTIO_BLK_F_RO) == 0);
    }
}
