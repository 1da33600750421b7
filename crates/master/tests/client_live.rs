//! drover's v1 client against a live master on loopback.

use std::time::Duration;

use drover_core::v1::{CallType, FrameworkInfo};
use drover_master::client::{Driver, DriverEvent, Locator};
use drover_master::core::Tuning;
use drover_master::daemon::{self, Config};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn subscribed(events: &mut tokio::sync::mpsc::Receiver<DriverEvent>) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(DriverEvent::Subscribed { framework_id, .. })) => return framework_id,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the driver stopped"),
            Err(_) => panic!("not subscribed within 30 s"),
        }
    }
}

/// A framework the master removed (here by its own TEARDOWN) is refused with 403 when it comes
/// back under its id; the client then registers anew instead of retrying the old id forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_framework_registers_again_under_a_new_id() {
    let port = free_port();
    let dir =
        std::env::temp_dir().join(format!("drover-client-live-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a work dir");
    let env = drover_core::env::live::env("master", &dir, Some(1));
    let config = Config {
        bind: ([127, 0, 0, 1], port).into(),
        hostname: "127.0.0.1".into(),
        port,
        zk: None,
        tuning: Tuning::default(),
        auth: daemon::Auth::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let master = drover_core::env::spawn(daemon::serve(env, config, async move {
        let _ = stopped.await;
    }));

    let client_env = drover_core::env::live::env("framework", &dir, Some(2));
    let info = FrameworkInfo {
        user: "root".into(),
        name: "removed-and-back".into(),
        failover_timeout: Some(60.0),
        ..FrameworkInfo::default()
    };
    let (driver, mut events) =
        Driver::start(client_env, Locator::Direct("127.0.0.1".into(), port), info);
    let first = subscribed(&mut events).await;
    driver
        .call(Driver::bare(CallType::Teardown))
        .await
        .expect("TEARDOWN is accepted");
    let second = subscribed(&mut events).await;
    assert_ne!(first, second, "registered anew, under a new id");
    assert_eq!(driver.framework_id().as_deref(), Some(second.as_str()));

    let _ = stop.send(());
    let _ = master.await;
    let _ = std::fs::remove_dir_all(&dir);
}
