//! `bench coord` and `bench failover`: ZooKeeper-protocol load and leader failover, against
//! drover coord and real ZooKeeper alike.

use super::*;

fn client(hosts: &str, name: &str) -> anyhow::Result<Client> {
    let dir = std::env::temp_dir().join("drover-bench");
    let env = drover_core::env::live::env(name, dir, None);
    let config = ClientConfig::from_hosts(hosts).map_err(anyhow::Error::msg)?;
    Ok(Client::start(env, config))
}

struct Measured {
    name: String,
    writes: usize,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.writes as f64 / self.seconds
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[index] as f64 / 1000.0
    }
}

pub(super) async fn coord(args: CoordBench) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for target in &args.targets {
        let (name, hosts) = target
            .split_once('=')
            .with_context(|| format!("--target {target:?}: expected NAME=HOSTS"))?;
        println!(
            "{name}: {} clients, {} s of 1 KB operations ({}% getData, the rest setData + create) against {hosts}",
            args.clients, args.seconds, args.reads
        );
        let measured = load(name, hosts, &args).await?;
        println!(
            "{name}: {} operations in {:.1} s = {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms",
            measured.writes,
            measured.seconds,
            measured.per_second(),
            measured.percentile_ms(0.50),
            measured.percentile_ms(0.99)
        );
        results.push(measured);
    }
    if let [first, second, ..] = results.as_slice() {
        println!(
            "ratio {}/{}: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x (throughput above 1 and latency below 1 favour {})",
            first.name,
            second.name,
            first.per_second() / second.per_second(),
            first.percentile_ms(0.50) / second.percentile_ms(0.50),
            first.percentile_ms(0.99) / second.percentile_ms(0.99),
            first.name
        );
    }
    Ok(())
}

async fn load(name: &str, hosts: &str, args: &CoordBench) -> anyhow::Result<Measured> {
    let run = format!("/drover-bench-{}-{}", std::process::id(), name);
    let setup = client(hosts, "bench-setup")?;
    setup
        .wait_connected()
        .await
        .map_err(|e| anyhow::anyhow!("connect to {hosts}: {e}"))?;
    setup
        .ensure_path(&run)
        .await
        .map_err(|e| anyhow::anyhow!("create {run}: {e}"))?;
    let data = vec![b'x'; args.data_bytes];
    let reads = u64::from(args.reads);
    let warmup = Duration::from_secs(1);
    let started = Instant::now();
    let measure_from = started + warmup;
    let deadline = measure_from + Duration::from_secs(args.seconds);
    let mut workers = Vec::new();
    for i in 0..args.clients {
        let zk = client(hosts, &format!("bench-{i}"))?;
        let (data, base) = (data.clone(), format!("{run}/c{i}"));
        workers.push(drover_core::env::spawn(async move {
            zk.wait_connected().await?;
            match zk.create(&base, &data, CreateMode::Persistent).await {
                Ok(_) | Err(ErrorCode::NodeExists) => {}
                Err(e) => return Err(e),
            }
            let mut latencies = Vec::new();
            let (mut n, mut done_reads, mut writes) = (0u64, 0u64, 0u64);
            while Instant::now() < deadline {
                let began = Instant::now();
                n += 1;
                // Operation n is a read while reads so far are below `reads`% of n.
                if done_reads * 100 < n * reads {
                    done_reads += 1;
                    zk.get_data(&base).await?;
                } else {
                    writes += 1;
                    if writes.is_multiple_of(2) {
                        zk.set_data(&base, &data, -1).await?;
                    } else {
                        zk.create(
                            &format!("{base}/n-"),
                            &data,
                            CreateMode::PersistentSequential,
                        )
                        .await?;
                    }
                }
                if began >= measure_from && Instant::now() <= deadline {
                    latencies.push(began.elapsed().as_micros() as u64);
                }
            }
            zk.close().await;
            Ok(latencies)
        }));
    }
    let mut latencies_us = Vec::new();
    for worker in workers {
        match worker.await {
            Ok(Ok(measured)) => latencies_us.extend(measured),
            Ok(Err(e)) => bail!("{name}: a client failed: {e}"),
            Err(e) => bail!("{name}: a client panicked: {e}"),
        }
    }
    latencies_us.sort_unstable();
    setup.close().await;
    Ok(Measured {
        name: name.to_string(),
        writes: latencies_us.len(),
        seconds: args.seconds as f64,
        latencies_us,
    })
}

/// Asks a server for `srvr` and returns its `Mode:` line's value.
async fn mode_of(host: &str) -> Option<String> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(host))
            .await
            .ok()?
            .ok()?;
    stream.write_all(b"srvr").await.ok()?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut text))
        .await
        .ok()?
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Mode: ").map(|m| m.trim().to_string()))
}

pub(super) async fn failover(args: FailoverBench) -> anyhow::Result<()> {
    let hosts: Vec<&str> = args.hosts.split(',').collect();
    let pids: Vec<&str> = args.pids.split(',').collect();
    if hosts.len() != pids.len() {
        bail!(
            "--hosts has {} servers but --pids has {}",
            hosts.len(),
            pids.len()
        );
    }
    let mut leader = None;
    for (host, pid) in hosts.iter().zip(&pids) {
        if mode_of(host).await.as_deref() == Some("leader") {
            leader = Some((*host, *pid));
        }
    }
    let (leader_host, leader_pid) = leader.context("no server says `Mode: leader`")?;
    // A client on a server that survives, writing before and after the kill.
    let survivors: Vec<&str> = hosts
        .iter()
        .copied()
        .filter(|h| *h != leader_host)
        .collect();
    let zk = client(&survivors.join(","), "bench-failover")?;
    zk.wait_connected()
        .await
        .map_err(|e| anyhow::anyhow!("connect: {e}"))?;
    let path = format!("/drover-failover-{}-{}", std::process::id(), args.name);
    zk.create(&path, b"", CreateMode::Persistent)
        .await
        .map_err(|e| anyhow::anyhow!("create {path}: {e}"))?;
    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-9", leader_pid])
        .status()
        .context("run kill")?;
    if !status.success() {
        bail!("kill -9 {leader_pid} failed");
    }
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        match tokio::time::timeout(Duration::from_secs(2), zk.set_data(&path, b"after", -1)).await {
            Ok(Ok(_)) => break,
            _ if killed.elapsed() > Duration::from_secs(60) => {
                bail!("no write succeeded within 60 s of the kill")
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    println!(
        "{}: killed the leader {leader_host} (pid {leader_pid}); first successful write {:.0} ms later ({attempts} attempts)",
        args.name,
        killed.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
