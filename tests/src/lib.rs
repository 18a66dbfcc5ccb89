//! vfabric's real-VM test harness: a cached guest image ([`guest_image`]) and a QEMU launcher with
//! a command agent in the guest ([`qemu`]). See tests/vm/README.md.

pub mod dpdk;
pub mod fabric;
pub mod guest_image;
pub mod lab;
pub mod netns;
pub mod qemu;

/// Polls `ready` every 100 ms until it says yes; an error naming `what` once `timeout`
/// passed without it (or the first error `ready` returns). The one way tests wait for a
/// condition: a socket, a counter, a log line, a guest file.
pub fn wait_until(
    timeout: std::time::Duration,
    mut ready: impl FnMut() -> anyhow::Result<bool>,
    what: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if ready()? {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("{} (not within {timeout:?})", what());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The median of benchmark samples (NaN for none): what the benchmark binaries report.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
