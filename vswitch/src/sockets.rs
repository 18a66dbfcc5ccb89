//! Unix socket files with their permissions: every listening socket vfabric makes (VM ports,
//! disks, the control socket) is bound and given its mode, owner and group here, and the
//! files made are removed again by one guard.
//!
//! Invariants: a stale socket file is replaced and a live one refused (`bind_socket`); a
//! socket whose permissions cannot be applied is removed before the error is returned (it
//! never lingers with the wrong mode); a `SocketFiles` guard removes the files it holds when
//! dropped, so a start that fails half-way leaves none behind.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};
use vhost_backends::server::bind_socket;

use crate::topology::SocketPerms;

/// A user name or number.
pub fn lookup_uid(name: &str) -> io::Result<Uid> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Uid::from_raw(n));
    }
    nix::unistd::User::from_name(name)?
        .map(|u| u.uid)
        .ok_or_else(|| io::Error::other(format!("no user `{name}`")))
}

/// A group name or number.
pub fn lookup_gid(name: &str) -> io::Result<Gid> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    nix::unistd::Group::from_name(name)?
        .map(|g| g.gid)
        .ok_or_else(|| io::Error::other(format!("no group `{name}`")))
}

/// Gives a socket file its configured mode, owner and group.
pub fn apply_perms(path: &Path, perms: &SocketPerms) -> io::Result<()> {
    let owner = perms.owner.as_deref().map(lookup_uid).transpose()?;
    let group = perms.group.as_deref().map(lookup_gid).transpose()?;
    if let Some(m) = perms.mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m))?;
    }
    if owner.is_some() || group.is_some() {
        nix::unistd::chown(path, owner, group)?;
    }
    Ok(())
}

/// Binds a listening socket at `path` (a stale file replaced, a live socket refused) and
/// gives it its permissions. On error the file is removed if this call made it.
pub fn bind_with_perms(path: &Path, perms: &SocketPerms) -> io::Result<UnixListener> {
    match bind_socket(path) {
        Ok(l) => match apply_perms(path, perms) {
            Ok(()) => Ok(l),
            Err(e) => {
                let _ = std::fs::remove_file(path);
                Err(e)
            }
        },
        Err(e) => {
            // Ours only if it was created here (a live socket is refused first).
            if e.kind() != io::ErrorKind::AddrInUse && e.kind() != io::ErrorKind::AlreadyExists {
                let _ = std::fs::remove_file(path);
            }
            Err(e)
        }
    }
}

/// Socket files made by this process, removed when the guard is dropped.
#[derive(Default)]
pub struct SocketFiles(Vec<PathBuf>);

impl SocketFiles {
    /// `bind_with_perms`, the file held by the guard.
    pub fn bind(&mut self, path: &Path, perms: &SocketPerms) -> io::Result<UnixListener> {
        let l = bind_with_perms(path, perms)?;
        self.0.push(path.to_path_buf());
        Ok(l)
    }

    /// Holds a file made elsewhere.
    pub fn hold(&mut self, path: PathBuf) {
        self.0.push(path);
    }
}

impl Drop for SocketFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
