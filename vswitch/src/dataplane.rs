//! The data plane: joins vhost-user ports (`vhost_backends`) to the pure switch core.
//!
//! A port's worker thread pops a batch of guest frames and calls `Fabric::tx_batch`, which
//! takes the switch's lock once for the whole batch to decide every frame (on header copies),
//! releases it, then copies each frame straight into the receivers' RX rings and interrupts
//! each receiver once per batch.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use vhost_backends::frame::TxFrame;
use vhost_backends::net::{FrameSwitch, NetPort, NetPortConfig, TX_BATCH};
use vlan::VlanId;

use crate::core::{PortId, Switch, Time, Verdict};
use crate::topology::{PortKind, Topology};

/// One switch at run time: the decision core and its ports' devices (index = `PortId`).
pub struct SwitchRuntime {
    core: Mutex<Switch>,
    ports: Vec<Arc<NetPort>>,
}

impl SwitchRuntime {
    /// The decision core (locked).
    pub fn core(&self) -> MutexGuard<'_, Switch> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ports, in `PortId` order.
    pub fn ports(&self) -> &[Arc<NetPort>] {
        &self.ports
    }
}

/// Every switch of a topology.
pub struct Fabric {
    start: Instant,
    switches: Vec<SwitchRuntime>,
}

/// Port key layout: switch index in the high bits, port number in the low 16.
fn key(switch: usize, port: usize) -> usize {
    (switch << 16) | port
}

fn unkey(k: usize) -> (usize, usize) {
    (k >> 16, k & 0xffff)
}

/// Per-thread scratch space of `tx_batch`, reused so the hot path does not allocate.
#[derive(Default)]
struct Scratch {
    /// Ports delivered to during the current batch (to interrupt each once).
    touched: Vec<bool>,
    /// Where flooded frames of the current batch go, as decided by the core.
    flood: Vec<PortId>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Fabric {
    /// Builds the switches and ports of `topo` (no sockets yet).
    pub fn new(topo: &Topology) -> Arc<Fabric> {
        let start = Instant::now();
        let mut switches = Vec::new();
        for (si, sw) in topo.switches.iter().enumerate() {
            let mut core = Switch::new(
                &sw.name,
                sw.mac_aging,
                crate::core::fdb::DEFAULT_MAX_ENTRIES,
            );
            let mut ports = Vec::new();
            for p in &sw.ports {
                let id = core.add_port(&p.name);
                let PortKind::VhostUserNet(v) = &p.kind;
                for mac in &v.static_macs {
                    core.add_static(Time(0), VlanId::DEFAULT, *mac, id);
                }
                ports.push(NetPort::new(
                    NetPortConfig {
                        name: p.name.clone(),
                        mac: v.mac.map(|m| m.0),
                        queue_pairs: v.queues,
                        threads: 1,
                        mtu: None,
                        offloads: v.offloads,
                    },
                    key(si, id.index()),
                ));
            }
            switches.push(SwitchRuntime {
                core: Mutex::new(core),
                ports,
            });
        }
        Arc::new(Fabric { start, switches })
    }

    /// The switches, in topology order.
    pub fn switches(&self) -> &[SwitchRuntime] {
        &self.switches
    }

    /// Milliseconds since the fabric started: the core's clock.
    pub fn now(&self) -> Time {
        Time(self.start.elapsed().as_millis() as u64)
    }

    /// Forgets aged-out forwarding entries; returns how many.
    pub fn expire(&self) -> usize {
        let now = self.now();
        self.switches
            .iter()
            .map(|s| s.core().fdb_mut().expire(now))
            .sum()
    }

    /// How often `expire` should run.
    pub const EXPIRE_INTERVAL: Duration = Duration::from_secs(5);
}

impl FrameSwitch for Fabric {
    fn tx_batch(&self, port: &NetPort, queue_pair: u16, frames: &[TxFrame<'_>]) {
        let (si, pi) = unkey(port.key);
        let Some(sw) = self.switches.get(si) else {
            return;
        };
        let in_port = PortId(pi as u32);
        let now = self.now();
        SCRATCH.with_borrow_mut(|Scratch { touched, flood }| {
            // One lock for the whole batch: decide every frame, and note the flood set.
            let mut verdicts = ArrayVec::<Verdict, TX_BATCH>::new();
            {
                let mut core = sw.core();
                for f in frames.iter().take(TX_BATCH) {
                    verdicts.push(core.forward(now, in_port, f.head()));
                }
                flood.clear();
                if verdicts.contains(&Verdict::Flood) {
                    flood.extend(core.flood_targets(in_port));
                }
            }
            touched.clear();
            touched.resize(sw.ports.len(), false);
            let mut deliver = |p: PortId, f: &TxFrame<'_>| {
                if let Some(dst) = sw.ports.get(p.index()) {
                    let _ = dst.deliver(f, queue_pair);
                    touched[p.index()] = true;
                }
            };
            for (f, v) in frames.iter().zip(&verdicts) {
                match *v {
                    Verdict::Unicast(p) => deliver(p, f),
                    Verdict::Flood => flood.iter().for_each(|&p| deliver(p, f)),
                    Verdict::Drop(_) => {}
                }
            }
            for (i, t) in touched.iter().enumerate() {
                if *t {
                    sw.ports[i].notify();
                }
            }
        });
    }

    fn link_changed(&self, port: &NetPort, up: bool) {
        let (si, pi) = unkey(port.key);
        if let Some(sw) = self.switches.get(si) {
            if !up {
                let n = sw.core().port_down(PortId(pi as u32));
                tracing::info!(port = port.name(), forgotten = n, "link down");
            } else {
                tracing::info!(port = port.name(), "link up");
            }
        }
    }
}
