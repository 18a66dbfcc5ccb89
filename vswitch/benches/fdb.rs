//! Micro benchmarks of the pure core: FDB lookup and learn at 1, 10^3 and 10^6 entries, and
//! the whole forward decision (learn source + look up destination) on a frame header.
//! `cargo bench -p vswitch --bench fdb`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use vlan::VlanId;
use vswitch::core::fdb::Fdb;
use vswitch::core::{MacAddr, PortId, Switch, Time};

fn mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x52, 0x54, b[0], b[1], b[2], b[3]])
}

fn filled(n: u32) -> Fdb {
    let mut f = Fdb::new(Duration::from_secs(300), 2 << 20);
    for i in 0..n {
        f.learn(Time(0), VlanId::DEFAULT, mac(i), PortId(i % 64));
    }
    f
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdb");
    for n in [1u32, 1_000, 1_000_000] {
        let mut f = filled(n);
        let mut i = 0u32;
        g.bench_with_input(BenchmarkId::new("lookup_hit", n), &n, |b, &n| {
            b.iter(|| {
                i = (i + 7919) % n;
                black_box(f.lookup(Time(1), VlanId::DEFAULT, mac(i)))
            })
        });
        g.bench_with_input(BenchmarkId::new("lookup_miss", n), &n, |b, _| {
            b.iter(|| black_box(f.lookup(Time(1), VlanId::DEFAULT, mac(u32::MAX))))
        });
        g.bench_with_input(BenchmarkId::new("learn_refresh", n), &n, |b, &n| {
            b.iter(|| {
                i = (i + 7919) % n;
                black_box(f.learn(Time(2), VlanId::DEFAULT, mac(i), PortId(i % 64)))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("forward");
    for n in [1u32, 1_000, 1_000_000] {
        let mut s = Switch::new("bench", Duration::from_secs(300), 2 << 20);
        for p in 0..64 {
            s.add_port(format!("p{p}"));
        }
        for i in 0..n {
            s.add_static(Time(0), VlanId::DEFAULT, mac(i), PortId(i % 64));
        }
        let mut frame = [0u8; 64];
        frame[12] = 0x08;
        let mut i = 0u32;
        g.bench_with_input(BenchmarkId::new("unicast_known", n), &n, |b, &n| {
            b.iter(|| {
                i = (i + 7919) % n;
                frame[0..6].copy_from_slice(&mac(i).0);
                frame[6..12].copy_from_slice(&mac(n + 1).0);
                black_box(s.forward(Time(1), PortId(63), black_box(&frame)))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
