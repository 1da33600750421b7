//! Simulation speed: one run of the standard cluster (3 coord, 3 masters, 5 agents, 2 schedulers,
//! the seed's apps deployed, a simulated framework, a master failover) per iteration, on one core.
//! Prints simulated seconds per wall second (the goal: at least 1000x real time).

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

const STANDARD: &str = "scenarios/standard-cluster-master-failover-under-load.json";

fn sim_speed(c: &mut Criterion) {
    let roles = drover_nodes::roles();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(STANDARD);
    let scenario = drover_sim::load(&file).expect("load the scenario");
    let simulated = scenario.duration;
    let mut group = c.benchmark_group("simulation");
    group.sample_size(10);
    let name = format!("{} ({} simulated s)", scenario.name, simulated.as_secs());
    let mut measured = Vec::new();
    group.bench_function(name, |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                #[allow(clippy::disallowed_methods, reason = "times the simulator itself")]
                let started = std::time::Instant::now();
                let outcome = drover_sim::run(&scenario, &roles, scenario.seed).expect("run");
                let took = started.elapsed();
                assert!(outcome.passed(), "{:?}", outcome.failures);
                measured.push(took);
                total += took;
            }
            total
        })
    });
    group.finish();
    measured.sort();
    if let Some(median) = measured.get(measured.len() / 2) {
        println!(
            "standard cluster: {:.1} simulated s in {:.1} ms of wall time (median of {}) = {:.0}x real time (goal: >= 1000x)",
            simulated.as_secs_f64(),
            median.as_secs_f64() * 1000.0,
            measured.len(),
            simulated.as_secs_f64() / median.as_secs_f64()
        );
    }
}

criterion_group!(benches, sim_speed);
criterion_main!(benches);
