//! Guests booted through libvirt (Debian's libvirt from bookworm-backports, a private
//! libvirtd the test starts: `vfabric_tests::libvirt`), with the NIC and disk XML exactly as
//! `vfabric ctl attach NAME --as libvirt` prints it: `virsh define` + `virsh start` of
//! domains of type `qemu` (TCG). The guests ping each other through vfabric, one reads and
//! writes a vfabric disk (the bytes checked in the image file), `virsh destroy` + `virsh
//! start` brings a guest back on its port, and NICs hot plugged with `virsh attach-device`
//! into running domains carry traffic on a second switch.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use vfabric_tests::fabric::{Fabric, PortSpec};
use vfabric_tests::libvirt::Libvirtd;
use vfabric_tests::qemu::{Qemu, Vm, VmConfig};

const BOOT: Duration = Duration::from_secs(60);
const CMD: Duration = Duration::from_secs(30);

/// The libvirt XML of port or disk `name` (the first line of `ctl attach`; the second is the
/// memory backing, which the domain has).
fn attach_xml(fabric: &Fabric, name: &str) -> Result<String> {
    let (code, out, err) = fabric.ctl(&["attach", name, "--as", "libvirt"])?;
    ensure!(code == 0, "ctl attach {name}: {err}");
    let mut lines = out.lines();
    let xml = lines.next().context("no XML")?.to_string();
    ensure!(
        lines.next()
            == Some("<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>"),
        "{out}"
    );
    Ok(xml)
}

fn boot(
    lv: &Libvirtd,
    dir: &std::path::Path,
    name: &str,
    ip: &str,
    devices: &[String],
) -> Result<Vm> {
    let mut cfg = VmConfig::new(name, Qemu::system()?);
    cfg.ips.push(("eth0".into(), ip.into()));
    let mut vm = Vm::start_libvirt(cfg, dir, lv, devices)?;
    vm.wait_ready(BOOT)?;
    Ok(vm)
}

#[test]
fn libvirt_domains_ping_use_a_disk_come_back_after_destroy_and_take_hot_plugged_nics() -> Result<()>
{
    let dir = tempfile::Builder::new().prefix("vflv").tempdir_in("/tmp")?;
    let img = dir.path().join("d.img");
    std::fs::File::create(&img)?.set_len(8 << 20)?;
    // Switch "lab": the guests' first NICs; switch "lab2": the hot-plugged ones.
    let fabric = Fabric::start_with(
        dir.path(),
        &[PortSpec::new("vm1"), PortSpec::new("vm2")],
        "[[disk]]\nname = \"d\"\nsocket = \"d.sock\"\npath = \"d.img\"\n\n\
         [[switch]]\nname = \"lab2\"\n\
         [[switch.port]]\nname = \"hp1\"\ntype = \"vhost-user-net\"\nsocket = \"hp1.sock\"\n\
         [[switch.port]]\nname = \"hp2\"\ntype = \"vhost-user-net\"\nsocket = \"hp2.sock\"\n",
    )?;
    let lv = Libvirtd::start(&dir.path().join("libvirt"))?;
    eprintln!("libvirt {}", lv.version()?);
    let (nic1, nic2, disk) = (
        attach_xml(&fabric, "vm1")?,
        attach_xml(&fabric, "vm2")?,
        attach_xml(&fabric, "d")?,
    );
    let mut vm1 = boot(&lv, dir.path(), "lv1", "10.0.0.1/24", &[nic1, disk])?;
    let vm2 = boot(
        &lv,
        dir.path(),
        "lv2",
        "10.0.0.2/24",
        std::slice::from_ref(&nic2),
    )?;
    let out = vm1.run_ok("ping -c 3 -W 5 10.0.0.2", CMD)?;
    assert!(out.contains("3 packets received"), "{out}");

    // The disk: written by the guest, found in the image; read back by the guest.
    let text = "written by a libvirt guest through vfabric";
    let out = vm1.run_ok(
        &format!(
            "modprobe virtio_blk && cat /sys/block/vda/serial; printf '%-512s' '{text}' | dd of=/dev/vda bs=512 seek=16 count=1 oflag=direct"
        ),
        CMD,
    )?;
    assert!(out.starts_with('d'), "not vfabric's disk d: {out}");
    let bytes = std::fs::read(&img)?;
    assert_eq!(&bytes[16 * 512..16 * 512 + text.len()], text.as_bytes());
    let back = vm1.run_ok(
        &format!(
            "dd if=/dev/vda bs=512 skip=16 count=1 2>/dev/null | head -c {}",
            text.len()
        ),
        CMD,
    )?;
    assert_eq!(back, text);

    // virsh destroy + virsh start: the guest is back on its port.
    drop(vm2);
    let mut vm2 = boot(&lv, dir.path(), "lv2", "10.0.0.2/24", &[nic2])?;
    let out = vm2.run_ok("ping -c 3 -W 5 10.0.0.1", CMD)?;
    assert!(out.contains("3 packets received"), "{out}");

    // Hot plug: a NIC into each running domain, on switch lab2.
    for (vm, port, ip) in [
        (&mut vm1, "hp1", "10.0.1.1/24"),
        (&mut vm2, "hp2", "10.0.1.2/24"),
    ] {
        let xml = dir.path().join(format!("{port}.xml"));
        std::fs::write(&xml, attach_xml(&fabric, port)?)?;
        lv.virsh()
            .run(&["attach-device", vm.name(), &xml.to_string_lossy(), "--live"])?;
        let name = vm.name().to_string();
        vfabric_tests::wait_until(
            CMD,
            // The test guest gets no ACPI hotplug interrupt here (its boot log shows the
            // ACPI link IRQs missing under TCG): it looks for the new device itself.
            || {
                Ok(vm
                    .run("echo 1 > /sys/bus/pci/rescan; ip link show eth1", CMD)?
                    .code
                    == 0)
            },
            || format!("{name}: no eth1 after attach-device"),
        )?;
        vm.run_ok(
            &format!("ip addr add {ip} dev eth1 && ip link set eth1 up"),
            CMD,
        )?;
    }
    let out = vm1.run_ok("ping -c 3 -W 5 -I eth1 10.0.1.2", CMD)?;
    assert!(out.contains("3 packets received"), "{out}");
    for p in ["hp1", "hp2"] {
        let info = fabric.port_info(p)?;
        assert_eq!(info["connected"], true, "{p}: {info}");
    }
    Ok(())
}
