//! The Docker containerizer against the real engine on this machine, with an image built here
//! (no registry is reachable): Debian's static busybox imported with `docker import`.

use std::time::Duration;

use drover_agent::containerizer::live::docker::{DockerContainerizer, DockerLaunch, Network};
use drover_core::task::TaskState;

const REQUIRE_ENV: &str = "DROVER_REQUIRE_WIRE_TESTS";

const IMAGE: &str = "drover-test-busybox:1";

fn ensure_image() -> Result<(), String> {
    drover_agent::containerizer::live::docker::import_busybox_image(IMAGE)
}

fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

#[tokio::test]
async fn docker_tasks_run_fail_and_are_killed_and_found_again() {
    // A network of the test's own: BRIDGE tasks join it (it is made at the first launch).
    let network = format!("drover-test-agent-{}", std::process::id());
    let containerizer = match DockerContainerizer::connect("test-agent-docker").await {
        Ok(c) => c.on_network(&network),
        Err(e) if !required() => return println!("skipped: {e}"),
        Err(e) => panic!("{e}"),
    };
    if let Err(e) = ensure_image() {
        assert!(!required(), "{e}");
        return println!("skipped: {e}");
    }
    for found in containerizer.ours().await.unwrap() {
        let _ = containerizer.remove(&found.container).await;
    }
    let env = [("GREETING".to_string(), "hello".to_string())];
    let launch = |task_id, command| DockerLaunch {
        task_id,
        image: IMAGE,
        command: Some(command),
        environment: &env,
        hostname: None,
        network: Network::Bridge,
        ports: &[],
        parameters: &[],
        cpus: 0.1,
        mem_mb: 32.0,
    };
    let failing = containerizer
        .launch(launch("fails", "echo $GREETING; exit 3"))
        .await
        .unwrap();
    let exit = containerizer.wait(&failing).await;
    assert_eq!(
        (exit.state, exit.message.as_str()),
        (TaskState::TaskFailed, "Container exited with status 3")
    );

    let params = [("hostname".to_string(), "ubuntu1.weave.local".to_string())];
    let named = DockerLaunch {
        parameters: &params,
        ..launch("named", "test \"$(hostname)\" = ubuntu1.weave.local")
    };
    let named = containerizer.launch(named).await.unwrap();
    assert_eq!(
        containerizer.wait(&named).await.state,
        TaskState::TaskFinished
    );

    let sleeping = containerizer
        .launch(launch("sleeps", "sleep 300"))
        .await
        .unwrap();
    assert!(containerizer.network_exists().await);
    // A BRIDGE container has an address of its own on the network: what ipAddresses reports.
    let addresses = containerizer.addresses(&sleeping).await;
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    assert!(
        addresses[0].parse::<std::net::Ipv4Addr>().is_ok(),
        "{addresses:?}"
    );
    let found = containerizer.ours().await.unwrap();
    let tasks: Vec<(&str, bool)> = found
        .iter()
        .map(|f| (f.task_id.as_str(), f.running))
        .collect();
    assert_eq!(
        tasks,
        vec![("fails", false), ("named", false), ("sleeps", true)]
    );
    assert_eq!(
        containerizer
            .kill(&sleeping, Duration::from_secs(1))
            .await
            .state,
        TaskState::TaskKilled
    );

    let bad = DockerLaunch {
        parameters: &[("privileged".to_string(), "true".to_string())],
        ..launch("bad", "true")
    };
    assert!(containerizer
        .launch(bad)
        .await
        .unwrap_err()
        .contains("\"privileged\" is not supported"));
    let missing = DockerLaunch {
        image: "drover-no-such-image:0",
        ..launch("missing", "true")
    };
    assert!(containerizer
        .launch(missing)
        .await
        .unwrap_err()
        .contains("could not be pulled"));
    for found in containerizer.ours().await.unwrap() {
        containerizer.remove(&found.container).await.unwrap();
    }
    assert!(containerizer.ours().await.unwrap().is_empty());
    containerizer.remove_network().await;
    assert!(!containerizer.network_exists().await);
}
