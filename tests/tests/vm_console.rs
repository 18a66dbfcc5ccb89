//! The web console (`vfabric run --http`) in a real browser (headless Chromium over the
//! DevTools protocol) against a fabric with two guests moving traffic: every port on the
//! page, a non-zero rate on the guests' link while iperf3 runs, the learned MACs on a port's
//! page, a capture downloaded as a valid pcap, and a trace from the form. Screenshots are
//! kept in `target/test-artifacts/` (`scripts/console-screenshot.sh` makes the README's).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use vfabric_tests::browser::Browser;
use vfabric_tests::lab::{CMD, GuestOpts, NetLab, ip, mac};
use vfabric_tests::qemu::Qemu;

/// Where screenshots are kept: `target/test-artifacts/` of the workspace.
fn artifacts() -> Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn web_console_in_a_real_browser() -> Result<()> {
    let opts = GuestOpts {
        run_args: vec!["--http".into(), "127.0.0.1:0".into()],
        ..GuestOpts::default()
    };
    let mut lab = NetLab::start(2, &[Qemu::system()?], opts)?;
    lab.ping(1, 2, 3)?;
    let url = lab
        .fabric
        .console_url()
        .context("vfabric announced no console")?
        .to_string();
    let mut b = Browser::start(1280, 800)?;
    let downloads = tempfile::tempdir()?;
    b.download_to(downloads.path())?;
    b.navigate(&url)?;
    b.wait_for("Number(document.body.dataset.updates) >= 2", WAIT)?;

    // Every port of the fabric is on the graph, up, with its kind.
    let ports = b.eval(
        "[...document.querySelectorAll('g.node.port')].map(n => [n.dataset.port, n.dataset.kind, n.dataset.up]).sort()",
    )?;
    assert_eq!(ports, json!([["vm1", "vm", "true"], ["vm2", "vm", "true"]]));
    assert_eq!(
        b.eval("document.querySelectorAll('tr[data-port]').length")?,
        json!(2)
    );

    // Traffic: TCP from vm1 to vm2 for at most 60 s (ended below once seen).
    lab.vm(2).run_ok("iperf3 -s -D", CMD)?;
    lab.wait_listening(2, 5201)?;
    lab.vm(1).spawn_bg(&format!("iperf3 -c {} -t 60", ip(2)))?;
    let bps = b.wait_for(
        "(() => { const l = document.querySelector('[data-link=\"vm1\"]'); const v = l ? Number(l.dataset.bps) : 0; return v > 1e6 ? v : 0; })()",
        WAIT,
    )?;
    assert!(bps.as_f64().unwrap_or(0.0) > 1e6, "{bps}");
    let vm2_bps = b.eval("Number(document.querySelector('[data-link=\"vm2\"]').dataset.bps)")?;
    assert!(vm2_bps.as_f64().unwrap_or(0.0) > 1e6, "vm2 link: {vm2_bps}");
    let shots = artifacts()?;
    b.screenshot(&shots.join("console-overview.png"))?;

    // A port's page: its learned MAC, its guest's features, counters with rates.
    b.navigate(&format!("{url}#/port/vm1"))?;
    b.wait_for(
        &format!(
            "document.querySelector('#port-page[data-port=\"vm1\"] #port-fdb tr[data-mac=\"{}\"]') !== null",
            mac(1)
        ),
        WAIT,
    )?;
    let guest = b.eval("document.getElementById('port-guest').textContent")?;
    let guest = guest.as_str().unwrap_or_default();
    assert!(
        guest.contains("VERSION_1") && guest.contains("MRG_RXBUF"),
        "{guest}"
    );
    b.wait_for(
        "Number(document.querySelector('#port-counters tr[data-counter=\"rx_bytes\"]')?.dataset.rate) > 0",
        WAIT,
    )?;
    b.screenshot(&shots.join("console-port.png"))?;

    // A capture while iperf3 runs: 20 frames, downloaded by the browser as a valid pcap.
    b.eval("document.getElementById('capture-count').value = '20'; document.getElementById('capture-seconds').value = '20'; document.getElementById('capture-button').click(); true")?;
    b.wait_for(
        "document.getElementById('capture-status').dataset.state === 'done'",
        WAIT,
    )?;
    let status = b.eval("Object.assign({}, document.getElementById('capture-status').dataset)")?;
    assert_eq!(status["valid"], "true", "{status}");
    assert_eq!(status["frames"], "20", "{status}");
    let file = downloads.path().join("vm1.pcap");
    vfabric_tests::wait_until(
        WAIT,
        || Ok(file.exists()),
        || format!("{} not downloaded", file.display()),
    )?;
    let data =
        std::fs::read(&file).with_context(|| format!("{} not downloaded", file.display()))?;
    let mut r = pcap_file::pcap::PcapReader::new(&data[..])?;
    let mut frames = 0;
    while let Some(p) = r.next_packet() {
        let p = p?;
        ensure!(
            p.data.len() >= 14,
            "a frame shorter than an Ethernet header"
        );
        frames += 1;
    }
    assert_eq!(frames, 20);
    assert_eq!(status["bytes"], json!(data.len().to_string()));

    // The trace form: vm1 to vm2's MAC goes unicast to vm2.
    b.navigate(&format!("{url}#/"))?;
    b.wait_for("document.getElementById('trace-form') !== null", WAIT)?;
    b.eval(&format!(
        "(() => {{ const f = document.getElementById('trace-form'); f.elements.port.value = 'vm1'; f.elements.src.value = '{}'; f.elements.dst.value = '{}'; f.requestSubmit(); return true; }})()",
        mac(1),
        mac(2)
    ))?;
    let action = b.wait_for(
        "document.getElementById('trace-result')?.dataset.action || ''",
        WAIT,
    )?;
    assert_eq!(action, "unicast");
    assert_eq!(
        b.eval("[...document.querySelectorAll('#trace-result tr[data-out-port]')].map(r => r.dataset.outPort)")?,
        json!(["vm2"])
    );
    b.eval("document.getElementById('trace-result').scrollIntoView(); true")?;
    b.screenshot(&shots.join("console-trace.png"))?;
    lab.vm(1).run("pkill iperf3", CMD)?;
    Ok(())
}
