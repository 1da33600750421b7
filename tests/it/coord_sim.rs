//! coord judged in the simulator with probes defined here: what a client sees of the server's
//! disk (a slow sync delays the writes it makes durable, never the reads beside them).

use std::path::Path;
use std::time::Duration;

use drover_coord::client::{Client, ClientConfig};
use drover_core::Event;
use drover_sim::{NodeContext, Role};
use serde_json::json;

/// coord's client port in the simulator (the `coord` role's default).
const CLIENT_PORT: u16 = 2181;

fn client(context: &NodeContext) -> Client {
    let hosts: Vec<String> = context
        .cluster
        .of_role("coord")
        .into_iter()
        .map(|n| format!("{n}:{CLIENT_PORT}"))
        .collect();
    let config = ClientConfig::from_hosts(&hosts.join(",")).expect("coord hosts parse");
    Client::start(context.env.clone(), config)
}

/// Two sessions on the one server: one writes `/r` without pause, the other reads it without
/// pause; each reports how long every call took (simulated ms) as `wrote ms=N` / `read ms=N`.
fn prober() -> Role {
    Role::new("prober", None, |context| {
        Box::pin(async move {
            let (writer, reader) = (client(&context), client(&context));
            writer
                .wait_connected()
                .await
                .map_err(|e| format!("{e:?}"))?;
            reader
                .wait_connected()
                .await
                .map_err(|e| format!("{e:?}"))?;
            writer
                .ensure_path("/r")
                .await
                .map_err(|e| format!("{e:?}"))?;
            let env = context.env.clone();
            let writes = async {
                loop {
                    let began = tokio::time::Instant::now();
                    if writer.set_data("/r", b"x", -1).await.is_ok() {
                        let ms = began.elapsed().as_millis() as u64;
                        env.emit(Event::new("wrote").with("ms", ms));
                    }
                }
            };
            let reads = async {
                loop {
                    let began = tokio::time::Instant::now();
                    if reader.get_data("/r").await.is_ok() {
                        let ms = began.elapsed().as_millis() as u64;
                        env.emit(Event::new("read").with("ms", ms));
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            };
            tokio::join!(writes, reads);
            Ok(())
        })
    })
}

/// Every `<event> ms=N` of the trace after `after_ms`.
fn latencies(trace: &str, event: &str, after_ms: u64) -> Vec<u64> {
    trace
        .lines()
        .filter_map(|line| {
            let mut words = line.split(' ');
            let at: u64 = words.next()?.parse().ok()?;
            let (_node, what, ms) = (words.next()?, words.next()?, words.next()?);
            (at > after_ms && what == event)
                .then(|| ms.strip_prefix("ms=")?.parse().ok())
                .flatten()
        })
        .collect()
}

#[test]
fn a_slow_disk_delays_the_writes_it_syncs_and_not_the_reads_beside_them() {
    let doc = json!({
        "name": "coord-slow-disk-reads",
        "seed": 3,
        "duration": "8s",
        "cluster": {"coord": 1, "nodes": [{"role": "prober", "name": "prober"}], "network": {"latency_ms": [1, 2]}},
        "timeline": [{"at": "3s", "do": "disk", "node": "coord-1", "fault": "slow"}],
        "expect": {}
    });
    let scenario = drover_sim::scenario::parse(Path::new("slow-disk.json"), doc)
        .unwrap_or_else(|e| panic!("{e}"));
    let roles = drover_nodes::roles().with(prober());
    let outcome = drover_sim::run(&scenario, &roles, scenario.seed).unwrap();
    assert!(outcome.passed(), "{:?}", outcome.failures);
    let slow = drover_sim::scenario::SLOW_SYNC_MS;
    // Once every sync takes SLOW_SYNC_MS (a second for the fault to be in force everywhere).
    let writes = latencies(&outcome.trace, "wrote", 4_000);
    let reads = latencies(&outcome.trace, "read", 4_000);
    assert!(
        writes.len() > 10 && reads.len() > 100,
        "{writes:?} {reads:?}"
    );
    assert!(writes.iter().all(|ms| *ms >= slow), "writes: {writes:?}");
    // A read waits for no sync: it is answered while one is in flight.
    let slowest = reads.iter().max().copied().unwrap_or_default();
    assert!(slowest < slow / 4, "a read took {slowest} ms: {reads:?}");
}
