//! Self-test of the VM harness: boots a NIC-less guest with every available QEMU and checks the
//! command agent (exit codes, output, a large output, timeouts), the guest's network configuration
//! from the kernel command line, and error reporting. Needs scripts/install-deps.sh (and, for 7.2,
//! scripts/fetch-qemu-7.2.sh). Run with `--nocapture` to see boot times.

use std::time::{Duration, Instant};

use vfabric_tests::guest_image::guest_image;
use vfabric_tests::qemu::{Qemu, Vm, VmConfig, accel, all_available};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const CMD_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn boots_and_runs_commands_with_every_qemu() -> anyhow::Result<()> {
    let t = Instant::now();
    let image = guest_image()?;
    let first = t.elapsed();
    let t = Instant::now();
    let again = guest_image()?;
    let cached = t.elapsed();
    assert_eq!(
        (&image.kernel, &image.initrd),
        (&again.kernel, &again.initrd)
    );
    eprintln!(
        "guest image: kernel {} ({}), initrd {} ({} KiB); first call {first:.2?}, cached call {cached:.2?}",
        image.kernel_version,
        image.kernel.display(),
        image.initrd.display(),
        std::fs::metadata(&image.initrd)?.len() / 1024,
    );

    let qemus = all_available();
    assert!(
        !qemus.is_empty(),
        "no QEMU available: run scripts/install-deps.sh"
    );
    let dir = tempfile::Builder::new().prefix("vf-harness").tempdir()?;
    let mut report = Vec::new();
    for qemu in qemus {
        let label = qemu.to_string();
        let name = format!("selftest-{}-{}", qemu.version.0, qemu.version.1);
        let mut cfg = VmConfig::new(&name, qemu);
        // No NIC: exercise the network options on loopback and a VLAN on a dummy interface.
        cfg.ips.push(("lo".into(), "10.9.9.9/32".into()));
        cfg.ips.push(("dummy0.7".into(), "10.7.0.1/24".into()));
        cfg.extra_cmdline = "vf.modprobe=dummy vf.vlan=dummy0:7 vf.mtu=dummy0:9000 \
            vf.route=dummy0.7:224.0.0.0/4 vf.route=dummy0.7:10.8.0.0/16:10.7.0.254"
            .into();
        let mut vm = Vm::start(cfg, dir.path())?;
        vm.wait_ready(BOOT_TIMEOUT)?;
        let boot = vm.boot_time().expect("ready");

        let uname = vm.run_ok("uname -r", CMD_TIMEOUT)?;
        assert_eq!(uname.trim(), image.kernel_version, "{label}");
        assert_eq!(vm.run_ok("echo hello", CMD_TIMEOUT)?, "hello\n", "{label}");
        let out = vm.run("echo to-stderr >&2; exit 3", CMD_TIMEOUT)?;
        assert_eq!(
            (out.code, out.output.as_str()),
            (3, "to-stderr\n"),
            "{label}"
        );
        let err = vm
            .run_ok("echo oops; false", CMD_TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("exited with 1") && err.contains("oops"),
            "{label}: {err}"
        );
        assert_eq!(vm.run_ok("true", CMD_TIMEOUT)?, "", "{label}");

        // Quoting, multi-line scripts, and the name from the kernel command line.
        let out = vm.run_ok(
            "x='a \"b\" $c'\nprintf '%s|' \"$x\" $(hostname)",
            CMD_TIMEOUT,
        )?;
        assert_eq!(out, format!("a \"b\" $c|{name}|"), "{label}");

        let t = Instant::now();
        let big = vm.run_ok("head -c 200000 /dev/zero | tr '\\0' a", CMD_TIMEOUT)?;
        let big_time = t.elapsed();
        assert_eq!(big.len(), 200_000, "{label}");
        assert!(big.bytes().all(|b| b == b'a'), "{label}");
        // Many short lines, binary-ish bytes.
        let seq = vm.run_ok("seq 1 20000; printf '\\001\\377\\n'", CMD_TIMEOUT)?;
        assert!(
            seq.starts_with("1\n2\n") && seq.contains("\n20000\n"),
            "{label}"
        );
        assert_eq!(seq.lines().count(), 20_001, "{label}");

        // Modules, iperf3 with its libraries, the configured addresses and VLAN.
        let lsmod = vm.run_ok("lsmod", CMD_TIMEOUT)?;
        for m in ["virtio_net", "virtio_pci", "8021q", "dummy"] {
            assert!(lsmod.contains(m), "{label}: {m} not loaded:\n{lsmod}");
        }
        let v = vm.run_ok("iperf3 --version", CMD_TIMEOUT)?;
        assert!(v.contains("iperf 3"), "{label}: {v}");
        let addrs = vm.run_ok(
            "ip -o addr; ip -o link; cat /proc/net/vlan/config; ip route",
            CMD_TIMEOUT,
        )?;
        for want in [
            "inet 10.9.9.9/32",
            "inet 10.7.0.1/24 scope global dummy0.7",
            "mtu 9000",
            "dummy0.7       | 7  | dummy0",
            "224.0.0.0/4 dev dummy0.7",
            "10.8.0.0/16 via 10.7.0.254 dev dummy0.7",
        ] {
            assert!(addrs.contains(want), "{label}: no {want:?} in\n{addrs}");
        }
        vm.run_ok("ping -c1 -W5 10.7.0.1", CMD_TIMEOUT)?;

        // Background commands.
        let id = vm.spawn_bg("echo started; exec sleep 1000")?;
        let log = vm.run_ok(
            &format!(
                "for i in $(seq 100); do [ -s /tmp/bg-{id}.log ] && break; sleep 0.1; done; \
                 cat /tmp/bg-{id}.log; kill $(cat /tmp/bg-{id}.pid)"
            ),
            CMD_TIMEOUT,
        )?;
        assert_eq!(log, "started\n", "{label}");

        // A command that outlives its timeout: an error with the console tail, and the agent
        // stays usable (the late result is dropped).
        let err = vm
            .run("sleep 3; echo late", Duration::from_millis(500))
            .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("did not finish") && err.contains("VFGUEST READY"),
            "{label}: {err}"
        );
        assert_eq!(vm.run_ok("echo after", CMD_TIMEOUT)?, "after\n", "{label}");

        let t = Instant::now();
        let n = 20;
        for i in 0..n {
            assert_eq!(
                vm.run_ok(&format!("echo {i}"), CMD_TIMEOUT)?,
                format!("{i}\n")
            );
        }
        let per_cmd = t.elapsed() / n;

        assert!(
            vm.console_log()
                .contains(&format!("VFGUEST READY name={name}")),
            "{label}"
        );
        let pid = vm.pid();
        vm.kill();
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{label}: QEMU still there"
        );
        assert!(
            vm.run("true", CMD_TIMEOUT).is_err(),
            "{label}: ran a command in a killed VM"
        );
        report.push(format!(
            "{label} ({:?}): boot to agent {boot:.2?}, 200 KB output {big_time:.2?}, round trip {per_cmd:.2?}",
            accel()
        ));
    }
    for line in report {
        eprintln!("{line}");
    }
    Ok(())
}

/// A QEMU that exits at once: the error carries QEMU's own message.
#[test]
fn early_qemu_exit_is_reported() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("vf-harness").tempdir()?;
    let mut cfg = VmConfig::new("bad", Qemu::system()?);
    cfg.cpus = 100_000;
    let err = match Vm::start(cfg, dir.path()) {
        Err(e) => format!("{e:#}"),
        Ok(mut vm) => format!("{:#}", vm.wait_ready(BOOT_TIMEOUT).unwrap_err()),
    };
    assert!(
        // Depending on when the exit is noticed the wording is "QEMU exited (...)" or
        // "QEMU pid N exited: ...": either way it must say so and carry QEMU's own message.
        err.contains("exited") && err.to_lowercase().contains("cpus"),
        "{err}"
    );
    Ok(())
}
