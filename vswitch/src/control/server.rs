//! The control socket: where it lives, how it is bound, who may use it, and the loop that
//! serves it.
//!
//! The socket is created with mode 0600 (or the topology's `[control] mode`) and may be
//! given an owner and group; on top of the file permissions, every peer's credentials are
//! checked (root, vfabric's own user, or a member of the configured group), so a socket
//! moved or re-moded by mistake still refuses strangers. Served by a single-threaded tokio
//! runtime on its own thread, with the web console and metrics endpoints when configured.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{Control, Request};
use crate::sockets::lookup_gid;
use crate::topology::ControlConfig;

/// The default control socket of a topology file: `<dir>/<stem>-<hash>.ctl`, where `<dir>`
/// is the service's runtime directory when systemd gives one (`$RUNTIME_DIRECTORY`, e.g.
/// `/run/vfabric` for `RuntimeDirectory=vfabric`), else `$XDG_RUNTIME_DIR/vfabric` for users
/// with a runtime directory, `/run/vfabric` for root, else `/tmp/vfabric-<uid>`; `<hash>`
/// comes from the file's absolute path (two topologies with the same name in different
/// places never share a socket). Host `h` of a topology across hosts: `<stem>-h-<hash>.ctl`.
pub fn default_socket(topology: &Path, host: Option<&str>) -> PathBuf {
    let name = socket_name(topology, host);
    socket_dirs(false)
        .into_iter()
        .next()
        .unwrap_or_else(|| PathBuf::from("/run/vfabric"))
        .join(name)
}

/// The control socket `vfabric ctl` looks for: the first default place (as the daemon
/// chooses it, plus `/run/vfabric`, where a system service's socket is for any user) where
/// that socket exists, else the daemon's default.
pub fn find_default_socket(topology: &Path, host: Option<&str>) -> PathBuf {
    let name = socket_name(topology, host);
    socket_dirs(true)
        .into_iter()
        .map(|d| d.join(&name))
        .find(|p| p.exists())
        .unwrap_or_else(|| default_socket(topology, host))
}

/// `<stem>-<hash>.ctl` for a topology file (`<stem>-<host>-<hash>.ctl` for one host's share).
fn socket_name(topology: &Path, host: Option<&str>) -> String {
    let mut stem = topology
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vfabric".into());
    if let Some(h) = host {
        stem = format!("{stem}-{h}");
    }
    let abs = std::fs::canonicalize(topology).unwrap_or_else(|_| topology.to_path_buf());
    // FNV-1a: stable across builds and platforms.
    let hash = abs
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    format!("{stem}-{:08x}.ctl", hash as u32)
}

/// Where default control sockets go, in order (the daemon takes the first); `searching`
/// adds `/run/vfabric` for users other than root.
fn socket_dirs(searching: bool) -> Vec<PathBuf> {
    let env_dir = |k: &str| std::env::var_os(k).filter(|d| !d.is_empty());
    let mut dirs = Vec::new();
    // systemd's RuntimeDirectory= (several are separated by colons: the first).
    if let Some(d) = env_dir("RUNTIME_DIRECTORY")
        && let Some(first) = d.to_string_lossy().split(':').find(|p| !p.is_empty())
    {
        dirs.push(PathBuf::from(first));
    }
    if let Some(d) = env_dir("XDG_RUNTIME_DIR") {
        dirs.push(PathBuf::from(d).join("vfabric"));
    }
    let uid = nix::unistd::geteuid();
    if uid.is_root() || searching {
        dirs.push(PathBuf::from("/run/vfabric"));
    }
    if !uid.is_root() {
        dirs.push(PathBuf::from(format!("/tmp/vfabric-{uid}")));
    }
    dirs
}

/// The control socket of `topo`, loaded from `file` (served by `host`, for a topology across
/// hosts).
pub fn socket_path(file: &Path, cfg: &ControlConfig, host: Option<&str>) -> PathBuf {
    cfg.socket
        .clone()
        .unwrap_or_else(|| default_socket(file, host))
}

/// The control socket `vfabric ctl` talks to for `topo`, loaded from `file`: the one the
/// file names, else the default one found (see `find_default_socket`).
pub fn client_socket_path(file: &Path, cfg: &ControlConfig, host: Option<&str>) -> PathBuf {
    cfg.socket
        .clone()
        .unwrap_or_else(|| find_default_socket(file, host))
}

/// A bound control socket, not serving yet.
pub struct Listener {
    listener: std::os::unix::net::UnixListener,
    group: Option<nix::unistd::Gid>,
    pub path: PathBuf,
    /// The web console and Prometheus endpoints (`--http`, `metrics = ...`), served on
    /// the same thread.
    pub http: Vec<std::net::TcpListener>,
}

/// Creates the control socket (stale files replaced, a live one refused) with its mode,
/// owner and group.
pub fn bind(path: &Path, cfg: &ControlConfig) -> io::Result<Listener> {
    let group = cfg.perms.group.as_deref().map(lookup_gid).transpose()?;
    let listener = crate::sockets::bind_with_perms(path, &cfg.perms)?;
    Ok(Listener {
        listener,
        group,
        path: path.to_path_buf(),
        http: Vec::new(),
    })
}

impl Listener {
    /// Serves requests forever on a thread of its own.
    pub fn serve(self, control: Arc<Control>) -> io::Result<()> {
        self.listener.set_nonblocking(true)?;
        for l in &self.http {
            l.set_nonblocking(true)?;
        }
        crate::privs::spawn_confined(
            "control".into(),
            crate::privs::ThreadKind::Control,
            move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("control socket: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    for l in self.http {
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => {
                                tokio::spawn(super::http::serve(l, control.clone()));
                            }
                            Err(e) => tracing::error!("http endpoint: {e}"),
                        }
                    }
                    let l = match tokio::net::UnixListener::from_std(self.listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("control socket: {e}");
                            return;
                        }
                    };
                    loop {
                        let Ok((stream, _)) = l.accept().await else {
                            continue;
                        };
                        let control = control.clone();
                        let group = self.group;
                        tokio::spawn(async move {
                            if let Err(e) = connection(stream, &control, group).await {
                                tracing::debug!("control connection: {e}");
                            }
                        });
                    }
                });
            },
        )?;
        Ok(())
    }
}

/// Whether a peer may use the socket: root, our own user, or a member of `group`.
fn allowed(stream: &tokio::net::UnixStream, group: Option<nix::unistd::Gid>) -> bool {
    let Ok(cred) = stream.peer_cred() else {
        return false;
    };
    let me = nix::unistd::geteuid().as_raw();
    cred.uid() == 0 || cred.uid() == me || group.is_some_and(|g| g.as_raw() == cred.gid())
}

async fn connection(
    stream: tokio::net::UnixStream,
    control: &Control,
    group: Option<nix::unistd::Gid>,
) -> io::Result<()> {
    let ok = allowed(&stream, group);
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r);
    reader.read_line(&mut line).await?;
    if ok
        && let Ok(req) = serde_json::from_str::<Request>(&line)
        && req.cmd.first().is_some_and(|c| c == "capture")
    {
        return control.capture(&req.cmd[1..], &mut w, reader).await;
    }
    let answer = if !ok {
        json!({"ok": false, "error": "permission denied"})
    } else {
        match serde_json::from_str::<Request>(&line) {
            Ok(req) => match control.handle(&req) {
                Ok(data) => json!({"ok": true, "data": data}),
                Err(e) => json!({"ok": false, "error": e}),
            },
            Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
        }
    };
    let mut out = answer.to_string();
    out.push('\n');
    w.write_all(out.as_bytes()).await?;
    w.shutdown().await
}
