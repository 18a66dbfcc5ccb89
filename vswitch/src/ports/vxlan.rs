//! VXLAN ports (RFC 7348) and GENEVE ports (RFC 8926, `type = "geneve"`, the overlay OVN
//! uses): the switch's segment carried to other hosts in UDP, interoperating with the Linux
//! kernel's vxlan device and Open vSwitch. The two differ only in their 8-byte header (GENEVE
//! may carry options after it: vfabric sends none, skips those it receives, and drops a
//! datagram with a critical option, since it understands none, or with the O bit of a control
//! message).
//!
//! One UDP socket per port, bound to `local`:`port` (4789), receives. Frames are sent from one
//! of `SOURCE_SOCKETS` sockets on ephemeral ports of `local`, picked by a hash of the inner
//! flow (IP addresses, protocol and ports; MACs and EtherType for other frames), so the outer
//! UDP source port varies with the inner flow and stays the same within it, as RFC 7348
//! section 5 asks and the Linux vxlan device and Open vSwitch do: ECMP underlays spread the
//! tunnel's flows. Peers send to `port` whatever our source port. A frame to a MAC learned behind a
//! remote VTEP goes to that VTEP only; broadcast, multicast and unknown unicast go to every
//! configured remote (head-end replication). Received datagrams are accepted only from the
//! configured remotes and with this port's VNI; their inner source MAC is learned against the
//! sender's address.
//!
//! MTU rule: the outer packet is the inner Ethernet frame plus 50 bytes (outer IPv4 20, UDP
//! 8, VXLAN 8, plus the inner frame's own 14-byte Ethernet header counted against the inner
//! MTU), 70 with an IPv6 underlay. The socket never fragments (IP_PMTUDISC_DO): a frame whose
//! datagram does not fit the route's MTU is dropped and counted (`tx_drop_too_big`), so give
//! guests an MTU of the underlay's minus 50 (1450 on a 1500-byte underlay). Offloaded frames
//! (TCP super-frames, partial checksums) are completed in software before they are wrapped.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vhost_backends::counters::NetCounters;
use vhost_backends::frame::{FrameEdit, TxFrame, VNET_HDR_LEN};
use vhost_backends::offload::Offloads;

use super::host_io::{HostCounters, Received, receive_loop};
use super::switch_port::{Ingress, PortKey, SwitchPort, spawn_data_path};
pub use super::tunnel_endpoint::SOURCE_SOCKETS;
use super::tunnel_endpoint::{Endpoint, Outbox, TunnelMember, vni_of};
use crate::topology::{Encap, VxlanConfig};

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The "I" flag: the VNI field is valid.
const FLAG_I: u8 = 0x08;
/// How long a learned MAC stays behind its VTEP without traffic from it.
const VTEP_AGING: Duration = Duration::from_secs(300);
/// Bound on the MACs learned per port (beyond it, frames to new MACs go to every remote).
const MAX_LEARNED: usize = 65536;

/// The VXLAN header for `vni`.
pub fn header(vni: u32) -> [u8; HEADER_LEN] {
    let v = vni.to_be_bytes();
    [FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// Why a datagram is not a frame for us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the header (with its options) plus an Ethernet header.
    Short,
    /// VXLAN: the I flag is clear.
    NoVni,
    /// Another VNI.
    OtherVni(u32),
    /// GENEVE: a version other than 0.
    Version(u8),
    /// GENEVE: the payload is not Ethernet (protocol type other than 0x6558).
    NotEthernet(u16),
    /// GENEVE: a control message (O bit): never forwarded.
    Control,
    /// GENEVE: a critical option (C bit, or an option type's high bit), which vfabric does
    /// not understand and so must drop (RFC 8926 section 3.5).
    Critical,
}

/// GENEVE's protocol type for an Ethernet payload.
const GENEVE_ETHERNET: u16 = 0x6558;

/// The GENEVE header for `vni` (version 0, no options, Ethernet payload).
pub fn geneve_header(vni: u32) -> [u8; HEADER_LEN] {
    let v = vni.to_be_bytes();
    let p = GENEVE_ETHERNET.to_be_bytes();
    [0, 0, p[0], p[1], v[1], v[2], v[3], 0]
}

/// Checks a received GENEVE datagram: returns the inner frame's offset (after the options).
pub fn geneve_decode(d: &[u8], vni: u32) -> Result<usize, DecodeError> {
    if d.len() < HEADER_LEN {
        return Err(DecodeError::Short);
    }
    let version = d[0] >> 6;
    if version != 0 {
        return Err(DecodeError::Version(version));
    }
    let start = HEADER_LEN + usize::from(d[0] & 0x3f) * 4;
    if d.len() < start + 14 {
        return Err(DecodeError::Short);
    }
    let proto = u16::from_be_bytes([d[2], d[3]]);
    if proto != GENEVE_ETHERNET {
        return Err(DecodeError::NotEthernet(proto));
    }
    let got = u32::from_be_bytes([0, d[4], d[5], d[6]]);
    if got != vni {
        return Err(DecodeError::OtherVni(got));
    }
    if d[1] & 0x80 != 0 {
        return Err(DecodeError::Control);
    }
    if d[1] & 0x40 != 0 {
        return Err(DecodeError::Critical);
    }
    // Each option: class (2 bytes), type (high bit: critical), length in 4-byte words.
    let mut at = HEADER_LEN;
    while at + 4 <= start {
        if d[at + 2] & 0x80 != 0 {
            return Err(DecodeError::Critical);
        }
        at += 4 + usize::from(d[at + 3] & 0x1f) * 4;
    }
    Ok(start)
}

/// Checks a received datagram: returns the inner frame's offset. Reserved bits are ignored,
/// as the RFC says.
pub fn decode(datagram: &[u8], vni: u32) -> Result<usize, DecodeError> {
    if datagram.len() < HEADER_LEN + 14 {
        return Err(DecodeError::Short);
    }
    if datagram[0] & FLAG_I == 0 {
        return Err(DecodeError::NoVni);
    }
    let got = u32::from_be_bytes([0, datagram[4], datagram[5], datagram[6]]);
    if got != vni {
        return Err(DecodeError::OtherVni(got));
    }
    Ok(HEADER_LEN)
}

/// One VXLAN (or GENEVE) port.
pub struct VxlanPort {
    name: String,
    config: VxlanConfig,
    /// Where its datagrams arrive and leave (shared with the other ports on `local`:`port`).
    endpoint: Arc<Endpoint>,
    /// The VNIs it receives: its own, then its VLANs' (`vlan_vnis`).
    vnis: Vec<u32>,
    /// The static remote VTEPs (replaced whole by a reload), each with when it was last heard.
    remotes: ArcSwap<Vec<Remote>>,
    /// Bound to the multicast underlay group (`group`), joined on `local`'s interface.
    group: Option<UdpSocket>,
    /// Inner MAC -> (VTEP it was last seen behind, when).
    learned: Mutex<HashMap<[u8; 6], (IpAddr, Instant)>>,
    counters: HostCounters,
    stop: AtomicBool,
    /// When the port opened: `Remote::heard` counts from it.
    epoch: Instant,
}

/// A static remote VTEP.
pub struct Remote {
    pub ip: IpAddr,
    /// Milliseconds from the port's opening to the last datagram taken from it, plus one
    /// (0: never heard).
    heard: AtomicU64,
}

impl VxlanPort {
    /// Opens (or joins) the port's endpoint and binds its group socket. The error names the
    /// address.
    pub fn open(name: &str, config: VxlanConfig) -> Result<VxlanPort, String> {
        let at = SocketAddr::new(config.local, config.port);
        let vnis: Vec<u32> = std::iter::once(config.vni)
            .chain(config.vlan_vnis.iter().map(|(_, v)| *v))
            .collect();
        let endpoint = Endpoint::open(at, config.encap, &vnis, config.group.is_some())?;
        let group = match (config.group, config.local) {
            (Some(IpAddr::V4(g)), IpAddr::V4(l)) => {
                let at = SocketAddr::new(IpAddr::V4(g), config.port);
                let s = UdpSocket::bind(at)
                    .and_then(|s| s.join_multicast_v4(&g, &l).map(|()| s))
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .map_err(|e| format!("group socket {at} (joined on {l}): {e}"));
                match s {
                    Ok(s) => Some(s),
                    Err(e) => {
                        endpoint.release(&vnis);
                        return Err(e);
                    }
                }
            }
            _ => None,
        };
        let remotes = ArcSwap::from_pointee(remote_list(&config.remote, &[]));
        Ok(VxlanPort {
            name: name.to_string(),
            config,
            endpoint,
            vnis,
            remotes,
            group,
            learned: Mutex::new(HashMap::new()),
            counters: HostCounters::default(),
            stop: AtomicBool::new(false),
            epoch: Instant::now(),
        })
    }

    /// The outer UDP source ports, in socket order (for `ctl` and tests).
    pub fn source_ports(&self) -> Vec<u16> {
        self.endpoint.source_ports()
    }

    pub fn config(&self) -> &VxlanConfig {
        &self.config
    }

    pub fn counters(&self) -> &HostCounters {
        &self.counters
    }

    /// Replaces the static remote VTEPs (a reload); those kept keep when they were heard.
    pub fn set_remotes(&self, remote: &[IpAddr]) {
        let old = self.remotes.load();
        self.remotes.store(Arc::new(remote_list(remote, &old)));
    }

    /// The static remote VTEPs, each with how long ago a datagram came from it (`None`:
    /// never).
    pub fn remotes(&self) -> Vec<(IpAddr, Option<Duration>)> {
        let now = self.epoch.elapsed();
        (self.remotes.load().iter())
            .map(|r| {
                let ms = r.heard.load(Relaxed);
                let ago = (ms > 0).then(|| now.saturating_sub(Duration::from_millis(ms - 1)));
                (r.ip, ago)
            })
            .collect()
    }

    /// MACs currently learned behind remote VTEPs.
    pub fn learned(&self) -> usize {
        self.learned.lock().map_or(0, |l| l.len())
    }

    /// The remote VTEP `mac` was last seen behind, if within the aging time.
    pub fn vtep_of_mac(&self, mac: [u8; 6]) -> Option<IpAddr> {
        let l = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        l.get(&mac)
            .filter(|(_, seen)| seen.elapsed() < VTEP_AGING)
            .map(|(ip, _)| *ip)
    }

    /// Reads the port's multicast group socket until `stop`, handing batches of inner
    /// frames to `forward` (the unicast socket is the endpoint's).
    fn receive_group(&self, forward: impl FnMut(&[TxFrame<'_>])) {
        let Some(socket) = &self.group else {
            return;
        };
        receive_loop(
            socket.as_fd(),
            &self.stop,
            Offloads::default(),
            &self.counters,
            |buf| {
                let (n, from) = socket.recv_from(buf)?;
                Ok(self.take(buf, n, from.ip(), vni_of(buf)))
            },
            forward,
        );
    }

    /// Whether a datagram from `ip` may be taken: from a static remote (noted as heard) or,
    /// with a multicast group, from any VTEP but ourselves (our own group traffic, should it
    /// loop back).
    fn accepts(&self, ip: IpAddr) -> bool {
        if let Some(r) = self.remotes.load().iter().find(|r| r.ip == ip) {
            let ms = self.epoch.elapsed().as_millis() as u64 + 1;
            if r.heard.load(Relaxed) != ms {
                r.heard.store(ms, Relaxed);
            }
            return true;
        }
        self.group.is_some() && ip != self.config.local
    }

    /// Takes the datagram of `n` bytes in `buf` from `from`, with `vni`: checked, its inner
    /// source learned, tagged with its VLAN if `vni` is a VLAN's. `None`: dropped (counted).
    fn take(&self, buf: &mut [u8], n: usize, from: IpAddr, vni: u32) -> Option<Received> {
        if !self.accepts(from) {
            self.counters.rx_drop_unknown_vtep.fetch_add(1, Relaxed);
            return None;
        }
        let want = if self.has_vni(vni) {
            vni
        } else {
            self.config.vni
        };
        let decoded = match self.config.encap {
            Encap::Vxlan => decode(&buf[..n], want),
            Encap::Geneve => geneve_decode(&buf[..n], want),
        };
        let start = match decoded {
            Ok(s) => s,
            Err(DecodeError::Critical) => {
                self.counters.rx_drop_critical_option.fetch_add(1, Relaxed);
                return None;
            }
            Err(_) => {
                self.counters.rx_drop_bad_header.fetch_add(1, Relaxed);
                return None;
            }
        };
        let mut src = [0u8; 6];
        src.copy_from_slice(&buf[start + 6..start + 12]);
        if src[0] & 1 == 0 {
            let mut l = self.learned.lock().unwrap_or_else(|p| p.into_inner());
            if l.len() >= MAX_LEARNED && !l.contains_key(&src) {
                // Full: forget what aged out first (a group port hears any sender).
                l.retain(|_, (_, seen)| seen.elapsed() < VTEP_AGING);
            }
            if l.len() < MAX_LEARNED || l.contains_key(&src) {
                l.insert(src, (from, Instant::now()));
            }
        }
        let mut r = Received {
            vnet: [0; VNET_HDR_LEN],
            start,
            len: n - start,
        };
        if let Some(&(vlan, _)) = self.config.vlan_vnis.iter().find(|(_, v)| *v == vni) {
            // The VLAN's own VNI: the frame comes in tagged, in the 4 bytes of header
            // before it (a header is at least 8).
            buf.copy_within(start..start + 12, start - 4);
            buf[start + 8..start + 12].copy_from_slice(&[0x81, 0, (vlan >> 8) as u8, vlan as u8]);
            r.start -= 4;
            r.len += 4;
        }
        Some(r)
    }

    /// The VTEP a frame to `dst` goes to, if known (else every remote).
    fn vtep_of(&self, dst: &[u8]) -> Option<IpAddr> {
        let key: [u8; 6] = dst.get(..6)?.try_into().ok()?;
        if key[0] & 1 != 0 {
            return None;
        }
        let mut l = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        match l.get(&key) {
            Some(&(ip, seen)) if seen.elapsed() < VTEP_AGING => Some(ip),
            Some(_) => {
                l.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Sends one plain frame (wrapped) to its VTEP or to every remote. A frame of a VLAN
    /// with its own VNI leaves untagged under that VNI.
    fn send(&self, frame: &[u8], out: &mut Outbox) {
        let mapped = (frame.get(12..16))
            .filter(|t| t[..2] == [0x81, 0])
            .and_then(|t| {
                let vlan = u16::from_be_bytes([t[2], t[3]]) & 0x0fff;
                self.config.vlan_vnis.iter().find(|(v, _)| *v == vlan)
            });
        let vni = mapped.map_or(self.config.vni, |(_, vni)| *vni);
        let data = out.data();
        let start = data.len();
        data.extend_from_slice(&match self.config.encap {
            Encap::Vxlan => header(vni),
            Encap::Geneve => geneve_header(vni),
        });
        if mapped.is_some() {
            data.extend_from_slice(&frame[..12]);
            data.extend_from_slice(&frame[16..]);
        } else {
            data.extend_from_slice(frame);
        }
        // Its VTEP if learned, else every static remote and the multicast group.
        let learned = self.vtep_of(frame);
        let flood = learned.is_none();
        let remotes = self.remotes.load();
        let targets = learned.into_iter().chain(
            (remotes.iter().map(|r| r.ip))
                .chain(self.config.group)
                .filter(|_| flood),
        );
        let source = self.endpoint.source_index(flow_hash(frame));
        for ip in targets {
            out.push(
                source,
                SocketAddr::new(ip, self.config.port),
                start,
                frame.len(),
            );
        }
        if out.full() {
            self.endpoint.flush(out, &self.counters);
        }
    }
}

/// `ips` as remotes, keeping when each was heard from `old`.
fn remote_list(ips: &[IpAddr], old: &[Remote]) -> Vec<Remote> {
    (ips.iter())
        .map(|&ip| Remote {
            ip,
            heard: AtomicU64::new(
                old.iter()
                    .find(|r| r.ip == ip)
                    .map_or(0, |r| r.heard.load(Relaxed)),
            ),
        })
        .collect()
}

impl TunnelMember for VxlanPort {
    fn member_name(&self) -> &str {
        &self.name
    }

    fn has_vni(&self, vni: u32) -> bool {
        self.vnis.contains(&vni)
    }

    fn take_datagram(&self, buf: &mut [u8], n: usize, from: IpAddr, vni: u32) -> Option<Received> {
        self.take(buf, n, from, vni)
    }

    fn host_counters(&self) -> &HostCounters {
        &self.counters
    }
}

impl Drop for VxlanPort {
    fn drop(&mut self) {
        self.endpoint.release(&self.vnis);
    }
}

impl SwitchPort for VxlanPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn net_counters(&self) -> &NetCounters {
        &self.counters.net
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.counters.fields()
    }

    /// Sends `frames` into the tunnel, offloads completed in software first.
    fn deliver_batch<'f, 'a: 'f>(
        &self,
        frames: impl Iterator<Item = (&'f TxFrame<'a>, FrameEdit)>,
        _hint: u16,
    ) {
        OUTBOX.with_borrow_mut(|out| {
            for (frame, edit) in frames {
                self.plain_frames(frame, edit, |b| self.send(b, out));
            }
            self.endpoint.flush(out, &self.counters);
        });
    }

    /// Sends plain frames held by vfabric.
    fn deliver_bytes(&self, frames: &[Vec<u8>], _hint: u16) {
        OUTBOX.with_borrow_mut(|out| {
            for f in frames {
                self.send(f, out);
            }
            self.endpoint.flush(out, &self.counters);
        });
    }

    /// Joins the endpoint (whose reader serves every port on it: a thread named after the
    /// first), and with a group, one reader thread for it (`-g`).
    fn start(
        self: &Arc<Self>,
        key: PortKey,
        ingress: &Arc<dyn Ingress>,
    ) -> io::Result<Vec<JoinHandle<()>>> {
        let kind = self.config.encap.type_name();
        self.endpoint
            .join(self, key, ingress, format!("{kind}-{}", self.name))?;
        let mut threads = Vec::new();
        if self.group.is_some() {
            let (vx, ingress) = (self.clone(), ingress.clone());
            let t = spawn_data_path(
                format!("{kind}-{}-g", self.name),
                format!("port {}", self.name),
                move || vx.receive_group(|frames| ingress.forward(key, 0, frames)),
            );
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    self.endpoint.leave(self.as_ref());
                    return Err(e);
                }
            }
        }
        Ok(threads)
    }

    /// Leaves the endpoint (no frame is handed over after this) and ends the group reader
    /// (within half a second).
    fn stop(&self) {
        self.endpoint.leave(self);
        self.stop.store(true, Relaxed);
    }
}

/// A hash of a frame's flow, for the outer source port: FNV-1a over the IP addresses,
/// protocol and (unfragmented TCP or UDP) ports; over the MACs and EtherType when the frame
/// is not IP. Frames of one flow get one value; VLAN tags are skipped.
pub fn flow_hash(frame: &[u8]) -> u32 {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    };
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        eat(frame.get(..14).unwrap_or(frame));
        return h;
    };
    match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let hd = ip.header();
            eat(&hd.source());
            eat(&hd.destination());
            eat(&[hd.protocol().0]);
        }
        Some(NetSlice::Ipv6(ip)) => {
            let hd = ip.header();
            eat(&hd.source());
            eat(&hd.destination());
            eat(&[hd.next_header().0]);
        }
        _ => {
            eat(frame.get(..14).unwrap_or(frame));
            return h;
        }
    }
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            eat(&t.source_port().to_be_bytes());
            eat(&t.destination_port().to_be_bytes());
        }
        Some(TransportSlice::Udp(u)) => {
            eat(&u.source_port().to_be_bytes());
            eat(&u.destination_port().to_be_bytes());
        }
        _ => {}
    }
    h
}

thread_local! {
    /// The datagrams being built, sent at the end of each batch (or when it fills up).
    static OUTBOX: std::cell::RefCell<Outbox> = std::cell::RefCell::new(Outbox::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = header(0x12_3456);
        assert_eq!(h, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        let mut d = h.to_vec();
        d.extend_from_slice(&[0u8; 14]);
        assert_eq!(decode(&d, 0x12_3456), Ok(8));
        assert_eq!(decode(&d, 7), Err(DecodeError::OtherVni(0x12_3456)));
    }

    /// An Ethernet + IPv4 + UDP frame from 10.0.0.1:`sport` to 10.0.0.2:53, tagged with VLAN
    /// `vlan` if given.
    fn udp_frame(sport: u16, vlan: Option<u16>) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut out = Vec::new();
        match vlan {
            Some(v) => b
                .single_vlan(etherparse::VlanId::try_new(v).unwrap())
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(sport, 53)
                .write(&mut out, b"question"),
            None => b
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(sport, 53)
                .write(&mut out, b"question"),
        }
        .unwrap();
        out
    }

    #[test]
    fn flow_hash_follows_the_inner_flow() {
        assert_eq!(
            flow_hash(&udp_frame(1000, None)),
            flow_hash(&udp_frame(1000, None))
        );
        // A VLAN tag does not change the flow; another source port does.
        assert_eq!(
            flow_hash(&udp_frame(1000, None)),
            flow_hash(&udp_frame(1000, Some(7)))
        );
        assert_ne!(
            flow_hash(&udp_frame(1000, None)),
            flow_hash(&udp_frame(1001, None))
        );
        // Anything at all hashes (short frames, garbage).
        for len in 0..40 {
            let _ = flow_hash(&vec![0xabu8; len]);
        }
    }

    /// On the wire (the outer packets as the remote VTEP's socket receives them): the outer
    /// UDP source port is one of the port's source sockets', the same for every frame of an
    /// inner flow, and 64 inner flows spread over many of them (RFC 7348 section 5).
    #[test]
    fn the_outer_source_port_follows_the_inner_flow() {
        let remote = UdpSocket::bind("127.0.0.2:0").unwrap();
        remote
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let port = remote.local_addr().unwrap().port();
        let vx = VxlanPort::open(
            "tun",
            VxlanConfig {
                encap: crate::topology::Encap::Vxlan,
                vni: 42,
                local: "127.0.0.1".parse().unwrap(),
                remote: vec!["127.0.0.2".parse().unwrap()],
                group: None,
                port,
                vlan_vnis: Vec::new(),
            },
        )
        .unwrap();
        let sources = vx.source_ports();
        assert_eq!(sources.len(), SOURCE_SOCKETS);
        let frames: Vec<Vec<u8>> = (0..64).map(|i| udp_frame(1000 + i, None)).collect();
        vx.deliver_bytes(&frames, 0);
        vx.deliver_bytes(&frames, 0);
        let mut by_flow: HashMap<u16, Vec<u16>> = HashMap::new();
        let mut buf = [0u8; 2048];
        for _ in 0..128 {
            let (n, from) = remote.recv_from(&mut buf).unwrap();
            assert_eq!(from.ip(), vx.config().local);
            let inner = decode(&buf[..n], 42).unwrap();
            // The inner UDP source port (Ethernet 14 + IPv4 20).
            let at = inner + 14 + 20;
            let flow = u16::from_be_bytes([buf[at], buf[at + 1]]);
            by_flow.entry(flow).or_default().push(from.port());
        }
        assert_eq!(by_flow.len(), 64);
        let mut used = std::collections::HashSet::new();
        for (flow, ports) in &by_flow {
            assert_eq!(ports.len(), 2, "flow {flow}: {ports:?}");
            assert_eq!(ports[0], ports[1], "flow {flow} changed source port");
            assert!(sources.contains(&ports[0]), "{} not ours", ports[0]);
            used.insert(ports[0]);
        }
        assert!(used.len() >= 8, "64 flows used only {used:?}");
    }

    /// GENEVE headers: ours round trip; options are skipped; critical options, control
    /// messages, other versions, payloads and VNIs, and short datagrams are refused.
    #[test]
    fn geneve_headers() {
        let frame = [0x11u8; 14];
        let with = |head: &[u8]| [head, &frame[..]].concat();
        let h = geneve_header(0x12_3456);
        assert_eq!(h, [0, 0, 0x65, 0x58, 0x12, 0x34, 0x56, 0]);
        assert_eq!(geneve_decode(&with(&h), 0x12_3456), Ok(8));
        assert_eq!(
            geneve_decode(&with(&h), 7),
            Err(DecodeError::OtherVni(0x12_3456))
        );
        // Two options (4 bytes of data, then none): skipped, the frame follows them.
        let mut o = vec![0x03, 0, 0x65, 0x58, 0, 0, 7, 0];
        o.extend_from_slice(&[0x01, 0x02, 0x03, 0x01, 9, 9, 9, 9, 0x01, 0x02, 0x04, 0x00]);
        assert_eq!(geneve_decode(&with(&o), 7), Ok(20));
        // The second option critical (type's high bit).
        let mut c = o.clone();
        c[18] = 0x84;
        assert_eq!(geneve_decode(&with(&c), 7), Err(DecodeError::Critical));
        // The C bit, the O bit, version 1, an IPv4 payload.
        let mut b = h;
        b[1] = 0x40;
        assert_eq!(
            geneve_decode(&with(&b), 0x12_3456),
            Err(DecodeError::Critical)
        );
        b[1] = 0x80;
        assert_eq!(
            geneve_decode(&with(&b), 0x12_3456),
            Err(DecodeError::Control)
        );
        let mut v = h;
        v[0] = 0x40;
        assert_eq!(
            geneve_decode(&with(&v), 0x12_3456),
            Err(DecodeError::Version(1))
        );
        let mut p = h;
        p[2..4].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(
            geneve_decode(&with(&p), 0x12_3456),
            Err(DecodeError::NotEthernet(0x0800))
        );
        // Options longer than the datagram, and short datagrams.
        assert_eq!(
            geneve_decode(&with(&[0x3f, 0, 0x65, 0x58, 0, 0, 7, 0]), 7),
            Err(DecodeError::Short)
        );
        for len in 0..22 {
            assert!(geneve_decode(&with(&h)[..len], 0x12_3456).is_err());
        }
    }

    #[test]
    fn bad_datagrams() {
        assert_eq!(decode(&[0x08; 21], 1), Err(DecodeError::Short));
        let mut d = vec![0u8; 30];
        d[7] = 0xff; // reserved bits are ignored
        assert_eq!(decode(&d, 0), Err(DecodeError::NoVni));
        d[0] = 0x08 | 0x80;
        assert_eq!(decode(&d, 0), Ok(8));
    }
}
