//! Everything the topology checks ask of the host, in one place: whether an image opens and
//! a network namespace exists (only when files are checked: `load`, so `vfabric check` and
//! `run`, not `parse`), and the DNS upstream a NAT port gets when it names none.

use std::net::SocketAddr;
use std::path::Path;

/// Opens the image at `path` for reading (the error says why it cannot be).
pub(super) fn open_image(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path).map(drop)
}

/// Whether the network namespace `name` exists (`ip netns add` makes /run/netns/NAME; an
/// absolute path names the namespace file itself).
pub(super) fn netns_exists(name: &str) -> bool {
    // (An absolute path replaces /run/netns in `join`.)
    Path::new("/run/netns").join(name).exists()
}

/// The DNS upstream when a NAT port names none: the host's first nameserver
/// (/etc/resolv.conf), else 127.0.0.1:53.
pub(super) fn default_dns_upstream() -> SocketAddr {
    std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|t| nat::config::resolv_conf_upstream(&t))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 53)))
}
