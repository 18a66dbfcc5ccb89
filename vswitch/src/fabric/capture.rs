//! Port captures (`vfabric ctl capture`): a copy of a port's frames, both directions, handed
//! to the control thread through a bounded channel.
//!
//! Invariant: the data path never waits for a capture. When the reader lags, frames are
//! dropped and counted (`Capture::dropped`); a switch looks at its captures only while one
//! runs (`SwitchRuntime::tapping` is non-zero).

use vhost_backends::frame::{FrameEdit, TxFrame};
use vlan::VlanId;

use super::SwitchRuntime;
use crate::core::{Decision, PortId};

/// A capture of one port's frames, both directions, as they are on the port's wire
/// (ingress as the guest sent them, egress after the VLAN edit). Fed by the data path
/// without blocking it: when the reader lags, frames are dropped and counted.
pub struct Capture {
    /// Only frames classified in this VLAN.
    pub vlan: Option<VlanId>,
    pub(super) tx: tokio::sync::mpsc::Sender<(u64, Vec<u8>)>,
    pub dropped: std::sync::atomic::AtomicU64,
}

impl Capture {
    pub(super) fn offer(&self, vlan: VlanId, frame: Vec<u8>) {
        if self.vlan.is_some_and(|v| v != vlan) {
            return;
        }
        let ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        if self.tx.try_send((ns, frame)).is_err() {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Copies a batch's frames to the captures of its ingress port and of the ports that
/// receive them.
pub(super) fn feed_captures(
    sw: &SwitchRuntime,
    in_port: PortId,
    frames: &[TxFrame<'_>],
    decisions: &[Decision],
    copies: &[(usize, usize, FrameEdit)],
) {
    if let Some(tap) = sw.captures.get(in_port.index()).and_then(|t| t.load_full()) {
        for (f, d) in frames.iter().zip(decisions) {
            tap.offer(d.vlan, f.to_vec());
        }
    }
    for &(p, i, e) in copies {
        if let (Some(tap), Some(f), Some(d)) = (
            sw.captures.get(p).and_then(|t| t.load_full()),
            frames.get(i),
            decisions.get(i),
        ) {
            let mut bytes = f.to_vec();
            e.apply(&mut bytes);
            tap.offer(d.vlan, bytes);
        }
    }
}
