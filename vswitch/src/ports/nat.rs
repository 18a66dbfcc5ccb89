//! NAT ports: a switch port whose far end is the `nat` crate's gateway (DHCP, DNS relay,
//! outbound and inbound NAT through host sockets). Frames to the port are completed
//! (offloads done in software) and queued for the gateway's thread; the frames it sends
//! come back through the switch like any port's.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nat::{NatConfig, NatHandle, Runner};
use vhost_backends::counters::NetCounters;
use vhost_backends::frame::{FrameEdit, TxFrame};

use super::host_io::{HostCounters, forward_owned};
use super::switch_port::{Ingress, PortKey, SwitchPort};

/// One NAT port.
pub struct NatPort {
    name: String,
    config: NatConfig,
    handle: Arc<NatHandle>,
    /// Until `start`.
    runner: Mutex<Option<Runner>>,
    counters: HostCounters,
}

impl NatPort {
    /// Sets up the gateway (binds its port forwards); the error names the forward.
    pub fn open(name: &str, config: NatConfig) -> Result<NatPort, String> {
        let runner = Runner::new(config.clone())?;
        Ok(NatPort {
            name: name.to_string(),
            config,
            handle: runner.handle(),
            runner: Mutex::new(Some(runner)),
            counters: HostCounters::default(),
        })
    }

    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    pub fn counters(&self) -> &HostCounters {
        &self.counters
    }

    fn push(&self, frame: Vec<u8>) {
        let len = frame.len();
        if self.handle.push(frame) {
            self.counters.count_tx(len);
        } else {
            self.counters.net.tx_drop_no_buffer.fetch_add(1, Relaxed);
        }
    }
}

impl SwitchPort for NatPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn net_counters(&self) -> &NetCounters {
        &self.counters.net
    }

    /// Every counter: the port's and the gateway's.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.counters.fields();
        v.extend(self.handle.counters.fields());
        v.push(("nat_queue_drops", self.handle.queue_drops.load(Relaxed)));
        v
    }

    /// Ends the gateway's thread.
    fn stop(&self) {
        self.handle.stop();
    }

    /// Hands `frames` to the gateway, offloads completed first.
    fn deliver_batch<'f, 'a: 'f>(
        &self,
        frames: impl Iterator<Item = (&'f TxFrame<'a>, FrameEdit)>,
        _hint: u16,
    ) {
        for (frame, edit) in frames {
            self.plain_frames(frame, edit, |b| self.push(b.to_vec()));
        }
    }

    /// Hands plain frames held by vfabric to the gateway.
    fn deliver_bytes(&self, frames: &[Vec<u8>], _hint: u16) {
        for f in frames {
            self.push(f.clone());
        }
    }

    /// Runs the gateway's thread (once); its frames go to `ingress`.
    fn start(
        self: &Arc<Self>,
        key: PortKey,
        ingress: &Arc<dyn Ingress>,
    ) -> io::Result<Vec<JoinHandle<()>>> {
        let Some(runner) = self.runner.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(Vec::new());
        };
        let (me, ingress) = (self.clone(), ingress.clone());
        let spawn =
            |name, body| crate::privs::spawn_confined(name, crate::privs::ThreadKind::Nat, body);
        let t = runner.start(&self.name, spawn, move |mut frames| {
            forward_owned(&mut frames, &me.counters, |f| ingress.forward(key, 0, f))
        })?;
        Ok(vec![t])
    }
}
