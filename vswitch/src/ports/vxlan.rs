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
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vhost_backends::counters::NetCounters;
use vhost_backends::frame::{FrameEdit, TxFrame, VNET_HDR_LEN};
use vhost_backends::offload::Offloads;

use super::host_io::{HostCounters, Received, receive_loop};
use super::switch_port::{Ingress, PortKey, SwitchPort, spawn_data_path};
use crate::topology::{Encap, VxlanConfig};

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The "I" flag: the VNI field is valid.
const FLAG_I: u8 = 0x08;
/// How long a learned MAC stays behind its VTEP without traffic from it.
const VTEP_AGING: Duration = Duration::from_secs(300);
/// Bound on the MACs learned per port (beyond it, frames to new MACs go to every remote).
const MAX_LEARNED: usize = 65536;
/// Sockets a port sends from (outer UDP source ports).
pub const SOURCE_SOCKETS: usize = 16;

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

/// One VXLAN port.
pub struct VxlanPort {
    name: String,
    config: VxlanConfig,
    socket: UdpSocket,
    /// The sockets frames are sent from, one per inner flow hash (never read).
    sources: Vec<UdpSocket>,
    /// Bound to the multicast underlay group (`group`), joined on `local`'s interface.
    group: Option<UdpSocket>,
    /// Inner MAC -> (VTEP it was last seen behind, when).
    learned: Mutex<HashMap<[u8; 6], (IpAddr, Instant)>>,
    counters: HostCounters,
    stop: AtomicBool,
}

impl VxlanPort {
    /// Binds the port's UDP socket and its source sockets. The error names the address.
    pub fn open(name: &str, config: VxlanConfig) -> Result<VxlanPort, String> {
        let at = SocketAddr::new(config.local, config.port);
        let socket = tunnel_socket(at).map_err(|e| format!("VXLAN socket {at}: {e}"))?;
        let mut sources = Vec::with_capacity(SOURCE_SOCKETS);
        for _ in 0..SOURCE_SOCKETS {
            let any = SocketAddr::new(config.local, 0);
            let s = tunnel_socket(any).map_err(|e| format!("VXLAN source socket {any}: {e}"))?;
            // Never read: the smallest receive buffer the kernel allows.
            set_int(&s, libc::SOL_SOCKET, libc::SO_RCVBUF, 1)
                .map_err(|e| format!("VXLAN source socket {any}: {e}"))?;
            if let Some(IpAddr::V4(_)) = config.group {
                multicast_from(&s, config.local)
                    .map_err(|e| format!("VXLAN source socket {any}: multicast: {e}"))?;
            }
            sources.push(s);
        }
        let group = match (config.group, config.local) {
            (Some(IpAddr::V4(g)), IpAddr::V4(l)) => {
                let at = SocketAddr::new(IpAddr::V4(g), config.port);
                let s = UdpSocket::bind(at)
                    .and_then(|s| s.join_multicast_v4(&g, &l).map(|()| s))
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .map_err(|e| format!("group socket {at} (joined on {l}): {e}"))?;
                Some(s)
            }
            _ => None,
        };
        Ok(VxlanPort {
            name: name.to_string(),
            config,
            socket,
            sources,
            group,
            learned: Mutex::new(HashMap::new()),
            counters: HostCounters::default(),
            stop: AtomicBool::new(false),
        })
    }

    /// The outer UDP source ports, in socket order (for `ctl` and tests).
    pub fn source_ports(&self) -> Vec<u16> {
        let port = |s: &UdpSocket| s.local_addr().map_or(0, |a| a.port());
        self.sources.iter().map(port).collect()
    }

    pub fn config(&self) -> &VxlanConfig {
        &self.config
    }

    pub fn counters(&self) -> &HostCounters {
        &self.counters
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

    /// Reads the port's socket (with `group`, its multicast group's socket) until `stop`,
    /// handing batches of inner frames to `forward`.
    pub fn receive(&self, group: bool, forward: impl FnMut(&[TxFrame<'_>])) {
        let socket = match (group, &self.group) {
            (true, Some(g)) => g,
            (true, None) => return,
            (false, _) => &self.socket,
        };
        receive_loop(
            socket.as_fd(),
            &self.stop,
            Offloads::default(),
            &self.counters,
            |buf| self.recv_one(socket, buf),
            forward,
        );
    }

    /// Whether a datagram from `ip` may be taken: from a static remote or, with a multicast
    /// group, from any VTEP but ourselves (our own group traffic, should it loop back).
    fn accepts(&self, ip: IpAddr) -> bool {
        self.config.remote.contains(&ip) || (self.group.is_some() && ip != self.config.local)
    }

    fn recv_one(&self, socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let (n, from) = socket.recv_from(buf)?;
        if !self.accepts(from.ip()) {
            self.counters.rx_drop_unknown_vtep.fetch_add(1, Relaxed);
            return Ok(None);
        }
        let decoded = match self.config.encap {
            Encap::Vxlan => decode(&buf[..n], self.config.vni),
            Encap::Geneve => geneve_decode(&buf[..n], self.config.vni),
        };
        let start = match decoded {
            Ok(s) => s,
            Err(DecodeError::Critical) => {
                self.counters.rx_drop_critical_option.fetch_add(1, Relaxed);
                return Ok(None);
            }
            Err(_) => {
                self.counters.rx_drop_bad_header.fetch_add(1, Relaxed);
                return Ok(None);
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
                l.insert(src, (from.ip(), Instant::now()));
            }
        }
        Ok(Some(Received {
            vnet: [0; VNET_HDR_LEN],
            start,
            len: n - start,
        }))
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

    /// Sends one plain frame (wrapped) to its VTEP or to every remote.
    fn send(&self, frame: &[u8], wrapped: &mut Vec<u8>) {
        wrapped.clear();
        wrapped.extend_from_slice(&match self.config.encap {
            Encap::Vxlan => header(self.config.vni),
            Encap::Geneve => geneve_header(self.config.vni),
        });
        wrapped.extend_from_slice(frame);
        // Its VTEP if learned, else every static remote and the multicast group.
        let learned = self.vtep_of(frame);
        let flood = learned.is_none();
        let targets = learned.into_iter().chain(
            (self.config.remote.iter().copied())
                .chain(self.config.group)
                .filter(|_| flood),
        );
        let from = match self.sources.len() {
            0 => &self.socket,
            n => &self.sources[flow_hash(frame) as usize % n],
        };
        for ip in targets {
            match from.send_to(wrapped, SocketAddr::new(ip, self.config.port)) {
                Ok(_) => self.counters.count_tx(frame.len()),
                Err(e) => self.counters.count_tx_error(&e),
            }
        }
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
        WRAPPED.with_borrow_mut(|wrapped| {
            for (frame, edit) in frames {
                self.plain_frames(frame, edit, |b| self.send(b, wrapped));
            }
        });
    }

    /// Sends plain frames held by vfabric.
    fn deliver_bytes(&self, frames: &[Vec<u8>], _hint: u16) {
        WRAPPED.with_borrow_mut(|wrapped| {
            for f in frames {
                self.send(f, wrapped);
            }
        });
    }

    /// One reader thread.
    fn start(
        self: &Arc<Self>,
        key: PortKey,
        ingress: &Arc<dyn Ingress>,
    ) -> io::Result<Vec<JoinHandle<()>>> {
        let mut threads = Vec::new();
        for group in [false, true] {
            if group && self.group.is_none() {
                continue;
            }
            let (vx, ingress) = (self.clone(), ingress.clone());
            let suffix = if group { "-g" } else { "" };
            threads.push(spawn_data_path(
                format!("{}-{}{suffix}", self.config.encap.type_name(), self.name),
                format!("port {}", self.name),
                move || vx.receive(group, |frames| ingress.forward(key, 0, frames)),
            )?);
        }
        Ok(threads)
    }

    /// Ends the reader thread (within half a second).
    fn stop(&self) {
        self.stop.store(true, Relaxed);
    }
}

/// A non-blocking UDP socket bound to `at` that never fragments (IP_PMTUDISC_DO).
fn tunnel_socket(at: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(at)?;
    socket.set_nonblocking(true)?;
    let (level, opt, val) = if at.is_ipv4() {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    };
    set_int(&socket, level, opt, val)
        .map_err(|e| io::Error::new(e.kind(), format!("forbidding fragmentation: {e}")))?;
    if at.is_ipv4() {
        // The outer UDP checksum is sent as zero over IPv4, as RFC 7348 says it SHOULD be
        // (RFC 8926 allows it) and the Linux vxlan and geneve devices do by default. A
        // peer's userspace datapath (OVS) thus never meets a checksum left "for hardware to
        // fill in" when the route leaves through a veth.
        set_int(&socket, libc::SOL_SOCKET, libc::SO_NO_CHECK, 1)
            .map_err(|e| io::Error::new(e.kind(), format!("zero UDP checksum: {e}")))?;
    }
    Ok(socket)
}

/// Multicast from `s` leaves through `local`'s interface and does not loop back to us.
fn multicast_from(s: &UdpSocket, local: IpAddr) -> io::Result<()> {
    let IpAddr::V4(l) = local else {
        return Ok(());
    };
    s.set_multicast_loop_v4(false)?;
    let addr = libc::in_addr {
        s_addr: u32::from_ne_bytes(l.octets()),
    };
    // SAFETY: setsockopt reads one in_addr through the pointer, which outlives the call.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            &addr as *const libc::in_addr as *const libc::c_void,
            std::mem::size_of::<libc::in_addr>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// setsockopt with an int value.
fn set_int(
    s: &UdpSocket,
    level: libc::c_int,
    opt: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads one int through the pointer, which outlives the call.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            &val as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
    /// The datagram being built.
    static WRAPPED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
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
