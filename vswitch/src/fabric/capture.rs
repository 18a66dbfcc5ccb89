//! Port captures (`vfabric ctl capture`): a copy of a port's frames, both directions, handed
//! to the control thread through a bounded channel.
//!
//! Invariant: the data path never waits for a capture. When the reader lags, frames are
//! dropped and counted (`Capture::dropped`); a switch looks at its captures only while one
//! runs (`SwitchRuntime::tapping` is non-zero).

use vlan::VlanId;

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
