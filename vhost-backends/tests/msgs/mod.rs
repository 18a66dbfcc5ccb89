//! Hostile vhost-user message sequences against a live port: one port of this process (an
//! echo switch behind it) serves its socket as vfabric does; each input is one VMM
//! connection that sends a sequence of messages built from the input bytes, then hangs up.
//!
//! The messages are the protocol's own (features, owner, memory tables with file
//! descriptors, ring sizes, addresses, bases, kick/call/err descriptors, enables, config
//! space, memory slots, inflight, status, ...) with fields from the input: sane values,
//! edge values and garbage, lying sizes, missing or extra file descriptors, and any
//! request code. The memory handed over is a file filled from the input, so rings set up by
//! the sequence hold hostile descriptors, and kicks make the port read them.
//!
//! Checked: the process survives, and after every sequence the port serves the next VMM
//! (a GET_FEATURES round trip on a new connection, within 10 s).
//!
//! Shared by the proptest suite (`tests/hostile_messages.rs`, in CI) and the cargo-fuzz
//! target `fuzz/fuzz_targets/vhost_user.rs` (through `#[path]`).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use vhost_backends::frame::TxFrame;
use vhost_backends::net::{FrameSwitch, NetPort, NetPortConfig};
use vhost_backends::server::{PortStop, Role, bind_socket, run_port};
use vmm_sys_util::eventfd::EventFd;

/// Sends every frame back to the port it came from.
struct Echo;

impl FrameSwitch for Echo {
    fn tx_batch(&self, port: &NetPort, queue_pair: u16, frames: &[TxFrame<'_>]) {
        for f in frames {
            let _ = port.deliver(f, queue_pair);
        }
        port.notify();
    }
    fn link_changed(&self, _: &NetPort, _: bool) {}
}

/// Called first on the port's thread (before it serves), if set before the port starts: the
/// fuzz target puts the thread under vfabric's data-path seccomp filter there, as `vfabric
/// run` does, so that a sequence making the port call outside that list is found.
pub static CONFINE: OnceLock<fn()> = OnceLock::new();

/// The port's socket, served by a thread for the life of the process.
pub fn port_socket() -> &'static PathBuf {
    &port().0
}

/// The port (its counters tell how deep the sequences reached) and its socket.
pub fn port() -> &'static (PathBuf, Arc<NetPort>) {
    static PORT: OnceLock<(PathBuf, Arc<NetPort>)> = OnceLock::new();
    PORT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("port.sock");
        let listener = bind_socket(&path).unwrap();
        let port = NetPort::new(
            NetPortConfig {
                name: "hostile".into(),
                mac: Some([2, 0, 0, 0, 0, 1]),
                queue_pairs: 2,
                threads: 1,
                mtu: Some(1500),
                offloads: true,
                pollers: Vec::new(),
            },
            0,
        );
        let p = port.clone();
        std::thread::spawn(move || {
            if let Some(confine) = CONFINE.get() {
                confine();
            }
            run_port(p, Arc::new(Echo), Role::Server(listener), PortStop::new())
        });
        (path, port)
    })
}

#[path = "../input/mod.rs"]
pub mod input;
use input::Input;

/// A ring index: mostly a real one, sometimes anything.
fn ring(r: &mut Input<'_>) -> u32 {
    match r.u8() % 8 {
        7 => r.u32(),
        n => u32::from(n % 5),
    }
}

/// Guest memory as the VMM shares it: one file, at guest address 0 and this user address.
const MEM_SIZE: u64 = 0x1_0000;
const UADDR: u64 = 0x7f00_0000_0000;

/// Message codes of the vhost-user protocol (frontend to backend).
const CODES: &[u32] = &[
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
    27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43,
];

/// What sequence to send, and the descriptors it holds (kept open while it runs).
struct Sequence {
    messages: Vec<(Vec<u8>, Vec<RawFd>)>,
    kicks: Vec<EventFd>,
    _files: Vec<std::fs::File>,
    /// A size field lied: the stream is out of step, replies are not to be waited for.
    desync: bool,
}

fn message(code: u32, flags: u32, payload: &[u8], size: Option<u32>) -> Vec<u8> {
    let mut m = Vec::with_capacity(12 + payload.len());
    m.extend_from_slice(&code.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&size.unwrap_or(payload.len() as u32).to_le_bytes());
    m.extend_from_slice(payload);
    m
}

fn build(r: &mut Input<'_>) -> Sequence {
    let mut s = Sequence {
        messages: Vec::new(),
        kicks: Vec::new(),
        _files: Vec::new(),
        desync: false,
    };
    // The guest memory file, its contents from the input (rings with hostile descriptors).
    let mut mem = std::fs::File::from(
        nix::sys::memfd::memfd_create(c"hostile-vmm", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .unwrap(),
    );
    // At most half of what is left, so that messages follow.
    let fill_len = (usize::from(r.u16()) % 0x4000).min(r.left() / 2);
    let fill = r.bytes(fill_len);
    // The file may be shorter than the region the VMM claims (a truncated memory file).
    let file_len = if r.u8() % 16 == 15 {
        u64::from(r.u16())
    } else {
        MEM_SIZE
    };
    mem.set_len(file_len).unwrap();
    let _ = mem.write_all(&fill);
    let mem_fd = mem.as_raw_fd();
    s._files.push(mem);
    let region = |r: &mut Input<'_>| -> [u64; 4] {
        // (guest address, size, user address, offset in the file)
        match r.u8() % 8 {
            7 => [r.u64(), r.u64(), r.u64(), r.u64()],
            1 => [0, u64::from(r.u32()), UADDR, u64::from(r.u16())],
            _ => [0, MEM_SIZE, UADDR, 0],
        }
    };
    // Often a whole, ordinary setup of queue pair 0 first (rings inside the file, whose
    // contents are the input's), so that what follows, and the kicks, meet live rings.
    if r.u8().is_multiple_of(2) {
        let u64m = |code: u32, v: u64| message(code, 0x1, &v.to_le_bytes(), None);
        let pair = |code: u32, a: u32, b: u32| {
            let mut p = a.to_le_bytes().to_vec();
            p.extend_from_slice(&b.to_le_bytes());
            message(code, 0x1, &p, None)
        };
        // Some of what the device offers (asking for more ends the connection).
        let features = (r.u64() & offered()) | 1 << 32 | 1 << 30;
        s.messages.push((message(3, 0x1, &[], None), vec![]));
        s.messages.push((message(1, 0x1, &[], None), vec![]));
        s.messages.push((message(15, 0x1, &[], None), vec![]));
        // MQ, REPLY_ACK, CONFIG.
        s.messages.push((u64m(16, 0x1 | 0x8 | 0x200), vec![]));
        s.messages.push((u64m(2, features), vec![]));
        let mut table = 1u32.to_le_bytes().to_vec();
        table.extend_from_slice(&0u32.to_le_bytes());
        for v in [0, MEM_SIZE, UADDR, 0] {
            table.extend_from_slice(&v.to_le_bytes());
        }
        s.messages
            .push((message(5, 0x1, &table, None), vec![mem_fd]));
        // Ring 1 (TX) at 0x0, ring 0 (RX) at 0x2000: descriptors, avail at +0x1000, used
        // at +0x1800.
        for (ring, base) in [(1u32, 0u64), (0, 0x2000)] {
            s.messages
                .push((pair(8, ring, 1 << (8 + r.u8() % 2)), vec![]));
            let mut a = ring.to_le_bytes().to_vec();
            a.extend_from_slice(&0u32.to_le_bytes());
            for off in [0, 0x1800, 0x1000] {
                a.extend_from_slice(&(UADDR + base + off).to_le_bytes());
            }
            a.extend_from_slice(&0u64.to_le_bytes());
            s.messages.push((message(9, 0x1, &a, None), vec![]));
            s.messages
                .push((pair(10, ring, u32::from(r.u16())), vec![]));
            for code in [12, 13] {
                let e = EventFd::new(0).unwrap();
                s.messages
                    .push((u64m(code, u64::from(ring)), vec![e.as_raw_fd()]));
                s.kicks.push(e);
            }
            s.messages.push((pair(18, ring, 1), vec![]));
        }
    }
    let mut n = 0;
    while !r.done() && n < 64 {
        n += 1;
        let pick = r.u8();
        let code = if pick == 0xff {
            r.u32()
        } else {
            CODES[usize::from(pick) % CODES.len()]
        };
        let flags = match r.u8() % 8 {
            7 => r.u32(),
            1 | 2 => 0x1 | 0x8, // version 1, NEED_REPLY
            _ => 0x1,
        };
        let mut fds: Vec<RawFd> = Vec::new();
        let payload: Vec<u8> = match code {
            // Feature masks: the device's own (version 1, protocol features, every net
            // feature), or anything.
            2 | 16 | 6 | 40 => {
                let v = if r.u8() % 4 == 3 {
                    r.u64()
                } else {
                    0x1_7fff_ffff & r.u64() | 1 << 32 | 1 << 30
                };
                v.to_le_bytes().to_vec()
            }
            // Memory table with one or more regions.
            5 => {
                let count = match r.u8() % 8 {
                    7 => r.u32() % 16,
                    _ => 1,
                };
                let mut p = Vec::new();
                p.extend_from_slice(&count.to_le_bytes());
                p.extend_from_slice(&0u32.to_le_bytes());
                for _ in 0..count.min(8) {
                    for v in region(r) {
                        p.extend_from_slice(&v.to_le_bytes());
                    }
                    if r.u8() % 8 != 7 {
                        fds.push(mem_fd);
                    }
                }
                p
            }
            // Add or remove one memory region.
            37 | 38 => {
                let mut p = 0u64.to_le_bytes().to_vec();
                for v in region(r) {
                    p.extend_from_slice(&v.to_le_bytes());
                }
                if code == 37 || r.u8().is_multiple_of(2) {
                    fds.push(mem_fd);
                }
                p
            }
            // Ring number, base, enable: (index, value).
            8 | 10 | 11 | 18 => {
                let idx = ring(r);
                let v = match (code, r.u8() % 4) {
                    (_, 0) => r.u32(),
                    (8, _) => 1 << (r.u8() % 12),
                    (18, _) => u32::from(r.u8() & 1),
                    _ => u32::from(r.u16()),
                };
                let mut p = idx.to_le_bytes().to_vec();
                p.extend_from_slice(&v.to_le_bytes());
                p
            }
            // Ring addresses: user addresses inside the memory, or anything.
            9 => {
                let mut p = ring(r).to_le_bytes().to_vec();
                p.extend_from_slice(&(r.u32() & 1).to_le_bytes());
                for _ in 0..3 {
                    let a = match r.u8() % 8 {
                        7 => r.u64(),
                        _ => UADDR + u64::from(r.u16()) % MEM_SIZE,
                    };
                    p.extend_from_slice(&a.to_le_bytes());
                }
                p.extend_from_slice(&r.u64().to_le_bytes());
                p
            }
            // Kick, call, err: an eventfd, or the "no descriptor" flag.
            12..=14 => {
                let idx = u64::from(ring(r) & 0xff);
                let v = match r.u8() % 8 {
                    7 => r.u64(),
                    1 => idx | 0x100,
                    _ => {
                        let e = EventFd::new(0).unwrap();
                        fds.push(e.as_raw_fd());
                        s.kicks.push(e);
                        idx
                    }
                };
                v.to_le_bytes().to_vec()
            }
            // Config space read or write.
            24 | 25 => {
                let off = if r.u8() % 4 == 3 {
                    r.u32()
                } else {
                    u32::from(r.u8() % 12)
                };
                let len = if r.u8() % 4 == 3 {
                    r.u32()
                } else {
                    u32::from(r.u8() % 16)
                };
                let mut p = off.to_le_bytes().to_vec();
                p.extend_from_slice(&len.to_le_bytes());
                p.extend_from_slice(&r.u32().to_le_bytes());
                p.extend(r.bytes((len as usize).min(256)));
                p
            }
            // Backend request channel, log fd, inflight fd: a descriptor or none.
            7 | 21 | 32 => {
                let len = usize::from(r.u8() % 40);
                if r.u8().is_multiple_of(2) {
                    let e = EventFd::new(0).unwrap();
                    fds.push(e.as_raw_fd());
                    s.kicks.push(e);
                }
                r.bytes(len)
            }
            _ => {
                let len = usize::from(r.u8() % 48);
                r.bytes(len)
            }
        };
        // Sometimes the size field lies.
        let size = (r.u8() % 16 == 15).then(|| r.u32() % 0x1100);
        s.desync |= size.is_some_and(|n| n as usize != payload.len());
        s.messages.push((message(code, flags, &payload, size), fds));
    }
    s
}

/// Sends one hostile VMM's messages to the port, then checks that the port serves the next
/// VMM. Panics if it does not.
pub fn run(data: &[u8]) {
    let path = port_socket();
    let mut r = Input(data);
    let seq = build(&mut r);
    let stream = connect(path);
    send(&stream, &seq);
    // A round trip, so that everything before it was handled.
    if !seq.desync {
        let _ = stream.set_nonblocking(false);
        let _ = get_features(&stream);
    }
    drop(stream);
    drop(seq);
    served_on_a_new_connection();
}

/// Like [`run`], on one VMM connection kept from input to input (a persistent frontend: no
/// connection set up and torn down per input, which is what the fuzz target runs): an
/// input's messages follow the previous input's, until a sequence makes the port hang up or
/// puts the stream out of step; the next input then dials again. Checked after every input:
/// the port answers GET_FEATURES on that connection or, if it is gone, on a new one.
pub fn run_persistent(data: &[u8]) {
    let mut kept = PERSISTENT.lock().unwrap_or_else(|p| p.into_inner());
    let mut r = Input(data);
    let seq = build(&mut r);
    let stream = kept.take().unwrap_or_else(|| connect(port_socket()));
    send(&stream, &seq);
    let answered = !seq.desync && {
        let _ = stream.set_nonblocking(false);
        get_features(&stream).is_ok()
    };
    drop(seq);
    if answered {
        *kept = Some(stream);
        return;
    }
    drop(stream);
    *kept = Some(served_on_a_new_connection());
}

/// The connection [`run_persistent`] keeps.
static PERSISTENT: std::sync::Mutex<Option<UnixStream>> = std::sync::Mutex::new(None);

/// Closes the connection [`run_persistent`] keeps (the port serves one VMM at a time: the
/// next one waits until it is closed).
pub fn hang_up_persistent() {
    drop(PERSISTENT.lock().unwrap_or_else(|p| p.into_inner()).take());
}

/// Sends `seq` on `stream`, kicking the rings now and then and dropping the replies.
fn send(stream: &UnixStream, seq: &Sequence) {
    let _ = stream.set_nonblocking(true);
    let mut sink = [0u8; 4096];
    for (i, (bytes, fds)) in seq.messages.iter().enumerate() {
        let iov = [std::io::IoSlice::new(bytes)];
        let cmsg = [ControlMessage::ScmRights(fds.as_slice())];
        let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
        if sendmsg::<()>(
            stream.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .is_err()
        {
            break; // the port hung up on us, as it may
        }
        // Kick the rings now and then, and read (and drop) whatever replies came.
        if i % 4 == 3 {
            for k in &seq.kicks {
                let _ = k.write(1);
            }
        }
        while let Ok(n) = (&*stream).read(&mut sink) {
            if n == 0 {
                break;
            }
        }
    }
    // A last round of kicks.
    for k in &seq.kicks {
        let _ = k.write(1);
    }
}

/// The next VMM is served: a new connection answers GET_FEATURES (with VERSION_1 offered).
/// Returns that connection.
fn served_on_a_new_connection() -> UnixStream {
    let next = connect(port_socket());
    let features =
        get_features(&next).expect("the port answers GET_FEATURES on the next connection");
    assert_ne!(features & (1 << 32), 0, "VIRTIO_F_VERSION_1 offered");
    next
}

/// The device's features, asked on a connection of its own (once).
fn offered() -> u64 {
    static OFFERED: OnceLock<u64> = OnceLock::new();
    *OFFERED.get_or_init(|| get_features(&connect(port_socket())).expect("GET_FEATURES"))
}

/// A GET_FEATURES round trip on `s` (replies to earlier messages are skipped).
fn get_features(mut s: &UnixStream) -> std::io::Result<u64> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let m = message(1, 0x1, &[], None);
    // No SIGPIPE if the port hung up (the fuzz target has no Rust runtime to ignore it).
    if nix::sys::socket::send(s.as_raw_fd(), &m, MsgFlags::MSG_NOSIGNAL)? != m.len() {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    loop {
        let mut hdr = [0u8; 12];
        s.read_exact(&mut hdr)?;
        let size = u32::from_le_bytes(hdr[8..12].try_into().unwrap()) as usize;
        let mut payload = vec![0u8; size.min(0x1000)];
        s.read_exact(&mut payload)?;
        if u32::from_le_bytes(hdr[0..4].try_into().unwrap()) == 1 && size == 8 {
            return Ok(u64::from_le_bytes(payload[..8].try_into().unwrap()));
        }
    }
}

/// Connects to the port; the previous connection may still be ending (the port serves one
/// VMM at a time and the next waits in the backlog), so this itself never waits long.
fn connect(path: &PathBuf) -> UnixStream {
    UnixStream::connect(path).expect("the port's socket accepts connections")
}
