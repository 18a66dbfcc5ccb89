//! Real guests on vfabric's virtio-blk disks (vhost-user-blk): data written by one side is
//! read byte-exact by the other, file systems survive a guest reboot, discard frees space in
//! the image, and killing vfabric mid-write loses no write the guest saw completed.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use sha2::{Digest, Sha256};
use vfabric_tests::fabric::Fabric;
use vfabric_tests::lab::CMD;
use vfabric_tests::qemu::{BlkDev, Qemu, Vm, VmConfig};
use vfabric_tests::wait_until;

const MIB: u64 = 1 << 20;

fn qemu() -> Qemu {
    Qemu::system().expect("QEMU (run scripts/install-deps.sh)")
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Deterministic test bytes.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + usize::from(seed)) % 251) as u8)
        .collect()
}

fn read_at(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut f = fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut b = vec![0u8; len];
    f.read_exact(&mut b)?;
    Ok(b)
}

/// Bytes the file really occupies on disk.
fn allocated(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path)?.blocks() * 512)
}

/// A sparse raw image of `size` bytes.
fn raw_image(path: &Path, size: u64) -> Result<()> {
    fs::File::create(path)?.set_len(size)?;
    Ok(())
}

/// A vfabric serving `disks` (TOML `[[disk]]` tables, paths relative to the work dir).
struct BlkLab {
    dir: tempfile::TempDir,
    fabric: Fabric,
}

impl BlkLab {
    fn start_in(dir: tempfile::TempDir, disks: &str) -> Result<BlkLab> {
        let fabric = Fabric::start_with(dir.path(), &[], disks)?;
        Ok(BlkLab { dir, fabric })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Boots a guest with the named disks (sockets `<disk>.sock`), each with `queues`
    /// (Linux uses at most one queue per vCPU: the guest gets as many vCPUs as the most).
    fn boot(&self, name: &str, disks: &[(&str, u16)]) -> Result<Vm> {
        let mut cfg = VmConfig::new(name, qemu());
        cfg.cpus = disks.iter().map(|d| u32::from(d.1)).max().unwrap_or(1);
        cfg.extra_cmdline = "vf.modprobe=virtio_blk".into();
        for (d, queues) in disks {
            cfg.disks.push(BlkDev {
                socket: self.path(&format!("{d}.sock")),
                queues: *queues,
            });
        }
        let mut vm = Vm::start(cfg, self.dir.path())?;
        vm.wait_ready(Duration::from_secs(90))?;
        Ok(vm)
    }
}

/// Creates the image files named in a lab's directory before vfabric opens them.
fn workdir() -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix("vfb").tempdir_in("/tmp")?)
}

#[test]
fn guest_and_host_see_each_others_bytes_with_serial_queues_and_read_only() -> Result<()> {
    let dir = workdir()?;
    let img = dir.path().join("d0.img");
    raw_image(&img, 64 * MIB)?;
    let host_data = pattern(64 * 1024, 3);
    {
        let mut f = fs::OpenOptions::new().write(true).open(&img)?;
        f.seek(SeekFrom::Start(MIB))?;
        f.write_all(&host_data)?;
    }
    let ro = dir.path().join("ro.img");
    raw_image(&ro, 8 * MIB)?;
    fs::OpenOptions::new()
        .write(true)
        .open(&ro)?
        .write_all(&pattern(4096, 9))?;
    let mut lab = BlkLab::start_in(
        dir,
        r#"
[[disk]]
name = "d0"
socket = "d0.sock"
path = "d0.img"
queues = 2
serial = "vf-serial-0"

[[disk]]
name = "ro"
socket = "ro.sock"
path = "ro.img"
readonly = true
"#,
    )?;
    let mut vm = lab.boot("blk1", &[("d0", 2), ("ro", 1)])?;
    // Geometry, serial and queues as configured.
    assert_eq!(vm.run_ok("cat /sys/block/vda/size", CMD)?.trim(), "131072");
    assert_eq!(
        vm.run_ok("cat /sys/block/vda/serial", CMD)?.trim(),
        "vf-serial-0"
    );
    assert_eq!(vm.run_ok("ls /sys/block/vda/mq | wc -l", CMD)?.trim(), "2");
    assert_eq!(vm.run_ok("cat /sys/block/vda/ro", CMD)?.trim(), "0");
    // What the host wrote, the guest reads (O_DIRECT: from the device, not a cache).
    let got = vm.run_ok(
        "dd if=/dev/vda bs=65536 skip=16 count=1 iflag=direct 2>/dev/null | sha256sum",
        CMD,
    )?;
    assert_eq!(
        got.split_whitespace().next(),
        Some(sha256_hex(&host_data).as_str())
    );
    // What the guest writes (1 MiB at 4 MiB, O_DIRECT), it reads back and the host finds in
    // the image.
    let sum = vm.run_ok(
        "dd if=/dev/urandom of=/tmp/p bs=4096 count=256 2>/dev/null && \
         dd if=/tmp/p of=/dev/vda bs=65536 seek=64 oflag=direct 2>/dev/null && \
         sha256sum /tmp/p",
        CMD,
    )?;
    let sum = sum
        .split_whitespace()
        .next()
        .context("sha256sum")?
        .to_string();
    let back = vm.run_ok(
        "dd if=/dev/vda bs=65536 skip=64 count=16 iflag=direct 2>/dev/null | sha256sum",
        CMD,
    )?;
    assert_eq!(back.split_whitespace().next(), Some(sum.as_str()));
    let on_host = read_at(&lab.path("d0.img"), 4 * MIB, MIB as usize)?;
    assert_eq!(sha256_hex(&on_host), sum);
    // Reading past the end fails in the guest and is counted, never crashes anything.
    let past = vm.run(
        "dd if=/dev/vda bs=512 skip=131072 count=1 iflag=direct",
        CMD,
    )?;
    assert!(past.output.contains("0+0 records in"), "{}", past.output);
    // The read-only disk: flagged read-only, readable, not writable.
    assert_eq!(vm.run_ok("cat /sys/block/vdb/ro", CMD)?.trim(), "1");
    let ro_sum = vm.run_ok(
        "dd if=/dev/vdb bs=4096 count=1 iflag=direct 2>/dev/null | sha256sum",
        CMD,
    )?;
    assert_eq!(
        ro_sum.split_whitespace().next(),
        Some(sha256_hex(&pattern(4096, 9)).as_str())
    );
    let w = vm.run("dd if=/tmp/p of=/dev/vdb bs=4096 count=1 oflag=direct", CMD)?;
    assert_ne!(
        w.code, 0,
        "write to a read-only disk succeeded: {}",
        w.output
    );
    assert_eq!(read_at(&lab.path("ro.img"), 0, 4096)?, pattern(4096, 9));
    // Counters: the writes and reads above, no bad chains, no failed I/O.
    let s = lab.fabric.stats()?;
    let c = &s["disk:d0"];
    assert!(c["writes"].as_u64().unwrap_or(0) >= 1, "{c}");
    assert!(c["write_bytes"].as_u64().unwrap_or(0) >= MIB, "{c}");
    assert!(c["read_bytes"].as_u64().unwrap_or(0) >= MIB + 65536, "{c}");
    assert!(c["get_ids"].as_u64().unwrap_or(0) >= 1, "{c}");
    assert_eq!(c["bad_chains"].as_u64(), Some(0), "{c}");
    assert_eq!(c["io_errors"].as_u64(), Some(0), "{c}");
    vm.kill();
    Ok(())
}

#[test]
fn qcow2_file_system_survives_a_guest_reboot_and_passes_qemu_img_check() -> Result<()> {
    let dir = workdir()?;
    let img = dir.path().join("root.qcow2");
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("64M")
        .output()?;
    ensure!(out.status.success(), "qemu-img create: {out:?}");
    let mut lab = BlkLab::start_in(
        dir,
        "[[disk]]\nname = \"root\"\nsocket = \"root.sock\"\npath = \"root.qcow2\"\n",
    )?;
    // vfabric holds the image the way QEMU does: qemu-img may not open it meanwhile.
    let busy = Command::new("qemu-img").arg("info").arg(&img).output()?;
    assert!(
        !busy.status.success(),
        "qemu-img opened an image vfabric serves"
    );
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("lock"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    let mut vm = lab.boot("blk2", &[("root", 1)])?;
    let sum = vm.run_ok(
        "modprobe crc32c_generic && modprobe ext4 && mke2fs -q /dev/vda >/dev/null && mkdir -p /mnt && mount -t ext4 /dev/vda /mnt && \
         dd if=/dev/urandom of=/mnt/data bs=4096 count=512 2>/dev/null && \
         mkdir /mnt/dir && echo kept > /mnt/dir/note && \
         sha256sum /mnt/data && umount /mnt && sync",
        CMD,
    )?;
    let sum = sum
        .lines()
        .find(|l| l.ends_with("/mnt/data"))
        .and_then(|l| l.split_whitespace().next())
        .context("sha256sum")?
        .to_string();
    vm.kill();
    // A second boot of a fresh guest on the same disk finds the files.
    let mut vm = lab.boot("blk2b", &[("root", 1)])?;
    let again = vm.run_ok(
        "modprobe crc32c_generic && modprobe ext4 && mkdir -p /mnt && mount -t ext4 /dev/vda /mnt && sha256sum /mnt/data && cat /mnt/dir/note && umount /mnt",
        CMD,
    )?;
    assert!(again.contains(&sum), "{again}");
    assert!(again.contains("kept"), "{again}");
    vm.kill();
    ensure!(
        lab.fabric.disk_counter("root", "flushes")? >= 1,
        "no flush reached the disk"
    );
    // A clean stop writes the qcow2 metadata back; the image is consistent.
    let code = lab.fabric.terminate()?;
    assert_eq!(code, Some(0), "vfabric's log:\n{}", lab.fabric.log_tail());
    let check = Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(lab.path("root.qcow2"))
        .output()?;
    assert!(
        check.status.success(),
        "qemu-img check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    Ok(())
}

#[test]
fn discard_frees_space_in_a_sparse_raw_image() -> Result<()> {
    let dir = workdir()?;
    raw_image(&dir.path().join("d.img"), 64 * MIB)?;
    let mut lab = BlkLab::start_in(
        dir,
        "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\npath = \"d.img\"\n",
    )?;
    let img = lab.path("d.img");
    let before = allocated(&img)?;
    let mut vm = lab.boot("blk3", &[("d", 1)])?;
    vm.run_ok(
        "dd if=/dev/urandom of=/dev/vda bs=1048576 seek=8 count=16 oflag=direct 2>/dev/null",
        CMD,
    )?;
    let written = allocated(&img)?;
    assert!(written >= before + 16 * MIB, "{before} -> {written}");
    vm.run_ok("blkdiscard -o 8388608 -l 16777216 /dev/vda", CMD)?;
    let after = allocated(&img)?;
    assert!(
        after + 15 * MIB <= written,
        "allocation {written} -> {after}"
    );
    // The range reads back as zeroes.
    let zeros = vm.run_ok(
        "dd if=/dev/vda bs=1048576 skip=8 count=16 iflag=direct 2>/dev/null | sha256sum",
        CMD,
    )?;
    assert_eq!(
        zeros.split_whitespace().next(),
        Some(sha256_hex(&vec![0u8; 16 * MIB as usize]).as_str())
    );
    assert!(lab.fabric.disk_counter("d", "discards")? >= 1);
    vm.kill();
    Ok(())
}

/// The content the guest loop writes into block `i`.
fn block(i: usize) -> Vec<u8> {
    format!("blk-{i}\n").repeat(4096).into_bytes()[..4096].to_vec()
}

#[test]
fn vfabric_killed_mid_write_loses_no_acknowledged_block() -> Result<()> {
    const BLOCKS: usize = 200;
    const STALL: usize = 40;
    let dir = workdir()?;
    raw_image(&dir.path().join("d.img"), 8 * MIB)?;
    let mut lab = BlkLab::start_in(
        dir,
        "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\npath = \"d.img\"\n",
    )?;
    // From the 41st write on, this vfabric leaves completions unanswered: the kill below
    // is certain to find a request in flight.
    lab.fabric
        .restart_with_env(&[("VFABRIC_TEST_BLK_STALL_AFTER", &STALL.to_string())])?;
    let mut vm = lab.boot("blk4", &[("d", 1)])?;
    // Each block's content is "blk-<i>\n" repeated; a block is recorded only once dd
    // (O_DIRECT, so the request reached the device) returned.
    vm.spawn_bg(&format!(
        "i=0; while [ $i -lt {BLOCKS} ]; do \
           yes blk-$i | head -c 4096 > /tmp/b; \
           if dd if=/tmp/b of=/dev/vda bs=4096 seek=$i oflag=direct 2>/dev/null; \
           then echo $i >> /tmp/acked; else echo $i >> /tmp/failed; fi; \
           i=$((i+1)); done; echo done > /tmp/done"
    ))?;
    let count = |vm: &mut Vm, f: &str| -> Result<usize> {
        let o = vm.run_ok(&format!("cat {f} 2>/dev/null | wc -l"), CMD)?;
        Ok(o.trim().parse()?)
    };
    // Wait until the stalled write is in flight: 40 answered, the 41st taken by the device.
    let writes = std::cell::Cell::new(0);
    wait_until(
        Duration::from_secs(120),
        || {
            let s = lab.fabric.stats()?;
            writes.set(s["disk:d"]["writes"].as_u64().unwrap_or(0));
            Ok(writes.get() == STALL as u64 && s["disk:d"]["in_flight"].as_u64() == Some(1))
        },
        || format!("the guest wrote too slowly ({} writes)", writes.get()),
    )?;
    assert_eq!(
        count(&mut vm, "/tmp/acked")?,
        STALL,
        "a stalled write was acknowledged"
    );
    // Crash, and come back without the stall; QEMU reconnects and the loop goes on.
    lab.fabric.kill();
    lab.fabric.restart_with_env(&[])?;
    wait_until(
        Duration::from_secs(300),
        || Ok(vm.run("test -e /tmp/done", CMD)?.code == 0),
        || {
            format!(
                "the write loop did not finish; log:\n{}",
                lab.fabric.log_tail()
            )
        },
    )?;
    assert_eq!(count(&mut vm, "/tmp/failed")?, 0, "writes failed");
    assert_eq!(count(&mut vm, "/tmp/acked")?, BLOCKS);
    // The request the crash left in flight was completed by the new vfabric.
    assert_eq!(lab.fabric.disk_counter("d", "resubmitted")?, 1);
    // Every block reads back in the guest...
    let bad = vm.run_ok(
        &format!(
            "i=0; while [ $i -lt {BLOCKS} ]; do yes blk-$i | head -c 4096 > /tmp/e; \
             dd if=/dev/vda bs=4096 skip=$i count=1 iflag=direct 2>/dev/null | cmp -s - /tmp/e \
             || echo BAD $i; i=$((i+1)); done; echo checked"
        ),
        Duration::from_secs(300),
    )?;
    assert_eq!(bad.trim(), "checked", "blocks lost: {bad}");
    vm.kill();
    // ...and is in the image.
    let data = read_at(&lab.path("d.img"), 0, BLOCKS * 4096)?;
    for i in 0..BLOCKS {
        assert_eq!(
            &data[i * 4096..(i + 1) * 4096],
            &block(i)[..],
            "block {i} in the image"
        );
    }
    Ok(())
}

#[test]
fn missing_or_busy_images_are_refused_before_any_socket_exists() -> Result<()> {
    let dir = workdir()?;
    raw_image(&dir.path().join("d.img"), 8 * MIB)?;
    let lab = BlkLab::start_in(
        dir,
        "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\npath = \"d.img\"\n",
    )?;
    // A second vfabric on the same image: refused, and its socket never appears.
    let other = lab.path("other");
    fs::create_dir_all(&other)?;
    let topo = other.join("t.toml");
    fs::write(
        &topo,
        format!(
            "[[disk]]\nname = \"d\"\nsocket = \"d2.sock\"\npath = \"{}\"\n",
            lab.path("d.img").display()
        ),
    )?;
    let out = Command::new(vfabric_tests::fabric::vfabric_bin()?)
        .arg("run")
        .arg(&topo)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    assert!(!other.join("d2.sock").exists());
    // A missing image: the error names the file and the disk.
    fs::write(
        &topo,
        "[[disk]]\nname = \"gone\"\nsocket = \"g.sock\"\npath = \"nope.img\"\n",
    )?;
    let out = Command::new(vfabric_tests::fabric::vfabric_bin()?)
        .arg("run")
        .arg(&topo)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("disk \"gone\"") && err.contains("nope.img"),
        "{err}"
    );
    assert!(!other.join("g.sock").exists());
    drop(lab);
    Ok(())
}
