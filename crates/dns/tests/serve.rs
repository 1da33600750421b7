//! The DNS server live on 127.0.0.1: a real resolver client (`dig`, Debian's dnsutils; skipped
//! when it is missing unless `DROVER_REQUIRE_WIRE_TESTS` is set, as in CI) and a plain UDP
//! exchange get the seed's names, and an answer follows the zone's changes at once.

// A live test: its clients block on real sockets, beside the server's runtime.
#![allow(clippy::disallowed_methods)]

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use drover_dns::{Task, Zone};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

fn zone(addresses: &[&str]) -> Arc<Zone> {
    let tasks: Vec<Task> = addresses
        .iter()
        .enumerate()
        .map(|(n, a)| Task {
            id: format!("u1.{n:08}"),
            name: "/arm-demo/group1/ubuntu1".into(),
            framework: "marathon".into(),
            hostname: Some("ubuntu1.weave.local".into()),
            addresses: vec![a.parse().unwrap()],
            agent: None,
            ports: vec![],
        })
        .collect();
    Arc::new(Zone::build(&tasks, None, &[]))
}

fn ask(port: u16, name: &str) -> Message {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut query = Message::new();
    query
        .set_id(7)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    client
        .send_to(&query.to_vec().unwrap(), ("127.0.0.1", port))
        .unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = client.recv_from(&mut buf).unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

fn addresses(reply: &Message) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = reply
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_server_answers_real_clients_and_follows_its_zone() {
    let dir = std::env::temp_dir().join(format!("drover-dns-{}", std::process::id()));
    let env = drover_core::env::live::env("dns", &dir, Some(1));
    let socket = env.bind_udp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let (set, current) = tokio::sync::watch::channel(zone(&["10.32.0.2", "10.32.0.3"]));
    let server = tokio::spawn(drover_dns::serve(env, socket, current, Vec::new()));

    let reply = tokio::task::spawn_blocking(move || ask(port, "ubuntu1.weave.local."))
        .await
        .unwrap();
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert_eq!(
        addresses(&reply),
        vec![
            "10.32.0.2".parse::<Ipv4Addr>().unwrap(),
            "10.32.0.3".parse().unwrap()
        ]
    );
    // dig, a real resolver client, where it is installed.
    let dig = tokio::task::spawn_blocking(move || {
        std::process::Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "+short",
                "+tries=1",
                "+time=3",
                "ubuntu1",
            ])
            .output()
    })
    .await
    .unwrap();
    let required =
        std::env::var("DROVER_REQUIRE_WIRE_TESTS").is_ok_and(|v| !v.is_empty() && v != "0");
    match &dig {
        Err(e) if required => panic!("dig (Debian's dnsutils): {e}"),
        Err(e) => println!("skipped dig: {e}"),
        Ok(_) => {}
    }
    if let Ok(dig) = dig {
        let mut got: Vec<String> = String::from_utf8_lossy(&dig.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        got.sort();
        assert_eq!(got, vec!["10.32.0.2", "10.32.0.3"], "{dig:?}");
    }
    // A task ends: the next answer no longer has it.
    set.send(zone(&["10.32.0.3"])).unwrap();
    let reply = tokio::task::spawn_blocking(move || ask(port, "ubuntu1."))
        .await
        .unwrap();
    assert_eq!(
        addresses(&reply),
        vec!["10.32.0.3".parse::<Ipv4Addr>().unwrap()]
    );
    let reply = tokio::task::spawn_blocking(move || ask(port, "ubuntu2.weave.local."))
        .await
        .unwrap();
    assert_eq!(reply.response_code(), ResponseCode::NXDomain);
    server.abort();
    let _ = std::fs::remove_dir_all(dir);
}

/// A stand-in for an upstream resolver on 127.0.0.1: answers each query with one A record.
fn upstream(answer: Ipv4Addr) -> (u16, std::thread::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            return;
        };
        let query = Message::from_vec(&buf[..n]).unwrap();
        let mut reply = Message::new();
        reply
            .set_id(query.id())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .add_query(query.queries()[0].clone())
            .add_answer(hickory_proto::rr::Record::from_rdata(
                query.queries()[0].name().clone(),
                30,
                RData::A(hickory_proto::rr::rdata::A(answer)),
            ));
        socket.send_to(&reply.to_vec().unwrap(), from).unwrap();
    });
    (port, thread)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_outside_its_domains_go_to_the_upstream_resolvers_in_turn() {
    let dir = std::env::temp_dir().join(format!("drover-dns-up-{}", std::process::id()));
    let env = drover_core::env::live::env("dns", &dir, Some(1));
    let socket = env.bind_udp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let port = socket.local_addr().unwrap().port();
    // The first upstream never answers (nothing listens there); the second does.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let (answering, thread) = upstream(Ipv4Addr::new(192, 0, 2, 7));
    let upstreams = vec![
        std::net::SocketAddr::from(([127, 0, 0, 1], silent_port)),
        std::net::SocketAddr::from(([127, 0, 0, 1], answering)),
    ];
    let (_set, current) = tokio::sync::watch::channel(zone(&["10.32.0.2"]));
    let server = tokio::spawn(drover_dns::serve(env, socket, current, upstreams));
    let reply = tokio::task::spawn_blocking(move || ask(port, "example.org."))
        .await
        .unwrap();
    assert_eq!(reply.id(), 7);
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert_eq!(addresses(&reply), vec![Ipv4Addr::new(192, 0, 2, 7)]);
    // Its own names it still answers itself.
    let reply = tokio::task::spawn_blocking(move || ask(port, "ubuntu1."))
        .await
        .unwrap();
    assert_eq!(addresses(&reply), vec![Ipv4Addr::new(10, 32, 0, 2)]);
    thread.join().unwrap();
    drop(silent);
    server.abort();
    let _ = std::fs::remove_dir_all(dir);
}
