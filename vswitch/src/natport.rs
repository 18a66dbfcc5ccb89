//! NAT ports: a switch port whose far end is the `nat` crate's gateway (DHCP, DNS relay,
//! outbound and inbound NAT through host sockets). Frames to the port are completed
//! (offloads done in software) and queued for the gateway's thread; the frames it sends
//! come back through the switch like any port's.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use nat::{NatConfig, NatHandle, Runner};
use vhost_backends::frame::{FrameEdit, TxFrame};

use crate::hostport::{HostCounters, forward_owned};

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

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    pub fn counters(&self) -> &HostCounters {
        &self.counters
    }

    /// Every counter: the port's and the gateway's.
    pub fn fields(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.counters.fields();
        v.extend(self.handle.counters.fields());
        v.push(("nat_queue_drops", self.handle.queue_drops.load(Relaxed)));
        v
    }

    /// Runs the gateway's thread; its frames go to `forward`.
    pub fn start(
        self: &Arc<Self>,
        mut forward: impl FnMut(&[TxFrame<'_>]) + Send + 'static,
    ) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
        let Some(runner) = self.runner.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(None);
        };
        let me = self.clone();
        runner
            .start(&self.name, move |mut frames| {
                forward_owned(&mut frames, &me.counters, &mut forward)
            })
            .map(Some)
    }

    /// Ends the gateway's thread.
    pub fn stop(&self) {
        self.handle.stop();
    }

    /// Hands `frames` to the gateway, offloads completed first.
    pub fn deliver<'f, 'a: 'f>(&self, frames: impl Iterator<Item = (&'f TxFrame<'a>, FrameEdit)>) {
        for (frame, edit) in frames {
            vhost_backends::net::plain_frames(frame, edit, &self.counters.net, |b| {
                self.push(b.to_vec())
            });
        }
    }

    /// Hands plain frames held by vfabric to the gateway.
    pub fn deliver_bytes(&self, frames: &[Vec<u8>]) {
        for f in frames {
            self.push(f.clone());
        }
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
