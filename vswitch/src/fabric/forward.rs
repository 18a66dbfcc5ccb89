//! The batch path: a batch of frames received on one port, decided and delivered.
//!
//! `Fabric::forward` decides every frame (on header copies: the sender can change its memory
//! meanwhile, so nothing decided is read again) and lists every copy (receiver, frame, VLAN
//! tag edit): from the thread's flow cache without any lock when every frame of the batch is
//! a recent flow at the switch's current version (`core::FlowCache`, `flows.rs`), else under
//! the switch's lock taken once for the whole batch (then caching what it decided). It feeds
//! captures and impairments when any are set, then hands each receiver its frames in one go,
//! in batch order (one interrupt or one system call per receiver per batch).
//!
//! The captures and impairments a batch meets are applied here too (`feed_captures`,
//! `impair`), with the switch's capture and impairment tables.
//!
//! Invariants: no allocation per frame (per-thread scratch space, reused); a VLAN's flood set
//! is computed once per batch; a frame never goes back out of its ingress port (the core's
//! decision); a slow receiver drops and counts, it never blocks this thread.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use vhost_backends::frame::{FrameEdit, TxFrame};
use vhost_backends::net::{FrameSwitch, NetPort, TX_BATCH};
use vlan::VlanId;

use super::{Fabric, SwitchRuntime, unkey};
use crate::core::flow_cache::FlowEntry;
use crate::core::flow_cache::KEY_LEN;
use crate::core::{Decision, FlowAt, FlowCache, PortId, Verdict};
use crate::ports::Port;
use crate::ports::{Ingress, PortKey};

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
    /// This thread's recent flows (of every switch) and their copies (receiver, edit).
    flows: FlowCache<(usize, FrameEdit)>,
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
    /// Forwards a batch of frames received on port `pi` of switch `si` (queue `queue_pair`):
    /// decided from the flow cache or under one lock of the switch, then each receiver's
    /// frames in one go.
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
                 flows,
             }| {
                let mut decisions = ArrayVec::<Decision, TX_BATCH>::new();
                copies.clear();
                // Without the lock when every frame is a flow this thread decided lately at
                // the switch's current version; otherwise one lock for the whole batch.
                let batch = Batch {
                    sw,
                    si: si as u32,
                    now,
                    in_port,
                    frames,
                };
                if !batch.decide_cached(flows, &mut decisions, copies) {
                    decisions.clear();
                    copies.clear();
                    batch.decide_locked(&mut decisions, copies, floods, flows);
                }
                if sw.tapping.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                    feed_captures(sw, in_port, frames, &decisions, copies);
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

/// A batch being decided: where it came from, when, and its frames.
struct Batch<'b, 'f> {
    sw: &'b SwitchRuntime,
    si: u32,
    now: crate::core::Time,
    in_port: PortId,
    frames: &'b [TxFrame<'f>],
}

type Copies = Vec<(usize, usize, FrameEdit)>;

/// A cached flow: its decision and its copies (receiver, edit).
type Flow = FlowEntry<(usize, FrameEdit)>;

impl Batch<'_, '_> {
    /// Decides the batch from this thread's flow cache, if every frame hits at the switch's
    /// current version (false: nothing decided). Counts the decisions on the ingress port.
    fn decide_cached(
        &self,
        flows: &FlowCache<(usize, FrameEdit)>,
        decisions: &mut ArrayVec<Decision, TX_BATCH>,
        copies: &mut Copies,
    ) -> bool {
        let at = FlowAt {
            switch: self.si,
            version: self.sw.version.load(std::sync::atomic::Ordering::Acquire),
            now: self.now,
        };
        let (mut unicast, mut flooded) = (0, 0);
        // A burst of one flow (the same first KEY_LEN bytes as the frame before) is looked
        // up once: the entry found for its first frame serves the rest.
        let mut last: Option<(&[u8], &Flow)> = None;
        for (i, f) in self.frames.iter().take(TX_BATCH).enumerate() {
            let head = f.head();
            let key = head.get(..KEY_LEN);
            let e = match last {
                Some((k, e)) if key == Some(k) => e,
                _ => {
                    let Some(e) = flows.lookup(at, self.in_port, head) else {
                        return false;
                    };
                    last = key.map(|k| (k, e));
                    e
                }
            };
            match e.decision.verdict {
                Verdict::Unicast(_) => unicast += 1,
                _ => flooded += 1,
            }
            decisions.push(e.decision);
            copies.extend(e.copies.iter().map(|&(p, edit)| (p, i, edit)));
        }
        if let Some(c) = self.sw.cached.get(self.in_port.index()) {
            c.add(unicast, flooded);
        }
        !decisions.is_empty()
    }

    /// Decides the batch under the switch's lock: every frame, then every copy
    /// (destination, frame, VLAN tag edit). When nothing changed the switch meanwhile, the
    /// forwarded flows go into this thread's cache.
    fn decide_locked(
        &self,
        decisions: &mut ArrayVec<Decision, TX_BATCH>,
        copies: &mut Copies,
        floods: &mut Vec<(VlanId, Vec<PortId>)>,
        flows: &mut FlowCache<(usize, FrameEdit)>,
    ) {
        let in_port = self.in_port;
        for (_, f) in floods.iter_mut() {
            f.clear();
        }
        let mut nfloods = 0;
        let core = &mut *self.sw.core();
        let before = core.version();
        core.forward_batch(
            self.now,
            in_port,
            self.frames.iter().take(TX_BATCH).map(|f| f.head()),
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
        // Every decision of the batch was made on one state: cache the forwarded flows.
        let version = core.version();
        if version != before || !core.caches_decisions(in_port) {
            return;
        }
        let mut last: Option<&[u8]> = None;
        for (i, (d, f)) in decisions.iter().zip(self.frames).enumerate() {
            let head = f.head();
            if matches!(d.verdict, Verdict::Drop(_)) || last == head.get(..KEY_LEN) {
                continue;
            }
            last = head.get(..KEY_LEN);
            let mine = copies.iter().filter(|c| c.1 == i).map(|c| (c.0, c.2));
            let at = FlowAt {
                switch: self.si,
                version,
                now: self.now,
            };
            flows.insert(at, in_port, head, *d, mine);
        }
    }
}

impl FrameSwitch for Fabric {
    #[inline]
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

impl Ingress for Fabric {
    fn forward(&self, key: PortKey, queue: u16, frames: &[TxFrame<'_>]) {
        let (si, pi) = unkey(key);
        Fabric::forward(self, si, pi, queue, frames);
    }
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
fn feed_captures(
    sw: &SwitchRuntime,
    in_port: PortId,
    frames: &[TxFrame<'_>],
    decisions: &[Decision],
    copies: &[(usize, usize, FrameEdit)],
) {
    if let Some(tap) = sw.captures.get(in_port.index()).and_then(|t| t.load_full()) {
        for (f, d) in frames.iter().zip(decisions) {
            tap.offer(d.vlan, f.to_vec());
        }
    }
    for &(p, i, e) in copies {
        if let (Some(tap), Some(f), Some(d)) = (
            sw.captures.get(p).and_then(|t| t.load_full()),
            frames.get(i),
            decisions.get(i),
        ) {
            let mut bytes = f.to_vec();
            e.apply(&mut bytes);
            tap.offer(d.vlan, bytes);
        }
    }
}
