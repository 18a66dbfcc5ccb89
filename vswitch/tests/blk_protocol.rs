//! The virtio-blk device driven by an in-process vhost-user frontend: valid requests, and
//! hostile ones (no status byte, addresses outside guest memory, a descriptor loop, unknown
//! types, out-of-range sectors), each answered or returned as the rules say and counted,
//! with the device still serving afterwards.

mod support;

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use support::{Guest, Order, wait_for};
use vhost_backends::blk::{self, Disk, DiskConfig, Format, Image, ImageSpec};
use vm_memory::{Bytes, GuestAddress};

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

fn header(g: &mut Guest, kind: u32, sector: u64) -> u64 {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    g.put(&h)
}

/// Submits one chain, waits for its used entry; returns (used len, status byte at `status`).
fn run(g: &mut Guest, descs: &[(u64, u32, bool)], status: Option<u64>) -> (u32, Option<u8>) {
    g.add_chain(0, descs, false);
    g.kick(0);
    let used = g.wait_used(0, 1, Duration::from_secs(10));
    assert_eq!(used.len(), 1, "no answer for {descs:?}");
    let st = status.map(|a| g.mem.read_obj::<u8>(GuestAddress(a)).unwrap());
    (used[0].1, st)
}

/// A 1 MiB raw image at `path`, served as disk "d" with one queue.
fn raw_disk(path: &std::path::Path, serial: &str) -> Arc<Disk> {
    std::fs::File::create(path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let img = Image::open(&ImageSpec {
        path: path.to_path_buf(),
        format: Format::Auto,
        readonly: false,
        null_size: 0,
    })
    .unwrap();
    Disk::new(
        DiskConfig {
            name: "d".into(),
            queues: 1,
            serial: serial.into(),
        },
        img,
    )
}

#[test]
fn requests_good_and_hostile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.raw");
    let disk = raw_disk(&path, "proto-serial");
    let (ours, theirs) = UnixStream::pair().unwrap();
    let d2: Arc<Disk> = disk.clone();
    std::thread::spawn(move || blk::serve_connection(&d2, theirs));
    let mut g = Guest::setup_queues(ours, 1, Order::CloudHypervisor, 0);

    // A write, then a read of the same sector: the bytes come back, OK both times.
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let h = header(&mut g, T_OUT, 8);
    let d = g.put(&data);
    let st = g.put(&[0xff]);
    assert_eq!(
        run(
            &mut g,
            &[(h, 16, false), (d, 4096, false), (st, 1, true)],
            Some(st)
        ),
        (1, Some(0))
    );
    assert_eq!(&std::fs::read(&path).unwrap()[4096..8192], &data[..]);
    let h = header(&mut g, T_IN, 8);
    let d = g.put(&[0u8; 4096]);
    let st = g.put(&[0xff]);
    assert_eq!(
        run(
            &mut g,
            &[(h, 16, false), (d, 4096, true), (st, 1, true)],
            Some(st)
        ),
        (4097, Some(0))
    );
    let mut back = vec![0u8; 4096];
    g.mem.read_slice(&mut back, GuestAddress(d)).unwrap();
    assert_eq!(back, data);
    // GET_ID and FLUSH.
    let h = header(&mut g, T_GET_ID, 0);
    let d = g.put(&[0u8; 20]);
    let st = g.put(&[0xff]);
    assert_eq!(
        run(
            &mut g,
            &[(h, 16, false), (d, 20, true), (st, 1, true)],
            Some(st)
        ),
        (21, Some(0))
    );
    let mut id = [0u8; 12];
    g.mem.read_slice(&mut id, GuestAddress(d)).unwrap();
    assert_eq!(&id, b"proto-serial");
    let h = header(&mut g, T_FLUSH, 0);
    let st = g.put(&[0xff]);
    assert_eq!(
        run(&mut g, &[(h, 16, false), (st, 1, true)], Some(st)),
        (1, Some(0))
    );

    // Past the end: IOERR. Unknown type: UNSUPP.
    let h = header(&mut g, T_IN, 2048);
    let d = g.put(&[0u8; 512]);
    let st = g.put(&[0xff]);
    assert_eq!(
        run(
            &mut g,
            &[(h, 16, false), (d, 512, true), (st, 1, true)],
            Some(st)
        ),
        (1, Some(1))
    );
    let h = header(&mut g, 77, 0);
    let st = g.put(&[0xff]);
    assert_eq!(
        run(&mut g, &[(h, 16, false), (st, 1, true)], Some(st)),
        (1, Some(2))
    );
    // No device-writable byte at all: returned with length 0.
    let h = header(&mut g, T_IN, 0);
    assert_eq!(run(&mut g, &[(h, 16, false)], None).0, 0);
    // The header outside guest memory: IOERR.
    let st = g.put(&[0xff]);
    assert_eq!(
        run(&mut g, &[(0x4000_0000, 16, false), (st, 1, true)], Some(st)),
        (1, Some(1))
    );
    // Data outside guest memory: the read fails, IOERR, nothing written anywhere else.
    let h = header(&mut g, T_IN, 0);
    let st = g.put(&[0xff]);
    assert_eq!(
        run(
            &mut g,
            &[(h, 16, false), (0x4000_0000, 512, true), (st, 1, true)],
            Some(st)
        ),
        (1, Some(1))
    );
    // A descriptor loop: cut short by the ring's bound; answered without a status (length
    // 0) or with an error, never executed as a request.
    let h = header(&mut g, T_OUT, 0);
    g.add_chain(0, &[(h, 16, false)], true);
    g.kick(0);
    let used = g.wait_used(0, 1, Duration::from_secs(10));
    assert_eq!(used.len(), 1, "the looping chain was not returned");
    assert_eq!(used[0].1, 0);

    // Still serving: the sector written first reads back.
    let h = header(&mut g, T_IN, 8);
    let d = g.put(&[0u8; 4096]);
    let st = g.put(&[0xff]);
    assert_eq!(
        run(
            &mut g,
            &[(h, 16, false), (d, 4096, true), (st, 1, true)],
            Some(st)
        ),
        (4097, Some(0))
    );
    let c = disk.counters.snapshot();
    let get = |k: &str| c.iter().find(|(n, _)| *n == k).map(|(_, v)| *v).unwrap();
    assert_eq!(get("bad_chains"), 2, "{c:?}");
    assert_eq!(get("io_errors"), 3, "{c:?}");
    assert_eq!(get("unsupported"), 1, "{c:?}");
    assert_eq!(
        (get("reads"), get("writes"), get("flushes"), get("get_ids")),
        (2, 1, 1, 1),
        "{c:?}"
    );
}

/// A VMM that truncates its guest's memory file under a disk: the disk's worker catches the
/// fault on the cut request, counts `memory_cut` once and stops serving that connection; the
/// process lives on and the disk serves the next connection.
#[test]
fn a_vmm_that_cuts_guest_memory_ends_only_its_disk_connection() {
    let dir = tempfile::tempdir().unwrap();
    let disk = raw_disk(&dir.path().join("d.raw"), "cut-serial");
    let connect = |disk: &Arc<Disk>| {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let d2 = disk.clone();
        std::thread::spawn(move || blk::serve_connection(&d2, theirs));
        Guest::setup_queues(ours, 1, Order::CloudHypervisor, 0)
    };
    let mut g = connect(&disk);
    // A request whose header, data and status all lie in the part about to be cut.
    let h = g.alloc_raw(16);
    let d = g.alloc_raw(4096);
    let st = g.alloc_raw(1);
    g.cut_memory(Guest::buffers_offset());
    g.add_chain(0, &[(h, 16, false), (d, 4096, true), (st, 1, true)], false);
    g.kick(0);
    let cut = || {
        disk.counters
            .memory_cut
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    wait_for(
        Duration::from_secs(10),
        || cut() > 0,
        || "no memory_cut".into(),
    );
    assert_eq!(cut(), 1);
    g.kick(0);
    // The next connection is served.
    let mut g2 = connect(&disk);
    let h = header(&mut g2, T_GET_ID, 0);
    let id = g2.put(&[0u8; 20]);
    let st = g2.put(&[0xff]);
    assert_eq!(
        run(
            &mut g2,
            &[(h, 16, false), (id, 20, true), (st, 1, true)],
            Some(st)
        ),
        (21, Some(0))
    );
    assert_eq!(cut(), 1);
}
