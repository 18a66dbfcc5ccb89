//! vfabric's real-VM test harness: a cached guest image ([`guest_image`]) and a QEMU launcher with
//! a command agent in the guest ([`qemu`]). See tests/vm/README.md.

pub mod dpdk;
pub mod fabric;
pub mod guest_image;
pub mod lab;
pub mod qemu;

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
