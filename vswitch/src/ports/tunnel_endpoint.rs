//! A tunnel endpoint: the UDP socket bound to a local address and port where VXLAN or GENEVE
//! datagrams arrive, the sockets frames leave from, and the tunnel ports that share it, told
//! apart by VNI (as the Linux vxlan device and Open vSwitch share port 4789 between VNIs).
//! The meshes of several switches on one host all receive on that host's address and the
//! mesh port; one reader thread serves them.
//!
//! Invariants: at most one endpoint per local address and port in the process (the open
//! ones are kept in `OPEN`); each VNI belongs to one port of the endpoint; the reader runs
//! while some port is started, and a port that leaves (`leave`) gets no frame afterwards
//! (the reader holds the member list while it hands a batch over).

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use arrayvec::ArrayVec;
use vhost_backends::offload::Offloads;

use super::gro;
use super::host_io::HostCounters;
use super::host_io::{HOST_BATCH, RECV_BUF, Received, forward_batch, wait_readable};
use super::switch_port::{Ingress, PortKey, spawn_data_path};
use crate::topology::Encap;

/// Sockets an endpoint sends from (outer UDP source ports).
pub const SOURCE_SOCKETS: usize = 16;

/// What the endpoint asks of a tunnel port on it.
pub trait TunnelMember: Send + Sync + 'static {
    /// The port's name.
    fn member_name(&self) -> &str;
    /// Whether datagrams with this VNI are the port's.
    fn has_vni(&self, vni: u32) -> bool;
    /// Takes the datagram of `n` bytes in `buf` from `from` with `vni` (see
    /// `VxlanPort::take_datagram`): `None` if dropped (and counted).
    fn take_datagram(&self, buf: &mut [u8], n: usize, from: IpAddr, vni: u32) -> Option<Received>;
    /// The port's counters.
    fn host_counters(&self) -> &HostCounters;
}

/// What a coalesced frame may ask for: a partial checksum and TCP/IPv4 segmentation.
const GRO_OFFLOADS: Offloads = Offloads {
    csum: true,
    tso4: true,
    tso6: false,
    ecn: false,
};

/// Batches the reader hands over before it lets go of the member list.
const MAX_BATCHES_HELD: usize = 64;

/// Endpoints open in this process (an endpoint lives while a port or its reader holds it).
static OPEN: Mutex<Vec<Weak<Endpoint>>> = Mutex::new(Vec::new());

/// One local tunnel endpoint and the ports on it.
pub struct Endpoint {
    at: SocketAddr,
    encap: Encap,
    socket: UdpSocket,
    /// The sockets frames are sent from, one per inner flow hash (never read).
    sources: Vec<UdpSocket>,
    /// VNIs taken by the ports opened on this endpoint.
    vnis: Mutex<HashSet<u32>>,
    /// The started ports.
    members: RwLock<Vec<Member>>,
    /// A reader thread runs.
    reading: AtomicBool,
}

/// A started port of the endpoint.
struct Member {
    port: Weak<dyn TunnelMember>,
    key: PortKey,
    ingress: Arc<dyn Ingress>,
}

impl Endpoint {
    /// The endpoint at `at` for `vnis` (they are taken until `release`), opened or shared.
    /// `multicast`: the port floods to a group (its sources send multicast from `at`'s
    /// interface); such an endpoint is the port's alone.
    pub fn open(
        at: SocketAddr,
        encap: Encap,
        vnis: &[u32],
        multicast: bool,
    ) -> Result<Arc<Endpoint>, String> {
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|e| e.strong_count() > 0);
        if !multicast && let Some(e) = open.iter().filter_map(Weak::upgrade).find(|e| e.at == at) {
            if e.encap != encap {
                return Err(format!(
                    "{at} is already a {} endpoint (one encapsulation per local address and UDP port)",
                    e.encap.type_name()
                ));
            }
            e.take(vnis)?;
            return Ok(e);
        }
        let kind = encap.type_name().to_uppercase();
        let socket = tunnel_socket(at).map_err(|e| format!("{kind} socket {at}: {e}"))?;
        let mut sources = Vec::with_capacity(SOURCE_SOCKETS);
        for _ in 0..SOURCE_SOCKETS {
            let any = SocketAddr::new(at.ip(), 0);
            let s = tunnel_socket(any)
                .and_then(|s| {
                    // Never read: the smallest receive buffer the kernel allows.
                    set_int(&s, libc::SOL_SOCKET, libc::SO_RCVBUF, 1)?;
                    if multicast {
                        multicast_from(&s, at.ip())?;
                    }
                    Ok(s)
                })
                .map_err(|e| format!("{kind} source socket {any}: {e}"))?;
            sources.push(s);
        }
        let e = Arc::new(Endpoint {
            at,
            encap,
            socket,
            sources,
            vnis: Mutex::new(HashSet::new()),
            members: RwLock::new(Vec::new()),
            reading: AtomicBool::new(false),
        });
        e.take(vnis)?;
        if !multicast {
            open.push(Arc::downgrade(&e));
        }
        Ok(e)
    }

    /// Takes `vnis` for one port, or none of them if one is taken.
    fn take(&self, vnis: &[u32]) -> Result<(), String> {
        let mut taken = self.vnis.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = vnis.iter().find(|v| taken.contains(v)) {
            return Err(format!("VNI {v} on {} is already another port's", self.at));
        }
        taken.extend(vnis);
        Ok(())
    }

    /// Gives back a port's VNIs.
    pub fn release(&self, vnis: &[u32]) {
        let mut taken = self.vnis.lock().unwrap_or_else(|p| p.into_inner());
        for v in vnis {
            taken.remove(v);
        }
    }

    /// The outer UDP source ports, in socket order.
    pub fn source_ports(&self) -> Vec<u16> {
        let port = |s: &UdpSocket| s.local_addr().map_or(0, |a| a.port());
        self.sources.iter().map(port).collect()
    }

    /// Hands `port`'s datagrams (its VNIs) to `ingress` as port `key` from now on, starting
    /// the reader if none runs (its thread is named `thread`).
    pub fn join(
        self: &Arc<Self>,
        port: &Arc<impl TunnelMember>,
        key: PortKey,
        ingress: &Arc<dyn Ingress>,
        thread: String,
    ) -> io::Result<()> {
        let weak: Weak<dyn TunnelMember> = Arc::downgrade(port) as Weak<dyn TunnelMember>;
        self.members
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Member {
                port: weak,
                key,
                ingress: ingress.clone(),
            });
        if !self.reading.swap(true, Relaxed) {
            let e = self.clone();
            let what = format!("port {}", port.member_name());
            // Detached: it ends by itself once no port is left (`leave`).
            if let Err(err) = spawn_data_path(thread, what, move || e.read()) {
                self.reading.store(false, Relaxed);
                self.leave(port.as_ref());
                return Err(err);
            }
        }
        Ok(())
    }

    /// `port` gets no more frames (returns once the reader holds none of its frames).
    pub fn leave(&self, port: &impl TunnelMember) {
        let mut m = self.members.write().unwrap_or_else(|p| p.into_inner());
        let me = port as *const _ as *const u8;
        m.retain(|m| m.port.as_ptr() as *const u8 != me);
    }

    /// The reader: batches of datagrams, each handed to the port of its VNI, until no port
    /// is left.
    fn read(self: Arc<Self>) {
        let mut bufs: Vec<Vec<u8>> = (0..HOST_BATCH).map(|_| vec![0u8; RECV_BUF]).collect();
        loop {
            let readable = wait_readable(self.socket.as_fd(), Duration::from_millis(500));
            let members = self.members.read().unwrap_or_else(|p| p.into_inner());
            if members.is_empty() {
                self.reading.store(false, Relaxed);
                return;
            }
            if !readable {
                continue;
            }
            let ports: Vec<Option<Arc<dyn TunnelMember>>> =
                members.iter().map(|m| m.port.upgrade()).collect();
            // Read until the socket is drained, a batch at a time, for a while (then the
            // members are let go of, so that a port can leave).
            for _ in 0..MAX_BATCHES_HELD {
                let (got, drained) = self.read_batch(&mut bufs, &ports);
                for (mi, m) in members.iter().enumerate() {
                    let Some(port) = &ports[mi] else { continue };
                    let mut mine: ArrayVec<(usize, Received), HOST_BATCH> = (got.iter())
                        .filter(|g| g.1 == mi)
                        .map(|(i, _, r)| (*i, *r))
                        .collect();
                    let merged = gro::coalesce(&mut bufs, &mut mine);
                    let counters = port.host_counters();
                    counters.rx_coalesced.fetch_add(merged as u64, Relaxed);
                    let mut next = mine.iter().peekable();
                    let items = bufs.iter_mut().enumerate().filter_map(|(i, buf)| {
                        let (_, r) = next.next_if(|(j, _)| *j == i)?;
                        Some((r.vnet, buf.get_mut(r.start..r.start + r.len)?))
                    });
                    // Merged frames carry TSO4 and a partial checksum (`gro.rs`).
                    forward_batch(items, GRO_OFFLOADS, counters, &mut |f| {
                        m.ingress.forward(m.key, 0, f)
                    });
                }
                if drained {
                    break;
                }
            }
        }
    }

    /// Reads up to a batch: (buffer, member, frame) of each datagram taken, and whether the
    /// socket is drained.
    fn read_batch(
        &self,
        bufs: &mut [Vec<u8>],
        ports: &[Option<Arc<dyn TunnelMember>>],
    ) -> (ArrayVec<(usize, usize, Received), HOST_BATCH>, bool) {
        let mut got = ArrayVec::new();
        let received = match self.recv_many(bufs) {
            Ok(r) => r,
            Err(e) => {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) {
                    tracing::warn!("tunnel endpoint {}: {e}", self.at);
                }
                return (got, true);
            }
        };
        // Fewer than a batch: the socket is drained for now.
        let drained = received.len() < bufs.len();
        for (i, &(n, from)) in received.iter().enumerate() {
            let buf = &mut bufs[i];
            let vni = vni_of(buf);
            let owner = ports
                .iter()
                .position(|p| p.as_ref().is_some_and(|p| p.has_vni(vni)));
            match owner {
                Some(mi) => {
                    let taken =
                        (ports[mi].as_ref()).and_then(|port| port.take_datagram(buf, n, from, vni));
                    if let Some(r) = taken {
                        got.push((i, mi, r));
                    }
                }
                // No port has this VNI: counted on the first port (the endpoint's owner).
                None => {
                    if let Some(p) = ports.iter().flatten().next() {
                        p.host_counters().rx_drop_bad_header.fetch_add(1, Relaxed);
                    }
                }
            }
        }
        (got, drained)
    }

    /// Up to one datagram per buffer of `bufs`, in one system call (recvmmsg): each one's
    /// length and sender. An error if none was waiting (WouldBlock).
    fn recv_many(&self, bufs: &mut [Vec<u8>]) -> io::Result<ArrayVec<(usize, IpAddr), HOST_BATCH>> {
        let count = bufs.len().min(HOST_BATCH);
        // SAFETY: sockaddr_storage is plain data; zero is a valid value.
        let mut names: [libc::sockaddr_storage; HOST_BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: ArrayVec<libc::iovec, HOST_BATCH> = (bufs.iter_mut().take(count))
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut hdrs: ArrayVec<libc::mmsghdr, HOST_BATCH> = ArrayVec::new();
        for (iov, name) in iovs.iter_mut().zip(names.iter_mut()) {
            // SAFETY: mmsghdr is plain data; zero is a valid value, filled in below.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            hdrs.push(h);
        }
        // SAFETY: `hdrs` holds `count` headers whose names and iovecs point into `names`,
        // `iovs` and `bufs`, all alive and unmoved until the call returns; the kernel
        // writes at most each iovec's length and each name's size.
        let n = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                count as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = ArrayVec::new();
        for (h, name) in hdrs.iter().zip(&names).take(n as usize) {
            let from = match i32::from(name.ss_family) {
                libc::AF_INET => {
                    // SAFETY: the family says the storage holds a sockaddr_in.
                    let a = unsafe {
                        &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                    };
                    IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes())
                }
                libc::AF_INET6 => {
                    // SAFETY: the family says the storage holds a sockaddr_in6.
                    let a = unsafe {
                        &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                    };
                    IpAddr::from(a.sin6_addr.s6_addr)
                }
                _ => IpAddr::from([0u8; 4]),
            };
            out.push((h.msg_len as usize, from));
        }
        Ok(out)
    }
}

/// The VNI field of a VXLAN or GENEVE datagram (bytes 4 to 6 of either header); `u32::MAX`,
/// which no port has, for one too short to hold it.
pub fn vni_of(datagram: &[u8]) -> u32 {
    datagram
        .get(4..7)
        .map_or(u32::MAX, |v| u32::from_be_bytes([0, v[0], v[1], v[2]]))
}

/// A non-blocking UDP socket bound to `at` that never fragments (IP_PMTUDISC_DO).
pub fn tunnel_socket(at: SocketAddr) -> io::Result<UdpSocket> {
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

/// Most datagrams an `Outbox` holds before they are sent.
const OUTBOX_MAX: usize = 64;

/// Datagrams built by a tunnel port's sender (one per thread), sent together by
/// `Endpoint::flush`: one system call (sendmmsg) per run of datagrams that leave from one
/// source socket.
#[derive(Default)]
pub struct Outbox {
    data: Vec<u8>,
    msgs: Vec<Out>,
}

/// One datagram of an `Outbox`: `data[start..start + len]` to `to`, from source socket
/// `source`, carrying a frame of `frame_len` bytes (for the counters).
struct Out {
    source: usize,
    to: SocketAddr,
    start: usize,
    len: usize,
    frame_len: usize,
}

impl Outbox {
    /// Where the next datagram's bytes go (append them, then `push` it once per target).
    pub fn data(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// The bytes from `start` to the end of `data` go to `to` from source socket `source`.
    pub fn push(&mut self, source: usize, to: SocketAddr, start: usize, frame_len: usize) {
        let len = self.data.len() - start;
        self.msgs.push(Out {
            source,
            to,
            start,
            len,
            frame_len,
        });
    }

    /// Whether it holds enough to be sent now.
    pub fn full(&self) -> bool {
        self.msgs.len() >= OUTBOX_MAX
    }
}

impl Endpoint {
    /// The source socket (index) of a frame of flow `hash`.
    pub fn source_index(&self, hash: u32) -> usize {
        hash as usize % self.sources.len().max(1)
    }

    /// Sends what `out` holds and empties it, counting each datagram's frame in `counters`
    /// (sent, or the error of its send).
    pub fn flush(&self, out: &mut Outbox, counters: &HostCounters) {
        let mut i = 0;
        while i < out.msgs.len() {
            let src = out.msgs[i].source;
            let run = out.msgs[i..].iter().take_while(|m| m.source == src).count();
            let socket = self.sources.get(src).unwrap_or(&self.socket);
            send_run(socket, &out.data, &out.msgs[i..i + run], counters);
            i += run;
        }
        out.msgs.clear();
        out.data.clear();
    }
}

/// Sends `msgs` (at most `OUTBOX_MAX`) from `socket` with sendmmsg, retrying after each
/// datagram the kernel refused (counted with its error).
fn send_run(socket: &UdpSocket, data: &[u8], msgs: &[Out], counters: &HostCounters) {
    // SAFETY: sockaddr_storage is plain data; zero is a valid value.
    let mut names: [libc::sockaddr_storage; OUTBOX_MAX] = unsafe { std::mem::zeroed() };
    let mut iovs: ArrayVec<libc::iovec, OUTBOX_MAX> = ArrayVec::new();
    let mut lens: ArrayVec<u32, OUTBOX_MAX> = ArrayVec::new();
    for (m, name) in msgs.iter().zip(names.iter_mut()) {
        lens.push(write_sockaddr(m.to, name));
        iovs.push(libc::iovec {
            // The kernel only reads through it (sendmmsg).
            iov_base: data[m.start..].as_ptr() as *mut libc::c_void,
            iov_len: m.len,
        });
    }
    let mut hdrs: ArrayVec<libc::mmsghdr, OUTBOX_MAX> = ArrayVec::new();
    for ((iov, name), len) in iovs.iter_mut().zip(names.iter_mut()).zip(&lens) {
        // SAFETY: mmsghdr is plain data; zero is a valid value, filled in below.
        let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
        h.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
        h.msg_hdr.msg_namelen = *len;
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
        hdrs.push(h);
    }
    let mut sent = 0;
    while sent < hdrs.len() {
        let left = &mut hdrs[sent..];
        // SAFETY: `left` holds valid headers whose names and iovecs point into `names`,
        // `iovs` and `data`, alive and unmoved until the call returns; the kernel reads
        // them and writes only each header's msg_len.
        let r = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                left.as_mut_ptr(),
                left.len() as u32,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The first datagram left failed: count it, go on with the next.
            counters.count_tx_error(&e);
            sent += 1;
            continue;
        }
        for m in &msgs[sent..sent + r as usize] {
            counters.count_tx(m.frame_len);
        }
        sent += (r as usize).max(1);
    }
}

/// Writes `to` into `name` as a sockaddr_in or sockaddr_in6; returns its length.
fn write_sockaddr(to: SocketAddr, name: &mut libc::sockaddr_storage) -> u32 {
    let at = (name as *mut libc::sockaddr_storage).cast::<u8>();
    match to {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { at.cast::<libc::sockaddr_in>().write(sin) };
            std::mem::size_of::<libc::sockaddr_in>() as u32
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and suitably aligned.
            unsafe { at.cast::<libc::sockaddr_in6>().write(sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as u32
        }
    }
}
