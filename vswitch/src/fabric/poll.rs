//! Busy polling (`busy_poll = true` on a switch): one thread drains the TX rings of every
//! VM port of the switch round-robin instead of waiting for the guests' kicks.
//!
//! Invariant: an idle poller does not spin for ever. After `POLL_IDLE` without work it turns
//! the guests' kicks back on, checks the rings once more (a frame may have come meanwhile)
//! and sleeps until a kick or 100 ms; then kicks go off again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost_backends::net::Poller;

use super::Fabric;
use crate::ports::Port;

impl Fabric {
    /// Starts the poll thread of every busy-poll switch.
    pub fn start_pollers(self: &Arc<Self>) -> std::io::Result<()> {
        for (si, sw) in self.switches.iter().enumerate() {
            if let Some(poller) = sw.poller.clone() {
                let fabric = self.clone();
                std::thread::Builder::new()
                    .name(format!("poll-{si}"))
                    .spawn(move || fabric.run_poller(si, &poller))?;
            }
        }
        Ok(())
    }

    /// The busy-poll loop of switch `si`: drain every port's TX rings round-robin; after
    /// `POLL_IDLE` without work, re-enable the guests' kicks and sleep until one comes.
    fn run_poller(&self, si: usize, poller: &Poller) {
        const POLL_IDLE: Duration = Duration::from_millis(1);
        let sw = &self.switches[si];
        let mut last_work = Instant::now();
        let mut passes = 0u32;
        loop {
            let mut work = 0;
            let ports = sw.ports.load();
            for p in ports.iter().flatten().filter_map(Port::vm) {
                work += p.poll_tx(self);
            }
            if work > 0 {
                passes = 0;
                continue;
            }
            passes += 1;
            // Look at the clock only now and then.
            if passes.is_multiple_of(64) {
                let now = Instant::now();
                if passes == 64 {
                    last_work = now;
                } else if now.duration_since(last_work) > POLL_IDLE {
                    poller.prepare_sleep();
                    let mut more = false;
                    for p in ports.iter().flatten().filter_map(Port::vm) {
                        more |= p.set_tx_notifications(true);
                    }
                    poller.sleep(if more {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(100)
                    });
                    for p in ports.iter().flatten().filter_map(Port::vm) {
                        p.set_tx_notifications(false);
                    }
                    passes = 0;
                }
            }
            std::hint::spin_loop();
        }
    }
}
