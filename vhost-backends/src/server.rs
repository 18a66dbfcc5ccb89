//! The life of one vhost-user port: wait for a VMM (or dial it), serve the connection until
//! it ends, then wait again — forever, so a restarted guest or a restarted vfabric (the VMM
//! reconnects) resumes without anyone touching the other side.
//!
//! Each connection gets a fresh `VhostUserDaemon` and backend (fresh rings, fresh exit
//! eventfds). The VMM's socket is not handed to the `vhost` crate directly: it goes through
//! `relay`, which absorbs QEMU's early ring enables. The daemon reaches the relay over a
//! private socket whose name is removed as soon as the daemon connected, and whose peer is
//! checked to be this very process. `RelayedDaemon` is that daemon-plus-relay, for net ports
//! (`serve_connection` here) and disks (`blk::serve_connection`) alike.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringEpollHandler, VringRwLock};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use crate::exit::{CloseOnDrop, ExitEvents};
use crate::net::{FrameSwitch, NetBackend, NetPort};
use crate::relay::{self, RelayHooks};

/// How a port meets its VMM.
pub enum Role {
    /// vfabric listens on this socket; the VMM connects (QEMU `reconnect=1`).
    Server(UnixListener),
    /// The VMM listens; vfabric connects to this path, retrying until it can.
    Client(PathBuf),
}

/// Creates the listening socket at `path`. A stale socket file (nobody listening) is
/// replaced; a live one, or a file that is not a socket, is an error.
pub fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by another process", path.display()),
                ));
            }
            fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    UnixListener::bind(path)
}

/// The VMM process connected to a port or disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
    /// Its executable's name (`qemu-system-x86_64`, `cloud-hypervisor`), when readable.
    pub program: Option<String>,
}

/// Ends a port's thread from another thread: no new connection is taken, the current one
/// is cut (the VMM sees a disconnect, as when vfabric stops), and `run_port` returns.
#[derive(Debug, Default)]
pub struct PortStop {
    stop: AtomicBool,
    /// The VMM connection being served (a second handle, to cut it).
    conn: Mutex<Option<UnixStream>>,
    /// A listener made again after the socket file was deleted (`keep_socket`).
    replacement: Mutex<Option<UnixListener>>,
}

impl PortStop {
    pub fn new() -> Arc<PortStop> {
        Arc::new(PortStop::default())
    }

    /// Asks the port's thread to end (it does within a quarter of a second).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(s) = self.conn.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// When the socket file at `path` is gone (deleted by hand, by a cleanup script), no VMM
    /// could connect again: binds a new socket there, for the port's thread to take the next
    /// time it waits for a VMM (a VMM connecting meanwhile waits in its backlog). Its mode is
    /// the process's default (`mode`/`owner`/`group` are applied at start only). Returns
    /// whether the file was made again.
    pub fn keep_socket(&self, path: &Path, what: &str) -> bool {
        if self.is_stopped() || fs::symlink_metadata(path).is_ok() {
            return false;
        }
        // Not while the process is removing its sockets to exit.
        let down = SHUTTING_DOWN.lock().unwrap_or_else(|p| p.into_inner());
        if *down {
            return false;
        }
        match bind_socket(path) {
            Ok(l) => {
                log::warn!(
                    "{what}: socket file {} was deleted: made it again",
                    path.display()
                );
                *self.replacement.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
                true
            }
            Err(e) => {
                log::warn!(
                    "{what}: socket file {} was deleted and cannot be made again: {e}",
                    path.display()
                );
                false
            }
        }
    }

    /// The process at the other end of the connection being served (the VMM), if any:
    /// its pid and program name (from `/proc`, when readable).
    pub fn peer(&self) -> Option<Peer> {
        let c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let cred =
            nix::sys::socket::getsockopt(c.as_ref()?, nix::sys::socket::sockopt::PeerCredentials)
                .ok()
                .filter(|c| c.pid() > 0)?;
        let proc = PathBuf::from(format!("/proc/{}", cred.pid()));
        let program = fs::read_link(proc.join("exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .or_else(|| {
                fs::read_to_string(proc.join("comm"))
                    .ok()
                    .map(|c| c.trim_end().to_string())
            });
        Some(Peer {
            pid: cred.pid() as u32,
            uid: cred.uid(),
            program,
        })
    }

    /// Remembers the connection being served; false if the port is already stopping.
    fn serving(&self, s: &UnixStream) -> bool {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        *c = s.try_clone().ok();
        !self.is_stopped()
    }

    /// The connection ended: closes the handle kept to cut it.
    fn served(&self) {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// How often a waiting port looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(250);

/// Serves `port` in the calling thread until `stop` (forever if never stopped).
pub fn run_port(port: Arc<NetPort>, switch: Arc<dyn FrameSwitch>, role: Role, stop: Arc<PortStop>) {
    serve_until(&format!("port {}", port.name()), &role, &stop, |stream| {
        serve_connection(&port, &switch, stream)
    });
}

/// The life of one vhost-user device: take a VMM connection (accept, or dial), `serve` it
/// until it ends, and again, until `stop`. `what` names the device in logs.
pub fn serve_until(
    what: &str,
    role: &Role,
    stop: &PortStop,
    mut serve: impl FnMut(UnixStream) -> io::Result<()>,
) {
    // A listener made again after someone deleted the socket file.
    let mut rebound: Option<UnixListener> = None;
    while !stop.is_stopped() {
        if let Some(l) = stop
            .replacement
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            rebound = Some(l);
        }
        let stream = match role {
            Role::Server(first) => {
                let listener = rebound.as_ref().unwrap_or(first);
                let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(STOP_POLL.as_millis() as u16)) {
                    Ok(0) => continue,
                    Ok(_) => {}
                    Err(e) => {
                        log::warn!("{what}: poll: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                }
                match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) => {
                        log::warn!("{what}: accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                }
            }
            Role::Client(path) => match connect_with_retry(path, stop) {
                Some(s) => s,
                None => break,
            },
        };
        if !stop.serving(&stream) {
            break;
        }
        log::info!("{what}: VMM connected");
        let r = serve(stream);
        // The handle kept for cutting the connection must not outlive it: the VMM would not
        // see the hang-up (and would never reconnect) while it is open.
        stop.served();
        match r {
            Ok(()) => log::info!("{what}: VMM disconnected"),
            Err(e) => log::warn!("{what}: connection ended: {e}"),
        }
    }
    log::info!("{what}: stopped");
}

/// Set once the process removes its socket files to exit: deleted sockets are no longer
/// made again.
static SHUTTING_DOWN: Mutex<bool> = Mutex::new(false);

/// Call before removing the socket files at exit (waits for a socket being made again).
pub fn begin_shutdown() {
    *SHUTTING_DOWN.lock().unwrap_or_else(|p| p.into_inner()) = true;
}

/// Dials the VMM's socket until it answers (100 ms, growing to 1 s between tries), or
/// `None` once `stop` is set.
pub(crate) fn connect_with_retry(path: &Path, stop: &PortStop) -> Option<UnixStream> {
    let mut wait = Duration::from_millis(100);
    while !stop.is_stopped() {
        match UnixStream::connect(path) {
            Ok(s) => return Some(s),
            Err(_) => {
                std::thread::sleep(wait.min(STOP_POLL));
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        }
    }
    None
}

fn private_listener() -> io::Result<(PathBuf, UnixListener)> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = std::env::temp_dir().join(format!(
        ".vfabric-{}-{}-{nanos:08x}.sock",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let l = UnixListener::bind(&path)?;
    Ok((path, l))
}

/// Accepts the daemon's connection, refusing any peer that is not this process.
fn accept_own(listener: &UnixListener) -> io::Result<UnixStream> {
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(5000u16))? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "backend did not connect to the relay",
            ));
        }
        let (s, _) = listener.accept()?;
        let cred = getsockopt(&s, PeerCredentials)?;
        if cred.pid() == std::process::id() as i32 {
            return Ok(s);
        }
        log::warn!("relay socket: refused a connection from pid {}", cred.pid());
    }
}

/// Serves one VMM connection until it ends.
pub fn serve_connection(
    port: &Arc<NetPort>,
    switch: &Arc<dyn FrameSwitch>,
    stream: UnixStream,
) -> io::Result<()> {
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = NetBackend::new(port.clone(), switch.clone(), mem.clone())?;
    let daemon = RelayedDaemon::new(
        format!("vf-{}", port.name()),
        backend.clone(),
        backend.exit_events.clone(),
        mem,
    )?;
    for (i, h) in daemon.handlers().iter().enumerate() {
        let fd = backend
            .attach_fd(i)
            .ok_or_else(|| io::Error::other("worker without attach eventfd"))?;
        h.register_listener(fd.as_raw_fd(), EventSet::IN, backend.attach_event())?;
        fd.write(1)?;
        let fd = backend
            .resume_fd(i)
            .ok_or_else(|| io::Error::other("worker without resume eventfd"))?;
        h.register_listener(fd.as_raw_fd(), EventSet::IN, backend.resume_event())?;
    }
    // The rings exist before any message is handled: publish them first, so a guest whose
    // setup completed is never told "link down".
    if !backend.wait_attached(Duration::from_secs(10)) {
        return Err(io::Error::other("vhost-user workers did not start"));
    }
    let hooks = NetHooks(port.clone());
    let (relayed, waited) = daemon.serve(stream, hooks, || backend.unpublish())?;
    let filter = relayed?;
    log::debug!(
        "port {}: {} early ring enables absorbed",
        port.name(),
        filter.absorbed
    );
    if let Err(e) = waited {
        log::debug!("port {}: vhost-user handler ended: {e}", port.name());
    }
    Ok(())
}

/// A fresh `VhostUserDaemon` for one VMM connection of a device (net port, disk), which the
/// VMM reaches through the relay (`serve`). Its workers run from `new` on: register the
/// device's own events on `handlers` before `serve`.
pub(crate) struct RelayedDaemon<B: VhostUserBackend<Bitmap = (), Vring = VringRwLock> + 'static> {
    // Dropped in this order on every path (fields drop in declaration order): the workers'
    // handlers, the daemon, then the exit events the crate leaks, which must outlive the
    // daemon (`crate::exit`).
    handlers: Vec<Arc<VringEpollHandler<Arc<B>>>>,
    daemon: VhostUserDaemon<Arc<B>>,
    _exit_events: CloseOnDrop,
}

impl<B: VhostUserBackend<Bitmap = (), Vring = VringRwLock> + 'static> RelayedDaemon<B> {
    /// A daemon named `name` serving `backend` on `mem`; `exit_events` are the ones `backend`
    /// hands its workers, closed once the daemon is gone.
    pub(crate) fn new(
        name: String,
        backend: Arc<B>,
        exit_events: Arc<ExitEvents>,
        mem: GuestMemoryAtomic<GuestMemoryMmap>,
    ) -> io::Result<RelayedDaemon<B>> {
        // Made first: closes what the crate leaks even if the daemon cannot be made.
        let exit_events = CloseOnDrop(exit_events);
        let daemon = VhostUserDaemon::new(name, backend, mem)
            .map_err(|e| io::Error::other(format!("vhost-user daemon: {e}")))?;
        let handlers = daemon.get_epoll_handlers();
        Ok(RelayedDaemon {
            handlers,
            daemon,
            _exit_events: exit_events,
        })
    }

    /// The workers' epoll handlers, one per worker thread.
    pub(crate) fn handlers(&self) -> &[Arc<VringEpollHandler<Arc<B>>>] {
        &self.handlers
    }

    /// Starts the daemon on a private socket and relays `stream` (the VMM) to it with `hooks`
    /// until either side closes. Then the workers are told to exit, `stopped` runs, and the
    /// daemon is dropped. Returns the relay's outcome and the daemon's.
    pub(crate) fn serve(
        mut self,
        stream: UnixStream,
        hooks: impl RelayHooks,
        stopped: impl FnOnce(),
    ) -> io::Result<(
        io::Result<relay::EarlyEnableFilter>,
        vhost_user_backend::Result<()>,
    )> {
        let (inner_path, inner_listener) = private_listener()?;
        let started = self.daemon.start_client(&inner_path.to_string_lossy());
        let _ = fs::remove_file(&inner_path);
        started.map_err(|e| io::Error::other(format!("vhost-user daemon start: {e}")))?;
        let relayed =
            accept_own(&inner_listener).and_then(|inner| relay::run_with(stream, inner, &hooks));
        drop(hooks);
        // Both relay sockets are closed now: the daemon's request loop ends.
        let waited = self.daemon.wait();
        for h in &self.handlers {
            h.send_exit_event();
        }
        stopped();
        drop(self.handlers);
        drop(self.daemon);
        Ok((relayed, waited))
    }
}

/// The relay's hooks for a virtio-net port: its name, and a count of refused VMMs.
struct NetHooks(Arc<NetPort>);

impl relay::RelayHooks for NetHooks {
    fn label(&self) -> String {
        format!("port {}", self.0.name())
    }

    fn refused(&self, _why: &str) {
        crate::net::counters::NetCounters::add(&self.0.net_counters().vmm_refused, 1);
    }
}
