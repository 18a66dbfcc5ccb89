//! Raw Ethernet frames sent and counted on an interface inside a test's own namespace
//! (AF_PACKET): how a test proves that a broadcast arrived exactly once.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::netns::Netns;

/// EtherType of the test frames (IEEE local experimental 1): nothing else sends it.
pub const TEST_ETHERTYPE: u16 = 0x88b5;

/// A packet socket for `ethertype` bound to `ifname` (in the calling thread's namespace).
fn packet_socket(ifname: &str, ethertype: u16) -> Result<(OwnedFd, i32)> {
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: a NUL-terminated name that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
    if index == 0 {
        bail!("no interface {ifname}: {}", std::io::Error::last_os_error());
    }
    let proto = (ethertype).to_be() as i32;
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ethertype.to_be();
    sll.sll_ifindex = index;
    // SAFETY: a valid sockaddr_ll and its size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r != 0 {
        bail!("bind to {ifname}: {}", std::io::Error::last_os_error());
    }
    Ok((fd, index))
}

/// The test frame number `seq`: broadcast from `src`, EtherType `TEST_ETHERTYPE`, `seq` in
/// the first 4 payload bytes, padded to 60 bytes.
pub fn test_frame(src: [u8; 6], seq: u32) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(60, 0);
    f
}

/// Sends test frames `0..count` from `src` out of `ifname` in `ns`.
pub fn send_broadcasts(ns: &Netns, ifname: &str, src: [u8; 6], count: u32) -> Result<()> {
    let ifname = ifname.to_string();
    ns.run_in(move || {
        let (fd, _) = packet_socket(&ifname, TEST_ETHERTYPE)?;
        for seq in 0..count {
            let f = test_frame(src, seq);
            // SAFETY: a buffer and its length.
            let n = unsafe { libc::send(fd.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
            if n != f.len() as isize {
                bail!("send on {ifname}: {}", std::io::Error::last_os_error());
            }
        }
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?
}

/// Starts counting test frames arriving on `ifname` in `ns`; returns once the socket is
/// bound. The thread returns the sequence numbers seen (in order), after it has seen
/// `expect` of them and then `quiet` more time without any other (duplicates would show
/// there), or at `deadline`.
pub fn count_broadcasts(
    ns: &Netns,
    ifname: &str,
    expect: usize,
    quiet: Duration,
    deadline: Duration,
) -> Result<JoinHandle<Result<Vec<u32>>>> {
    let ifname = ifname.to_string();
    let (ready, bound) = mpsc::channel();
    let t = ns.run_in(move || {
        let (fd, _) = packet_socket(&ifname, TEST_ETHERTYPE)?;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: setsockopt reads one timeval through the pointer.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        let _ = ready.send(());
        let start = Instant::now();
        let mut seen = Vec::new();
        let mut enough_at: Option<Instant> = None;
        let mut buf = [0u8; 2048];
        while start.elapsed() < deadline && enough_at.is_none_or(|t| t.elapsed() < quiet) {
            // SAFETY: a buffer and its length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 18 && buf[12..14] == TEST_ETHERTYPE.to_be_bytes() {
                seen.push(u32::from_be_bytes([buf[14], buf[15], buf[16], buf[17]]));
                if seen.len() >= expect && enough_at.is_none() {
                    enough_at = Some(Instant::now());
                }
            }
        }
        Ok(seen)
    });
    if bound.recv_timeout(Duration::from_secs(10)).is_err() {
        // The thread ended without binding: its error says why.
        return match t.join() {
            Ok(Err(e)) => Err(e),
            _ => bail!("the counting socket was not bound"),
        };
    }
    Ok(t)
}
