//! `trace PORT HEX`: the fabric's explanation of one frame (`Fabric::trace`), and the
//! synthetic frames `vfabric ctl trace` and the web console build from addresses.

use std::net::IpAddr;

use serde_json::Value;

use super::Control;
use crate::core::MacAddr;

/// The source address of a synthetic frame when none is given (locally administered).
pub const DEFAULT_SRC: &str = "02:00:00:00:00:01";

/// A synthetic frame: what `vfabric ctl trace --src --dst [--vlan] [--ethertype] [--ip]`
/// describes.
#[derive(Clone, Debug, Default)]
pub struct FrameSpec {
    pub src: String,
    pub dst: String,
    /// An 802.1Q tag with this VID (the frame as it arrives, tagged).
    pub vlan: Option<u16>,
    /// `ipv4`, `ipv6`, `arp`, or a number (`0x88b5`); default: from `ip`, else 0x88b5
    /// (local experimental).
    pub ethertype: Option<String>,
    /// Network-layer source and destination (an IPv4/IPv6 UDP packet, or the ARP request's
    /// sender and target).
    pub ip: Option<(String, String)>,
}

fn mac(what: &str, s: &str) -> Result<MacAddr, String> {
    s.parse::<MacAddr>().map_err(|e| format!("{what}: {e}"))
}

fn ip(what: &str, s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("{what}: `{s}` is not an IPv4 or IPv6 address"))
}

/// The bytes of the frame `spec` describes (at least 60, padded like a NIC pads).
pub fn synth_frame(spec: &FrameSpec) -> Result<Vec<u8>, String> {
    use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};
    let src = mac("src", &spec.src)?;
    let dst = mac("dst", &spec.dst)?;
    let ips = match &spec.ip {
        Some((a, b)) => Some((ip("ip source", a)?, ip("ip destination", b)?)),
        None => None,
    };
    let et = match (spec.ethertype.as_deref(), ips) {
        (Some("ipv4"), _) => 0x0800,
        (Some("ipv6"), _) => 0x86dd,
        (Some("arp"), _) => 0x0806,
        (Some(n), _) => {
            let v = match n.strip_prefix("0x").or_else(|| n.strip_prefix("0X")) {
                Some(h) => u16::from_str_radix(h, 16).ok(),
                None => n.parse::<u16>().ok(),
            };
            v.filter(|v| *v >= 0x600).ok_or_else(|| {
                format!("ethertype: `{n}` is not ipv4, ipv6, arp or a number from 0x0600 to 0xffff")
            })?
        }
        (None, Some((IpAddr::V4(_), _))) => 0x0800,
        (None, Some((IpAddr::V6(_), _))) => 0x86dd,
        (None, None) => 0x88b5,
    };
    let vlan = spec
        .vlan
        .map(|v| {
            etherparse::VlanId::try_new(v)
                .ok()
                .filter(|_| (1..=4094).contains(&v))
                .ok_or_else(|| format!("vlan: {v} is not a VLAN id (1-4094)"))
        })
        .transpose()?;
    let eth = PacketBuilder::ethernet2(src.0, dst.0);
    let payload = [0u8; 18];
    let mut out = Vec::new();
    let built = match (et, ips) {
        (0x0800, Some((IpAddr::V4(a), IpAddr::V4(b)))) => match vlan {
            Some(v) => eth
                .single_vlan(v)
                .ipv4(a.octets(), b.octets(), 64)
                .udp(40000, 9)
                .write(&mut out, &payload),
            None => eth
                .ipv4(a.octets(), b.octets(), 64)
                .udp(40000, 9)
                .write(&mut out, &payload),
        },
        (0x86dd, Some((IpAddr::V6(a), IpAddr::V6(b)))) => match vlan {
            Some(v) => eth
                .single_vlan(v)
                .ipv6(a.octets(), b.octets(), 64)
                .udp(40000, 9)
                .write(&mut out, &payload),
            None => eth
                .ipv6(a.octets(), b.octets(), 64)
                .udp(40000, 9)
                .write(&mut out, &payload),
        },
        (0x0806, Some((IpAddr::V4(a), IpAddr::V4(b)))) => {
            let arp = ArpPacket::new(
                ArpHardwareId::ETHERNET,
                EtherType::IPV4,
                ArpOperation::REQUEST,
                &src.0,
                &a.octets(),
                &[0; 6],
                &b.octets(),
            )
            .map_err(|e| format!("arp: {e}"))?;
            match vlan {
                Some(v) => eth.single_vlan(v).arp(arp).write(&mut out),
                None => eth.arp(arp).write(&mut out),
            }
        }
        (0x0800 | 0x86dd | 0x0806, _) => {
            return Err(match (et, ips) {
                (_, None) => "an IPv4, IPv6 or ARP frame needs --ip SOURCE DESTINATION".into(),
                (0x0806, _) => "ARP takes IPv4 addresses".into(),
                _ => "--ip: the addresses' family does not match the ethertype".into(),
            });
        }
        _ => {
            out.extend_from_slice(&dst.0);
            out.extend_from_slice(&src.0);
            if let Some(v) = spec.vlan {
                out.extend_from_slice(&[0x81, 0x00]);
                out.extend_from_slice(&v.to_be_bytes());
            }
            out.extend_from_slice(&et.to_be_bytes());
            Ok(())
        }
    };
    built.map_err(|e| format!("building the frame: {e}"))?;
    if out.len() < 60 {
        out.resize(60, 0);
    }
    Ok(out)
}

/// Hex digits to bytes (`trace`'s frame argument).
pub fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return Err("the frame's hex has an odd number of digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(|| format!("`{}` is not hex", s.get(i..i + 2).unwrap_or("")))
        })
        .collect()
}

/// Bytes as hex digits.
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Control {
    /// `trace PORT HEX`: what the fabric would do with this frame arriving on PORT.
    pub(super) fn trace(&self, port: &str, hex: &str) -> Result<Value, String> {
        let frame = from_hex(hex)?;
        if frame.len() > 65535 {
            return Err("the frame is longer than 64 KiB".into());
        }
        let (si, pi) = self
            .find_port(port)
            .ok_or_else(|| format!("no port `{port}`"))?;
        let t = self
            .fabric
            .trace(si, pi, &frame)
            .ok_or_else(|| format!("no port `{port}`"))?;
        serde_json::to_value(t).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fabric::summarize;

    fn spec(et: Option<&str>, ip: Option<(&str, &str)>, vlan: Option<u16>) -> FrameSpec {
        FrameSpec {
            src: "52:54:00:00:00:01".into(),
            dst: "ff:ff:ff:ff:ff:ff".into(),
            vlan,
            ethertype: et.map(str::to_string),
            ip: ip.map(|(a, b)| (a.into(), b.into())),
        }
    }

    #[test]
    fn synthetic_frames_are_what_they_say() {
        let cases = [
            (
                spec(None, None, None),
                "52:54:00:00:00:01 > ff:ff:ff:ff:ff:ff, ethertype 0x88b5",
            ),
            (
                spec(None, Some(("10.0.0.1", "10.0.0.2")), Some(10)),
                "52:54:00:00:00:01 > ff:ff:ff:ff:ff:ff, VLAN 10, IPv4 10.0.0.1 > 10.0.0.2",
            ),
            (
                spec(Some("ipv6"), Some(("fd00::1", "fd00::2")), None),
                "52:54:00:00:00:01 > ff:ff:ff:ff:ff:ff, IPv6 fd00::1 > fd00::2",
            ),
            (
                spec(Some("arp"), Some(("10.0.0.1", "10.0.0.9")), None),
                "52:54:00:00:00:01 > ff:ff:ff:ff:ff:ff, ARP request 10.0.0.1 > 10.0.0.9",
            ),
            (
                spec(Some("0x88cc"), None, Some(4094)),
                "52:54:00:00:00:01 > ff:ff:ff:ff:ff:ff, VLAN 4094, ethertype 0x88cc",
            ),
        ];
        for (s, want) in cases {
            let f = synth_frame(&s).unwrap();
            assert!(f.len() >= 60);
            assert_eq!(summarize(&f), want);
            assert_eq!(from_hex(&to_hex(&f)).unwrap(), f);
        }
        for (s, err) in [
            (spec(Some("ipv4"), None, None), "needs --ip"),
            (
                spec(Some("arp"), Some(("fd00::1", "fd00::2")), None),
                "ARP takes IPv4",
            ),
            (
                spec(Some("ipv6"), Some(("10.0.0.1", "10.0.0.2")), None),
                "does not match",
            ),
            (spec(Some("0x0100"), None, None), "ethertype"),
            (spec(None, None, Some(4095)), "vlan: 4095"),
            (spec(None, Some(("10.0.0.1", "x")), None), "ip destination"),
        ] {
            let e = synth_frame(&s).unwrap_err();
            assert!(e.contains(err), "{e}");
        }
        assert!(from_hex("abc").is_err() && from_hex("zz").is_err());
    }
}
