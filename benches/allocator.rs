//! One allocation cycle of the DRF allocator over Mesos' benchmark grid: agents {1k, 5k, 10k, 20k}
//! × frameworks {1, 50, 200, 1000}, every agent `cpus:24;mem:4096;disk:4096;ports:[31000-32000]`
//! (the shape of Mesos' allocator benchmarks), nothing allocated yet.
//!
//! Reference (published, Mesos 1.8): about 1.1 s per cycle at 10k agents / 1k frameworks and
//! 3.8 s at 20k / 2k. After criterion, a summary measures those two points and prints the ratios.
//! `DROVER_BENCH_QUICK=1` runs only the summary.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion};
use drover_master::allocator::Allocator;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn cluster(agents: usize, frameworks: usize) -> Allocator {
    let mut allocator = Allocator::default();
    let resources: drover_core::Resources = "cpus:24;mem:4096;disk:4096;ports:[31000-32000]"
        .parse()
        .expect("resources");
    for a in 0..agents {
        allocator.add_agent(&format!("agent-{a:05}"), resources.clone());
    }
    for f in 0..frameworks {
        allocator.add_framework(&format!("framework-{f:04}"), "*");
    }
    allocator
}

fn grid(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocation_cycle");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for agents in [1_000, 5_000, 10_000, 20_000] {
        for frameworks in [1, 50, 200, 1_000] {
            let prepared = cluster(agents, frameworks);
            let id = BenchmarkId::new(
                format!("{agents}_agents"),
                format!("{frameworks}_frameworks"),
            );
            group.bench_with_input(id, &prepared, |b, prepared| {
                b.iter_batched(
                    || (prepared.clone(), ChaCha8Rng::seed_from_u64(1)),
                    |(mut allocator, mut rng)| black_box(allocator.allocate(0, &mut rng)),
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

/// One cycle timed directly, for the ratios to the published Mesos figures.
#[allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]
fn summary() {
    for (agents, frameworks, mesos_seconds) in [(10_000, 1_000, 1.1), (20_000, 2_000, 3.8)] {
        let mut best = f64::MAX;
        let mut offers = 0;
        for _ in 0..3 {
            let mut allocator = cluster(agents, frameworks);
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let started = std::time::Instant::now();
            offers = allocator.allocate(0, &mut rng).len();
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "allocation cycle, {agents} agents / {frameworks} frameworks: {:.1} ms ({offers} offers, {:.0} offers/s); Mesos 1.8: {mesos_seconds} s; ratio {:.3}x",
            best * 1000.0,
            offers as f64 / best,
            best / mesos_seconds
        );
    }
}

criterion_group!(benches, grid);

fn main() {
    if std::env::var("DROVER_BENCH_QUICK").is_err() {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    summary();
}
