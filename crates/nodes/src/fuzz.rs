//! `drover bench fuzz`: every decoder that reads the network, fed a million (by default) inputs
//! mutated from valid ones, in this process; a panic is a failure (the input is saved).
//!
//! Mutation-based, not coverage-guided (cargo-fuzz needs a nightly toolchain): each input is a
//! valid seed of that decoder (what drover's own encoders or a real client send) changed a few
//! times at random: bits flipped, bytes set, ranges inserted, deleted, duplicated or spliced from
//! another seed, ZooKeeper-style lengths set to edge values; JSON decoders also get structural
//! mutations (a value replaced by another type, a huge or negative number, a long string, deep
//! nesting, a key removed). The same `--seed` gives the same inputs.

// A command run by hand, outside any simulation: its wall clock measures the inputs per second.
#![allow(clippy::disallowed_methods)]

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use drover_coord::proto::{self, Acl, ConnectRequest, Op, Request};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

#[derive(Args)]
pub struct FuzzBench {
    /// Inputs per decoder.
    #[arg(long, default_value_t = 1_000_000)]
    inputs: u64,
    /// Only the decoders whose names contain this.
    #[arg(long)]
    only: Option<String>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where inputs that panicked are written.
    #[arg(long, default_value = "target/fuzz")]
    out: PathBuf,
}

/// Decodes one input; `true` when it was accepted.
type Decode = Box<dyn Fn(&[u8]) -> bool>;

/// A decoder under test: its name, valid seeds, whether its inputs are JSON, and the call.
struct Target {
    name: &'static str,
    reads: &'static str,
    seeds: Vec<Vec<u8>>,
    json: bool,
    /// Decodes one input; `true` when it was accepted (for the report's accepted share).
    decode: Decode,
}

pub fn run(args: FuzzBench) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let targets: Vec<Target> = targets()
        .into_iter()
        .filter(|t| args.only.as_deref().is_none_or(|o| t.name.contains(o)))
        .collect();
    if targets.is_empty() {
        anyhow::bail!("--only matches no decoder");
    }
    // Panics are counted and saved, not printed one by one.
    let hook = std::panic::take_hook();
    let last_panic = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = last_panic.clone();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut text) = seen.lock() {
            *text = info.to_string();
        }
    }));
    println!(
        "{:<16} {:<44} {:>10} {:>9} {:>7} {:>11}",
        "decoder", "reads", "inputs", "accepted", "panics", "inputs/s"
    );
    let mut total_panics = 0u64;
    for target in &targets {
        let started = Instant::now();
        let stats = fuzz(target, args.inputs, args.seed, |n, input| {
            let file = args.out.join(format!("{}-{n}.bin", target.name));
            let _ = std::fs::write(&file, input);
            let message = last_panic.lock().map(|t| t.clone()).unwrap_or_default();
            eprintln!(
                "PANIC {} input {n} ({}): {message}",
                target.name,
                file.display()
            );
        });
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        println!(
            "{:<16} {:<44} {:>10} {:>8.1}% {:>7} {:>11.0}",
            target.name,
            target.reads,
            args.inputs,
            100.0 * stats.accepted as f64 / args.inputs.max(1) as f64,
            stats.panics,
            args.inputs as f64 / seconds
        );
        total_panics += stats.panics;
    }
    std::panic::set_hook(hook);
    if total_panics > 0 {
        anyhow::bail!(
            "{total_panics} inputs panicked (saved under {})",
            args.out.display()
        );
    }
    println!(
        "0 panics in {} decoders x {} inputs",
        targets.len(),
        args.inputs
    );
    Ok(())
}

struct Stats {
    accepted: u64,
    panics: u64,
}

/// Runs `inputs` mutated inputs through `target`; `on_panic` gets the first ten that panicked.
fn fuzz(target: &Target, inputs: u64, seed: u64, mut on_panic: impl FnMut(u64, &[u8])) -> Stats {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv(target.name));
    let mut stats = Stats {
        accepted: 0,
        panics: 0,
    };
    for n in 0..inputs {
        let input = mutate(&target.seeds, target.json, &mut rng);
        match std::panic::catch_unwind(AssertUnwindSafe(|| (target.decode)(&input))) {
            Ok(true) => stats.accepted += 1,
            Ok(false) => {}
            Err(_) => {
                stats.panics += 1;
                if stats.panics <= 10 {
                    on_panic(n, &input);
                }
            }
        }
    }
    stats
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

// ---------------------------------------------------------------- mutation

/// Lengths and counts at the edges jute, frames and RecordIO read.
const EDGES: [i32; 9] = [
    0,
    -1,
    1,
    0x7fff_ffff,
    i32::MIN,
    0xffff,
    0x10_0000,
    0x10_0001,
    4096,
];

fn mutate(seeds: &[Vec<u8>], json: bool, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let seed = &seeds[rng.random_range(0..seeds.len())];
    if json && rng.random_bool(0.5) {
        if let Ok(mut value) = serde_json::from_slice::<Value>(seed) {
            for _ in 0..rng.random_range(1..4) {
                mutate_json(&mut value, rng);
            }
            return serde_json::to_vec(&value).unwrap_or_default();
        }
    }
    let mut input = seed.clone();
    for _ in 0..rng.random_range(1..5) {
        mutate_bytes(&mut input, seeds, rng);
    }
    input
}

fn mutate_bytes(input: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut ChaCha8Rng) {
    let len = input.len();
    let at = |rng: &mut ChaCha8Rng| rng.random_range(0..=len);
    match rng.random_range(0..8) {
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] = rng.random();
        }
        2 => {
            let i = at(rng);
            let n = rng.random_range(1..32);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            input.splice(i..i, bytes);
        }
        3 if len > 0 => {
            let i = rng.random_range(0..len);
            let j = rng.random_range(i..=len.min(i + 64));
            input.drain(i..j);
        }
        4 if len > 0 => {
            let i = rng.random_range(0..len);
            let j = rng.random_range(i..=len.min(i + 64));
            let copy = input[i..j].to_vec();
            let k = at(rng);
            input.splice(k..k, copy);
        }
        5 => {
            let other = &seeds[rng.random_range(0..seeds.len())];
            if !other.is_empty() {
                let i = rng.random_range(0..other.len());
                let j = rng.random_range(i..=other.len());
                let k = at(rng);
                input.splice(k..k, other[i..j].iter().copied());
            }
        }
        6 if len >= 4 => {
            let i = rng.random_range(0..=len - 4);
            let edge = EDGES[rng.random_range(0..EDGES.len())];
            input[i..i + 4].copy_from_slice(&edge.to_be_bytes());
        }
        7 if len > 0 => input.truncate(rng.random_range(0..len)),
        _ => input.push(rng.random()),
    }
}

fn mutate_json(value: &mut Value, rng: &mut ChaCha8Rng) {
    // Walk down to a random node, then replace or change it.
    let child = match value {
        Value::Object(map) if !map.is_empty() && rng.random_bool(0.7) => {
            let i = rng.random_range(0..map.len());
            if rng.random_bool(0.1) {
                let key = map.keys().nth(i).cloned().unwrap_or_default();
                map.remove(&key);
                return;
            }
            map.values_mut().nth(i)
        }
        Value::Array(items) if !items.is_empty() && rng.random_bool(0.7) => {
            let i = rng.random_range(0..items.len());
            items.get_mut(i)
        }
        _ => None,
    };
    if let Some(child) = child {
        return mutate_json(child, rng);
    }
    *value = match rng.random_range(0..12) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(-1),
        3 => json!(i64::MAX),
        4 => json!(1e300),
        5 => json!(-0.000001),
        6 => json!(""),
        7 => json!("x".repeat(rng.random_range(1..5000))),
        8 => json!({}),
        9 => json!([]),
        10 => {
            let mut deep = json!(1);
            for _ in 0..rng.random_range(1..200) {
                deep = json!([deep]);
            }
            deep
        }
        _ => {
            let mut bytes = [0u8; 8];
            rng.fill_bytes(&mut bytes);
            json!(String::from_utf8_lossy(&bytes))
        }
    };
}

// ---------------------------------------------------------------- targets

fn targets() -> Vec<Target> {
    vec![
        jute_requests(),
        jute_connect(),
        jute_packets(),
        agent_frames(),
        coord_peer_frames(),
        recordio(),
        v1_calls(),
        marathon_apps(),
        marathon_groups(),
        dns_queries(),
        master_info(),
    ]
}

/// A request packet's body (what follows its length).
fn request(op: Op) -> Vec<u8> {
    proto::encode_request(&Request { xid: 7, op }).split_off(4)
}

fn jute_requests() -> Target {
    let acl = vec![
        Acl::open(),
        Acl {
            perms: 31,
            scheme: "digest".into(),
            id: "ops:abc=".into(),
        },
    ];
    let seeds = vec![
        request(Op::Create {
            path: "/mesos/json.info_".into(),
            data: b"{\"id\":\"m1\"}".to_vec(),
            acl: acl.clone(),
            flags: 3,
            opcode: 1,
        }),
        request(Op::GetData {
            path: "/a/b".into(),
            watch: true,
        }),
        request(Op::SetData {
            path: "/a".into(),
            data: vec![1; 64],
            version: 3,
        }),
        request(Op::GetChildren {
            path: "/".into(),
            watch: false,
            with_stat: true,
        }),
        request(Op::SetAcl {
            path: "/a".into(),
            acl,
            version: 0,
        }),
        request(Op::Multi {
            ops: vec![
                Op::Check {
                    path: "/a".into(),
                    version: 1,
                },
                Op::Delete {
                    path: "/a/b".into(),
                    version: -1,
                },
            ],
        }),
        request(Op::SetWatches {
            relative_zxid: 9,
            data: vec!["/a".into()],
            exist: vec!["/b".into()],
            child: vec!["/".into()],
        }),
        request(Op::Auth {
            scheme: "digest".into(),
            data: b"ops:secret".to_vec(),
        }),
        request(Op::Ping),
    ];
    Target {
        name: "jute-request",
        reads: "coord client port: a request packet's body",
        seeds,
        json: false,
        decode: Box::new(|input| proto::decode_request(input).is_ok()),
    }
}

fn jute_connect() -> Target {
    let seeds = [None, Some(false)]
        .into_iter()
        .map(|read_only| {
            proto::encode_connect(&ConnectRequest {
                protocol_version: 0,
                last_zxid_seen: 42,
                timeout_ms: 10_000,
                session_id: 0x1234,
                password: vec![7; 16],
                read_only,
            })
            .split_off(4)
        })
        .collect();
    Target {
        name: "jute-connect",
        reads: "coord client port: the connect request",
        seeds,
        json: false,
        decode: Box::new(|input| proto::decode_connect(input).is_ok()),
    }
}

fn jute_packets() -> Target {
    let mut stream = Vec::new();
    for body in jute_requests().seeds {
        stream.extend_from_slice(&(body.len() as i32).to_be_bytes());
        stream.extend_from_slice(&body);
    }
    Target {
        name: "jute-packets",
        reads: "coord client port: length-prefixed packets",
        seeds: vec![stream],
        json: false,
        decode: Box::new(|input| {
            let mut buffer = bytes::BytesMut::from(input);
            let mut complete = false;
            while let Ok(Some(body)) = proto::split_packet(&mut buffer, 1 << 20) {
                complete = proto::decode_request(&body).is_ok();
            }
            complete
        }),
    }
}

/// Feeds a byte stream to a frame decoder; the frames it yields.
fn frames(input: &[u8], max: usize) -> Vec<bytes::Bytes> {
    use tokio_util::codec::Decoder as _;
    let mut codec = drover_core::frame::FrameCodec::with_max(max);
    let mut buffer = bytes::BytesMut::from(input);
    let mut out = Vec::new();
    while let Ok(Some(frame)) = codec.decode(&mut buffer) {
        out.push(frame);
    }
    out
}

fn agent_frames() -> Target {
    use drover_core::agent_proto::{AgentMessage, MasterMessage, Registration, StatusUpdate};
    use drover_core::frame::encode_message;
    let messages: Vec<bytes::Bytes> = [
        encode_message(&AgentMessage::Register(Registration {
            agent_id: Some("S1".into()),
            hostname: "od1000-0".into(),
            port: 5051,
            address: Some("192.168.1.10".into()),
            resources: "cpus:4;mem:8192;ports:[31000-32000]".into(),
            attributes: "rack:r1".into(),
            tasks: Vec::new(),
        })),
        encode_message(&AgentMessage::Update(StatusUpdate {
            task_id: "t1".into(),
            framework_id: "f1".into(),
            uuid: "u1".into(),
            state: drover_core::task::TaskState::TaskRunning,
            message: Some("running".into()),
            reason: None,
            timestamp_ms: 5,
            healthy: Some(true),
            ip_addresses: vec!["10.0.0.2".into()],
        })),
        encode_message(&AgentMessage::Authenticate {
            principal: "agent".into(),
        }),
        encode_message(&AgentMessage::Proof {
            answer: "AAAA".into(),
        }),
        encode_message(&MasterMessage::Ping { seq: 3 }),
    ]
    .into_iter()
    .filter_map(Result::ok)
    .collect();
    let mut stream = Vec::new();
    for message in &messages {
        stream.extend_from_slice(&(message.len() as u32).to_be_bytes());
        stream.extend_from_slice(message);
    }
    Target {
        name: "agent-frames",
        reads: "master port: an agent's frames and messages",
        seeds: vec![stream],
        json: false,
        decode: Box::new(|input| {
            use drover_core::frame::decode_message;
            let mut accepted = false;
            for frame in frames(input, 4 << 20) {
                accepted |= decode_message::<AgentMessage>(&frame).is_ok();
                accepted |= decode_message::<MasterMessage>(&frame).is_ok();
            }
            accepted
        }),
    }
}

fn coord_peer_frames() -> Target {
    let mut stream = Vec::new();
    for frame in [
        drover_coord::server::proof_frame(&[7; 32], &[9; 32]),
        drover_coord::server::forged_heartbeat_frame(1, 2, 7),
    ] {
        stream.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        stream.extend_from_slice(&frame);
    }
    Target {
        name: "coord-peer",
        reads: "coord peer port: frames, raft messages",
        seeds: vec![stream],
        json: false,
        decode: Box::new(|input| {
            let mut accepted = false;
            for frame in frames(input, 1 << 20) {
                accepted |= drover_coord::server::decode_peer_frame(&frame).is_some();
            }
            accepted
        }),
    }
}

fn recordio() -> Target {
    let mut stream = Vec::new();
    for record in [
        json!({"type": "SUBSCRIBED", "subscribed": {"framework_id": {"value": "f1"}}}),
        json!({"type": "HEARTBEAT"}),
    ] {
        stream.extend_from_slice(&drover_core::recordio::encode(
            record.to_string().as_bytes(),
        ));
    }
    Target {
        name: "recordio",
        reads: "frameworks' and DNS's event streams",
        seeds: vec![stream],
        json: false,
        decode: Box::new(|input| {
            let mut decoder = drover_core::recordio::Decoder::default();
            decoder.feed(input);
            let mut accepted = false;
            while let Ok(Some(_)) = decoder.next_record() {
                accepted = true;
            }
            accepted
        }),
    }
}

fn v1_calls() -> Target {
    let seeds = [
        json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "root", "name": "fw",
            "roles": ["*"], "capabilities": [{"type": "PARTITION_AWARE"}], "failover_timeout": 60.0}}}),
        json!({"framework_id": {"value": "f1"}, "type": "ACCEPT", "accept": {"offer_ids": [{"value": "o1"}],
            "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{"name": "t", "task_id": {"value": "t1"},
            "agent_id": {"value": "S1"}, "command": {"value": "sleep 10"}, "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31001}]}}]}]}}],
            "filters": {"refuse_seconds": 5.0}}}),
        json!({"framework_id": {"value": "f1"}, "type": "ACKNOWLEDGE", "acknowledge": {"agent_id": {"value": "S1"},
            "task_id": {"value": "t1"}, "uuid": "AAECAwQFBgcICQoLDA0ODw=="}}),
        json!({"framework_id": {"value": "f1"}, "type": "RECONCILE", "reconcile": {"tasks": [{"task_id": {"value": "t1"}}]}}),
        json!({"framework_id": {"value": "f1"}, "type": "KILL", "kill": {"task_id": {"value": "t1"}}}),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .collect();
    Target {
        name: "v1-call",
        reads: "master port: v1 scheduler API bodies",
        seeds,
        json: true,
        decode: Box::new(|input| drover_core::v1::decode_call(input).is_ok()),
    }
}

/// The seed's app definitions (`apps/basic.json`), as Marathon's users send them.
const BASIC: &str = include_str!("../../../apps/basic.json");

fn marathon_apps() -> Target {
    let mut seeds = vec![json!({
        "id": "/web", "cmd": "python3 -m http.server $PORT0", "cpus": 0.25, "mem": 64, "instances": 2,
        "portDefinitions": [{"port": 0, "name": "http"}], "constraints": [["hostname", "UNIQUE"]],
        "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 5}],
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5},
        "labels": {"a": "b"}, "env": {"X": "1"}, "dependencies": ["/db"], "backoffSeconds": 1
    })
    .to_string()
    .into_bytes()];
    if let Ok(Value::Object(group)) = serde_json::from_str::<Value>(BASIC) {
        collect_apps(&Value::Object(group), &mut seeds);
    }
    Target {
        name: "marathon-app",
        reads: "scheduler port: POST/PUT /v2/apps bodies",
        seeds,
        json: true,
        decode: Box::new(|input| drover_scheduler::validation::parse_app(input).is_ok()),
    }
}

fn collect_apps(group: &Value, out: &mut Vec<Vec<u8>>) {
    for app in group["apps"].as_array().into_iter().flatten() {
        out.push(app.to_string().into_bytes());
    }
    for sub in group["groups"].as_array().into_iter().flatten() {
        collect_apps(sub, out);
    }
}

fn marathon_groups() -> Target {
    Target {
        name: "marathon-group",
        reads: "scheduler port: /v2/groups bodies",
        seeds: vec![BASIC.as_bytes().to_vec(), br#"{"scaleBy": 1.5}"#.to_vec()],
        json: true,
        decode: Box::new(|input| {
            let root = drover_scheduler::path::PathId::root();
            drover_scheduler::group::parse_group(input, &root).is_ok()
        }),
    }
}

/// A DNS query for `name` of record type `kind` (1 = A, 33 = SRV, 255 = ANY).
fn dns_query(name: &str, kind: u16) -> Vec<u8> {
    let mut out = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out
}

fn dns_queries() -> Target {
    use drover_dns::zone::{Task, Zone};
    let task = |id: &str, address: [u8; 4], port: u16| Task {
        id: id.into(),
        name: "/arm-demo/group1/ubuntu1".into(),
        framework: "marathon".into(),
        hostname: Some("ubuntu1.weave.local".into()),
        addresses: vec![address.into()],
        agent: Some([192, 168, 1, 10].into()),
        ports: vec![port],
    };
    let zone = Zone::build(
        &[
            task("u1.a", [10, 32, 0, 2], 31000),
            task("u1.b", [10, 32, 0, 3], 31001),
        ],
        Some([192, 168, 1, 5].into()),
        &[[192, 168, 1, 5].into()],
    );
    let seeds = vec![
        dns_query("ubuntu1.weave.local", 1),
        dns_query("ubuntu1-group1-arm-demo.marathon.mesos", 1),
        dns_query("_ubuntu1-group1-arm-demo._tcp.marathon.mesos", 33),
        dns_query("leader.mesos", 255),
        dns_query("example.com", 1),
    ];
    let rng = std::cell::RefCell::new(ChaCha8Rng::seed_from_u64(5));
    Target {
        name: "dns-query",
        reads: "dns port 53: queries",
        seeds,
        json: false,
        decode: Box::new(move |input| {
            let mut rng = rng.borrow_mut();
            let _ = drover_dns::answer::is_foreign(input);
            drover_dns::answer::answer(&zone, input, &mut *rng).is_some()
        }),
    }
}

fn master_info() -> Target {
    let info = drover_core::v1::MasterInfo::new("m1", "master-1", 5050);
    Target {
        name: "master-info",
        reads: "coord: the leading master's json.info_",
        seeds: vec![serde_json::to_vec(&info).unwrap_or_default()],
        json: true,
        decode: Box::new(|input| drover_core::v1::MasterInfo::decode(input).is_ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_is_accepted_and_mutations_are_reproducible() {
        for target in targets() {
            for (i, seed) in target.seeds.iter().enumerate() {
                assert!(
                    (target.decode)(seed),
                    "{} rejects its seed {i}",
                    target.name
                );
            }
            let draw = |seed| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                (0..50)
                    .map(|_| mutate(&target.seeds, target.json, &mut rng))
                    .collect::<Vec<_>>()
            };
            assert_eq!(draw(3), draw(3), "{}", target.name);
            assert_ne!(draw(3), draw(4), "{}", target.name);
        }
    }

    /// A decoder that indexes by a length it read, as a careless one would, is caught.
    #[test]
    fn a_panicking_decoder_is_caught_and_its_inputs_kept() {
        let target = Target {
            name: "careless",
            reads: "test",
            seeds: vec![vec![0, 0, 0, 4, 1, 2, 3, 4]],
            json: false,
            decode: Box::new(|input| {
                let n = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
                input[4..4 + n].len() == n
            }),
        };
        // (The panics it catches are printed by the default hook: a global hook set here would
        // silence the other tests running beside it.)
        let mut kept = Vec::new();
        let stats = fuzz(&target, 300, 1, |_, input| kept.push(input.to_vec()));
        assert!(stats.panics > 0 && stats.accepted > 0);
        assert_eq!(kept.len() as u64, stats.panics.min(10));
    }
}
