//! Switch ports: what is at the far end of each port of a switch.
//!
//! Every kind of port implements [`SwitchPort`] (`switch_port.rs`, a leaf): a name, a link state, counters, a way to
//! deliver a batch of the switch's frames (each with its VLAN tag edit), a way to deliver
//! frames vfabric holds itself (delayed by an impairment), threads that hand received frames
//! to the switch through an [`Ingress`], and a stop. [`Port`] is the closed set of kinds the
//! fabric holds; it dispatches statically (one `match`, in [`dispatch!`]), so the per-frame
//! path has no virtual call.
//!
//! Invariants: a port never blocks the sender's thread on a slow receiver (a full ring or
//! socket drops and counts); a port's reader threads enter the data path (the seccomp filter)
//! before touching a frame; `stop` makes every thread the port started end.
//!
//! Adding a kind: a file here with its device and `impl SwitchPort`, a variant of [`Port`]
//! and its arm in `dispatch!`, its topology keys in `crate::topology`, its construction in
//! `crate::fabric` (`Fabric::attach`).

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use vhost_backends::frame::{FrameEdit, TxFrame};

pub mod gro;
pub mod host_io;
pub mod nat;
mod switch_port;
pub mod tap;
pub mod tunnel_endpoint;
#[cfg(test)]
mod tunnel_tests;
pub mod vm;
pub mod vxlan;

pub use nat::NatPort;
pub use switch_port::{Ingress, PortKey, SwitchPort, spawn_data_path};
pub use tap::TapPort;
pub use vm::VmPort;
pub use vxlan::VxlanPort;

/// The kinds of switch port the fabric holds.
#[derive(Clone)]
pub enum Port {
    Vm(Arc<VmPort>),
    Tap(Arc<TapPort>),
    Vxlan(Arc<VxlanPort>),
    Nat(Arc<NatPort>),
}

/// Runs `$body` with `$p` bound to the port's device, whatever its kind: the one place that
/// lists the kinds.
macro_rules! dispatch {
    ($port:expr, $p:ident => $body:expr) => {
        match $port {
            Port::Vm($p) => $body,
            Port::Tap($p) => $body,
            Port::Vxlan($p) => $body,
            Port::Nat($p) => $body,
        }
    };
}

impl Port {
    pub fn name(&self) -> &str {
        dispatch!(self, p => p.name())
    }

    /// The VM's virtio-net device, for a VM port.
    pub fn vm(&self) -> Option<&Arc<vhost_backends::net::NetPort>> {
        match self {
            Port::Vm(p) => Some(p.net()),
            _ => None,
        }
    }

    /// Link state (see [`SwitchPort::is_up`]).
    pub fn is_connected(&self) -> bool {
        dispatch!(self, p => p.is_up())
    }

    pub fn connections(&self) -> u64 {
        dispatch!(self, p => p.connections())
    }

    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        dispatch!(self, p => SwitchPort::counters(&**p))
    }

    #[inline]
    pub fn deliver_batch<'f, 'a: 'f>(
        &self,
        frames: impl Iterator<Item = (&'f TxFrame<'a>, FrameEdit)>,
        hint: u16,
    ) {
        dispatch!(self, p => p.deliver_batch(frames, hint))
    }

    pub fn deliver_bytes(&self, frames: &[Vec<u8>], hint: u16) {
        dispatch!(self, p => p.deliver_bytes(frames, hint))
    }

    pub fn plain_frames(&self, frame: &TxFrame<'_>, edit: FrameEdit, out: impl FnMut(&[u8])) {
        dispatch!(self, p => p.plain_frames(frame, edit, out))
    }

    pub fn start(
        &self,
        key: PortKey,
        ingress: &Arc<dyn Ingress>,
    ) -> io::Result<Vec<JoinHandle<()>>> {
        dispatch!(self, p => p.start(key, ingress))
    }

    pub fn stop(&self) {
        dispatch!(self, p => p.stop())
    }
}
