//! vhost-user-net ports: the socket (unique across ports, disks and the control socket),
//! the client/server role, the MAC offered, queue pairs, offloads, and the permissions of a
//! listening socket (shared with disks and the control socket).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::checks::{unicast_mac, unique_socket};
use super::error::Ctx;
use super::parse::RawPort;
use super::parse::parse_mode;
use super::{DEFAULT_QUEUES, SocketPerms, VhostUserNet};

/// The vhost-user-net keys of `p`.
pub(super) fn vhost_port(
    cx: &mut Ctx<'_>,
    p: &RawPort,
    here: &str,
    sock_base: &Path,
    sockets: &mut HashMap<PathBuf, String>,
) -> VhostUserNet {
    let socket = unique_socket(
        cx,
        &p.socket,
        &p.name,
        here,
        sock_base,
        sockets,
        "port ",
        "missing (a vhost-user-net port needs `socket = \"/path/to.sock\"`)",
    );
    let mac = p
        .mac
        .as_ref()
        .and_then(|m| unicast_mac(cx, m, &format!("{here}: mac")));
    let queues = queue_count(cx, p, here, DEFAULT_QUEUES, "queue pairs");
    let client = p.client.as_ref().map(|c| *c.get_ref()).unwrap_or(false);
    let perms = socket_perms(cx, &p.mode, &p.owner, &p.group, client, here);
    VhostUserNet {
        socket,
        client,
        perms,
        mac,
        queues,
        offloads: p.offloads.as_ref().map(|o| *o.get_ref()).unwrap_or(true),
    }
}

/// `queues`: 1 to MAX_QUEUE_PAIRS, `default` when absent.
pub(super) fn queue_count(
    cx: &mut Ctx<'_>,
    p: &RawPort,
    here: &str,
    default: u16,
    noun: &str,
) -> u16 {
    match &p.queues {
        None => default,
        Some(q) if (1..=i64::from(vhost_backends::net::MAX_QUEUE_PAIRS)).contains(q.get_ref()) => {
            *q.get_ref() as u16
        }
        Some(q) => {
            cx.error(
                q.span(),
                format!("{here}: queues"),
                format!(
                    "{} {noun}: must be 1-{}",
                    q.get_ref(),
                    vhost_backends::net::MAX_QUEUE_PAIRS
                ),
            );
            1
        }
    }
}

pub(super) fn socket_perms(
    cx: &mut Ctx<'_>,
    mode: &Option<Spanned<String>>,
    owner: &Option<Spanned<String>>,
    group: &Option<Spanned<String>>,
    client: bool,
    here: &str,
) -> SocketPerms {
    let mut p = SocketPerms::default();
    for (key, v) in [("mode", mode), ("owner", owner), ("group", group)] {
        if let (Some(v), true) = (v, client) {
            cx.error(
                v.span(),
                format!("{here}: {key}"),
                "only a socket vfabric listens on has an owner, group and mode (not with `client = true`)",
            );
        }
    }
    if let Some(m) = mode {
        match parse_mode(m.get_ref()) {
            Some(bits) => p.mode = Some(bits),
            None => cx.error(
                m.span(),
                format!("{here}: mode"),
                format!(
                    "`{}` is not an octal mode with owner read/write (like \"0660\")",
                    m.get_ref()
                ),
            ),
        }
    }
    p.owner = owner.as_ref().map(|o| o.get_ref().clone());
    p.group = group.as_ref().map(|g| g.get_ref().clone());
    p
}
