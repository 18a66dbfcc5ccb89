//! `vfabric run`: the daemon. Starts in stages, all or nothing:
//!
//! 1. signals blocked (before any thread exists: threads inherit the mask), the data-path
//!    seccomp filter compiled;
//! 2. the fabric built (TAPs created, VXLAN and NAT sockets bound), every disk image opened
//!    and locked;
//! 3. every listening socket bound with its permissions: disks, VM ports, the control socket,
//!    the web console's and metrics addresses;
//! 4. capabilities dropped (a fabric that needed them for its TAPs);
//! 5. threads started: disks, ports, pollers, the socket keeper, FDB aging, the control
//!    thread; then readiness (the attach lines, `vfabric ready`, systemd's READY=1).
//!
//! A failing stage prints what failed (the file, the port or disk, the socket) and exits 1;
//! the socket files made so far are removed by their guards. Then the main thread takes
//! the signals: SIGUSR1 prints the counters, SIGHUP reloads, SIGINT/SIGTERM end it, removing
//! every socket file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use vhost_backends::blk::{self, Disk};
use vhost_backends::server::{PortStop, Role};
use vswitch::control::{Control, server, stats};
use vswitch::fabric::Fabric;
use vswitch::privs::{self, SeccompMode, ThreadKind};
use vswitch::sockets::SocketFiles;
use vswitch::topology::{DiskFormat, PortKind, Topology};

/// Runs the fabric of `topo` (loaded from `path`) until SIGINT or SIGTERM.
/// `http`: where the web console listens (`--http`), if anywhere.
pub fn run(
    path: &Path,
    topo: Topology,
    seccomp: SeccompMode,
    http: Option<std::net::SocketAddr>,
) -> ExitCode {
    let signals = match block_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot block signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    match Daemon::start(path, topo, seccomp, http) {
        Ok(daemon) => daemon.serve(&signals),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Signals are taken synchronously by the main thread; they are blocked before any thread
/// exists (the qcow2 I/O threads start when an image is opened, and a SIGUSR1 delivered to a
/// thread that does not block it would end the process).
fn block_signals() -> nix::Result<SigSet> {
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGUSR1,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    signals.thread_block()?;
    Ok(signals)
}

/// The running daemon.
struct Daemon {
    fabric: Arc<Fabric>,
    disks: Vec<Arc<Disk>>,
    control: Arc<Control>,
    /// The disks' and the control socket's files (the VM ports' are the fabric's: ports
    /// come and go at run time), removed when the daemon ends.
    _sockets: SocketFiles,
    _port_sockets: PortSockets,
}

/// Removes the VM ports' socket files as they are when dropped.
struct PortSockets(Arc<Fabric>);

impl Drop for PortSockets {
    fn drop(&mut self) {
        self.0.remove_socket_files();
    }
}

/// The listening sockets of the disks, the control socket and the metrics listener, bound
/// before any thread starts.
struct Bound {
    disk_roles: Vec<(Arc<Disk>, Role)>,
    control: server::Listener,
    control_path: PathBuf,
}

impl Daemon {
    /// Stages 1 to 5 (see the module doc). The error is the line to print.
    fn start(
        path: &Path,
        topo: Topology,
        seccomp: SeccompMode,
        http: Option<std::net::SocketAddr>,
    ) -> Result<Daemon, String> {
        let file = path.display();
        // The data-path filter is compiled before anything is made; threads apply it.
        privs::set_filters(seccomp).map_err(|e| format!("{file}: {e}; nothing started"))?;
        if seccomp == SeccompMode::Off {
            tracing::warn!("--seccomp off: every thread runs without its seccomp filter");
        } else {
            tracing::info!("every thread runs under its seccomp filter ({seccomp:?})");
        }
        let fabric =
            Fabric::new(&topo).map_err(|e| format!("cannot set up the data plane: {e}"))?;
        // Open (and lock) every image first: a missing or busy image is an error before any
        // socket exists.
        let disks = open_disks(&topo).map_err(|e| format!("{file}: {e}; nothing started"))?;
        // Socket files made from here on are removed if starting fails, and at exit.
        let mut sockets = SocketFiles::default();
        let port_sockets = PortSockets(fabric.clone());
        let bound = bind_sockets(path, &topo, http, &fabric, &disks, &mut sockets)
            .map_err(|e| format!("{file}: {e}; nothing started"))?;
        drop_privileges(&topo, &disks);
        let control = Arc::new(Control {
            fabric: fabric.clone(),
            topology: std::sync::RwLock::new(topo.clone()),
            file: path.to_path_buf(),
            disks: disks.clone(),
        });
        start_threads(&fabric, bound.disk_roles)?;
        bound
            .control
            .serve(control.clone())
            .map_err(|e| format!("cannot start the control thread: {e}"))?;
        // Every thread is started: the main thread (signals, reload) keeps the control
        // plane's calls from here on.
        privs::enter(ThreadKind::Control).map_err(|e| format!("main thread: {e}"))?;
        println!(
            "control: {} (vfabric ctl -s {} ports)",
            bound.control_path.display(),
            bound.control_path.display()
        );
        print_ready(&topo);
        // Every socket listens by now (bound above, served by the threads just started).
        notify_systemd(&format!("READY=1\nSTATUS={}", control.status_line()));
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            // STATUS= kept current (`systemctl status` shows it), sent when it changes.
            let (c, mut last) = (control.clone(), String::new());
            every("sd-status", Duration::from_secs(2), move || {
                let now = c.status_line();
                if now != last {
                    notify_systemd(&format!("STATUS={now}"));
                    last = now;
                }
            });
        }
        Ok(Daemon {
            fabric,
            disks,
            control,
            _sockets: sockets,
            _port_sockets: port_sockets,
        })
    }

    /// Takes signals until SIGINT or SIGTERM.
    fn serve(self, signals: &SigSet) -> ExitCode {
        loop {
            match signals.wait() {
                Ok(Signal::SIGUSR1) => self.print_stats(),
                Ok(Signal::SIGHUP) => match self.control.reload() {
                    Ok(changes) if changes.is_empty() => {
                        tracing::info!("reload: nothing changed")
                    }
                    Ok(changes) => tracing::info!("reload: {}", changes.join(", ")),
                    Err(e) => tracing::error!("reload: {e}"),
                },
                Ok(sig) => {
                    tracing::info!("{sig}: shutting down");
                    notify_systemd("STOPPING=1");
                    vhost_backends::server::begin_shutdown();
                    for d in &self.disks {
                        d.image.close();
                    }
                    // The socket files go with `self`.
                    return ExitCode::SUCCESS;
                }
                Err(e) => {
                    tracing::error!("sigwait: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }

    /// SIGUSR1: every counter, one JSON line per port, disk and switch.
    fn print_stats(&self) {
        let mut out = std::io::stdout().lock();
        for line in stats::snapshot(&self.fabric, &self.disks, None) {
            let _ = writeln!(out, "{}", line.to_json());
        }
        let _ = out.flush();
    }
}

/// Opens (and locks) every disk image of `topo`; the error names the disk.
fn open_disks(topo: &Topology) -> Result<Vec<Arc<Disk>>, String> {
    let mut disks = Vec::new();
    for d in &topo.disks {
        let spec = blk::ImageSpec {
            path: d.path.clone(),
            format: match d.format {
                DiskFormat::Auto => blk::Format::Auto,
                DiskFormat::Raw => blk::Format::Raw,
                DiskFormat::Qcow2 => blk::Format::Qcow2,
                DiskFormat::Null => blk::Format::Null,
            },
            readonly: d.readonly,
            null_size: d.size,
        };
        let img = blk::Image::open(&spec).map_err(|e| format!("disk \"{}\": path: {e}", d.name))?;
        disks.push(Disk::new(
            blk::DiskConfig {
                name: d.name.clone(),
                queues: d.queues,
                serial: d.serial.clone(),
            },
            img,
        ));
    }
    Ok(disks)
}

/// Binds every listening socket before any is served: the disks', the VM ports' (held by the
/// fabric), the control socket and the metrics address. The error names the disk, port or
/// socket; the caller's guards remove what was made.
fn bind_sockets(
    path: &Path,
    topo: &Topology,
    http: Option<std::net::SocketAddr>,
    fabric: &Arc<Fabric>,
    disks: &[Arc<Disk>],
    sockets: &mut SocketFiles,
) -> Result<Bound, String> {
    let mut disk_roles = Vec::new();
    for (d, disk) in topo.disks.iter().zip(disks) {
        let role =
            if d.client {
                Role::Client(d.socket.clone())
            } else {
                Role::Server(sockets.bind(&d.socket, &d.perms).map_err(|e| {
                    format!("disk \"{}\": socket {}: {e}", d.name, d.socket.display())
                })?)
            };
        disk_roles.push((disk.clone(), role));
    }
    fabric.bind_vm_sockets()?;
    let control_path = server::socket_path(path, &topo.control, topo.hosts.local.as_deref());
    let bound_control = server::bind(&control_path, &topo.control);
    let mut control =
        bound_control.map_err(|e| format!("control: socket {}: {e}", control_path.display()))?;
    sockets.hold(control_path.clone());
    // The web console (`--http`) and the metrics address of the file serve the same
    // pages (the console and /metrics).
    for (addr, what) in http
        .map(|a| (a, "console"))
        .into_iter()
        .chain(topo.metrics.map(|a| (a, "metrics")))
    {
        let l = std::net::TcpListener::bind(addr).map_err(|e| format!("{what}: {addr}: {e}"))?;
        if let Ok(a) = l.local_addr() {
            match what {
                "console" => println!("console: http://{a}/"),
                _ => println!("metrics: http://{a}/metrics"),
            }
        }
        control.http.push(l);
    }
    Ok(Bound {
        disk_roles,
        control,
        control_path,
    })
}

/// Every privileged step is done (TAPs created, sockets bound and chowned): a fabric that
/// needed root for its TAPs gives up every capability before any thread starts.
fn drop_privileges(topo: &Topology, disks: &[Arc<Disk>]) {
    let has_tap = topo
        .switches
        .iter()
        .flat_map(|s| &s.ports)
        .any(|p| matches!(p.kind, PortKind::Tap(_)));
    if !has_tap || !privs::effective().is_ok_and(|c| c != 0) {
        return;
    }
    match privs::drop_all() {
        Ok(()) => {
            // Capabilities are per thread: the qcow2 I/O threads already run.
            for disk in disks {
                disk.image.drop_privileges(privs::drop_all);
            }
            tracing::info!("TAPs created: every capability dropped")
        }
        Err(e) => tracing::warn!("dropping capabilities: {e}"),
    }
}

/// Starts every thread but the control thread: ports, disks, the socket keeper, pollers,
/// FDB aging.
fn start_threads(fabric: &Arc<Fabric>, disk_roles: Vec<(Arc<Disk>, Role)>) -> Result<(), String> {
    fabric
        .start_ports()
        .map_err(|e| format!("cannot start a port thread: {e}"))?;
    // Disks' stop handles and socket files, for the socket keeper.
    let mut disk_sockets = Vec::new();
    for (disk, role) in disk_roles {
        let name = format!("disk-{}", disk.config.name);
        let stop = PortStop::new();
        if let Role::Server(l) = &role
            && let Some(p) = l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        {
            disk_sockets.push((stop.clone(), p, format!("disk {}", disk.config.name)));
        }
        // The qcow2 I/O threads run already: they confine themselves before their next job.
        disk.image.drop_privileges(privs::enter_disk);
        privs::spawn_confined(name, ThreadKind::Disk, move || {
            blk::run_disk(disk, role, stop)
        })
        .map_err(|e| format!("cannot start a disk thread: {e}"))?;
    }
    // The socket keeper: a listening socket whose file was deleted is made again.
    let f = fabric.clone();
    every("socket-keeper", Duration::from_millis(500), move || {
        for (stop, path, what) in f.listening().iter().chain(&disk_sockets) {
            stop.keep_socket(path, what);
        }
    });
    fabric
        .start_pollers()
        .map_err(|e| format!("cannot start a poll thread: {e}"))?;
    let f = fabric.clone();
    every("fdb-aging", Fabric::EXPIRE_INTERVAL, move || {
        f.expire();
    });
    Ok(())
}

/// A housekeeping thread named `name` that runs `work` every `interval`, for the life of the
/// process, under the control plane's filter.
fn every(name: &str, interval: Duration, mut work: impl FnMut() + Send + 'static) {
    let started = privs::spawn_confined(name.into(), ThreadKind::Control, move || {
        loop {
            std::thread::sleep(interval);
            work();
        }
    });
    if let Err(e) = started {
        tracing::error!("{name}: {e}; not running");
    }
}

/// Tells systemd (`Type=notify` services) about our state through $NOTIFY_SOCKET, if set.
fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name),
        None => SocketAddr::from_pathname(Path::new(&path)),
    };
    let sent = addr.and_then(|a| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &a));
    if let Err(e) = sent {
        tracing::warn!("sd_notify {state}: {e}");
    }
}

/// Prints every port's and disk's attach lines, then `vfabric ready`.
fn print_ready(topo: &vswitch::topology::Topology) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(vswitch::attach::ready_text(topo).as_bytes());
    let _ = out.flush();
}
