//! `vfabric ctl trace`: what the fabric would do with one frame arriving on a port. The
//! switch's own decision runs on it without acting (`core::Switch::trace`: nothing learned,
//! counted or spent), then the same egress code as forwarding lists each copy: the flood
//! set or the one receiver, the tag edit per receiver, and what the receiver's link,
//! impairment and capture would do with it.

use serde::Serialize;

use super::Fabric;
use crate::core::{Decision, PortId, Step, Verdict};

/// The explanation of one frame's path.
#[derive(Clone, Debug, Serialize)]
pub struct Trace {
    pub switch: String,
    pub port: String,
    pub frame: FrameSummary,
    /// Each check of the decision, in order.
    pub steps: Vec<Step>,
    pub verdict: TraceVerdict,
    /// Each copy the frame would make.
    pub outputs: Vec<TraceOutput>,
}

/// The frame traced.
#[derive(Clone, Debug, Serialize)]
pub struct FrameSummary {
    pub len: usize,
    pub summary: String,
}

/// The decision.
#[derive(Clone, Debug, Serialize)]
pub struct TraceVerdict {
    /// `unicast`, `flood` or `drop`.
    pub action: &'static str,
    /// For a drop: the reason, as its counter names it.
    pub reason: Option<&'static str>,
    /// The VLAN the frame was classified into.
    pub vlan: u16,
    /// The ingress port's counter the decision raises.
    pub counter: &'static str,
    pub text: String,
}

/// One copy of the frame.
#[derive(Clone, Debug, Serialize)]
pub struct TraceOutput {
    pub port: String,
    /// How its VLAN tags change on the way out.
    pub edit: String,
    /// `up` or `down` (a port without its guest or host side drops what it is given).
    pub link: &'static str,
    /// The impairments on the way (the ingress port's and this port's).
    pub impairment: Option<String>,
    /// Whether a capture of this port would see the copy.
    pub captured: bool,
    pub text: String,
}

fn edit_text(e: &vlan::Edit) -> String {
    let push = e.push.map(|t| {
        let kind = if t.tpid == 0x88a8 { "S-tag" } else { "tag" };
        format!("{kind} VLAN {}", t.vid)
    });
    match (e.strip, push) {
        (0, None) => "unchanged".into(),
        (_, None) => "tag removed: leaves untagged".into(),
        (0, Some(p)) => format!("{p} added"),
        (_, Some(p)) => format!("tag replaced by {p}"),
    }
}

fn impairment_text(imp: &super::Impairment) -> String {
    let mut parts = Vec::new();
    if imp.loss > 0.0 {
        parts.push(format!("loss {:.1} %", imp.loss * 100.0));
    }
    if !imp.delay.is_zero() {
        parts.push(format!("delay {} ms", imp.delay.as_millis()));
    }
    if !imp.jitter.is_zero() {
        parts.push(format!("jitter {} ms", imp.jitter.as_millis()));
    }
    if let Some(r) = imp.rate_bps {
        parts.push(format!("rate {:.3} Mbit/s", r as f64 / 1e6));
    }
    parts.join(", ")
}

/// A frame in one line: addresses, tags, the network layer if any.
pub fn summarize(frame: &[u8]) -> String {
    use etherparse::{LinkSlice, NetSlice, SlicedPacket};
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        return format!("{} bytes, not an Ethernet frame", frame.len());
    };
    let mut s = match &p.link {
        Some(LinkSlice::Ethernet2(e)) => format!(
            "{} > {}",
            crate::core::MacAddr(e.source()),
            crate::core::MacAddr(e.destination())
        ),
        _ => String::from("?"),
    };
    for v in p.link_exts.iter() {
        if let etherparse::LinkExtSlice::Vlan(v) = v {
            s += &format!(", VLAN {}", v.vlan_identifier().value());
        }
    }
    match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            s += &format!(", IPv4 {} > {}", h.source_addr(), h.destination_addr());
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            s += &format!(", IPv6 {} > {}", h.source_addr(), h.destination_addr());
        }
        Some(NetSlice::Arp(a)) => {
            let ip = |b: &[u8]| {
                <[u8; 4]>::try_from(b)
                    .map_or("?".to_string(), |a| std::net::Ipv4Addr::from(a).to_string())
            };
            let op = match a.operation() {
                etherparse::ArpOperation::REQUEST => "request".to_string(),
                etherparse::ArpOperation::REPLY => "reply".to_string(),
                o => format!("operation {}", o.0),
            };
            s += &format!(
                ", ARP {op} {} > {}",
                ip(a.sender_protocol_addr()),
                ip(a.target_protocol_addr())
            );
        }
        _ => {
            // The EtherType after the tags.
            let tags = vlan::Tags::of(frame).map_or(0, |t| t.count());
            if let Some(b) = frame.get(12 + 4 * tags..14 + 4 * tags) {
                s += &format!(", ethertype 0x{:02x}{:02x}", b[0], b[1]);
            }
        }
    }
    s
}

impl Fabric {
    /// What switch `si` would do with `frame` arriving on its port `pi` now: the decision's
    /// checks and each copy, without sending, learning or counting anything.
    pub fn trace(&self, si: usize, pi: usize, frame: &[u8]) -> Option<Trace> {
        let sw = self.switches.get(si)?;
        let ports = sw.ports();
        let in_port = ports.get(pi)?.as_ref()?;
        let in_id = PortId(pi as u32);
        let now = self.now();
        let mut core = sw.core();
        let (d, steps): (Decision, Vec<Step>) = core.trace(now, in_id, frame);
        let receivers: Vec<PortId> = match d.verdict {
            Verdict::Unicast(p) => vec![p],
            Verdict::Flood => core.flood_targets(in_id, d.vlan).collect(),
            Verdict::Drop(_) => Vec::new(),
        };
        let from_imp = sw.impairment(pi);
        let mut outputs = Vec::new();
        for p in receivers {
            let Some(Some(port)) = ports.get(p.index()) else {
                continue;
            };
            let name = port.name().to_string();
            let Some(e) = core.egress_edit(p, &d) else {
                continue;
            };
            let edit = edit_text(&e);
            let link = if port.is_connected() { "up" } else { "down" };
            let to_imp = sw.impairment(p.index());
            let imps: Vec<String> = [(in_port.name(), &from_imp), (port.name(), &to_imp)]
                .iter()
                .filter_map(|(n, i)| i.as_ref().map(|i| format!("{n}: {}", impairment_text(i))))
                .collect();
            let impairment = (!imps.is_empty()).then(|| imps.join("; "));
            let captured = sw
                .captures
                .get(p.index())
                .is_some_and(|c| c.load().is_some());
            let mut text = format!("to {name}, {edit}");
            if link == "down" {
                text += ", link down: dropped there (tx_drop_link_down)";
            } else {
                text += " (tx_frames)";
            }
            if let Some(i) = &impairment {
                text += &format!(", impaired ({i})");
            }
            outputs.push(TraceOutput {
                port: name,
                edit,
                link,
                impairment,
                captured,
                text,
            });
        }
        let (action, reason, counter) = match d.verdict {
            Verdict::Unicast(_) => ("unicast", None, "switch_unicast"),
            Verdict::Flood => ("flood", None, "switch_flooded"),
            Verdict::Drop(r) => ("drop", Some(r.counter()), r.counter()),
        };
        let text = match d.verdict {
            Verdict::Unicast(_) => format!(
                "unicast in VLAN {} to {}",
                d.vlan.get(),
                outputs.first().map_or("?", |o| o.port.as_str())
            ),
            Verdict::Flood => format!(
                "flooded in VLAN {} to {} port(s)",
                d.vlan.get(),
                outputs.len()
            ),
            Verdict::Drop(r) => {
                format!("dropped, counted as {} on {}", r.counter(), in_port.name())
            }
        };
        Some(Trace {
            switch: sw.name().to_string(),
            port: in_port.name().to_string(),
            frame: FrameSummary {
                len: frame.len(),
                summary: summarize(frame),
            },
            steps,
            verdict: TraceVerdict {
                action,
                reason,
                vlan: d.vlan.get(),
                counter,
                text,
            },
            outputs,
        })
    }
}
