//! Disks: the socket (unique, as ports'), the image (unique across disks, readable when
//! files are checked), its format, size (null disks), queues, serial, permissions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::checks::{Taken, check_name, unique_socket};
use super::error::Ctx;
use super::host::open_image;
use super::parse::{RawDisk, parse_size};
use super::vm::socket_perms;
use super::{DiskConfig, DiskFormat};

/// Every `[[disk]]`: names shared with ports, sockets unique with ports' and the control
/// socket's, images unique among disks.
pub(super) fn parse_disks(
    cx: &mut Ctx<'_>,
    base: &Path,
    sock_base: &Path,
    raw: Vec<Spanned<RawDisk>>,
    taken: &mut Taken,
) -> Vec<DiskConfig> {
    let mut disks = Vec::new();
    for d in raw {
        let d = d.into_inner();
        let name = d.name.get_ref().clone();
        let here = format!("disk \"{name}\"");
        check_name(cx, &d.name, &here);
        if taken.names.insert(name.clone(), "disk".into()).is_some() {
            cx.error(
                d.name.span(),
                format!("{here}: name"),
                "duplicate name (ports and disks share one namespace)",
            );
        }
        let socket = unique_socket(
            cx,
            &d.socket,
            &d.name,
            &here,
            sock_base,
            &mut taken.sockets,
            "",
            "missing (a disk needs `socket = \"/path/to.sock\"`)",
        );
        let format = disk_format(cx, &d, &here);
        let path = disk_path(cx, &d, &here, base, format, &mut taken.host);
        let size = disk_size(cx, &d, &here, format);
        let queues = disk_queues(cx, &d, &here);
        let serial = disk_serial(cx, &d, &here, &name);
        let client = d.client.map(|c| *c.get_ref()).unwrap_or(false);
        let perms = socket_perms(cx, &d.mode, &d.owner, &d.group, client, &here);
        disks.push(DiskConfig {
            perms,
            name,
            socket,
            client,
            path,
            format,
            readonly: d.readonly.map(|r| *r.get_ref()).unwrap_or(false),
            queues,
            serial,
            size,
        });
    }
    disks
}

/// `format`: raw, qcow2, null or auto (the default).
fn disk_format(cx: &mut Ctx<'_>, d: &RawDisk, here: &str) -> DiskFormat {
    match d.format.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("auto") => DiskFormat::Auto,
        Some("raw") => DiskFormat::Raw,
        Some("qcow2") => DiskFormat::Qcow2,
        Some("null") => DiskFormat::Null,
        Some(other) => {
            let span = d.format.as_ref().map(|f| f.span()).unwrap_or(0..0);
            cx.error(
                span,
                format!("{here}: format"),
                format!("unknown format `{other}` (raw, qcow2, null, or auto)"),
            );
            DiskFormat::Auto
        }
    }
}

/// `path`: the image, unique across disks; with `check_files`, it must open (`host.rs`).
/// A null disk has none.
fn disk_path(
    cx: &mut Ctx<'_>,
    d: &RawDisk,
    here: &str,
    base: &Path,
    format: DiskFormat,
    images: &mut HashMap<String, String>,
) -> PathBuf {
    let name = d.name.get_ref();
    match (&d.path, format) {
        (Some(p), _) if !p.get_ref().is_empty() => {
            let path = base.join(p.get_ref());
            if cx.check_files
                && let Err(e) = open_image(&path)
            {
                cx.error(
                    p.span(),
                    format!("{here}: path"),
                    format!("{}: {e}", path.display()),
                );
            }
            let key = format!("image {}", path.display());
            if let Some(other) = images.insert(key, name.clone()) {
                cx.error(
                    p.span(),
                    format!("{here}: path"),
                    format!(
                        "{} is already the image of disk \"{other}\"",
                        path.display()
                    ),
                );
            }
            path
        }
        (_, DiskFormat::Null) => PathBuf::new(),
        (Some(p), _) => {
            cx.error(p.span(), format!("{here}: path"), "empty image path");
            PathBuf::new()
        }
        (None, _) => {
            cx.error(
                d.name.span(),
                format!("{here}: path"),
                "missing (a disk needs `path = \"/path/to/image\"`, raw or qcow2)",
            );
            PathBuf::new()
        }
    }
}

/// `size`: a null disk's, in whole sectors; no other disk has one.
fn disk_size(cx: &mut Ctx<'_>, d: &RawDisk, here: &str, format: DiskFormat) -> u64 {
    match (&d.size, format) {
        (Some(sz), DiskFormat::Null) => match parse_size(sz.get_ref()) {
            Some(n) if n >= 512 && n % 512 == 0 => n,
            _ => {
                cx.error(
                    sz.span(),
                    format!("{here}: size"),
                    format!(
                        "`{}` is not a size in whole sectors (like \"1G\")",
                        sz.get_ref()
                    ),
                );
                0
            }
        },
        (Some(sz), _) => {
            cx.error(
                sz.span(),
                format!("{here}: size"),
                "only a null disk has a size (an image's size is its own)",
            );
            0
        }
        (None, DiskFormat::Null) => {
            cx.error(
                d.name.span(),
                format!("{here}: size"),
                "a null disk needs `size`",
            );
            0
        }
        (None, _) => 0,
    }
}

/// `queues`: 1 to the device's maximum, 1 when absent.
fn disk_queues(cx: &mut Ctx<'_>, d: &RawDisk, here: &str) -> u16 {
    let max = vhost_backends::blk::device::MAX_QUEUES;
    match &d.queues {
        None => 1,
        Some(q) if (1..=i64::from(max)).contains(q.get_ref()) => *q.get_ref() as u16,
        Some(q) => {
            cx.error(
                q.span(),
                format!("{here}: queues"),
                format!("{} queues: must be 1-{max}", q.get_ref()),
            );
            1
        }
    }
}

/// `serial`: at most 20 ASCII characters; the disk's name when absent.
fn disk_serial(cx: &mut Ctx<'_>, d: &RawDisk, here: &str, name: &str) -> String {
    match &d.serial {
        None => name.to_string(),
        Some(s) if s.get_ref().len() <= 20 && s.get_ref().is_ascii() => s.get_ref().clone(),
        Some(s) => {
            cx.error(
                s.span(),
                format!("{here}: serial"),
                "a serial is at most 20 ASCII characters",
            );
            String::new()
        }
    }
}
