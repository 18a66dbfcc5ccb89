//! A port's ingress checks, part of the decision (`Switch::decide`): its VLAN
//! classification and port security (allowed source MACs and IPs, the broadcast/multicast
//! budget), each reported to the decision's observer, each drop counted only when the
//! decision acts.

use std::net::IpAddr;

use vlan::VlanId;

use super::trace::{self, Observe, Step};
use super::{Decision, DropReason, MacAddr, PortSlot, Time, dropped, ip_always_allowed, ip_claim};

impl PortSlot {
    /// Drops for `r` in `vlan`, counted when the decision acts.
    pub(super) fn refuse<O: Observe>(&mut self, r: DropReason, vlan: VlanId) -> Decision {
        if O::LIVE {
            self.stats.count(r);
        }
        dropped(r, vlan)
    }

    /// The VLAN a frame arriving here belongs to, and the tag bytes it sheds.
    pub(super) fn classify<O: Observe>(
        &mut self,
        frame: &[u8],
        o: &mut O,
    ) -> Result<(VlanId, u8), Decision> {
        let policy = &self.policy;
        match policy.vlan.ingress(frame) {
            vlan::Ingress::Accept { vlan, strip } => {
                o.step(|| {
                    let how = match (vlan::Tags::of(frame).and_then(|t| t.outer), strip) {
                        (None, _) => "untagged".to_string(),
                        (Some(t), 0) => format!("tag {} kept inside", t.vid),
                        (Some(t), _) if t.vid == 0 => "priority tag removed".to_string(),
                        (Some(t), _) => format!("tagged {}, tag removed", t.vid),
                    };
                    let mode = trace::vlan_mode(&policy.vlan);
                    trace::ok("vlan", format!("{mode}: {how}, in VLAN {}", vlan.get()))
                });
                Ok((vlan, strip as u8))
            }
            vlan::Ingress::Drop(r) => {
                o.step(|| {
                    let mode = trace::vlan_mode(&policy.vlan);
                    trace::refused("vlan", format!("{mode}: {}", trace::vlan_drop_text(r)))
                });
                Err(self.refuse::<O>(DropReason::Vlan(r), VlanId::DEFAULT))
            }
        }
    }

    /// Port security: allowed source MACs and IPs, the broadcast/multicast budget.
    pub(super) fn police<O: Observe>(
        &mut self,
        now: Time,
        frame: &[u8],
        src: MacAddr,
        dst: MacAddr,
        vlan: VlanId,
        o: &mut O,
    ) -> Result<(), Decision> {
        let policy = &self.policy;
        if let Some(allowed) = &policy.allowed_macs {
            let pass = allowed.contains(&src);
            o.step(|| Step {
                step: "allowed_macs",
                pass,
                text: format!(
                    "source {src} {} the port's {} allowed_macs",
                    if pass { "is among" } else { "is not among" },
                    allowed.len()
                ),
            });
            if !pass {
                return Err(self.refuse::<O>(DropReason::SpoofedMac, vlan));
            }
        }
        if let Some(allowed) = &policy.allowed_ips {
            // The network header follows all tags (whatever the VLAN mode keeps).
            let tags = vlan::Tags::of(frame).map_or(0, |t| t.count());
            let at = 12 + 4 * tags;
            let et = frame
                .get(at..at + 2)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            let claim = ip_claim(frame, et, at + 2);
            let ip_ok = |ip: IpAddr| ip_always_allowed(ip) || allowed.contains(&ip);
            let pass = claim.is_none_or(|(ip, sha)| {
                let sha_ok = match (sha, &policy.allowed_macs) {
                    (Some(sha), Some(macs)) => macs.contains(&sha),
                    (Some(sha), None) => sha == src,
                    (None, _) => true,
                };
                ip_ok(ip) && sha_ok
            });
            o.step(|| Step {
                step: "allowed_ips",
                pass,
                text: match claim {
                    None => "no IPv4, IPv6 or ARP source to check".to_string(),
                    Some((ip, _)) if !pass && ip_ok(ip) => {
                        format!("ARP sender {ip} claimed with another MAC than allowed")
                    }
                    Some((ip, _)) if ip_always_allowed(ip) => {
                        format!("source {ip}: always allowed (unspecified or link-local)")
                    }
                    Some((ip, _)) => format!(
                        "source {ip} {} the port's allowed_ips",
                        if pass { "is among" } else { "is not among" }
                    ),
                },
            });
            if !pass {
                return Err(self.refuse::<O>(DropReason::SpoofedIp, vlan));
            }
        }
        if dst.is_multicast()
            && let Some(pps) = policy.storm_pps
        {
            // A trace takes from a copy of the budget.
            let pass = if O::LIVE {
                self.storm.take(now, pps)
            } else {
                let mut b = self.storm;
                b.take(now, pps)
            };
            o.step(|| Step {
                step: "storm_limit",
                pass,
                text: format!(
                    "broadcast/multicast within {pps} frames/s: {}",
                    if pass {
                        "budget left"
                    } else {
                        "over the limit"
                    }
                ),
            });
            if !pass {
                return Err(self.refuse::<O>(DropReason::Storm, vlan));
            }
        }
        Ok(())
    }
}
