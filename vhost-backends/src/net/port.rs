//! A virtio-net port as the switch holds it: its configuration, its counters, the guest
//! connection of the moment (replaced on reconnect, absent while no guest is there), and the
//! switch's side of the data path (`FrameSwitch`).
//!
//! Invariant: a port outlives its connections; delivering to a port without a guest drops
//! and counts (`tx_drop_link_down`), it never blocks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwapOption;

use super::counters::{NetCounters, NetCountersSnapshot};
use crate::frame::{FrameEdit, TxFrame};

use super::connection::Connection;
use super::counters::RxDrop;
use super::poll::Poller;
use super::rx::{RxItem, plain_frames};

/// Guest TX chains taken per batch: one switch decision lock and one notification per batch.
pub const TX_BATCH: usize = 64;
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
    /// Busy-poll mode: the switch's poll threads drain this port's TX rings, pair `q` by
    /// `pollers[q % pollers.len()]`; kicks only wake that thread. Empty: kicks drive the
    /// port's own workers.
    pub pollers: Vec<Arc<Poller>>,
}

impl NetPortConfig {
    /// The poll thread draining TX ring pair `pair`, in busy-poll mode.
    pub fn poller_of(&self, pair: u16) -> Option<&Arc<Poller>> {
        self.pollers
            .get(usize::from(pair) % self.pollers.len().max(1))
    }
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

/// One virtio-net port: lives as long as the topology says, across guest connections.
pub struct NetPort {
    pub(super) config: NetPortConfig,
    /// The switch's handle for this port (opaque here).
    pub key: usize,
    pub(super) counters: NetCounters,
    pub(super) conn: ArcSwapOption<Connection>,
    /// Whether `conn` is set: a cheap check for the busy-poll loop.
    pub(super) live: AtomicBool,
    pub(super) connections: AtomicU64,
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

    /// The live counters (what software completion of offloads counts into).
    pub fn net_counters(&self) -> &NetCounters {
        &self.counters
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
