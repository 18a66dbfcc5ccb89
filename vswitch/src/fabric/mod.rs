//! The fabric: every switch of a topology at run time, its ports' devices and threads.
//!
//! `Fabric::new` builds the switches and their ports from a validated `Topology` (TAPs
//! created, VXLAN and NAT sockets bound, no thread yet); `bind_vm_sockets` and `start_ports`
//! follow, so a daemon can drop its privileges between them. Ports come and go at run time
//! (`add_port`, `remove_port`, `reload`); the data path sees a port list that is replaced
//! whole (`ArcSwap`), so it never waits for the control plane.
//!
//! Files: `forward.rs` the batch path (the hot one, captures and impairments applied there),
//! `reload.rs` the all-or-nothing reload, `capture.rs` and `impair.rs` the capture and
//! impairment of one port (leaves: they know nothing of the fabric), `poll.rs` the busy-poll
//! loop. The fabric knows ports only through `crate::ports::Port` and decisions only through
//! `crate::core::Switch`.
//!
//! Invariants: a port's number is its index in the switch's port list and in the core; a
//! removed port leaves a hole the next added port fills; every failure while adding a port
//! undoes what was done (core entry, device, socket file, threads).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use flows::CoreGuard;
use std::time::{Duration, Instant};

use vhost_backends::net::{NetPort, NetPortConfig, Poller};
use vhost_backends::server::{PortStop, Role};
use vlan::VlanId;

use crate::core::{PortId, Switch, Time};
use crate::ports::{Ingress, NatPort, Port, SwitchPort, TapPort, VmPort, VxlanPort};
use crate::topology::{PortConfig, PortKind, Topology};

mod capture;
mod flows;
mod forward;
mod impair;
mod poll;
mod reload;
mod trace;

pub use capture::Capture;
use impair::DelayLine;
pub use impair::Impairment;
pub use trace::{Trace, summarize};

/// Most ports one switch may have (port numbers index fixed tables of captures and
/// impairments, and the low 16 bits of a port's key).
pub const MAX_PORTS: usize = 4096;

/// What runs a port besides the data path: its threads and the socket file it listens on
/// (removed with the port).
#[derive(Default)]
struct PortRun {
    threads: Vec<std::thread::JoinHandle<()>>,
    socket: Option<PathBuf>,
}

/// One switch at run time: the decision core and its ports' devices (index = `PortId`; a
/// removed port leaves a hole that the next added port fills).
pub struct SwitchRuntime {
    name: String,
    core: Mutex<Switch>,
    /// Replaced whole when a port is added or removed; the data path loads it once a batch.
    ports: arc_swap::ArcSwap<Vec<Option<Port>>>,
    runs: Mutex<std::collections::HashMap<usize, PortRun>>,
    /// The busy-poll threads' handles (empty: the switch is driven by kicks).
    pollers: Vec<Arc<Poller>>,
    captures: Vec<arc_swap::ArcSwapOption<Capture>>,
    /// Captures running on this switch (the data path looks at taps only when non-zero).
    tapping: std::sync::atomic::AtomicUsize,
    impairments: Vec<arc_swap::ArcSwapOption<Impairment>>,
    /// Impaired ports on this switch (looked at only when non-zero).
    impaired: std::sync::atomic::AtomicUsize,
    delay_line: Arc<DelayLine>,
    /// The core's version as of the last release of its lock (see `flows.rs`).
    version: std::sync::atomic::AtomicU64,
    /// Per port: decisions taken from flow caches.
    cached: Box<[flows::CachedStats]>,
}

impl SwitchRuntime {
    /// The decision core (locked).
    pub fn core(&self) -> CoreGuard<'_> {
        CoreGuard {
            guard: self.core.lock().unwrap_or_else(|p| p.into_inner()),
            version: &self.version,
        }
    }

    /// The switch's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ports, in `PortId` order (`None`: a removed port's number, free for reuse).
    pub fn ports(&self) -> Arc<Vec<Option<Port>>> {
        self.ports.load_full()
    }

    /// Port `index`, if it exists.
    pub fn port(&self, index: usize) -> Option<Port> {
        self.ports.load().get(index).cloned().flatten()
    }

    /// The port named `name`, with its number.
    /// The poll thread draining each of port `index`'s `pairs` TX ring pairs (`None`:
    /// the switch does not busy-poll).
    pub fn poll_thread_of(&self, index: usize, pairs: u16) -> Option<Vec<usize>> {
        let n = self.pollers.len();
        (n > 0).then(|| (0..usize::from(pairs)).map(|q| (index + q) % n).collect())
    }

    pub fn port_by_name(&self, name: &str) -> Option<(usize, Port)> {
        self.ports.load().iter().enumerate().find_map(|(i, p)| {
            p.as_ref()
                .filter(|p| p.name() == name)
                .map(|p| (i, p.clone()))
        })
    }

    /// Starts capturing port `port` (only frames of `vlan`, if given); frames arrive on the
    /// returned channel until `stop_capture`. One capture per port at a time.
    pub fn start_capture(
        &self,
        port: usize,
        vlan: Option<VlanId>,
    ) -> Result<tokio::sync::mpsc::Receiver<(u64, Vec<u8>)>, String> {
        let slot = self.captures.get(port).ok_or("no such port")?;
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let tap = Arc::new(Capture {
            vlan,
            tx,
            dropped: Default::default(),
        });
        let prev = slot.compare_and_swap(&None::<Arc<Capture>>, Some(tap));
        if prev.is_some() {
            return Err("the port is already being captured".into());
        }
        self.tapping
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(rx)
    }

    /// Sets (or with `None` clears) the impairment of `port`; false if there is no such port.
    pub fn set_impairment(&self, port: usize, imp: Option<Impairment>) -> bool {
        use std::sync::atomic::Ordering::AcqRel;
        let Some(slot) = self.impairments.get(port) else {
            return false;
        };
        let new = imp.map(Arc::new);
        let had = slot.swap(new.clone()).is_some();
        match (had, new.is_some()) {
            (false, true) => {
                self.impaired.fetch_add(1, AcqRel);
            }
            (true, false) => {
                self.impaired.fetch_sub(1, AcqRel);
            }
            _ => {}
        }
        true
    }

    /// The impairment of `port`, if any.
    pub fn impairment(&self, port: usize) -> Option<Arc<Impairment>> {
        self.impairments.get(port)?.load_full()
    }

    /// Ends the capture of `port`; returns how many frames the reader missed.
    pub fn stop_capture(&self, port: usize) -> u64 {
        let Some(slot) = self.captures.get(port) else {
            return 0;
        };
        match slot.swap(None) {
            Some(t) => {
                self.tapping
                    .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                t.dropped.load(std::sync::atomic::Ordering::Relaxed)
            }
            None => 0,
        }
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

/// Binds VM port `index`'s socket (or notes the VMM's socket it dials) and records the file
/// it listens on, removed with the port. The error names the socket.
fn bind_vm(sw: &SwitchRuntime, index: usize, vm: &VmPort) -> Result<(), String> {
    vm.bind()
        .map_err(|e| format!("socket {}: {e}", vm.config().socket.display()))?;
    if let Some(path) = vm.socket_file() {
        let mut runs = sw.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.entry(index).or_default().socket = Some(path);
    }
    Ok(())
}

/// The VLAN a port's static addresses live in: its untagged VLAN.
fn home_vlan(v: &vlan::PortVlan) -> VlanId {
    match v {
        vlan::PortVlan::Access(v) => *v,
        vlan::PortVlan::Trunk { native, .. } => native.unwrap_or(VlanId::DEFAULT),
        vlan::PortVlan::Tunnel { svlan } => *svlan,
    }
}

impl Fabric {
    /// Builds the switches and ports of `topo`: creates the TAP devices and binds the VXLAN
    /// sockets (vhost-user sockets and threads come later: `bind_vm_sockets`,
    /// `start_ports`). An error names the port; a TAP marked optional that cannot be
    /// created is logged and left down.
    pub fn new(topo: &Topology) -> Result<Arc<Fabric>, String> {
        let start = Instant::now();
        let mut switches = Vec::new();
        let delay_line = Arc::new(DelayLine::default());
        for sw in &topo.switches {
            let threads = if sw.busy_poll {
                sw.poll_threads.max(1)
            } else {
                0
            };
            let pollers = (0..threads)
                .map(|_| Poller::new())
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|e| format!("switch \"{}\": poller: {e}", sw.name))?;
            let core = Switch::new(
                &sw.name,
                sw.mac_aging,
                crate::core::fdb::DEFAULT_MAX_ENTRIES,
            );
            switches.push(SwitchRuntime {
                name: sw.name.clone(),
                core: Mutex::new(core),
                ports: Default::default(),
                runs: Default::default(),
                pollers,
                captures: (0..MAX_PORTS).map(|_| Default::default()).collect(),
                tapping: Default::default(),
                impairments: (0..MAX_PORTS).map(|_| Default::default()).collect(),
                impaired: Default::default(),
                delay_line: delay_line.clone(),
                version: Default::default(),
                cached: (0..MAX_PORTS).map(|_| Default::default()).collect(),
            });
        }
        let fabric = Fabric { start, switches };
        for (si, sw) in topo.switches.iter().enumerate() {
            for p in &sw.ports {
                fabric.attach(si, p)?;
            }
        }
        Ok(Arc::new(fabric))
    }

    /// Adds port `cfg` to switch `si`: its number in the core (with its policy and static
    /// addresses) and its device (a TAP created, a VXLAN socket bound), but no thread yet.
    /// Returns the port's number; on error nothing is left behind.
    fn attach(&self, si: usize, p: &PortConfig) -> Result<usize, String> {
        let sw = self.switches.get(si).ok_or("no such switch")?;
        let here = format!("switch \"{}\" port \"{}\"", sw.name, p.name);
        if sw.port_by_name(&p.name).is_some() {
            return Err(format!("{here}: a port of that name exists"));
        }
        let id = {
            let mut core = sw.core();
            let id = core.add_port_with(&p.name, p.policy.clone());
            // The number may have been another port's: its cached-decision counts start at 0.
            if let Some(c) = sw.cached.get(id.index()) {
                c.reset();
            }
            // Static addresses live in the port's untagged VLAN (access, native or service
            // VLAN).
            for mac in &p.static_macs {
                core.add_static(self.now(), home_vlan(&p.policy.vlan), *mac, id);
            }
            id
        };
        let undo = |e: String| {
            sw.core().remove_port(id);
            e
        };
        if id.index() >= MAX_PORTS {
            return Err(undo(format!(
                "{here}: more than {MAX_PORTS} ports on the switch"
            )));
        }
        let port = match &p.kind {
            PortKind::VhostUserNet(v) => {
                let net = NetPort::new(
                    NetPortConfig {
                        name: p.name.clone(),
                        mac: v.mac.map(|m| m.0),
                        queue_pairs: v.queues,
                        threads: 1,
                        mtu: None,
                        offloads: v.offloads,
                        // Pair q is drained by poll thread (port number + q) mod N.
                        pollers: (0..sw.pollers.len())
                            .map(|k| sw.pollers[(id.index() + k) % sw.pollers.len()].clone())
                            .collect(),
                    },
                    key(si, id.index()),
                );
                Port::Vm(Arc::new(VmPort::new(net, v.clone())))
            }
            PortKind::Tap(t) => {
                let tap = TapPort::new(&p.name, t.clone());
                match tap.open() {
                    Ok(()) => {}
                    Err(e) if t.optional => {
                        tracing::warn!("{here}: {e}; the port is optional: its link stays down")
                    }
                    Err(e) => return Err(undo(format!("{here}: {e}"))),
                }
                Port::Tap(Arc::new(tap))
            }
            PortKind::Vxlan(v) => match VxlanPort::open(&p.name, v.clone()) {
                Ok(x) => Port::Vxlan(Arc::new(x)),
                Err(e) => return Err(undo(format!("{here}: {e}"))),
            },
            PortKind::Nat(n) => match NatPort::open(&p.name, n.clone()) {
                Ok(x) => Port::Nat(Arc::new(x)),
                Err(e) => return Err(undo(format!("{here}: {e}"))),
            },
        };
        sw.ports.rcu(|old| {
            let mut v = Vec::clone(old);
            if v.len() <= id.index() {
                v.resize(id.index() + 1, None);
            }
            v[id.index()] = Some(port.clone());
            v
        });
        Ok(id.index())
    }

    /// Serves VM port `index` of switch `si` through `role` (a listener bound by the caller,
    /// or the VMM's socket to dial) on a thread of its own; `socket`: the file it listens
    /// on, removed with the port.
    pub fn serve_vm_port(
        self: &Arc<Self>,
        si: usize,
        index: usize,
        role: Role,
        socket: Option<PathBuf>,
    ) -> std::io::Result<()> {
        let sw = self.switch(si)?;
        let Some(Port::Vm(vm)) = sw.port(index) else {
            return Err(std::io::Error::other("not a VM port"));
        };
        vm.set_role(role);
        self.start_port(si, index)?;
        let mut runs = sw.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.entry(index).or_default().socket = socket;
        Ok(())
    }

    /// Binds (with their permissions) the listening socket of every VM port, or notes the
    /// VMM socket it dials: all or nothing. The error names the switch, port and socket;
    /// sockets bound before it are removed again.
    pub fn bind_vm_sockets(&self) -> Result<(), String> {
        for sw in &self.switches {
            for (index, port) in sw.ports().iter().enumerate() {
                let Some(Port::Vm(vm)) = port else { continue };
                if let Err(e) = bind_vm(sw, index, vm) {
                    self.remove_socket_files();
                    return Err(format!(
                        "switch \"{}\" port \"{}\": {e}",
                        sw.name,
                        vm.name()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Starts every port's threads: VM ports (whose sockets `bind_vm_sockets` made), TAP
    /// and VXLAN readers, NAT gateways.
    pub fn start_ports(self: &Arc<Self>) -> std::io::Result<()> {
        for (si, sw) in self.switches.iter().enumerate() {
            for (pi, port) in sw.ports().iter().enumerate() {
                if port.is_some() {
                    self.start_port(si, pi)?;
                }
            }
        }
        Ok(())
    }

    /// Starts the threads of port `pi` of switch `si`; its frames enter the switch through
    /// the fabric's `Ingress`.
    fn start_port(self: &Arc<Self>, si: usize, pi: usize) -> std::io::Result<()> {
        let sw = self.switch(si)?;
        let Some(port) = sw.port(pi) else {
            return Ok(());
        };
        let ingress: Arc<dyn Ingress> = self.clone();
        let threads = port.start(key(si, pi), &ingress)?;
        let mut runs = sw.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.entry(pi).or_default().threads.extend(threads);
        Ok(())
    }

    fn switch(&self, si: usize) -> std::io::Result<&SwitchRuntime> {
        self.switches
            .get(si)
            .ok_or_else(|| std::io::Error::other("no such switch"))
    }

    /// Adds port `cfg` to switch `si` of a running fabric: device, socket (bound, with its
    /// permissions) and threads. On error nothing is left behind.
    pub fn add_port(self: &Arc<Self>, si: usize, cfg: &PortConfig) -> Result<(), String> {
        let index = self.attach(si, cfg)?;
        let sw = &self.switches[si];
        let started = match sw.port(index) {
            Some(Port::Vm(vm)) => bind_vm(sw, index, &vm)
                .and_then(|()| self.start_port(si, index).map_err(|e| e.to_string())),
            _ => self.start_port(si, index).map_err(|e| e.to_string()),
        };
        if let Err(e) = started {
            self.detach(si, index);
            return Err(format!("switch \"{}\" port \"{}\": {e}", sw.name, cfg.name));
        }
        tracing::info!(switch = sw.name, port = cfg.name, "port added");
        Ok(())
    }

    /// Removes port `name` of switch `si`: its forwarding entries, its captures and
    /// impairments, its threads (waited for) and its socket file. False if there is none.
    pub fn remove_port(&self, si: usize, name: &str) -> bool {
        let Some(sw) = self.switches.get(si) else {
            return false;
        };
        let Some((index, _)) = sw.port_by_name(name) else {
            return false;
        };
        self.detach(si, index);
        tracing::info!(switch = sw.name, port = name, "port removed");
        true
    }

    fn detach(&self, si: usize, index: usize) {
        let sw = &self.switches[si];
        sw.core().remove_port(PortId(index as u32));
        let mut gone = None;
        sw.ports.rcu(|old| {
            let mut v = Vec::clone(old);
            if let Some(slot) = v.get_mut(index) {
                gone = slot.take();
            }
            v
        });
        sw.stop_capture(index);
        sw.set_impairment(index, None);
        let run = sw
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&index)
            .unwrap_or_default();
        if let Some(port) = &gone {
            port.stop();
        }
        for t in run.threads {
            let _ = t.join();
        }
        if let Some(sock) = run.socket {
            let _ = std::fs::remove_file(sock);
        }
    }

    /// Every listening VM port's stop handle and socket file (kept in existence by the
    /// socket keeper).
    pub fn listening(&self) -> Vec<(Arc<PortStop>, PathBuf, String)> {
        let mut v = Vec::new();
        for sw in &self.switches {
            let runs = sw.runs.lock().unwrap_or_else(|p| p.into_inner());
            for (i, r) in runs.iter() {
                if let (Some(sock), Some(Port::Vm(vm))) = (&r.socket, sw.port(*i)) {
                    v.push((
                        vm.port_stop().clone(),
                        sock.clone(),
                        format!("port {}", vm.name()),
                    ));
                }
            }
        }
        v
    }

    /// The socket files of every listening VM port (to remove at shutdown).
    pub fn socket_files(&self) -> Vec<PathBuf> {
        self.switches
            .iter()
            .flat_map(|sw| {
                sw.runs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .filter_map(|r| r.socket.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Removes the socket file of every listening VM port (at shutdown, or when starting
    /// failed).
    pub fn remove_socket_files(&self) {
        for f in self.socket_files() {
            let _ = std::fs::remove_file(f);
        }
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
