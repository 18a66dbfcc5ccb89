//! What every kind of switch port implements (`SwitchPort`), how received frames reach the
//! switch (`Ingress`, with the port's `PortKey`), and how a port's threads enter the data
//! path. A leaf: it knows no kind of port and nothing of the fabric.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use vhost_backends::counters::NetCounters;
use vhost_backends::frame::{FrameEdit, TxFrame};
use vhost_backends::net::FrameSwitch;

/// A port's key: its switch's index in the high bits, its number in the low 16. VM ports
/// carry it into `vhost_backends` (`NetPort::key`) and get it back with each batch.
pub type PortKey = usize;

/// Where a port's received frames go: the switch's batch path. VM ports reach it through
/// `vhost_backends`' [`FrameSwitch`] (their workers pass their `NetPort`, which carries the
/// key); host ports through `forward`.
pub trait Ingress: FrameSwitch {
    /// Forwards a batch of frames received on port `key`, queue `queue`.
    fn forward(&self, key: PortKey, queue: u16, frames: &[TxFrame<'_>]);
}

/// What every kind of switch port does.
pub trait SwitchPort: Send + Sync + 'static {
    /// The port's name (unique in the fabric).
    fn name(&self) -> &str;

    /// Link state: a guest connected; the TAP exists; a VXLAN or NAT port is always up.
    fn is_up(&self) -> bool {
        true
    }

    /// Guest connections served so far (VM ports; 0 for the others).
    fn connections(&self) -> u64 {
        0
    }

    /// Every counter, as (name, value).
    fn counters(&self) -> Vec<(&'static str, u64)>;

    /// Delivers a batch of the switch's frames, each with its tag edit. `hint` (the sender's
    /// queue) spreads senders over the port's queues.
    fn deliver_batch<'f, 'a: 'f>(
        &self,
        frames: impl Iterator<Item = (&'f TxFrame<'a>, FrameEdit)>,
        hint: u16,
    );

    /// Delivers plain frames that vfabric holds (no offloads).
    fn deliver_bytes(&self, frames: &[Vec<u8>], hint: u16);

    /// The device counters that count software work on the port's frames (offloads
    /// completed, frames segmented).
    fn net_counters(&self) -> &NetCounters;

    /// The frame, edited, as plain frames (offloads completed in software): what a delayed
    /// copy holds, and what a port that takes no offloads puts on its wire.
    fn plain_frames(&self, frame: &TxFrame<'_>, edit: FrameEdit, out: impl FnMut(&[u8])) {
        vhost_backends::net::plain_frames(frame, edit, self.net_counters(), out)
    }

    /// Starts the threads that hand the port's received frames to `ingress` (as port `key`).
    fn start(
        self: &Arc<Self>,
        key: PortKey,
        ingress: &Arc<dyn Ingress>,
    ) -> io::Result<Vec<JoinHandle<()>>>;

    /// Makes every thread the port started end (they are joined by the caller).
    fn stop(&self);
}

/// Spawns a port thread named `name` that enters the data path (its seccomp filter, when
/// one was asked for) and then runs `body`; returns once the filter is on. If the filter
/// cannot be applied, the thread does not serve at all and the error names `what`.
pub fn spawn_data_path(
    name: String,
    what: String,
    body: impl FnOnce() + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    crate::privs::spawn_confined(name, crate::privs::ThreadKind::DataPath, body)
        .map_err(|e| io::Error::other(format!("{what}: {e}")))
}
