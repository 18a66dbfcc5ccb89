//! VM ports: a guest's virtio-net device, served over vhost-user by `vhost_backends`.
//!
//! The port owns its device (`NetPort`), how it meets its VMM (a listening socket, bound
//! with its permissions before any thread starts, or a VMM socket vfabric dials) and the
//! handle that ends its serving thread. The guest's TX batches reach the switch through the
//! fabric's [`FrameSwitch`] implementation with the port's key; the switch's frames go
//! straight into the guest's RX ring (`NetPort::deliver_batch`), one interrupt per batch.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vhost_backends::counters::NetCounters;
use vhost_backends::frame::{FrameEdit, TxFrame};
use vhost_backends::net::{FrameSwitch, NetPort};
use vhost_backends::server::{PortStop, Role, run_port};

use super::switch_port::{Ingress, PortKey, SwitchPort, spawn_data_path};
use crate::topology::VhostUserNet;

/// One VM port.
pub struct VmPort {
    net: Arc<NetPort>,
    config: VhostUserNet,
    /// How the next `start` meets the VMM (a bound listener, or the VMM's socket to dial).
    role: Mutex<Option<Role>>,
    stop: Arc<PortStop>,
}

impl VmPort {
    pub fn new(net: Arc<NetPort>, config: VhostUserNet) -> VmPort {
        VmPort {
            net,
            config,
            role: Mutex::new(None),
            stop: PortStop::new(),
        }
    }

    /// The virtio-net device.
    pub fn net(&self) -> &Arc<NetPort> {
        &self.net
    }

    pub fn config(&self) -> &VhostUserNet {
        &self.config
    }

    /// The handle that ends the port's thread (and keeps its socket file in existence).
    pub fn port_stop(&self) -> &Arc<PortStop> {
        &self.stop
    }

    /// The socket file this port listens on (none when vfabric dials the VMM).
    pub fn socket_file(&self) -> Option<PathBuf> {
        (!self.config.client).then(|| self.config.socket.clone())
    }

    /// Makes the port's socket ready: binds and gives permissions to a listening socket
    /// (removed again on error, unless it was a live one), or notes the VMM's socket to dial.
    pub fn bind(&self) -> io::Result<()> {
        let role = if self.config.client {
            Role::Client(self.config.socket.clone())
        } else {
            Role::Server(crate::sockets::bind_with_perms(
                &self.config.socket,
                &self.config.perms,
            )?)
        };
        self.set_role(role);
        Ok(())
    }

    /// Serves the VMM through `role` (a listener bound elsewhere, or a socket to dial) at
    /// the next `start`.
    pub fn set_role(&self, role: Role) {
        *self.role.lock().unwrap_or_else(|p| p.into_inner()) = Some(role);
    }
}

impl SwitchPort for VmPort {
    fn name(&self) -> &str {
        self.net.name()
    }

    fn is_up(&self) -> bool {
        self.net.is_connected()
    }

    fn connections(&self) -> u64 {
        self.net.connections()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.net.counters().fields()
    }

    #[inline]
    fn deliver_batch<'f, 'a: 'f>(
        &self,
        frames: impl Iterator<Item = (&'f TxFrame<'a>, FrameEdit)>,
        hint: u16,
    ) {
        self.net.deliver_batch(frames, hint, |_| {});
        self.net.notify();
    }

    fn deliver_bytes(&self, frames: &[Vec<u8>], hint: u16) {
        self.net.deliver_bytes(frames, hint);
        self.net.notify();
    }

    fn net_counters(&self) -> &NetCounters {
        self.net.net_counters()
    }

    /// One thread serving the VMM connection by connection (the key travels in `NetPort`).
    fn start(
        self: &Arc<Self>,
        _key: PortKey,
        ingress: &Arc<dyn Ingress>,
    ) -> io::Result<Vec<JoinHandle<()>>> {
        let role = self
            .role
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| io::Error::other("the port's socket is not bound"))?;
        let (net, stop) = (self.net.clone(), self.stop.clone());
        let switch: Arc<dyn FrameSwitch> = ingress.clone();
        let name = self.net.name().to_string();
        let t = spawn_data_path(format!("port-{name}"), format!("port {name}"), move || {
            run_port(net, switch, role, stop)
        })?;
        Ok(vec![t])
    }

    fn stop(&self) {
        self.stop.stop();
    }
}
