//! Busy polling (`busy_poll = true` on a switch): `poll_threads` threads (default 1) drain
//! the TX rings of the switch's VM ports round-robin instead of waiting for the guests'
//! kicks; ring pair q of port number p belongs to thread (p + q) mod N, as OVS-DPDK spreads
//! rx queues over its PMD threads.
//!
//! Invariant: an idle poller does not spin for ever. After `POLL_IDLE` without work it turns
//! the guests' kicks back on, checks the rings once more (a frame may have come meanwhile)
//! and sleeps until a kick or 100 ms; then kicks go off again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost_backends::net::Poller;

use super::Fabric;

impl Fabric {
    /// Starts the poll threads of every busy-poll switch (`poll_threads` of them).
    pub fn start_pollers(self: &Arc<Self>) -> std::io::Result<()> {
        for (si, sw) in self.switches.iter().enumerate() {
            let n = sw.pollers.len();
            for (t, poller) in sw.pollers.iter().enumerate() {
                let (fabric, poller) = (self.clone(), poller.clone());
                let name = if n == 1 {
                    format!("poll-{si}")
                } else {
                    format!("poll-{si}.{t}")
                };
                crate::privs::spawn_confined(
                    name,
                    crate::privs::ThreadKind::DataPath,
                    move || fabric.run_poller(si, t, &poller),
                )?;
            }
        }
        Ok(())
    }

    /// The busy-poll loop of thread `t` of switch `si`: drain the TX rings it serves (pair
    /// q of port p when (p + q) mod N = t) round-robin; after `POLL_IDLE` without work,
    /// re-enable the guests' kicks on those rings and sleep until one comes.
    fn run_poller(&self, si: usize, t: usize, poller: &Poller) {
        const POLL_IDLE: Duration = Duration::from_millis(1);
        let sw = &self.switches[si];
        let n = sw.pollers.len().max(1);
        // The first pair of port `p` this thread serves (then every n-th).
        // (No division on every pass when one thread serves every pair.)
        let first = |p: usize| {
            if n == 1 {
                0
            } else {
                ((t + n - p % n) % n) as u16
            }
        };
        let step = n as u16;
        let mut last_work = Instant::now();
        let mut passes = 0u32;
        loop {
            let mut work = 0;
            let ports = sw.ports.load();
            let vms = || {
                ports
                    .iter()
                    .enumerate()
                    .filter_map(|(p, port)| Some((first(p), port.as_ref()?.vm()?)))
            };
            for (first, vm) in vms() {
                work += vm.poll_tx(self, first, step);
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
                    for (first, vm) in vms() {
                        more |= vm.set_tx_notifications(true, first, step);
                    }
                    poller.sleep(if more {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(100)
                    });
                    for (first, vm) in vms() {
                        vm.set_tx_notifications(false, first, step);
                    }
                    passes = 0;
                }
            }
            std::hint::spin_loop();
        }
    }
}
