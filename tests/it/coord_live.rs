//! drover coord as live processes on loopback: real ZooKeeper clients against it, a full stop and
//! restart of the ensemble, bad packets.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use drover_coord::client::{Client, ClientConfig, CreateMode, State};
use drover_coord::proto::ErrorCode;

use crate::scratch;
use crate::wire_zk::{free_port, missing_tools, run_kazoo_check, run_zkcli_check};

/// `drover coord` servers on loopback ports, killed when dropped.
pub struct DroverCoord {
    dir: PathBuf,
    /// (client port, peer port) of each server.
    ports: Vec<(u16, u16)>,
    children: Vec<Option<Child>>,
    /// More arguments for each server.
    extra: Vec<Vec<String>>,
}

impl DroverCoord {
    pub fn start(name: &str, servers: usize) -> DroverCoord {
        let dir = scratch(&format!("coord-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        let ports = (0..servers).map(|_| (free_port(), free_port())).collect();
        let mut coord = DroverCoord {
            dir,
            ports,
            children: (0..servers).map(|_| None).collect(),
            extra: vec![Vec::new(); servers],
        };
        coord.start_all();
        coord
    }

    /// `start`, with more arguments for each server.
    pub fn start_with(name: &str, extra: Vec<Vec<String>>) -> DroverCoord {
        let dir = scratch(&format!("coord-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        let servers = extra.len();
        let mut coord = DroverCoord {
            dir,
            ports: (0..servers).map(|_| (free_port(), free_port())).collect(),
            children: (0..servers).map(|_| None).collect(),
            extra,
        };
        coord.start_all();
        coord
    }

    fn start_all(&mut self) {
        let peers: Vec<String> = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("{}=127.0.0.1:{peer}", i + 1))
            .collect();
        for i in 0..self.ports.len() {
            let work = self.dir.join(format!("server-{}", i + 1));
            std::fs::create_dir_all(&work).expect("create a work dir");
            let log = File::create(work.join("log")).expect("create a log file");
            let mut command = Command::new(env!("CARGO_BIN_EXE_drover"));
            command
                .args([
                    "coord",
                    "--id",
                    &(i + 1).to_string(),
                    "--client-port",
                    &self.ports[i].0.to_string(),
                    "--work-dir",
                ])
                .arg(&work);
            if self.ports.len() > 1 {
                command.args(["--peers", &peers.join(",")]);
            }
            command.args(&self.extra[i]);
            command
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .process_group(0);
            self.children[i] = Some(command.spawn().expect("start drover coord"));
        }
        for (client, _) in &self.ports {
            let serving = (0..300).any(|_| {
                let up = TcpStream::connect(("127.0.0.1", *client)).is_ok();
                if !up {
                    std::thread::sleep(Duration::from_millis(100));
                }
                up
            });
            assert!(
                serving,
                "drover coord on port {client} did not start; see {}",
                self.dir.display()
            );
        }
    }

    /// kill -9 of every server.
    pub fn kill_all(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart_all(&mut self) {
        self.kill_all();
        self.start_all();
    }

    pub fn hosts(&self) -> String {
        self.ports
            .iter()
            .map(|(client, _)| format!("127.0.0.1:{client}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for DroverCoord {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn client(hosts: &str) -> Client {
    let env = drover_core::env::live::env("test-client", scratch("coord-client"), Some(1));
    Client::start(env, ClientConfig::from_hosts(hosts).expect("hosts"))
}

/// Retries while the ensemble has no leader yet.
async fn until_served<T, F: std::future::Future<Output = Result<T, ErrorCode>>>(
    mut call: impl FnMut() -> F,
) -> Result<T, ErrorCode> {
    let mut last = Err(ErrorCode::ConnectionLoss);
    for _ in 0..150 {
        last = call().await;
        if !matches!(last, Err(ErrorCode::ConnectionLoss)) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

#[test]
fn kazoo_script_passes_against_a_drover_coord_ensemble() -> Result<(), String> {
    let missing = missing_tools(true, false);
    if !missing.is_empty() {
        return crate::wire_zk::skip_or_fail(
            "kazoo_script_passes_against_a_drover_coord_ensemble",
            &missing,
        );
    }
    let coord = DroverCoord::start("kazoo", 3);
    run_kazoo_check(&coord.hosts())
}

#[test]
fn zkcli_reads_back_a_node_on_drover_coord() -> Result<(), String> {
    let missing = missing_tools(false, true);
    if !missing.is_empty() {
        return crate::wire_zk::skip_or_fail("zkcli_reads_back_a_node_on_drover_coord", &missing);
    }
    let coord = DroverCoord::start("zkcli", 1);
    run_zkcli_check(&coord.hosts())
}

#[tokio::test]
async fn a_committed_node_survives_a_full_stop_and_restart() {
    let mut coord = DroverCoord::start("restart", 3);
    let zk = client(&coord.hosts());
    let created = until_served(|| zk.create("/durable", b"kept", CreateMode::Persistent)).await;
    assert_eq!(created, Ok("/durable".to_string()));
    let stat = zk.set_data("/durable", b"kept-2", 0).await.expect("set");
    zk.close().await;
    coord.restart_all();
    let zk = client(&coord.hosts());
    let (data, after) = until_served(|| zk.get_data("/durable"))
        .await
        .expect("read back after the restart");
    assert_eq!(
        (data.as_slice(), after.version, after.mzxid),
        (&b"kept-2"[..], 1, stat.mzxid)
    );
    zk.close().await;
}

#[test]
fn bad_packets_close_one_connection_and_the_server_keeps_serving() {
    let coord = DroverCoord::start("bad-input", 1);
    let port = coord.ports[0].0;
    let garbage: [&[u8]; 3] = [
        &[0x7f, 0xff, 0xff, 0xff], // a length far over the limit
        &[0, 0, 0, 8, 1, 2, 3],    // a connect request cut short, then EOF
        &[0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0], // a connect request that is too short
    ];
    for bytes in garbage {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(bytes).unwrap();
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        // The server answers nothing and closes: read_to_end ends (with 0 bytes or a reset).
        let _ = stream.read_to_end(&mut rest);
        assert!(rest.is_empty(), "the server answered garbage with {rest:?}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let zk = client(&coord.hosts());
        let created =
            until_served(|| zk.create("/still-serving", b"", CreateMode::Ephemeral)).await;
        assert_eq!(created, Ok("/still-serving".to_string()));
        zk.close().await;
    });
}

#[tokio::test]
async fn election_and_membership_recipes_hand_over_leadership() {
    use drover_coord::recipes::{self, Candidacy, Standing};
    let coord = DroverCoord::start("recipes", 1);
    let first = client(&coord.hosts());
    until_served(|| first.ensure_path("/election"))
        .await
        .expect("ensure the election path");
    let second = client(&coord.hosts());
    let a = Candidacy::enter(&first, "/election", br#"{"id":"a"}"#)
        .await
        .expect("a enters");
    let b = Candidacy::enter(&second, "/election", br#"{"id":"b"}"#)
        .await
        .expect("b enters");
    assert!(a.path.starts_with("/election/json.info_"), "{}", a.path);
    assert!(matches!(a.standing(&first).await, Ok(Standing::Leader)));
    let Ok(Standing::Waiting {
        leader,
        predecessor_gone,
    }) = b.standing(&second).await
    else {
        panic!("b should wait behind a");
    };
    assert_eq!(leader, a.path);
    let members = recipes::members(&second, "/election")
        .await
        .expect("members");
    let data: Vec<&[u8]> = members.iter().map(|(_, d)| d.as_slice()).collect();
    assert_eq!(data, vec![&br#"{"id":"a"}"#[..], &br#"{"id":"b"}"#[..]]);
    // The leader's session ends: its node goes, the watch fires, b leads.
    first.close().await;
    let fired = tokio::time::timeout(Duration::from_secs(10), predecessor_gone)
        .await
        .expect("the watch fires")
        .expect("event");
    assert_eq!(fired.path, a.path);
    assert!(matches!(b.standing(&second).await, Ok(Standing::Leader)));
    let leader = recipes::leader(&second, "/election")
        .await
        .expect("leader")
        .expect("someone leads");
    assert_eq!(leader.1, br#"{"id":"b"}"#.to_vec());
    second.close().await;
}

/// The `Mode:` a server reports to the four-letter word `srvr`.
fn mode_of(port: u16) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(b"srvr");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn pipelined_writes_to_a_follower_are_all_answered() {
    let coord = DroverCoord::start("pipeline", 3);
    let probe = client(&coord.hosts());
    until_served(|| probe.ensure_path("/pipeline"))
        .await
        .expect("the ensemble serves");
    probe.close().await;
    let follower = coord
        .ports
        .iter()
        .map(|(client, _)| *client)
        .find(|p| mode_of(*p) == "follower")
        .expect("a follower");
    let zk = client(&format!("127.0.0.1:{follower}"));
    let writes: Vec<_> = (0..200)
        .map(|_| {
            let zk = zk.clone();
            drover_core::env::spawn(async move {
                zk.create("/pipeline/n-", b"x", CreateMode::PersistentSequential)
                    .await
            })
        })
        .collect();
    let mut created = Vec::new();
    for write in writes {
        created.push(write.await.expect("task").expect("create answered"));
    }
    created.sort();
    created.dedup();
    assert_eq!(created.len(), 200);
    assert_eq!(mode_of(follower), "follower", "the follower still serves");
    zk.close().await;
}

#[tokio::test]
async fn a_server_without_the_peer_secret_cannot_join_the_ensemble() {
    let dir = scratch("peer-secrets");
    std::fs::create_dir_all(&dir).expect("scratch");
    let (right, wrong) = (dir.join("right"), dir.join("wrong"));
    std::fs::write(&right, "the ensemble's secret\n").expect("secret");
    std::fs::write(&wrong, "a guess\n").expect("secret");
    let with = |file: &PathBuf| vec!["--peer-secret-file".to_string(), file.display().to_string()];
    let mut coord = DroverCoord::start_with(
        "peer-secret",
        vec![with(&right), with(&right), with(&wrong)],
    );
    let ports: Vec<u16> = coord.ports.iter().map(|(client, _)| *client).collect();
    let port = |i: usize| ports[i];
    // Servers 1 and 2 elect a leader between them and serve a write.
    let two = client(&format!("127.0.0.1:{},127.0.0.1:{}", port(0), port(1)));
    until_served(|| two.create("/secret-check", b"v", CreateMode::Persistent))
        .await
        .expect("servers 1 and 2 serve");
    // Server 3, whose answers to their challenges are wrong, hears nothing from them: it never
    // learns of a leader (its own messages are dropped too) and serves no client.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let modes: Vec<String> = (0..3).map(|i| mode_of(port(i))).collect();
    assert!(
        modes[..2].contains(&"leader".to_string())
            && modes[2] != "follower"
            && modes[2] != "leader",
        "modes {modes:?}"
    );
    let third = client(&format!("127.0.0.1:{}", port(2)));
    let read = tokio::time::timeout(Duration::from_secs(5), third.get_data("/secret-check")).await;
    // (Not closed: a client that never connected has no session to close.)
    assert!(!matches!(read, Ok(Ok(_))), "server 3 answered: {read:?}");
    drop(third);
    let log = std::fs::read_to_string(coord.dir.join("server-1/log")).unwrap_or_default();
    assert!(
        log.contains("did not prove the peer secret"),
        "server 1 logged no refused peer:\n{log}"
    );
    // With the right secret, server 3 joins and serves what the others wrote.
    coord.extra[2] = with(&right);
    coord.restart_all();
    let all = client(&format!("127.0.0.1:{}", port(2)));
    let (data, _) = until_served(|| all.get_data("/secret-check"))
        .await
        .expect("server 3 serves after a restart with the right secret");
    assert_eq!(data, b"v");
    all.close().await;
    two.close().await;
}

#[tokio::test]
async fn a_client_whose_auth_scheme_is_refused_gives_up_with_auth_failed() {
    let coord = DroverCoord::start("authfailed", 1);
    let probe = client(&coord.hosts());
    until_served(|| probe.ensure_path("/authfailed"))
        .await
        .expect("the server serves");
    probe.close().await;
    let mut config = ClientConfig::from_hosts(&coord.hosts()).expect("hosts");
    config.auth = vec![("kerberos".into(), b"nobody".to_vec())];
    let env = drover_core::env::live::env("authfailed", scratch("coord-authfailed"), Some(1));
    let refused = Client::start(env, config);
    // ZooKeeper's AUTH_FAILED: the server closes the connection, and the client stops for good
    // instead of reconnecting with the same auth data forever.
    let mut state = refused.watch_state();
    let end = tokio::time::timeout(Duration::from_secs(20), state.wait_for(|s| s.is_final()))
        .await
        .expect("the client gave up within 20 s")
        .map(|s| *s)
        .expect("state");
    assert_eq!(end, State::AuthFailed);
    assert_eq!(
        refused.get_data("/authfailed").await.unwrap_err(),
        ErrorCode::AuthFailed
    );
    // The server still serves others.
    let other = client(&coord.hosts());
    until_served(|| other.exists("/authfailed"))
        .await
        .expect("served");
    other.close().await;
}

#[tokio::test]
async fn one_address_holds_at_most_max_client_cnxns_connections() {
    let coord = DroverCoord::start_with(
        "maxcnxns",
        vec![vec!["--max-client-cnxns".to_string(), "2".to_string()]],
    );
    let first = client(&coord.hosts());
    until_served(|| first.ensure_path("/cnxns"))
        .await
        .expect("the server serves");
    let second = client(&coord.hosts());
    second.wait_connected().await.expect("a second connection");
    // A third from 127.0.0.1 is closed at once, again and again, as ZooKeeper does.
    let third = client(&coord.hosts());
    let waited = tokio::time::timeout(Duration::from_secs(3), third.wait_connected()).await;
    assert!(waited.is_err(), "a third connection was served: {waited:?}");
    // When one goes, the third gets in.
    first.close().await;
    tokio::time::timeout(Duration::from_secs(20), third.wait_connected())
        .await
        .expect("the third connected once the first had gone")
        .expect("connected");
    assert!(third.exists("/cnxns").await.expect("served").is_some());
    second.close().await;
    third.close().await;
}
