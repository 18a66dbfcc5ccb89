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
use std::path::PathBuf;
use vhost_backends::frame::{FrameEdit, TxFrame};

use vhost_backends::net::{FrameSwitch, NetPort, NetPortConfig, Poller, TX_BATCH};
use vhost_backends::server::{PortStop, Role, run_port};
use vlan::VlanId;

use crate::core::{Decision, PortId, Switch, Time, Verdict};
use crate::natport::NatPort;
use crate::tap::TapPort;
use crate::topology::{PortConfig, PortKind, Topology};
use crate::vxlan::VxlanPort;

/// What a switch port is: a VM's virtio-net device, a TAP device or a VXLAN tunnel.
#[derive(Clone)]
pub enum Port {
    Vm(Arc<NetPort>),
    Tap(Arc<TapPort>),
    Vxlan(Arc<VxlanPort>),
    Nat(Arc<NatPort>),
}

impl Port {
    pub fn name(&self) -> &str {
        match self {
            Port::Vm(p) => p.name(),
            Port::Tap(p) => p.name(),
            Port::Vxlan(p) => p.name(),
            Port::Nat(p) => p.name(),
        }
    }

    /// The VM's device, for a VM port.
    pub fn vm(&self) -> Option<&Arc<NetPort>> {
        match self {
            Port::Vm(p) => Some(p),
            _ => None,
        }
    }

    /// Link state: a guest connected; the TAP exists; a VXLAN socket is always up.
    pub fn is_connected(&self) -> bool {
        match self {
            Port::Vm(p) => p.is_connected(),
            Port::Tap(p) => p.is_up(),
            Port::Vxlan(_) | Port::Nat(_) => true,
        }
    }

    /// Guest connections served (VM ports; 0 for the others).
    pub fn connections(&self) -> u64 {
        match self {
            Port::Vm(p) => p.connections(),
            _ => 0,
        }
    }

    /// Every counter, as (name, value).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        match self {
            Port::Vm(p) => p.counters().fields(),
            Port::Tap(p) => p.counters().fields(),
            Port::Vxlan(p) => p.counters().fields(),
            Port::Nat(p) => p.fields(),
        }
    }

    fn deliver_batch<'f, 'a: 'f>(
        &self,
        frames: impl Iterator<Item = (&'f TxFrame<'a>, FrameEdit)>,
        hint: u16,
    ) {
        match self {
            Port::Vm(p) => {
                p.deliver_batch(frames, hint, |_| {});
                p.notify();
            }
            Port::Tap(p) => p.deliver(frames, hint),
            Port::Vxlan(p) => p.deliver(frames),
            Port::Nat(p) => p.deliver(frames),
        }
    }

    fn deliver_bytes(&self, frames: &[Vec<u8>], hint: u16) {
        match self {
            Port::Vm(p) => {
                p.deliver_bytes(frames, hint);
                p.notify();
            }
            Port::Tap(p) => p.deliver_bytes(frames, hint),
            Port::Vxlan(p) => p.deliver_bytes(frames),
            Port::Nat(p) => p.deliver_bytes(frames),
        }
    }

    fn plain_frames(&self, frame: &TxFrame<'_>, edit: FrameEdit, out: impl FnMut(&[u8])) {
        match self {
            Port::Vm(p) => p.plain_frames(frame, edit, out),
            Port::Tap(p) => vhost_backends::net::plain_frames(frame, edit, &p.counters().net, out),
            Port::Vxlan(p) => {
                vhost_backends::net::plain_frames(frame, edit, &p.counters().net, out)
            }
            Port::Nat(p) => vhost_backends::net::plain_frames(frame, edit, &p.counters().net, out),
        }
    }
}

/// A capture of one port's frames, both directions, as they are on the port's wire
/// (ingress as the guest sent them, egress after the VLAN edit). Fed by the data path
/// without blocking it: when the reader lags, frames are dropped and counted.
pub struct Tap {
    /// Only frames classified in this VLAN.
    pub vlan: Option<VlanId>,
    tx: tokio::sync::mpsc::Sender<(u64, Vec<u8>)>,
    pub dropped: std::sync::atomic::AtomicU64,
}

impl Tap {
    fn offer(&self, vlan: VlanId, frame: Vec<u8>) {
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

/// A link impairment on a port, applied to every frame into or out of it (like netem on
/// both ends of a cable): random loss, a rate ceiling (frames beyond it are dropped), and a
/// delay with random jitter (frames stay in order). For test networks.
pub struct Impairment {
    /// Probability of losing a frame, 0..=1.
    pub loss: f64,
    pub delay: Duration,
    pub jitter: Duration,
    /// Bits per second; `None`: no ceiling.
    pub rate_bps: Option<u64>,
    state: Mutex<ImpairState>,
    pub lost: std::sync::atomic::AtomicU64,
    pub over_rate: std::sync::atomic::AtomicU64,
    pub delayed: std::sync::atomic::AtomicU64,
}

struct ImpairState {
    rng: u64,
    tokens_bits: f64,
    last: Instant,
}

impl Impairment {
    pub fn new(loss: f64, delay: Duration, jitter: Duration, rate_bps: Option<u64>) -> Impairment {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Impairment {
            loss: loss.clamp(0.0, 1.0),
            delay,
            jitter,
            rate_bps,
            state: Mutex::new(ImpairState {
                rng: seed,
                tokens_bits: 0.0,
                last: Instant::now(),
            }),
            lost: Default::default(),
            over_rate: Default::default(),
            delayed: Default::default(),
        }
    }

    /// Decides one frame of `len` bytes: `None` = dropped, else the extra delay.
    fn judge(&self, len: usize) -> Option<Duration> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // xorshift64*: uniform numbers for loss and jitter.
        let mut next = || {
            st.rng ^= st.rng >> 12;
            st.rng ^= st.rng << 25;
            st.rng ^= st.rng >> 27;
            (st.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        };
        if self.loss > 0.0 && next() < self.loss {
            self.lost.fetch_add(1, Relaxed);
            return None;
        }
        let jitter = self.jitter.mul_f64(next());
        if let Some(bps) = self.rate_bps {
            let now = Instant::now();
            let burst = (bps as f64 / 10.0).max(16.0 * 1518.0 * 8.0);
            st.tokens_bits = (st.tokens_bits
                + now.duration_since(st.last).as_secs_f64() * bps as f64)
                .min(burst);
            st.last = now;
            let bits = (len * 8) as f64;
            if st.tokens_bits < bits {
                self.over_rate.fetch_add(1, Relaxed);
                return None;
            }
            st.tokens_bits -= bits;
        }
        Some(self.delay + jitter)
    }
}

/// Held-back frames by (due time, arrival number): the receiving port and the frame.
type Held = std::collections::BTreeMap<(Instant, u64), (Port, Vec<u8>)>;

/// Frames held back by impairments, delivered when due by one thread per fabric.
#[derive(Default)]
struct DelayLine {
    queue: Mutex<Held>,
    wake: std::sync::Condvar,
    seq: std::sync::atomic::AtomicU64,
    started: std::sync::OnceLock<()>,
}

impl DelayLine {
    fn push(self: &Arc<Self>, due: Instant, port: Port, frame: Vec<u8>) {
        self.started.get_or_init(|| {
            let me = self.clone();
            let _ = std::thread::Builder::new()
                .name("delay-line".into())
                .spawn(move || me.run());
        });
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.insert((due, seq), (port, frame));
        self.wake.notify_one();
    }

    fn run(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            let wait = match q.keys().next() {
                Some(&(due, _)) if due <= now => Duration::ZERO,
                Some(&(due, _)) => due - now,
                None => Duration::from_secs(3600),
            };
            if !wait.is_zero() {
                q = self
                    .wake
                    .wait_timeout(q, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
                continue;
            }
            let mut due: Vec<(Port, Vec<u8>)> = Vec::new();
            while let Some(entry) = q.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            drop(q);
            for (port, frame) in &due {
                port.deliver_bytes(std::slice::from_ref(frame), 0);
            }
            q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Most ports one switch may have (port numbers index fixed tables of captures and
/// impairments, and the low 16 bits of a port's key).
pub const MAX_PORTS: usize = 4096;

/// What runs a port besides the data path: its threads, the handle that stops a VM port's
/// thread, and the socket file it listens on.
#[derive(Default)]
struct PortRun {
    vm_stop: Option<Arc<PortStop>>,
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
    poller: Option<Arc<Poller>>,
    taps: Vec<arc_swap::ArcSwapOption<Tap>>,
    /// Captures running on this switch (the data path looks at taps only when non-zero).
    tapping: std::sync::atomic::AtomicUsize,
    impairments: Vec<arc_swap::ArcSwapOption<Impairment>>,
    /// Impaired ports on this switch (looked at only when non-zero).
    impaired: std::sync::atomic::AtomicUsize,
    delay_line: Arc<DelayLine>,
}

impl SwitchRuntime {
    /// The decision core (locked).
    pub fn core(&self) -> MutexGuard<'_, Switch> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
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
        let slot = self.taps.get(port).ok_or("no such port")?;
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let tap = Arc::new(Tap {
            vlan,
            tx,
            dropped: Default::default(),
        });
        let prev = slot.compare_and_swap(&None::<Arc<Tap>>, Some(tap));
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
        let Some(slot) = self.taps.get(port) else {
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

/// The VLAN a port's static addresses live in: its untagged VLAN.
fn home_vlan(v: &vlan::PortVlan) -> VlanId {
    match v {
        vlan::PortVlan::Access(v) => *v,
        vlan::PortVlan::Trunk { native, .. } => native.unwrap_or(VlanId::DEFAULT),
        vlan::PortVlan::Tunnel { svlan } => *svlan,
    }
}

/// Per-thread scratch space of `tx_batch`, reused so the hot path does not allocate.
#[derive(Default)]
struct Scratch {
    /// Per port: gets at least one frame of the current batch.
    is_dest: Vec<bool>,
    /// Those ports, in first-appearance order.
    dests: Vec<usize>,
    /// The flood sets of the VLANs flooding in the current batch.
    floods: Vec<(VlanId, Vec<PortId>)>,
    /// (destination port, frame index, edit) for every copy the batch makes.
    copies: Vec<(usize, usize, FrameEdit)>,
}

/// Applies the impairments of the ingress port and of each receiving port to the batch's
/// copies: lost ones are removed, delayed ones go to the delay line as plain frames.
fn impair(
    sw: &SwitchRuntime,
    ports: &[Option<Port>],
    in_port: PortId,
    frames: &[TxFrame<'_>],
    copies: &mut Vec<(usize, usize, FrameEdit)>,
) {
    let from = sw.impairment(in_port.index());
    copies.retain(|&(p, i, e)| {
        let to = sw.impairment(p);
        let (Some(frame), Some(Some(port))) = (frames.get(i), ports.get(p)) else {
            return false;
        };
        if from.is_none() && to.is_none() {
            return true;
        }
        let len = e.len_after(frame.len());
        let mut delay = Duration::ZERO;
        for imp in from.iter().chain(to.iter()) {
            match imp.judge(len) {
                None => return false,
                Some(d) => delay += d,
            }
        }
        if delay.is_zero() {
            return true;
        }
        let due = Instant::now() + delay;
        port.plain_frames(frame, e, |b| {
            sw.delay_line.push(due, port.clone(), b.to_vec());
        });
        for imp in from.iter().chain(to.iter()) {
            imp.delayed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        false
    });
}

/// Copies a batch's frames to the captures of its ingress port and of the ports that
/// receive them.
fn feed_taps(
    sw: &SwitchRuntime,
    in_port: PortId,
    frames: &[TxFrame<'_>],
    decisions: &[Decision],
    copies: &[(usize, usize, FrameEdit)],
) {
    if let Some(tap) = sw.taps.get(in_port.index()).and_then(|t| t.load_full()) {
        for (f, d) in frames.iter().zip(decisions) {
            tap.offer(d.vlan, f.to_vec());
        }
    }
    for &(p, i, e) in copies {
        if let (Some(tap), Some(f), Some(d)) = (
            sw.taps.get(p).and_then(|t| t.load_full()),
            frames.get(i),
            decisions.get(i),
        ) {
            let mut bytes = f.to_vec();
            e.apply(&mut bytes);
            tap.offer(d.vlan, bytes);
        }
    }
}

fn frame_edit(e: vlan::Edit) -> FrameEdit {
    FrameEdit {
        strip: e.strip as u8,
        push: e.push.map(|t| t.to_bytes()),
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Fabric {
    /// Builds the switches and ports of `topo`: creates the TAP devices and binds the VXLAN
    /// sockets (vhost-user sockets and threads come later: `serve_vm_port`,
    /// `start_host_ports`). An error names the port; a TAP marked optional that cannot be
    /// created is logged and left down.
    pub fn new(topo: &Topology) -> Result<Arc<Fabric>, String> {
        let start = Instant::now();
        let mut switches = Vec::new();
        let delay_line = Arc::new(DelayLine::default());
        for sw in &topo.switches {
            let poller = if sw.busy_poll {
                Some(Poller::new().map_err(|e| format!("switch \"{}\": poller: {e}", sw.name))?)
            } else {
                None
            };
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
                poller,
                taps: (0..MAX_PORTS).map(|_| Default::default()).collect(),
                tapping: Default::default(),
                impairments: (0..MAX_PORTS).map(|_| Default::default()).collect(),
                impaired: Default::default(),
                delay_line: delay_line.clone(),
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
            PortKind::VhostUserNet(v) => Port::Vm(NetPort::new(
                NetPortConfig {
                    name: p.name.clone(),
                    mac: v.mac.map(|m| m.0),
                    queue_pairs: v.queues,
                    threads: 1,
                    mtu: None,
                    offloads: v.offloads,
                    poller: sw.poller.clone(),
                },
                key(si, id.index()),
            )),
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

    /// Serves VM port `index` of switch `si` on a thread of its own (`socket`: the file it
    /// listens on, removed with the port).
    pub fn serve_vm_port(
        self: &Arc<Self>,
        si: usize,
        index: usize,
        role: Role,
        socket: Option<PathBuf>,
    ) -> std::io::Result<()> {
        let sw = &self.switches[si];
        let Some(port) = sw.port(index).and_then(|p| p.vm().cloned()) else {
            return Err(std::io::Error::other("not a VM port"));
        };
        let stop = PortStop::new();
        let switch: Arc<dyn FrameSwitch> = self.clone();
        let s2 = stop.clone();
        let t = std::thread::Builder::new()
            .name(format!("port-{}", port.name()))
            .spawn(move || {
                if data_path(&format!("port {}", port.name())) {
                    run_port(port, switch, role, s2)
                }
            })?;
        let mut runs = sw.runs.lock().unwrap_or_else(|p| p.into_inner());
        let run = runs.entry(index).or_default();
        run.vm_stop = Some(stop);
        run.threads.push(t);
        run.socket = socket;
        Ok(())
    }

    /// Starts the reader threads of every TAP and VXLAN port.
    pub fn start_host_ports(self: &Arc<Self>) -> std::io::Result<()> {
        for (si, sw) in self.switches.iter().enumerate() {
            for (pi, port) in sw.ports().iter().enumerate() {
                if port.is_some() {
                    self.start_host_port(si, pi)?;
                }
            }
        }
        Ok(())
    }

    /// Starts the reader threads of TAP or VXLAN port `pi` of switch `si` (nothing for a VM
    /// port).
    fn start_host_port(self: &Arc<Self>, si: usize, pi: usize) -> std::io::Result<()> {
        let sw = &self.switches[si];
        let mut threads = Vec::new();
        match sw.port(pi) {
            Some(Port::Tap(tap)) => {
                for q in 0..tap.queues() {
                    let (fabric, tap) = (self.clone(), tap.clone());
                    threads.push(
                        std::thread::Builder::new()
                            .name(format!("tap-{}-{q}", tap.name()))
                            .spawn(move || {
                                if data_path(&format!("port {}", tap.name())) {
                                    tap.receive(q, |frames| {
                                        fabric.forward(si, pi, q as u16, frames)
                                    })
                                }
                            })?,
                    );
                }
            }
            Some(Port::Nat(n)) => {
                let fabric = self.clone();
                if let Some(t) = n.start(move |frames| fabric.forward(si, pi, 0, frames))? {
                    threads.push(t);
                }
            }
            Some(Port::Vxlan(vx)) => {
                let (fabric, vx) = (self.clone(), vx.clone());
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("vxlan-{}", vx.name()))
                        .spawn(move || {
                            if data_path(&format!("port {}", vx.name())) {
                                vx.receive(|frames| fabric.forward(si, pi, 0, frames))
                            }
                        })?,
                );
            }
            _ => {}
        }
        let mut runs = sw.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.entry(pi).or_default().threads.extend(threads);
        Ok(())
    }

    /// Adds port `cfg` to switch `si` of a running fabric: device, socket (bound, with its
    /// permissions) and threads. On error nothing is left behind.
    pub fn add_port(self: &Arc<Self>, si: usize, cfg: &PortConfig) -> Result<(), String> {
        let index = self.attach(si, cfg)?;
        let sw_name = self.switches[si].name.clone();
        let started = match &cfg.kind {
            PortKind::VhostUserNet(v) if v.client => self
                .serve_vm_port(si, index, Role::Client(v.socket.clone()), None)
                .map_err(|e| e.to_string()),
            PortKind::VhostUserNet(v) => {
                match vhost_backends::server::bind_socket(&v.socket)
                    .and_then(|l| crate::control::apply_perms(&v.socket, &v.perms).map(|()| l))
                {
                    Ok(l) => self
                        .serve_vm_port(si, index, Role::Server(l), Some(v.socket.clone()))
                        .map_err(|e| e.to_string()),
                    Err(e) => {
                        // Ours only if it was created here (a live socket is refused first).
                        if e.kind() != std::io::ErrorKind::AddrInUse
                            && e.kind() != std::io::ErrorKind::AlreadyExists
                        {
                            let _ = std::fs::remove_file(&v.socket);
                        }
                        Err(format!("socket {}: {e}", v.socket.display()))
                    }
                }
            }
            _ => self.start_host_port(si, index).map_err(|e| e.to_string()),
        };
        if let Err(e) = started {
            self.detach(si, index);
            return Err(format!("switch \"{sw_name}\" port \"{}\": {e}", cfg.name));
        }
        tracing::info!(switch = sw_name, port = cfg.name, "port added");
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
        if let Some(s) = &run.vm_stop {
            s.stop();
        }
        match &gone {
            Some(Port::Tap(t)) => t.stop(),
            Some(Port::Vxlan(x)) => x.stop(),
            Some(Port::Nat(n)) => n.stop(),
            _ => {}
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
                if let (Some(stop), Some(sock), Some(port)) = (&r.vm_stop, &r.socket, sw.port(*i)) {
                    v.push((stop.clone(), sock.clone(), format!("port {}", port.name())));
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

    /// Makes the running fabric match `new` (it runs `old`): ports added and removed (by
    /// name), VLAN modes, port security, static addresses, MAC aging. Ports left alone keep
    /// their connections and counters. Returns the changes, described. Refuses, changing
    /// nothing, what needs a restart (disks, switches, the control socket, a port's device
    /// settings), or when a new port cannot be set up.
    pub fn reload(self: &Arc<Self>, old: &Topology, new: &Topology) -> Result<Vec<String>, String> {
        let mut blockers = Vec::new();
        if old.disks != new.disks {
            blockers.push("disks changed".to_string());
        }
        if old.control != new.control || old.metrics != new.metrics {
            blockers.push("the control socket or metrics address changed".to_string());
        }
        let names = |t: &Topology| {
            t.switches
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
        };
        if names(old) != names(new) {
            blockers.push("switches added, removed or renamed".to_string());
        }
        let find = |s: &crate::topology::SwitchConfig, name: &str| {
            s.ports.iter().find(|p| p.name == name).cloned()
        };
        for (a, b) in old.switches.iter().zip(&new.switches) {
            if a.busy_poll != b.busy_poll {
                blockers.push(format!("switch \"{}\": busy_poll changed", a.name));
            }
            for pb in &b.ports {
                if let Some(pa) = find(a, &pb.name)
                    && pa.kind != pb.kind
                {
                    blockers.push(format!(
                        "port \"{}\": its type or device settings (socket, queues, mac, offloads, ifname, VXLAN endpoints...) changed (remove it, reload, add it back)",
                        pa.name
                    ));
                }
            }
        }
        if !blockers.is_empty() {
            return Err(format!(
                "reload refused, nothing changed (restart vfabric to apply): {}",
                blockers.join("; ")
            ));
        }
        let mut changes = Vec::new();
        // New ports first, all or nothing.
        let mut added: Vec<(usize, String)> = Vec::new();
        for (si, (a, b)) in old.switches.iter().zip(&new.switches).enumerate() {
            for pb in b.ports.iter().filter(|p| find(a, &p.name).is_none()) {
                if let Err(e) = self.add_port(si, pb) {
                    for (si, name) in &added {
                        self.remove_port(*si, name);
                    }
                    return Err(format!("reload refused, nothing changed: {e}"));
                }
                added.push((si, pb.name.clone()));
                changes.push(format!("switch \"{}\": port \"{}\" added", b.name, pb.name));
            }
        }
        for (si, (a, b)) in old.switches.iter().zip(&new.switches).enumerate() {
            for pa in a.ports.iter().filter(|p| find(b, &p.name).is_none()) {
                self.remove_port(si, &pa.name);
                changes.push(format!(
                    "switch \"{}\": port \"{}\" removed",
                    a.name, pa.name
                ));
            }
        }
        let now = self.now();
        for ((a, b), rt) in old.switches.iter().zip(&new.switches).zip(&self.switches) {
            if a.mac_aging != b.mac_aging {
                rt.core().fdb_mut().set_aging(b.mac_aging);
                changes.push(format!(
                    "switch \"{}\": mac_aging {:?}",
                    b.name, b.mac_aging
                ));
            }
            for pb in &b.ports {
                let (Some(pa), Some((i, _))) = (find(a, &pb.name), rt.port_by_name(&pb.name))
                else {
                    continue;
                };
                let id = PortId(i as u32);
                let mut core = rt.core();
                if pa.policy != pb.policy {
                    core.set_policy(id, pb.policy.clone());
                    changes.push(format!("port \"{}\": VLAN/security policy", pb.name));
                }
                if pa.static_macs != pb.static_macs || pa.policy.vlan != pb.policy.vlan {
                    let home_a = home_vlan(&pa.policy.vlan);
                    for m in &pa.static_macs {
                        core.fdb_mut().remove(home_a, *m);
                    }
                    let home_b = home_vlan(&pb.policy.vlan);
                    for m in &pb.static_macs {
                        core.add_static(now, home_b, *m, id);
                    }
                    if pa.static_macs != pb.static_macs {
                        changes.push(format!("port \"{}\": static_macs", pb.name));
                    }
                }
            }
        }
        Ok(changes)
    }

    /// How often `expire` should run.
    pub const EXPIRE_INTERVAL: Duration = Duration::from_secs(5);
}

impl Fabric {
    /// Forwards a batch of frames received on port `pi` of switch `si` (queue `queue_pair`):
    /// one lock of the switch to decide them all, then each receiver's frames in one go.
    pub fn forward(&self, si: usize, pi: usize, queue_pair: u16, frames: &[TxFrame<'_>]) {
        let Some(sw) = self.switches.get(si) else {
            return;
        };
        let in_port = PortId(pi as u32);
        let now = self.now();
        let ports = sw.ports.load();
        SCRATCH.with_borrow_mut(
            |Scratch {
                 is_dest,
                 dests,
                 floods,
                 copies,
             }| {
                // One lock for the whole batch: decide every frame, then list every copy
                // (destination, frame, VLAN tag edit).
                let mut decisions = ArrayVec::<Decision, TX_BATCH>::new();
                copies.clear();
                for (_, f) in floods.iter_mut() {
                    f.clear();
                }
                let mut nfloods = 0;
                {
                    let core = &mut *sw.core();
                    core.forward_batch(
                        now,
                        in_port,
                        frames.iter().take(TX_BATCH).map(|f| f.head()),
                        |d| decisions.push(d),
                    );
                    for (i, d) in decisions.iter().enumerate() {
                        match d.verdict {
                            Verdict::Unicast(p) => {
                                if let Some(e) = core.egress_edit(p, d) {
                                    copies.push((p.index(), i, frame_edit(e)));
                                }
                            }
                            Verdict::Flood => {
                                // The VLAN's flood set, computed once per batch.
                                let k = match floods[..nfloods].iter().position(|f| f.0 == d.vlan) {
                                    Some(k) => k,
                                    None => {
                                        if floods.len() == nfloods {
                                            floods.push((d.vlan, Vec::new()));
                                        }
                                        floods[nfloods].0 = d.vlan;
                                        floods[nfloods].1.clear();
                                        floods[nfloods]
                                            .1
                                            .extend(core.flood_targets(in_port, d.vlan));
                                        nfloods += 1;
                                        nfloods - 1
                                    }
                                };
                                for &p in &floods[k].1 {
                                    if let Some(e) = core.egress_edit(p, d) {
                                        copies.push((p.index(), i, frame_edit(e)));
                                    }
                                }
                            }
                            Verdict::Drop(_) => {}
                        }
                    }
                }
                if sw.tapping.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                    feed_taps(sw, in_port, frames, &decisions, copies);
                }
                if sw.impaired.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                    impair(sw, &ports, in_port, frames, copies);
                }
                // The ports that get anything, in first-appearance order (flags are all false
                // between batches: only the ports set here are cleared again below).
                is_dest.resize(ports.len(), false);
                dests.clear();
                for &(p, _, _) in copies.iter() {
                    if p < is_dest.len() && !is_dest[p] {
                        is_dest[p] = true;
                        dests.push(p);
                    }
                }
                // Each destination's frames in one go, in batch order.
                for &p in dests.iter() {
                    let mine = copies
                        .iter()
                        .filter(|c| c.0 == p)
                        .filter_map(|&(_, i, e)| Some((frames.get(i)?, e)));
                    if let Some(Some(port)) = ports.get(p) {
                        port.deliver_batch(mine, queue_pair);
                    }
                    is_dest[p] = false;
                }
            },
        );
    }
}

impl FrameSwitch for Fabric {
    fn tx_batch(&self, port: &NetPort, queue_pair: u16, frames: &[TxFrame<'_>]) {
        let (si, pi) = unkey(port.key);
        self.forward(si, pi, queue_pair, frames);
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

/// Enters the data path (the seccomp filter, when one was asked for); false, with the error
/// logged, if the filter could not be applied: the thread then does not serve at all.
fn data_path(what: &str) -> bool {
    match crate::privs::enter_data_path() {
        Ok(()) => true,
        Err(e) => {
            tracing::error!("{what}: {e}; not serving");
            false
        }
    }
}
