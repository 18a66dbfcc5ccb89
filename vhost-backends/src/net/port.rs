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

    /// What the connected guest negotiated, if a guest is connected.
    pub fn guest(&self) -> Option<GuestInfo> {
        let conn = self.conn.load_full()?;
        let features = conn.features.load(Ordering::Relaxed);
        Some(GuestInfo {
            features,
            queue_pairs: conn.vrings.get().map_or(0, |v| v.len() / 2),
            packed: Connection::is_packed(features),
            event_idx: conn.event_idx.load(Ordering::Relaxed),
        })
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

/// A connected guest's view of its device (`NetPort::guest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestInfo {
    /// The feature bits the guest acknowledged.
    pub features: u64,
    /// Queue pairs set up by the VMM.
    pub queue_pairs: usize,
    /// Rings in the packed layout (VIRTIO_F_RING_PACKED).
    pub packed: bool,
    /// VIRTIO_RING_F_EVENT_IDX negotiated.
    pub event_idx: bool,
}

impl GuestInfo {
    /// The negotiated feature bits by their virtio names (`bit N` for bits without one).
    pub fn feature_names(&self) -> Vec<String> {
        (0..64)
            .filter(|b| self.features & (1u64 << b) != 0)
            .map(|b| match feature_name(b) {
                Some(n) => n.to_string(),
                None => format!("bit {b}"),
            })
            .collect()
    }
}

/// The virtio (1.2, section 5.1.3 and 6) name of a virtio-net feature bit.
fn feature_name(bit: u32) -> Option<&'static str> {
    Some(match bit {
        0 => "CSUM",
        1 => "GUEST_CSUM",
        2 => "CTRL_GUEST_OFFLOADS",
        3 => "MTU",
        5 => "MAC",
        7 => "GUEST_TSO4",
        8 => "GUEST_TSO6",
        9 => "GUEST_ECN",
        10 => "GUEST_UFO",
        11 => "HOST_TSO4",
        12 => "HOST_TSO6",
        13 => "HOST_ECN",
        14 => "HOST_UFO",
        15 => "MRG_RXBUF",
        16 => "STATUS",
        17 => "CTRL_VQ",
        18 => "CTRL_RX",
        19 => "CTRL_VLAN",
        21 => "GUEST_ANNOUNCE",
        22 => "MQ",
        23 => "CTRL_MAC_ADDR",
        28 => "RING_INDIRECT_DESC",
        29 => "RING_EVENT_IDX",
        30 => "PROTOCOL_FEATURES",
        32 => "VERSION_1",
        33 => "ACCESS_PLATFORM",
        34 => "RING_PACKED",
        35 => "IN_ORDER",
        36 => "ORDER_PLATFORM",
        37 => "SR_IOV",
        38 => "NOTIFICATION_DATA",
        39 => "NOTIF_CONFIG_DATA",
        40 => "RING_RESET",
        _ => return None,
    })
}
