//! One allocation cycle of the DRF allocator over Mesos' benchmark grid: agents {1k, 5k, 10k, 20k}
//! × frameworks {1, 50, 200, 1000}, every agent `cpus:24;mem:4096;disk:4096;ports:[31000-32000]`
//! (the shape of Mesos' allocator benchmarks), nothing allocated yet.
//!
//! Reference (published, Mesos 1.8): about 1.1 s per cycle at 10k agents / 1k frameworks and
//! 3.8 s at 20k / 2k. After criterion, a summary measures those two points and prints the ratios.
//! `DROVER_BENCH_QUICK=1` runs only the summary.
//!
//! The summary also measures placement through the master's core (allocation, offers as v1
//! events, ACCEPT with LAUNCH, the RunTask messages to agents): tasks placed per second.

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

/// Tasks placed per second by the master's core: 1000 agents, one framework that launches
/// `cpus:0.01;mem:1` tasks into every offer, for as many rounds as it takes to place `tasks`.
#[allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]
fn placement(agents: usize, tasks: usize) {
    use drover_core::agent_proto::Registration;
    use drover_core::v1;
    use drover_master::core::{Master, Tuning};
    let dir = std::env::temp_dir().join(format!("drover-bench-placement-{}", std::process::id()));
    let env = drover_core::env::live::env("bench", &dir, Some(1));
    let info = v1::MasterInfo::new("bench", "127.0.0.1", 5050);
    let mut master = Master::new(env, Tuning::default(), info, Default::default(), 0);
    let mut agent_rx = Vec::new();
    for a in 0..agents {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        agent_rx.push(rx);
        let registration = Registration {
            agent_id: None,
            hostname: format!("agent-{a:05}"),
            port: 5051,
            address: None,
            resources: "cpus:24;mem:4096;disk:4096;ports:[31000-32000]".into(),
            attributes: String::new(),
            tasks: vec![],
        };
        let id = master.admit_id(&registration);
        master
            .agent_registered(a as u64, &id, &registration, tx, 0)
            .expect("register");
    }
    let (tx, mut events) = tokio::sync::mpsc::channel(1 << 20);
    let subscribe: v1::Call = serde_json::from_value(serde_json::json!({
        "type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "b", "name": "bench"}}
    }))
    .expect("call");
    let (framework, _) = master.subscribe(&subscribe, tx, 0).expect("subscribe");
    let started = std::time::Instant::now();
    // The master's own time: allocation (offers written as v1 events), parsing each ACCEPT body
    // as the HTTP API does, and the call. The framework's side (reading events, writing bodies)
    // runs in the same loop but outside this clock.
    let mut in_master = std::time::Duration::ZERO;
    let mut placed = 0;
    let mut now = 0;
    let mut decoder = drover_core::recordio::Decoder::default();
    while placed < tasks {
        now += 1000;
        let allocating = std::time::Instant::now();
        master.allocate(now);
        in_master += allocating.elapsed();
        while let Ok(bytes) = events.try_recv() {
            decoder.feed(&bytes);
        }
        while let Ok(Some(record)) = decoder.next_record() {
            let event: v1::Event = serde_json::from_slice(&record).expect("event");
            for offer in event.offers.map(|o| o.offers).unwrap_or_default() {
                let per_offer = 100.min(tasks - placed);
                let infos: Vec<serde_json::Value> = (0..per_offer)
                    .map(|i| {
                        placed += 1;
                        serde_json::json!({
                            "name": "t", "task_id": {"value": format!("t{placed}-{i}")},
                            "agent_id": offer.agent_id,
                            "resources": [
                                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.01}},
                                {"name": "mem", "type": "SCALAR", "scalar": {"value": 1.0}}],
                            "command": {"value": "sleep 1000"}
                        })
                    })
                    .collect();
                let body = serde_json::to_vec(&serde_json::json!({
                    "type": "ACCEPT", "framework_id": {"value": framework},
                    "accept": {"offer_ids": [offer.id], "operations": [{"type": "LAUNCH", "launch": {"task_infos": infos}}]}
                }))
                .expect("accept");
                let calling = std::time::Instant::now();
                let accept: v1::Call = serde_json::from_slice(&body).expect("accept");
                master.call(&framework, accept, now).expect("accepted");
                in_master += calling.elapsed();
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let sent: usize = agent_rx
        .iter_mut()
        .map(|rx| {
            let mut n = 0;
            while rx.try_recv().is_ok() {
                n += 1;
            }
            n
        })
        .sum();
    let master_seconds = in_master.as_secs_f64();
    println!(
        "placement through the master core, {agents} agents: {placed} tasks in {:.1} ms of the master's time = {:.0} tasks/s; Nomad C1M: 3750 tasks/s; ratio {:.1}x ({sent} messages to agents; {:.0} tasks/s with the framework's side of the loop counted)",
        master_seconds * 1000.0,
        placed as f64 / master_seconds,
        placed as f64 / master_seconds / 3750.0,
        placed as f64 / seconds
    );
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, grid);

fn main() {
    if std::env::var("DROVER_BENCH_QUICK").is_err() {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    summary();
    placement(1_000, 20_000);
}
