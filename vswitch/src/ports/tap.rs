//! TAP ports: a switch port that is a Linux TAP device, so the segment reaches the host kernel,
//! a container's network namespace, or a Linux bridge.
//!
//! The device is made with TUN ioctls (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, plus
//! IFF_MULTI_QUEUE for more than one queue; `tun-tap` has neither vnet headers nor
//! multi-queue) and configured over netlink with `rtnetlink` (up, MTU, address, bridge). With
//! a 12-byte virtio-net header on every frame, offloads cross in both directions: a guest's
//! TCP super-frame or partial checksum goes to the kernel as it is, and the kernel hands us
//! unsegmented super-frames (TUNSETOFFLOAD), which reach guests that accept them unchanged
//! and are cut in software for the others.
//!
//! Frames to the kernel are written with `writev` straight from the sender's memory behind
//! the header (no copy in vfabric); frames from the kernel are read into vfabric's buffers by
//! one thread per queue and forwarded in batches.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use arrayvec::ArrayVec;
use vhost_backends::counters::NetCounters;
use vhost_backends::frame::{FrameEdit, MAX_TX_SEGS, TxFrame, VNET_HDR_LEN};
use vhost_backends::offload::Offloads;

use super::host_io::{HostCounters, Received, receive_loop};
use super::switch_port::{Ingress, PortKey, SwitchPort, spawn_data_path};
use crate::topology::TapConfig;

/// Offloads the kernel may hand us (TUNSETOFFLOAD): checksum and TCP segmentation; every
/// receiver that cannot take them gets them completed in software.
const KERNEL_OFFLOADS: libc::c_uint =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;

/// One TAP port.
pub struct TapPort {
    name: String,
    config: TapConfig,
    /// One descriptor per queue, once the device exists.
    fds: OnceLock<Vec<OwnedFd>>,
    counters: HostCounters,
    stop: AtomicBool,
}

impl TapPort {
    /// A port whose device is not created yet (`open`).
    pub fn new(name: &str, config: TapConfig) -> TapPort {
        TapPort {
            name: name.to_string(),
            config,
            fds: OnceLock::new(),
            counters: HostCounters::default(),
            stop: AtomicBool::new(false),
        }
    }

    pub fn config(&self) -> &TapConfig {
        &self.config
    }

    pub fn counters(&self) -> &HostCounters {
        &self.counters
    }

    /// Creates and configures the device (in its namespace, on a helper thread that enters
    /// it). The error names what failed and, for a permission problem, the capability.
    pub fn open(&self) -> Result<(), String> {
        let cfg = self.config.clone();
        let fds = std::thread::scope(|s| {
            s.spawn(move || create_in_namespace(&cfg))
                .join()
                .unwrap_or_else(|_| Err("the TAP setup thread panicked".into()))
        })?;
        let _ = self.fds.set(fds);
        Ok(())
    }

    /// Number of queues (reader threads) once open.
    pub fn queues(&self) -> usize {
        self.fds.get().map_or(0, Vec::len)
    }

    /// Reads queue `q` until `stop`, handing batches of frames to `forward`.
    pub fn receive(&self, q: usize, forward: impl FnMut(&[TxFrame<'_>])) {
        let Some(fd) = self.fds.get().and_then(|f| f.get(q)) else {
            return;
        };
        let raw = fd.as_raw_fd();
        receive_loop(
            fd.as_fd(),
            &self.stop,
            Offloads::ALL,
            &self.counters,
            |buf| read_frame(raw, buf),
            forward,
        );
    }
}

impl SwitchPort for TapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn net_counters(&self) -> &NetCounters {
        &self.counters.net
    }

    /// Whether the device exists (it was created, or the port is optional and it failed).
    fn is_up(&self) -> bool {
        self.fds.get().is_some()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.counters.fields()
    }

    /// Ends the reader threads (within half a second).
    fn stop(&self) {
        self.stop.store(true, Relaxed);
    }

    /// Writes `frames` to the kernel (queue chosen from `hint`), each behind a virtio-net
    /// header carrying its offloads, counting each outcome.
    fn deliver_batch<'f, 'a: 'f>(
        &self,
        frames: impl Iterator<Item = (&'f TxFrame<'a>, FrameEdit)>,
        hint: u16,
    ) {
        let Some(fds) = self.fds.get().filter(|f| !f.is_empty()) else {
            for _ in frames {
                self.counters.net.tx_drop_link_down.fetch_add(1, Relaxed);
            }
            return;
        };
        let fd = fds[usize::from(hint) % fds.len()].as_raw_fd();
        for (frame, edit) in frames {
            match write_frame(fd, frame, edit) {
                Ok(_) => self.counters.count_tx(edit.len_after(frame.len())),
                Err(e) => self.counters.count_tx_error(&e),
            }
        }
    }

    /// Writes plain frames (no offloads) held by vfabric.
    fn deliver_bytes(&self, frames: &[Vec<u8>], hint: u16) {
        let Some(fds) = self.fds.get().filter(|f| !f.is_empty()) else {
            for _ in frames {
                self.counters.net.tx_drop_link_down.fetch_add(1, Relaxed);
            }
            return;
        };
        let fd = fds[usize::from(hint) % fds.len()].as_raw_fd();
        let hdr = [0u8; VNET_HDR_LEN];
        for f in frames {
            let iov = [iovec(&hdr), iovec(f)];
            match writev(fd, &iov) {
                Ok(_) => self.counters.count_tx(f.len()),
                Err(e) => self.counters.count_tx_error(&e),
            }
        }
    }

    /// One reader thread per queue.
    fn start(
        self: &Arc<Self>,
        key: PortKey,
        ingress: &Arc<dyn Ingress>,
    ) -> io::Result<Vec<JoinHandle<()>>> {
        let mut threads = Vec::new();
        for q in 0..self.queues() {
            let (tap, ingress) = (self.clone(), ingress.clone());
            threads.push(spawn_data_path(
                format!("tap-{}-{q}", self.name),
                format!("port {}", self.name),
                move || tap.receive(q, |frames| ingress.forward(key, q as u16, frames)),
            )?);
        }
        Ok(threads)
    }
}

fn iovec(b: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: b.as_ptr() as *mut libc::c_void,
        iov_len: b.len(),
    }
}

fn writev(fd: libc::c_int, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: every iovec points at memory that stays mapped and unchanged by us for the
    // call (our buffers, or guest memory held by the caller's `TxFrame`); the kernel only
    // reads it.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes one frame with `edit` applied: header, the checked head (edited), then the rest
/// straight from the sender's memory.
fn write_frame(fd: libc::c_int, frame: &TxFrame<'_>, edit: FrameEdit) -> io::Result<usize> {
    let hdr = frame.meta().shifted(edit.shift()).rx_header();
    let head = frame.head();
    let tag;
    let mut iov = ArrayVec::<libc::iovec, { MAX_TX_SEGS + 4 }>::new();
    iov.push(iovec(&hdr));
    let cut = 12 + usize::from(edit.strip);
    if edit == FrameEdit::NONE || head.len() < cut {
        iov.push(iovec(head));
    } else {
        iov.push(iovec(&head[..12]));
        if let Some(t) = edit.push {
            tag = t;
            iov.push(iovec(&tag));
        }
        iov.push(iovec(&head[cut..]));
    }
    let mut guards = ArrayVec::<_, MAX_TX_SEGS>::new();
    let mut fits = true;
    frame.for_each_tail_piece(|s| {
        let g = s.ptr_guard();
        let v = libc::iovec {
            iov_base: g.as_ptr() as *mut libc::c_void,
            iov_len: s.len(),
        };
        fits &= guards.try_push(g).is_ok() && iov.try_push(v).is_ok();
    });
    if !fits {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    let n = writev(fd, &iov);
    drop(guards);
    n
}

/// Reads one frame: the kernel puts the 12-byte virtio-net header in front.
fn read_frame(fd: libc::c_int, buf: &mut [u8]) -> io::Result<Option<Received>> {
    // SAFETY: `buf` is writable for its whole length, which is what read(2) is given.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    if n < VNET_HDR_LEN {
        return Ok(None);
    }
    let mut vnet = [0u8; VNET_HDR_LEN];
    vnet.copy_from_slice(&buf[..VNET_HDR_LEN]);
    // DATA_VALID (2) says the kernel already checked the checksum: nothing for us to do.
    vnet[0] &= 1;
    Ok(Some(Received {
        vnet,
        start: VNET_HDR_LEN,
        len: n - VNET_HDR_LEN,
    }))
}

/// Enters the configured namespace (this thread only), creates the queues and configures the
/// link. Runs on a thread of its own: the namespace switch must not leak into others.
fn create_in_namespace(cfg: &TapConfig) -> Result<Vec<OwnedFd>, String> {
    if let Some(ns) = &cfg.netns {
        let path = if ns.starts_with('/') {
            ns.clone()
        } else {
            format!("/run/netns/{ns}")
        };
        let f = std::fs::File::open(&path)
            .map_err(|e| format!("network namespace `{ns}`: {path}: {e}"))?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            format!(
                "entering network namespace `{ns}`: {e} (needs CAP_SYS_ADMIN: run vfabric as root)"
            )
        })?;
    }
    let mut fds = Vec::new();
    for _ in 0..cfg.queues.max(1) {
        fds.push(open_queue(&cfg.ifname, cfg.queues > 1)?);
    }
    configure_link(cfg)?;
    Ok(fds)
}

/// Opens `/dev/net/tun` and attaches it to TAP `ifname` (created if missing).
fn open_queue(ifname: &str, multi_queue: bool) -> Result<OwnedFd, String> {
    let path = c"/dev/net/tun";
    // SAFETY: a NUL-terminated path and plain flags.
    let raw = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(format!(
            "/dev/net/tun: {} (is the tun module loaded?)",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: `raw` is a descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(ifname.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    if multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads (and may update) the ifreq we pass, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) => format!(
                "creating TAP `{ifname}`: {e}: this needs CAP_NET_ADMIN (run vfabric as root, or `setcap cap_net_admin+ep` on the binary; or mark the port `optional = true`)"
            ),
            Some(libc::EBUSY) | Some(libc::EINVAL) => format!(
                "creating TAP `{ifname}`: {e}: an interface of that name exists and is not a free TAP with these flags"
            ),
            _ => format!("creating TAP `{ifname}`: {e}"),
        });
    }
    let hdr_len: libc::c_int = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) } < 0 {
        return Err(format!(
            "TAP `{ifname}`: setting the virtio-net header size: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    if unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            KERNEL_OFFLOADS as libc::c_ulong,
        )
    } < 0
    {
        return Err(format!(
            "TAP `{ifname}`: setting offloads: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(fd)
}

/// The interface index of `name` in this thread's namespace.
fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: a NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Brings the TAP up with its MTU, bridge and address, over netlink in this thread's
/// namespace.
fn configure_link(cfg: &TapConfig) -> Result<(), String> {
    use rtnetlink::LinkUnspec;
    let index = ifindex(&cfg.ifname)
        .ok_or_else(|| format!("TAP `{}` vanished after creation", cfg.ifname))?;
    let bridge = match &cfg.bridge {
        Some(b) => Some(ifindex(b).ok_or_else(|| {
            format!(
                "bridge `{b}` does not exist{}",
                cfg.netns
                    .as_ref()
                    .map(|n| format!(" in namespace `{n}`"))
                    .unwrap_or_default()
            )
        })?),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("netlink runtime: {e}"))?;
    rt.block_on(async {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| format!("netlink socket: {e}"))?;
        tokio::spawn(conn);
        let mut link = LinkUnspec::new_with_index(index);
        if let Some(m) = cfg.mtu {
            link = link.mtu(m);
        }
        if let Some(b) = bridge {
            link = link.controller(b);
        }
        handle
            .link()
            .set(link.up().build())
            .execute()
            .await
            .map_err(|e| format!("TAP `{}`: setting it up: {e}", cfg.ifname))?;
        if let Some((addr, len)) = cfg.address {
            handle
                .address()
                .add(index, addr, len)
                .replace()
                .execute()
                .await
                .map_err(|e| format!("TAP `{}`: adding address {addr}/{len}: {e}", cfg.ifname))?;
        }
        Ok::<(), String>(())
    })
}
