//! The `VhostUserBackend` of one connection of one port: features offered, config space,
//! queue pairs spread over worker threads, the attach handshake (every worker hands over its
//! rings before the connection is published), and the kick handling with its TX budget.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock};
use virtio_bindings::virtio_config::{VIRTIO_F_IN_ORDER, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU,
    VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::connection::Connection;
use super::port::{FrameSwitch, MAX_QUEUE_PAIRS, NetPort, QUEUE_SIZE};
use super::tx::drain_tx_batch;
use crate::vring::set_kicks;

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

/// How long a TX ring that ran dry is polled before the guest's kicks are turned back on,
/// when its last batch had at least `TX_POLL_MIN_BATCH` chains: a guest sending small
/// frames at a high rate (a DPDK application) refills it within that time, and neither side
/// pays for a kick. A guest sending few chains per kick (TCP with TSO: a few 64 KiB frames)
/// gets no polling: the spinning would only take CPU time from the guests themselves (with
/// two TCG guests on two CPUs, TCP between them went from 4.8 to 5.4-6.8 Gbit/s without it).
const TX_POLL_WINDOW: Duration = Duration::from_micros(32);
const TX_POLL_MIN_BATCH: usize = 16;

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
                tx_kicks: (0..pairs).map(|_| AtomicBool::new(true)).collect(),
                vrings: OnceLock::new(),
                rx_pending: (0..pairs).map(|_| AtomicBool::new(false)).collect(),
                rx_checked: (0..pairs).map(|_| AtomicU16::new(0)).collect(),
                broken: (0..2 * pairs).map(|_| AtomicBool::new(false)).collect(),
                guarded: Default::default(),
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

    /// Takes this connection off the port (the guest went away). The switch hears of it
    /// before the port reads as disconnected, so whoever sees the link down also sees its
    /// consequences (the port's learned addresses forgotten).
    pub fn unpublish(&self) {
        let current = self.port.conn.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.conn)) {
            self.port.live.store(false, Ordering::Release);
            self.switch.link_changed(&self.port, false);
            self.port.conn.store(None);
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
        if let Some(poller) = self.port.config.poller_of(pair) {
            poller.wake();
            return Ok(());
        }
        // No kicks while draining (VRING_USED_F_NO_NOTIFY, or EVENT_IDX's avail_event left
        // behind), nor for `TX_POLL_WINDOW` after a busy ring ran dry (at high rates the guest
        // refills it sooner, and neither side pays for a kick: QEMU's iothreads poll the same
        // way); on again after that, and drain again if work raced in.
        let mut budget = TX_BUDGET;
        let (mem, packed) = (self.conn.mem.memory(), self.conn.packed());
        loop {
            set_kicks(vring, &mem, packed, false)?;
            let mut dry_since: Option<Instant> = None;
            // Whether the last batch was large enough to poll the ring when it runs dry.
            let mut busy = false;
            loop {
                let taken = drain_tx_batch(&self.port, &self.conn, &*self.switch, pair, vring)?;
                if taken > 0 {
                    dry_since = None;
                    busy = taken >= TX_POLL_MIN_BATCH;
                    budget -= 1;
                    if budget == 0 {
                        return self.give_way(pair);
                    }
                    continue;
                }
                if !busy {
                    break;
                }
                let now = Instant::now();
                if now.duration_since(*dry_since.get_or_insert(now)) >= TX_POLL_WINDOW {
                    break;
                }
                std::hint::spin_loop();
            }
            if !set_kicks(vring, &mem, packed, true)? {
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
            // Packed rings when the VMM asks for them (QEMU: packed=on).
            | (1 << VIRTIO_F_RING_PACKED)
            // Buffers used in the order they were made available (vfabric always does):
            // a TX batch is returned with one used element, and drivers that know it
            // (DPDK's virtio driver) take their faster in-order paths.
            | (1 << VIRTIO_F_IN_ORDER)
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
        // The daemon updates the same GuestMemoryAtomic we hold: its regions go under the
        // SIGBUS guard (a VMM that later cuts them ends only this connection).
        self.conn.guard_memory();
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
            let _ = set_kicks(vring, &self.conn.mem.memory(), self.conn.packed(), false);
        }
        Ok(())
    }
}
