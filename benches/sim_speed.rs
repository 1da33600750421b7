//! Simulation speed: one run of a standard scenario per iteration. Divide the scenario's simulated
//! duration by the time per iteration for simulated seconds per wall second.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};

fn sim_speed(c: &mut Criterion) {
    let roles = drover_nodes::roles();
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/harness-partition-and-heal.json");
    let scenario = drover_sim::load(&file).expect("load the scenario");
    let mut group = c.benchmark_group("simulation");
    group.sample_size(10);
    let name = format!(
        "{} ({} simulated s)",
        scenario.name,
        scenario.duration.as_secs()
    );
    group.bench_function(name, |b| {
        b.iter(|| {
            let outcome = drover_sim::run(&scenario, &roles, scenario.seed).expect("run");
            assert!(outcome.passed());
        })
    });
    group.finish();
}

criterion_group!(benches, sim_speed);
criterion_main!(benches);
