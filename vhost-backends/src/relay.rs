//! A vhost-user message relay between the VMM and the `vhost` crate's request handler.
//!
//! QEMU (7.2 and 10.0 alike) sends `SET_VRING_ENABLE` for virtio-net *before*
//! `SET_FEATURES`, as soon as `VHOST_USER_F_PROTOCOL_FEATURES` was *offered*; the `vhost`
//! crate's dispatcher and `vhost-user-backend`'s handler only accept it once that feature
//! was *acked* by `SET_FEATURES`, and drop the connection otherwise
//! (`../shared/VM-NOTES.md`). Dropping the early enables instead leaves every ring disabled.
//!
//! The relay sits between the VMM's socket and a private socket served by the `vhost`
//! crate. It forwards every message unchanged (file descriptors included), except that a
//! `SET_VRING_ENABLE` arriving while the backend has not acked `PROTOCOL_FEATURES` is
//! remembered (ring -> on/off, last value wins), acknowledged to the VMM when it asked for a
//! reply, and replayed to the backend right after the `SET_FEATURES` that acks the feature.
//! A reset (`RESET_OWNER`, `RESET_DEVICE`) forgets what was remembered, as the backend
//! forgets its acked features then. Only control messages cross the relay: rings, kicks and
//! interrupts go straight between the VMM and the data path through the shared eventfds.

use std::collections::BTreeMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use vhost::vhost_user::message::{FrontendReq, VhostUserHeaderFlag, VhostUserVirtioFeatures};

/// Size of a vhost-user message header: request, flags, size (3 x u32, little endian).
const HDR_LEN: usize = 12;
/// Larger payloads than this are a protocol violation (the spec's messages are all smaller).
const MAX_PAYLOAD: usize = 64 * 1024;
/// At most this many file descriptors ride on one message (the `vhost` crate's own limit).
const MAX_FDS: usize = 32;

/// At most this many guest memory regions mapped per connection (QEMU uses 8 by default,
/// up to the backend's slot count with CONFIGURE_MEM_SLOTS, which the relay answers with
/// this bound).
pub const MAX_REGIONS: usize = 64;
/// At most this much guest memory mapped per connection (1 TiB): one VMM cannot take
/// vfabric's address space.
pub const MAX_MAPPED: u64 = 1 << 40;

/// The guest memory a VMM has vfabric map on one connection: guest address -> size.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Mapped(BTreeMap<u64, u64>);

impl Mapped {
    /// The table after `msg` (`SET_MEM_TABLE` replaces it, `ADD_MEM_REG` adds, `REM_MEM_REG`
    /// removes), or why it would be over the connection's bounds. `None`: `msg` maps nothing.
    fn after(&self, msg: &Message) -> Result<Option<Mapped>, String> {
        let req = msg.request();
        let p = msg.payload();
        let region = |r: &[u8]| -> Option<(u64, u64)> {
            let at = |o: usize| Some(u64::from_le_bytes(r.get(o..o + 8)?.try_into().ok()?));
            Some((at(0)?, at(8)?))
        };
        let next = if req == FrontendReq::SET_MEM_TABLE as u32 {
            let n = p
                .get(0..4)
                .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
            if n as usize > MAX_REGIONS {
                return Err(format!(
                    "{n} memory regions: more than the {MAX_REGIONS} a connection may map"
                ));
            }
            let regions = p.get(8..).unwrap_or_default().chunks_exact(32);
            Mapped(regions.take(n as usize).filter_map(region).collect())
        } else if req == FrontendReq::ADD_MEM_REG as u32 {
            let mut m = self.clone();
            if let Some((gpa, size)) = p.get(8..40).and_then(region) {
                m.0.insert(gpa, size);
            }
            m
        } else if req == FrontendReq::REM_MEM_REG as u32 {
            let mut m = self.clone();
            if let Some((gpa, _)) = p.get(8..40).and_then(region) {
                m.0.remove(&gpa);
            }
            m
        } else {
            return Ok(None);
        };
        if next.0.len() > MAX_REGIONS {
            return Err(format!(
                "{} memory regions: more than the {MAX_REGIONS} a connection may map",
                next.0.len()
            ));
        }
        let total = next
            .0
            .values()
            .try_fold(0u64, |t, &s| t.checked_add(s))
            .filter(|&t| t <= MAX_MAPPED);
        if total.is_none() {
            return Err(format!(
                "memory regions of more than {} GiB: over what a connection may map",
                MAX_MAPPED >> 30
            ));
        }
        Ok(Some(next))
    }
}

/// Memory regions of `SET_MEM_TABLE` and `ADD_MEM_REG` must lie inside their files: a
/// mapping that runs past the end of a regular file maps pages that do not exist, and the
/// first guest access to them would fault (SIGBUS). (A VMM that shrinks the file *after*
/// sharing it is caught by `vring::sigbus`, which ends only that connection.)
fn check_regions(msg: &Message) -> Result<(), String> {
    let req = msg.request();
    let p = msg.payload();
    let regions: Vec<&[u8]> = if req == FrontendReq::SET_MEM_TABLE as u32 {
        let n = p
            .get(0..4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
        p.get(8..)
            .unwrap_or_default()
            .chunks_exact(32)
            .take(n as usize)
            .collect()
    } else if req == FrontendReq::ADD_MEM_REG as u32 {
        p.get(8..40).into_iter().collect()
    } else {
        return Ok(());
    };
    let u64_at =
        |r: &[u8], at: usize| u64::from_le_bytes(r[at..at + 8].try_into().unwrap_or_default());
    for (i, (r, fd)) in regions.iter().zip(&msg.fds).enumerate() {
        let (size, offset) = (u64_at(r, 8), u64_at(r, 24));
        let Ok(st) = nix::sys::stat::fstat(fd) else {
            continue; // the handler reports a descriptor it cannot map
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            continue;
        }
        let file = st.st_size.max(0) as u64;
        if offset.checked_add(size).is_none_or(|end| end > file) {
            return Err(format!(
                "memory region {i} (offset {offset:#x}, size {size:#x}) runs past the end of its \
                 file ({file:#x} bytes)"
            ));
        }
    }
    Ok(())
}

/// Kick, call and error descriptors are made non-blocking. The ring workers read a kick
/// descriptor whenever epoll says it is readable; a VMM that hands a blocking descriptor
/// used twice (one eventfd for two rings, say) would leave a worker blocked in `read` for
/// ever, and its connection could never end. QEMU and cloud-hypervisor create them
/// non-blocking already, so this changes nothing for them.
fn nonblocking_ring_fds(msg: &Message) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let req = msg.request();
    if req != FrontendReq::SET_VRING_KICK as u32
        && req != FrontendReq::SET_VRING_CALL as u32
        && req != FrontendReq::SET_VRING_ERR as u32
    {
        return;
    }
    for fd in &msg.fds {
        if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
            let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
            let _ = fcntl(fd, FcntlArg::F_SETFL(flags));
        }
    }
}

/// One vhost-user message with the descriptors that came with it.
#[derive(Debug)]
struct Message {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Message {
    fn request(&self) -> u32 {
        u32::from_le_bytes(self.bytes[0..4].try_into().unwrap_or_default())
    }

    fn flags(&self) -> u32 {
        u32::from_le_bytes(self.bytes[4..8].try_into().unwrap_or_default())
    }

    fn payload(&self) -> &[u8] {
        &self.bytes[HDR_LEN..]
    }

    fn payload_u64(&self) -> Option<u64> {
        Some(u64::from_le_bytes(
            self.payload().get(..8)?.try_into().ok()?,
        ))
    }

    /// (index, num) of a `VhostUserVringState` payload.
    fn vring_state(&self) -> Option<(u32, u32)> {
        let p = self.payload();
        Some((
            u32::from_le_bytes(p.get(0..4)?.try_into().ok()?),
            u32::from_le_bytes(p.get(4..8)?.try_into().ok()?),
        ))
    }

    fn new(request: FrontendReq, flags: u32, payload: &[u8]) -> Message {
        let mut bytes = Vec::with_capacity(HDR_LEN + payload.len());
        bytes.extend_from_slice(&(request as u32).to_le_bytes());
        bytes.extend_from_slice(&flags.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(payload);
        Message {
            bytes,
            fds: Vec::new(),
        }
    }
}

/// Reads exactly `buf.len()` bytes, collecting any descriptors that arrive with them.
/// `Ok(false)` on a clean end of stream before the first byte.
fn read_exact_fds(sock: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf[got..])];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let n = msg.bytes;
        let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel just installed `fd` in our table for this message
                    // (SCM_RIGHTS); nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if truncated {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a vhost-user message with more than {MAX_FDS} file descriptors"),
            ));
        }
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "vhost-user peer closed mid-message",
            ));
        }
        got += n;
    }
    Ok(true)
}

/// Reads one whole message; `None` when the peer closed the connection.
fn read_message(sock: &UnixStream) -> io::Result<Option<Message>> {
    let mut bytes = vec![0u8; HDR_LEN];
    let mut fds = Vec::new();
    if !read_exact_fds(sock, &mut bytes, &mut fds)? {
        return Ok(None);
    }
    let size = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    if size > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("vhost-user message with a {size}-byte payload"),
        ));
    }
    bytes.resize(HDR_LEN + size, 0);
    if size > 0 && !read_exact_fds(sock, &mut bytes[HDR_LEN..], &mut fds)? {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "vhost-user peer closed mid-message",
        ));
    }
    Ok(Some(Message { bytes, fds }))
}

/// Writes one message, its descriptors riding on the first byte.
fn write_message(sock: &UnixStream, msg: &Message) -> io::Result<()> {
    let raw: Vec<RawFd> = msg.fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut sent = 0;
    while sent < msg.bytes.len() {
        let iov = [IoSlice::new(&msg.bytes[sent..])];
        let cmsgs: &[ControlMessage] = if sent == 0 && !raw.is_empty() {
            &[ControlMessage::ScmRights(&raw)]
        } else {
            &[]
        };
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The relay's decisions, separate from its I/O so they can be tested message by message.
#[derive(Debug, Default)]
pub struct EarlyEnableFilter {
    /// Whether the backend has acked `VHOST_USER_F_PROTOCOL_FEATURES` (mirrors its check).
    protocol_acked: bool,
    /// Enables received before that, by ring index.
    pending: BTreeMap<u32, u32>,
    /// How many early enables were absorbed, over the connection's life.
    pub absorbed: u64,
}

/// What to do with one message from the VMM.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Forward it, then send these (ring, enable) states to the backend.
    Forward { then_enable: Vec<(u32, u32)> },
    /// Keep it; answer the VMM with a success reply if it asked for one.
    Absorb { reply: bool },
}

impl EarlyEnableFilter {
    /// Decides what happens to one message from the VMM (`request`, `flags`, `payload`).
    pub fn on_frontend_message(&mut self, request: u32, flags: u32, payload: &[u8]) -> Action {
        let need_reply = flags & VhostUserHeaderFlag::NEED_REPLY.bits() != 0;
        let forward = Action::Forward {
            then_enable: Vec::new(),
        };
        if request == FrontendReq::SET_VRING_ENABLE as u32 && !self.protocol_acked {
            if let (Some(idx), Some(num)) = (
                payload
                    .get(0..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_le_bytes),
                payload
                    .get(4..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_le_bytes),
            ) {
                self.pending.insert(idx, num);
                self.absorbed += 1;
                return Action::Absorb { reply: need_reply };
            }
            // Malformed: let the backend reject it with its own error.
            return forward;
        }
        if request == FrontendReq::SET_FEATURES as u32 {
            let Some(bytes) = payload.get(0..8).and_then(|b| b.try_into().ok()) else {
                return forward;
            };
            let features = u64::from_le_bytes(bytes);
            self.protocol_acked = features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0;
            if self.protocol_acked {
                return Action::Forward {
                    then_enable: std::mem::take(&mut self.pending).into_iter().collect(),
                };
            }
            return forward;
        }
        if request == FrontendReq::RESET_OWNER as u32 || request == FrontendReq::RESET_DEVICE as u32
        {
            self.protocol_acked = false;
            self.pending.clear();
        }
        forward
    }
}

/// What a device adds to the relay: protocol features the `vhost` crate's handler refuses
/// to serve (the relay answers them itself) and a word when a ring was enabled.
pub trait RelayHooks {
    /// How the device is named in log messages ("port vm1").
    fn label(&self) -> String {
        "vhost-user device".into()
    }
    /// Protocol feature bits added to the backend's `GET_PROTOCOL_FEATURES` answer.
    fn extra_protocol_features(&self) -> u64 {
        0
    }
    /// `GET_INFLIGHT_FD`: the answer's payload and the shared memory it describes.
    fn get_inflight_fd(&self, _request: &[u8]) -> io::Result<(Vec<u8>, OwnedFd)> {
        Err(io::Error::other("inflight tracking not supported"))
    }
    /// `SET_INFLIGHT_FD`: the region the VMM keeps for this device across backend restarts.
    fn set_inflight_fd(&self, _request: &[u8], _fd: OwnedFd) -> io::Result<()> {
        Err(io::Error::other("inflight tracking not supported"))
    }
    /// Ring `index` was enabled and the backend's handler has applied it.
    fn ring_enabled(&self, _index: u32) {}
    /// The connection is being closed for breaking the protocol or a bound (`why`).
    fn refused(&self, _why: &str) {}
}

/// No hooks: the relay only absorbs early enables.
pub struct NoHooks;
impl RelayHooks for NoHooks {}

/// Only a name for log messages.
pub struct Named(pub String);
impl RelayHooks for Named {
    fn label(&self) -> String {
        self.0.clone()
    }
}

/// How long after SET_FEATURES a VMM has to share guest memory before vfabric says why the
/// link will stay dead.
const MEMORY_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

const PROTOCOL_REPLY_ACK: u64 = 1 << 3;

/// Relays messages between `frontend` (the VMM) and `backend` (the `vhost` crate's handler)
/// until either side closes. Returns the filter, for its counters.
pub fn run(frontend: UnixStream, backend: UnixStream) -> io::Result<EarlyEnableFilter> {
    run_with(frontend, backend, &NoHooks)
}

/// `run`, with a device's `hooks`: `GET/SET_INFLIGHT_FD` are answered by the hooks, the extra
/// protocol features are offered, and every ring enable is reported once the handler applied
/// it (the relay asks the handler for a reply when REPLY_ACK was negotiated, and keeps that
/// reply from a VMM that did not ask for one).
pub fn run_with(
    frontend: UnixStream,
    backend: UnixStream,
    hooks: &dyn RelayHooks,
) -> io::Result<EarlyEnableFilter> {
    let mut relay = Relay {
        extra: hooks.extra_protocol_features(),
        frontend,
        backend,
        hooks,
        filter: EarlyEnableFilter::default(),
        reply_ack: false,
        have_memory: false,
        memory_due: None,
        awaited: Default::default(),
        mapped: Mapped::default(),
    };
    loop {
        let (f_ready, b_ready) = relay.wait()?;
        if b_ready && !relay.relay_backend()? {
            return Ok(relay.filter);
        }
        if f_ready && !relay.relay_frontend()? {
            return Ok(relay.filter);
        }
    }
}

/// The message version every header carries.
const VERSION: u32 = 0x1;

/// One relayed connection.
struct Relay<'h> {
    frontend: UnixStream,
    backend: UnixStream,
    hooks: &'h dyn RelayHooks,
    /// Protocol features the device adds to the handler's.
    extra: u64,
    filter: EarlyEnableFilter,
    reply_ack: bool,
    /// Whether the VMM shared guest memory, and since when it should have.
    have_memory: bool,
    memory_due: Option<std::time::Instant>,
    /// Ring enables forwarded to the handler whose reply is awaited: (ring, enabled, whether
    /// the VMM asked for the reply).
    awaited: std::collections::VecDeque<(u32, bool, bool)>,
    /// The guest memory mapped so far (bounded by `MAX_REGIONS` and `MAX_MAPPED`).
    mapped: Mapped,
}

impl Relay<'_> {
    /// Waits until either side has a message: (frontend ready, backend ready). While waiting
    /// for guest memory that is overdue, says once why the link will stay dead.
    fn wait(&mut self) -> io::Result<(bool, bool)> {
        loop {
            let mut fds = [
                PollFd::new(self.frontend.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.backend.as_fd(), PollFlags::POLLIN),
            ];
            let timeout = match self.memory_due {
                Some(due) => {
                    let left = due.saturating_duration_since(std::time::Instant::now());
                    PollTimeout::try_from(left.as_millis().min(60_000) as i32)
                        .unwrap_or(PollTimeout::NONE)
                }
                None => PollTimeout::NONE,
            };
            match poll(&mut fds, timeout) {
                Ok(0) => {
                    if self
                        .memory_due
                        .is_some_and(|d| std::time::Instant::now() >= d)
                    {
                        self.memory_due = None;
                        log::error!(
                            "{}: the VMM started the device but shared no guest memory, so the link \
                             stays dead (QEMU: \"Failed initializing vhost-user memory map\"). Start \
                             QEMU with shared guest RAM: -object memory-backend-memfd,id=mem,size=<RAM>,share=on \
                             -machine memory-backend=mem (or -numa node,memdev=mem)",
                            self.hooks.label()
                        );
                    }
                    continue;
                }
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready = |p: &PollFd| p.revents().is_some_and(|r| !r.is_empty());
            return Ok((ready(&fds[0]), ready(&fds[1])));
        }
    }

    /// Relays one message of the handler to the VMM (the device's extra protocol features
    /// added; a reply the VMM did not ask for kept back). False: the handler closed.
    fn relay_backend(&mut self) -> io::Result<bool> {
        let Some(mut msg) = read_message(&self.backend)? else {
            return Ok(false);
        };
        let req = msg.request();
        if req == FrontendReq::GET_PROTOCOL_FEATURES as u32
            && self.extra != 0
            && let Some(f) = msg.payload_u64()
        {
            msg.bytes[HDR_LEN..HDR_LEN + 8].copy_from_slice(&(f | self.extra).to_le_bytes());
        }
        // The slots a VMM may use (CONFIGURE_MEM_SLOTS, for a device that offers it) are
        // the connection's bound.
        if req == FrontendReq::GET_MAX_MEM_SLOTS as u32
            && let Some(n) = msg.payload_u64()
        {
            let n = n.min(MAX_REGIONS as u64);
            msg.bytes[HDR_LEN..HDR_LEN + 8].copy_from_slice(&n.to_le_bytes());
        }
        if req == FrontendReq::SET_VRING_ENABLE as u32
            && msg.flags() & VhostUserHeaderFlag::REPLY.bits() != 0
            && let Some((ring, enabled, wanted)) = self.awaited.pop_front()
        {
            if enabled && msg.payload_u64() == Some(0) {
                self.hooks.ring_enabled(ring);
            }
            if !wanted {
                return Ok(true);
            }
        }
        write_message(&self.frontend, &msg)?;
        Ok(true)
    }

    /// Takes one message of the VMM: checked (memory regions), noted (memory shared,
    /// protocol features), answered here (inflight descriptors) or passed through the early
    /// enable filter to the handler. False: the VMM closed.
    fn relay_frontend(&mut self) -> io::Result<bool> {
        let Some(msg) = read_message(&self.frontend)? else {
            return Ok(false);
        };
        let req = msg.request();
        let mapped = check_regions(&msg).and_then(|()| self.mapped.after(&msg));
        match mapped {
            Err(e) => {
                log::error!("{}: {e}; closing the connection", self.hooks.label());
                self.hooks.refused(&e);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            Ok(Some(m)) => self.mapped = m,
            Ok(None) => {}
        }
        nonblocking_ring_fds(&msg);
        if (req == FrontendReq::SET_MEM_TABLE as u32 || req == FrontendReq::ADD_MEM_REG as u32)
            && !msg.fds.is_empty()
        {
            self.have_memory = true;
            self.memory_due = None;
        }
        if req == FrontendReq::SET_FEATURES as u32 && !self.have_memory {
            self.memory_due = Some(std::time::Instant::now() + MEMORY_GRACE);
        }
        if req == FrontendReq::RESET_OWNER as u32 || req == FrontendReq::RESET_DEVICE as u32 {
            self.memory_due = None;
        }
        if req == FrontendReq::SET_PROTOCOL_FEATURES as u32 {
            self.reply_ack = msg
                .payload_u64()
                .is_some_and(|f| f & PROTOCOL_REPLY_ACK != 0);
        }
        if self.extra != 0
            && (req == FrontendReq::GET_INFLIGHT_FD as u32
                || req == FrontendReq::SET_INFLIGHT_FD as u32)
        {
            self.inflight(msg)?;
            return Ok(true);
        }
        match self
            .filter
            .on_frontend_message(msg.request(), msg.flags(), msg.payload())
        {
            Action::Absorb { reply } => {
                if let Some((idx, num)) = msg.vring_state() {
                    log::debug!(
                        "early SET_VRING_ENABLE ring {idx} = {num}: kept until SET_FEATURES"
                    );
                }
                if reply {
                    let flags = VERSION | VhostUserHeaderFlag::REPLY.bits();
                    let ack =
                        Message::new(FrontendReq::SET_VRING_ENABLE, flags, &0u64.to_le_bytes());
                    write_message(&self.frontend, &ack)?;
                }
            }
            Action::Forward { then_enable } => self.forward(msg, then_enable)?,
        }
        Ok(true)
    }

    /// `GET_INFLIGHT_FD` / `SET_INFLIGHT_FD`, answered by the device's hooks.
    fn inflight(&mut self, mut msg: Message) -> io::Result<()> {
        let need_reply = msg.flags() & VhostUserHeaderFlag::NEED_REPLY.bits() != 0;
        let flags = VERSION | VhostUserHeaderFlag::REPLY.bits();
        if msg.request() == FrontendReq::GET_INFLIGHT_FD as u32 {
            let (payload, fd) = self.hooks.get_inflight_fd(msg.payload())?;
            let mut answer = Message::new(FrontendReq::GET_INFLIGHT_FD, flags, &payload);
            answer.fds.push(fd);
            return write_message(&self.frontend, &answer);
        }
        let r = match msg.fds.pop() {
            Some(fd) => self.hooks.set_inflight_fd(msg.payload(), fd),
            None => Err(io::Error::other("SET_INFLIGHT_FD without a descriptor")),
        };
        if let Err(e) = &r {
            log::warn!("SET_INFLIGHT_FD: {e}");
        }
        if need_reply {
            let code: u64 = if r.is_ok() { 0 } else { 1 };
            let ack = Message::new(FrontendReq::SET_INFLIGHT_FD, flags, &code.to_le_bytes());
            write_message(&self.frontend, &ack)?;
        }
        Ok(())
    }

    /// Passes a VMM message to the handler, then the early ring enables the filter kept for
    /// after it. A ring enable gets a reply from the handler when REPLY_ACK is on (so the
    /// device learns when it applied); without REPLY_ACK an enable is reported at once.
    fn forward(&mut self, mut msg: Message, then_enable: Vec<(u32, u32)>) -> io::Result<()> {
        let req = msg.request();
        let need_reply = msg.flags() & VhostUserHeaderFlag::NEED_REPLY.bits() != 0;
        if req == FrontendReq::SET_FEATURES as u32 {
            log::debug!("SET_FEATURES {:#x}", msg.payload_u64().unwrap_or(0));
        }
        if req == FrontendReq::SET_VRING_ENABLE as u32 {
            match msg.vring_state() {
                Some((ring, num)) if self.reply_ack => {
                    // Every enable/disable that gets a reply is queued, so replies pair up
                    // with their requests in order.
                    self.awaited.push_back((ring, num == 1, need_reply));
                    let f = msg.flags() | VhostUserHeaderFlag::NEED_REPLY.bits();
                    msg.bytes[4..8].copy_from_slice(&f.to_le_bytes());
                }
                Some((ring, 1)) => {
                    write_message(&self.backend, &msg)?;
                    self.hooks.ring_enabled(ring);
                    return Ok(());
                }
                _ => {}
            }
        }
        write_message(&self.backend, &msg)?;
        for (idx, num) in then_enable {
            let mut p = [0u8; 8];
            p[0..4].copy_from_slice(&idx.to_le_bytes());
            p[4..8].copy_from_slice(&num.to_le_bytes());
            write_message(
                &self.backend,
                &Message::new(FrontendReq::SET_VRING_ENABLE, VERSION, &p),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEED_REPLY: u32 = 0x8 | 0x1;
    const PROTO: u64 = 1 << 30;

    /// A region message over a file of 8 KiB: (size, offset) of the region.
    fn region_msg(req: FrontendReq, size: u64, offset: u64) -> Message {
        let f = tempfile::tempfile().unwrap();
        f.set_len(0x2000).unwrap();
        let mut p = Vec::new();
        if req == FrontendReq::SET_MEM_TABLE {
            p.extend_from_slice(&1u32.to_le_bytes());
            p.extend_from_slice(&0u32.to_le_bytes());
        } else {
            p.extend_from_slice(&0u64.to_le_bytes());
        }
        for v in [0, size, 0x7f00_0000_0000, offset] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        let mut m = Message::new(req, 0x1, &p);
        m.fds.push(OwnedFd::from(f));
        m
    }

    /// A memory message without descriptors: `regions` (guest address, size).
    fn table_msg(req: FrontendReq, regions: &[(u64, u64)]) -> Message {
        let mut p = Vec::new();
        if req == FrontendReq::SET_MEM_TABLE {
            p.extend_from_slice(&(regions.len() as u32).to_le_bytes());
            p.extend_from_slice(&0u32.to_le_bytes());
        } else {
            p.extend_from_slice(&0u64.to_le_bytes());
        }
        for &(gpa, size) in regions {
            for v in [gpa, size, 0x7f00_0000_0000, 0] {
                p.extend_from_slice(&v.to_le_bytes());
            }
        }
        Message::new(req, 0x1, &p)
    }

    #[test]
    fn a_connection_maps_at_most_its_bounds_of_regions_and_bytes() {
        let gib = 1u64 << 30;
        let m = Mapped::default();
        // A table of MAX_REGIONS regions is fine; one more is refused.
        let full: Vec<(u64, u64)> = (0..MAX_REGIONS as u64).map(|i| (i * gib, gib)).collect();
        let m = m
            .after(&table_msg(FrontendReq::SET_MEM_TABLE, &full))
            .unwrap()
            .unwrap();
        assert_eq!(m.0.len(), MAX_REGIONS);
        let mut over = full.clone();
        over.push((1 << 45, 4096));
        let e = Mapped::default()
            .after(&table_msg(FrontendReq::SET_MEM_TABLE, &over))
            .unwrap_err();
        assert!(e.contains("65 memory regions"), "{e}");
        // Added one by one: the same bound.
        let e = m
            .after(&table_msg(FrontendReq::ADD_MEM_REG, &[(1 << 45, 4096)]))
            .unwrap_err();
        assert!(e.contains("more than the 64"), "{e}");
        // Removing one makes room again.
        let less = m
            .after(&table_msg(FrontendReq::REM_MEM_REG, &[(0, gib)]))
            .unwrap()
            .unwrap();
        assert_eq!(less.0.len(), MAX_REGIONS - 1);
        assert!(
            less.after(&table_msg(FrontendReq::ADD_MEM_REG, &[(1 << 45, 4096)]))
                .is_ok()
        );
        // Bytes: 1 TiB in all is the most; a size that overflows is refused too.
        let big = [(0, MAX_MAPPED / 2), (MAX_MAPPED, MAX_MAPPED / 2)];
        assert!(
            Mapped::default()
                .after(&table_msg(FrontendReq::SET_MEM_TABLE, &big))
                .is_ok()
        );
        let e = Mapped::default()
            .after(&table_msg(
                FrontendReq::SET_MEM_TABLE,
                &[(0, MAX_MAPPED), (MAX_MAPPED, 1)],
            ))
            .unwrap_err();
        assert!(e.contains("1024 GiB"), "{e}");
        assert!(
            Mapped::default()
                .after(&table_msg(
                    FrontendReq::SET_MEM_TABLE,
                    &[(0, u64::MAX), (1, u64::MAX)]
                ))
                .is_err()
        );
        // Other messages map nothing.
        assert_eq!(
            m.after(&table_msg(FrontendReq::GET_FEATURES, &[])),
            Ok(None)
        );
    }

    #[test]
    fn kick_call_and_err_descriptors_become_non_blocking() {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        for req in [
            FrontendReq::SET_VRING_KICK,
            FrontendReq::SET_VRING_CALL,
            FrontendReq::SET_VRING_ERR,
        ] {
            // A blocking descriptor, as a careless VMM could hand over.
            let (a, _b) = UnixStream::pair().unwrap();
            let fd = OwnedFd::from(a);
            let flags =
                |fd: &OwnedFd| OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap());
            assert!(!flags(&fd).contains(OFlag::O_NONBLOCK));
            let mut m = Message::new(req, 0x1, &0u64.to_le_bytes());
            m.fds.push(fd);
            nonblocking_ring_fds(&m);
            assert!(flags(&m.fds[0]).contains(OFlag::O_NONBLOCK), "{req:?}");
        }
    }

    #[test]
    fn memory_regions_past_the_end_of_their_file_are_refused() {
        for req in [FrontendReq::SET_MEM_TABLE, FrontendReq::ADD_MEM_REG] {
            assert!(check_regions(&region_msg(req, 0x2000, 0)).is_ok());
            assert!(check_regions(&region_msg(req, 0x1000, 0x1000)).is_ok());
            let e = check_regions(&region_msg(req, 0x3000, 0)).unwrap_err();
            assert!(
                e.contains("runs past the end of its file (0x2000 bytes)"),
                "{e}"
            );
            assert!(check_regions(&region_msg(req, 0x2000, 0x1000)).is_err());
            assert!(check_regions(&region_msg(req, 0x1000, u64::MAX)).is_err());
        }
    }

    fn vring(idx: u32, num: u32) -> Vec<u8> {
        [idx.to_le_bytes(), num.to_le_bytes()].concat()
    }

    fn enable() -> u32 {
        FrontendReq::SET_VRING_ENABLE as u32
    }

    fn features() -> u32 {
        FrontendReq::SET_FEATURES as u32
    }

    #[test]
    fn early_enables_are_kept_and_replayed_after_set_features() {
        let mut f = EarlyEnableFilter::default();
        assert_eq!(
            f.on_frontend_message(enable(), NEED_REPLY, &vring(0, 1)),
            Action::Absorb { reply: true }
        );
        assert_eq!(
            f.on_frontend_message(enable(), 1, &vring(1, 1)),
            Action::Absorb { reply: false }
        );
        // Explicit disable and last-value-wins.
        f.on_frontend_message(enable(), 1, &vring(3, 1));
        f.on_frontend_message(enable(), 1, &vring(3, 0));
        // SET_FEATURES without PROTOCOL_FEATURES: nothing replayed (the backend then enables
        // every ring by itself).
        assert_eq!(
            f.on_frontend_message(features(), 1, &0u64.to_le_bytes()),
            Action::Forward {
                then_enable: vec![]
            }
        );
        assert_eq!(
            f.on_frontend_message(features(), 1, &PROTO.to_le_bytes()),
            Action::Forward {
                then_enable: vec![(0, 1), (1, 1), (3, 0)]
            }
        );
        // Once acked, enables pass through.
        assert_eq!(
            f.on_frontend_message(enable(), NEED_REPLY, &vring(2, 1)),
            Action::Forward {
                then_enable: vec![]
            }
        );
        assert_eq!(f.absorbed, 4);
    }

    #[test]
    fn reset_forgets_the_acked_state() {
        let mut f = EarlyEnableFilter::default();
        f.on_frontend_message(features(), 1, &PROTO.to_le_bytes());
        f.on_frontend_message(FrontendReq::RESET_OWNER as u32, 1, &[]);
        assert_eq!(
            f.on_frontend_message(enable(), 1, &vring(0, 1)),
            Action::Absorb { reply: false }
        );
    }

    #[test]
    fn malformed_messages_are_left_to_the_backend() {
        let mut f = EarlyEnableFilter::default();
        assert_eq!(
            f.on_frontend_message(enable(), 1, &[1, 2]),
            Action::Forward {
                then_enable: vec![]
            }
        );
        assert_eq!(
            f.on_frontend_message(features(), 1, &[]),
            Action::Forward {
                then_enable: vec![]
            }
        );
    }
}
