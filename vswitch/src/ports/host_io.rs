//! What TAP and VXLAN ports share: their counters and the loop that reads frames from a
//! host file descriptor in batches and hands them to the switch.
//!
//! Both kinds of port are host I/O, not guest memory: frames are read into vfabric's own
//! buffers, checked like a guest's frames (`parse_host_frame`), and forwarded through the
//! same batch path as a guest's TX ring.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use arrayvec::ArrayVec;
use vhost_backends::counters::NetCounters;
use vhost_backends::frame::{
    FrameInfo, MAX_FRAME_LEN, SegStore, TxError, TxFrame, VNET_HDR_LEN, parse_host_frame,
};
use vhost_backends::offload::Offloads;

/// Counters of a host port: the virtio-net port's set (`rx` = from the host into the switch,
/// `tx` = from the switch to the host), and the drops only host I/O has.
#[derive(Debug, Default)]
pub struct HostCounters {
    pub net: NetCounters,
    /// Frames the kernel refused to take (write or send failed for another reason than size).
    pub tx_drop_error: AtomicU64,
    /// Frames too large for the path (VXLAN: the outer packet exceeds the route's MTU).
    pub tx_drop_too_big: AtomicU64,
    /// Datagrams that are not VXLAN or GENEVE for this port (short, I flag clear, another
    /// VNI; GENEVE: another version or payload type, a control message).
    pub rx_drop_bad_header: AtomicU64,
    /// GENEVE datagrams with a critical option (which vfabric does not understand).
    pub rx_drop_critical_option: AtomicU64,
    /// Datagrams from an address that is not one of the port's remote VTEPs.
    pub rx_drop_unknown_vtep: AtomicU64,
    /// TCP segments merged into the one before them (a tunnel's receive coalescing).
    pub rx_coalesced: AtomicU64,
}

impl HostCounters {
    /// Every counter as (name, value).
    pub fn fields(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.net.snapshot().fields();
        v.extend([
            ("tx_drop_error", self.tx_drop_error.load(Relaxed)),
            ("tx_drop_too_big", self.tx_drop_too_big.load(Relaxed)),
            ("rx_drop_bad_header", self.rx_drop_bad_header.load(Relaxed)),
            (
                "rx_drop_critical_option",
                self.rx_drop_critical_option.load(Relaxed),
            ),
            (
                "rx_drop_unknown_vtep",
                self.rx_drop_unknown_vtep.load(Relaxed),
            ),
            ("rx_coalesced", self.rx_coalesced.load(Relaxed)),
        ]);
        v
    }

    /// Counts a frame that failed the checks.
    pub fn count_rx_error(&self, e: TxError) {
        let c = &self.net;
        match e {
            TxError::Runt => &c.rx_drop_runt,
            TxError::Oversize => &c.rx_drop_oversize,
            TxError::BadOffload => &c.rx_drop_bad_offload,
            TxError::TooFragmented => &c.rx_drop_too_fragmented,
            TxError::MissingHeader => &c.rx_drop_missing_header,
            TxError::BadDescriptor => &c.rx_drop_bad_descriptor,
        }
        .fetch_add(1, Relaxed);
    }

    /// Counts a failed write or send of one frame.
    pub fn count_tx_error(&self, e: &io::Error) {
        let c = match e.raw_os_error() {
            Some(libc::EMSGSIZE) => &self.tx_drop_too_big,
            Some(libc::EAGAIN) | Some(libc::ENOBUFS) => &self.net.tx_drop_no_buffer,
            Some(libc::EIO) | Some(libc::ENETDOWN) | Some(libc::EBADFD) => {
                &self.net.tx_drop_link_down
            }
            _ => &self.tx_drop_error,
        };
        c.fetch_add(1, Relaxed);
    }

    /// Counts one frame handed to the host.
    pub fn count_tx(&self, len: usize) {
        self.net.tx_frames.fetch_add(1, Relaxed);
        self.net.tx_bytes.fetch_add(len as u64, Relaxed);
    }
}

/// One frame read from the host: its virtio-net header and where the Ethernet frame lies in
/// the buffer.
#[derive(Clone, Copy)]
pub struct Received {
    pub vnet: [u8; VNET_HDR_LEN],
    pub start: usize,
    pub len: usize,
}

/// Buffer room for one read: the largest frame behind the largest header.
pub const RECV_BUF: usize = MAX_FRAME_LEN + 64;

/// Frames read from a host socket or device before they are forwarded (each read needs a
/// buffer of `RECV_BUF` bytes held by the port's thread).
pub const HOST_BATCH: usize = 32;

/// Reads batches of frames from `fd` until `stop` is set. `recv` reads one frame into the
/// buffer it is given: `Ok(Some(..))` a frame, `Ok(None)` something it dropped (and
/// counted), `Err(WouldBlock)` nothing left for now. Each batch is checked (offloads among
/// `offloads`) and handed to `forward` as frames.
pub fn receive_loop(
    fd: BorrowedFd<'_>,
    stop: &AtomicBool,
    offloads: Offloads,
    counters: &HostCounters,
    mut recv: impl FnMut(&mut [u8]) -> io::Result<Option<Received>>,
    mut forward: impl FnMut(&[TxFrame<'_>]),
) {
    let mut bufs: Vec<Vec<u8>> = (0..HOST_BATCH).map(|_| vec![0u8; RECV_BUF]).collect();
    let mut failing = false;
    while !stop.load(Relaxed) {
        if !wait_readable(fd, Duration::from_millis(500)) {
            continue;
        }
        loop {
            // Read up to a batch, remembering which buffer holds which frame.
            let mut got = ArrayVec::<(usize, Received), HOST_BATCH>::new();
            let mut drained = false;
            for (i, buf) in bufs.iter_mut().enumerate() {
                match recv(buf) {
                    Ok(Some(r)) => {
                        failing = false;
                        got.push((i, r));
                    }
                    Ok(None) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // A device that went away: say so once, and do not spin on it.
                        if !failing {
                            tracing::warn!("host port read: {e}");
                        }
                        failing = true;
                        std::thread::sleep(Duration::from_millis(100));
                        drained = true;
                        break;
                    }
                }
            }
            let mut next = got.iter().peekable();
            let items = bufs.iter_mut().enumerate().filter_map(|(i, buf)| {
                let (_, r) = next.next_if(|(j, _)| *j == i)?;
                let frame = buf.get_mut(r.start..r.start + r.len);
                if frame.is_none() {
                    counters.count_rx_error(TxError::Oversize);
                }
                Some((r.vnet, frame?))
            });
            forward_batch(items, offloads, counters, &mut forward);
            if drained || stop.load(Relaxed) {
                break;
            }
        }
    }
}

/// Waits until `fd` is readable or `timeout` passes.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, and its count; poll(2) only writes `revents`.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    n > 0 && pfd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0
}

/// Hands frames vfabric built (plain, no offloads) to `forward` in batches, checked like
/// any frame and counted as received.
pub fn forward_owned(
    frames: &mut [Vec<u8>],
    counters: &HostCounters,
    mut forward: impl FnMut(&[TxFrame<'_>]),
) {
    for chunk in frames.chunks_mut(HOST_BATCH) {
        let items = chunk
            .iter_mut()
            .map(|f| ([0; VNET_HDR_LEN], f.as_mut_slice()));
        forward_batch(items, Offloads::default(), counters, &mut forward);
    }
}

/// Checks up to a batch of frames held in vfabric's memory (each behind its virtio-net
/// header), counts them as received, and hands the good ones to `forward` in one batch.
pub fn forward_batch<'a>(
    items: impl Iterator<Item = ([u8; VNET_HDR_LEN], &'a mut [u8])>,
    offloads: Offloads,
    counters: &HostCounters,
    forward: &mut impl FnMut(&[TxFrame<'_>]),
) {
    let mut store = SegStore::new();
    let mut infos = ArrayVec::<FrameInfo, HOST_BATCH>::new();
    for (vnet, frame) in items.take(HOST_BATCH) {
        let len = frame.len();
        match parse_host_frame(vnet, frame, offloads, &mut store) {
            Ok(info) => {
                counters.net.rx_frames.fetch_add(1, Relaxed);
                counters.net.rx_bytes.fetch_add(len as u64, Relaxed);
                infos.push(info);
            }
            Err(e) => counters.count_rx_error(e),
        }
    }
    let frames: ArrayVec<TxFrame<'_>, HOST_BATCH> =
        infos.iter().map(|i| TxFrame::new(i, &store)).collect();
    if !frames.is_empty() {
        forward(&frames);
    }
}
