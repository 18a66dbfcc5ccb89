//! The gateway's thread: takes frames queued by the switch, runs the gateway, hands the
//! frames it produces to a sink, and sleeps on the host sockets, the queue and the stack's
//! timers.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::config::NatConfig;
use crate::gateway::{Counters, Gateway};

/// Frames waiting for the gateway at most (beyond: dropped and counted).
const QUEUE_MAX: usize = 4096;

/// The switch's side of a running gateway.
pub struct NatHandle {
    queue: Mutex<VecDeque<Vec<u8>>>,
    wake: UnixStream,
    stop: AtomicBool,
    pub counters: Arc<Counters>,
    /// Frames dropped because the gateway's queue was full.
    pub queue_drops: AtomicU64,
}

impl NatHandle {
    /// Queues a frame for the gateway; false if the queue is full (counted).
    pub fn push(&self, frame: Vec<u8>) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= QUEUE_MAX {
            self.queue_drops.fetch_add(1, Relaxed);
            return false;
        }
        let was_empty = q.is_empty();
        q.push_back(frame);
        drop(q);
        if was_empty {
            let _ = (&self.wake).write(&[1]);
        }
        true
    }

    /// Ends the gateway's thread.
    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
        let _ = (&self.wake).write(&[1]);
    }
}

/// A gateway set up (its forwards bound) but not running yet.
pub struct Runner {
    gw: Gateway,
    wake_rx: UnixStream,
    handle: Arc<NatHandle>,
}

impl Runner {
    /// Sets up a gateway for `cfg`. The error names a forward that cannot be bound.
    pub fn new(cfg: NatConfig) -> Result<Runner, String> {
        let counters = Arc::new(Counters::default());
        let gw = Gateway::new(cfg, counters.clone())?;
        let (wake_rx, wake_tx) = UnixStream::pair().map_err(|e| e.to_string())?;
        wake_rx.set_nonblocking(true).map_err(|e| e.to_string())?;
        wake_tx.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(Runner {
            gw,
            wake_rx,
            handle: Arc::new(NatHandle {
                queue: Mutex::new(VecDeque::new()),
                wake: wake_tx,
                stop: AtomicBool::new(false),
                counters,
                queue_drops: AtomicU64::new(0),
            }),
        })
    }

    /// The switch's side.
    pub fn handle(&self) -> Arc<NatHandle> {
        self.handle.clone()
    }

    /// Runs the gateway on a thread named `nat-NAME`, started by `spawn` (given the
    /// thread's name and body: vfabric's starts it under the NAT threads' seccomp filter);
    /// `sink` gets the frames it sends to the segment, in batches, until `NatHandle::stop`.
    pub fn start<S>(
        self,
        name: &str,
        spawn: S,
        mut sink: impl FnMut(Vec<Vec<u8>>) + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<()>>
    where
        S: FnOnce(String, Box<dyn FnOnce() + Send>) -> std::io::Result<std::thread::JoinHandle<()>>,
    {
        let Runner {
            mut gw,
            mut wake_rx,
            handle: h,
        } = self;
        spawn(
            format!("nat-{name}"),
            Box::new(move || {
                let mut drain = [0u8; 256];
                while !h.stop.load(Relaxed) {
                    let frames: Vec<Vec<u8>> = {
                        let mut q = h.queue.lock().unwrap_or_else(|p| p.into_inner());
                        q.drain(..).collect()
                    };
                    let had_frames = !frames.is_empty();
                    for f in frames {
                        gw.input(f);
                    }
                    gw.poll();
                    let out = gw.take_output();
                    let busy = !out.is_empty() || had_frames;
                    if !out.is_empty() {
                        sink(out);
                    }
                    let delay = if busy {
                        Duration::ZERO
                    } else {
                        gw.poll_delay().min(Duration::from_secs(1))
                    };
                    {
                        let set = gw.wait_set();
                        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(set.len() + 1);
                        fds.push(PollFd::new(wake_rx.as_fd(), PollFlags::POLLIN));
                        fds.extend(set.into_iter().map(|(fd, ev)| PollFd::new(fd, ev)));
                        let ms = delay.as_millis().min(1000) as u16;
                        let _ = poll(&mut fds, PollTimeout::from(ms));
                    }
                    while matches!(wake_rx.read(&mut drain), Ok(n) if n > 0) {}
                }
            }),
        )
    }
}
