//! The web UIs in a real browser: Debian's chromium, driven through chromedriver (WebDriver) by
//! fantoccini, against `drover up` running the seed's `apps/basic.json` in Docker containers.
//! The Marathon-like UI shows both apps running 2 of 2 and scales one to 3 (and `/v2/apps` says
//! 3), then kills one of the other app's tasks and scales it down with it; the Mesos-like UI
//! lists the four running tasks over od1000-0 and od1000-1 and opens a task's
//! stdout through the master; the HTML report of a failing scenario shows its failure marker.
//! Screenshots are kept under `target/ui-screenshots/`. Skipped with a message where chromium,
//! chromedriver or Docker is missing, unless `DROVER_REQUIRE_WIRE_TESTS` is set (CI).

// A live test: it waits on real processes and sockets.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::mesos_live::wait_until;
use crate::root;
use crate::scheduler_live::{seed_groups, SeedImage, Up};
use crate::wire_zk::{free_port, fresh_scratch, skip_or_fail};

const TEST: &str = "the web UIs in chromium";
/// How long the browser may take to show something.
const SHOW_SECS: u64 = 60;

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn missing_tools() -> Vec<String> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut missing = Vec::new();
    if !works("chromium", &["--version"]) || !works("chromedriver", &["--version"]) {
        missing
            .push("chromium and chromedriver (Debian packages chromium, chromium-driver)".into());
    }
    if !works("docker", &["info"]) {
        missing.push("a running Docker engine".into());
    }
    missing
}

fn start_driver() -> Result<Driver, String> {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start chromedriver: {e}"))?;
    let driver = Driver { child, port };
    let up = wait_until(30, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    if !up {
        return Err("chromedriver did not listen".into());
    }
    Ok(driver)
}

async fn browser(driver: &Driver) -> Result<Client, String> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1300,900"]}),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .map_err(|e| format!("a chromium session through chromedriver: {e}"))
}

fn shots() -> PathBuf {
    let dir = root().join("target").join("ui-screenshots");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

async fn shot(client: &Client, name: &str) {
    if let Ok(png) = client.screenshot().await {
        let _ = std::fs::write(shots().join(format!("{name}.png")), png);
    }
}

/// Waits until `check` (reading the page) is true; the last page text in the error.
async fn until<F, Fut>(client: &Client, what: &str, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..SHOW_SECS * 4 {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let text = match client.find(Locator::Css("main")).await {
        Ok(main) => main.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    Err(format!("the page never showed {what}; it shows:\n{text}"))
}

/// Does `action` until it works (an element re-rendered between finding and using it is stale).
async fn retry<F, Fut>(client: &Client, what: &str, mut action: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), fantoccini::error::CmdError>>,
{
    let mut last = String::new();
    for _ in 0..40 {
        match action().await {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    shot(client, "failure").await;
    Err(format!("could not {what}: {last}"))
}

async fn text_of(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn texts_of(client: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for element in client.find_all(Locator::Css(css)).await.unwrap_or_default() {
        out.push(element.text().await.unwrap_or_default());
    }
    out
}

/// The Marathon-like UI: the seed's apps 2 of 2, then scaled to 3 with the app page's form.
async fn marathon_story(client: &Client, up: &Up) -> Result<(), String> {
    let base = format!("http://127.0.0.1:{}", up.http_port);
    client
        .goto(&format!("{base}/"))
        .await
        .map_err(|e| e.to_string())?;
    for app in ["/arm-demo/group1/ubuntu1", "/arm-demo/group2/ubuntu2"] {
        let css = format!("td span.running[data-app=\"{app}\"]");
        until(client, &format!("{app} running 2 of 2"), || async {
            text_of(client, &css).await == "2 of 2"
        })
        .await?;
    }
    shot(client, "marathon-applications").await;
    client
        .goto(&format!("{base}/ui/#/apps/arm-demo/group2/ubuntu2"))
        .await
        .map_err(|e| e.to_string())?;
    until(client, "the scale form", || async {
        client.find(Locator::Id("scale-to")).await.is_ok()
    })
    .await?;
    // The page re-renders when events arrive: an element found a moment ago may be gone, so
    // each action finds its element again until it succeeds.
    retry(client, "type 3 in the instances field", || async {
        let field = client.find(Locator::Id("scale-to")).await?;
        field.clear().await?;
        field.send_keys("3").await
    })
    .await?;
    retry(client, "click Scale", || async {
        client.find(Locator::Id("scale")).await?.click().await
    })
    .await?;
    let instances = || match up.request("GET", "/v2/apps/arm-demo/group2/ubuntu2", None) {
        Ok((200, body)) => body["app"]["instances"].as_u64(),
        _ => None,
    };
    if !wait_until(SHOW_SECS, || instances() == Some(3)) {
        return Err(format!(
            "/v2/apps says {:?} instances after Scale to 3",
            instances()
        ));
    }
    let css = "span.muted span.running[data-app=\"/arm-demo/group2/ubuntu2\"]";
    until(
        client,
        "ubuntu2 running 3 of 3 (from /v2/events)",
        || async { text_of(client, css).await == "3 of 3" },
    )
    .await?;
    shot(client, "marathon-app-scaled").await;
    // Kill and scale one of ubuntu1's tasks: the app is then 1 instance.
    client
        .goto(&format!("{base}/ui/#/apps/arm-demo/group1/ubuntu1"))
        .await
        .map_err(|e| e.to_string())?;
    retry(client, "select a task and kill and scale", || async {
        client
            .find(Locator::Css("input.pick"))
            .await?
            .click()
            .await?;
        client.find(Locator::Id("kill-scale")).await?.click().await
    })
    .await?;
    let instances = || match up.request("GET", "/v2/apps/arm-demo/group1/ubuntu1", None) {
        Ok((200, body)) => body["app"]["instances"].as_u64(),
        _ => None,
    };
    if !wait_until(SHOW_SECS, || instances() == Some(1)) {
        return Err(format!(
            "/v2/apps says {:?} instances of ubuntu1 after Kill and scale",
            instances()
        ));
    }
    Ok(())
}

/// The Mesos-like UI: every running task, on both agents by host name; a task's stdout opens.
async fn mesos_story(client: &Client, up: &Up) -> Result<(), String> {
    let base = format!("http://127.0.0.1:{}", up.master_port);
    client
        .goto(&format!("{base}/#/tasks"))
        .await
        .map_err(|e| e.to_string())?;
    until(
        client,
        "five running tasks on od1000-0 and od1000-1",
        || async {
            let rows = texts_of(client, "main table tbody tr").await;
            let running: Vec<&String> = rows.iter().filter(|r| r.contains("RUNNING")).collect();
            running.len() >= 5
                && running.iter().any(|r| r.contains("od1000-0"))
                && running.iter().any(|r| r.contains("od1000-1"))
        },
    )
    .await?;
    shot(client, "mesos-tasks").await;
    // A task's sandbox, through the master: its stdout opens.
    retry(client, "open a task's sandbox", || async {
        client
            .find(Locator::LinkText("Sandbox"))
            .await?
            .click()
            .await
    })
    .await?;
    until(client, "the sandbox's stdout", || async {
        client
            .find(Locator::Css("button[data-file$=\"/stdout\"]"))
            .await
            .is_ok()
    })
    .await?;
    retry(client, "open stdout", || async {
        client
            .find(Locator::Css("button[data-file$=\"/stdout\"]"))
            .await?
            .click()
            .await
    })
    .await?;
    until(client, "stdout's contents", || async {
        client.find(Locator::Id("file-data")).await.is_ok()
    })
    .await?;
    let error = text_of(client, "div.error").await;
    if !error.is_empty() {
        return Err(format!("the sandbox shows an error: {error}"));
    }
    shot(client, "mesos-sandbox-stdout").await;
    Ok(())
}

/// A failing scenario's report: the failure marker is on the page, with its replay command.
async fn report_story(client: &Client) -> Result<(), String> {
    let dir = fresh_scratch("ui-report");
    let file = dir.join("broken.html");
    let scenario = root().join("tests/live/broken-coord-leader-crash-forbids-a-new-leader.json");
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("sim")
        .arg(&scenario)
        .arg("--report")
        .arg(&file)
        .output()
        .map_err(|e| e.to_string())?;
    if !file.exists() {
        return Err(format!(
            "drover sim --report wrote nothing: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    let result = async {
        client
            .goto(&format!("file://{}", file.display()))
            .await
            .map_err(|e| e.to_string())?;
        until(client, "the failure marker", || async {
            let markers = texts_of(client, ".failure-marker").await;
            markers.iter().any(|m| m.contains("drover sim"))
        })
        .await?;
        shot(client, "report-failure").await;
        Ok::<(), String>(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[test]
fn the_uis_show_the_seed_and_act_on_it_in_a_real_browser() -> Result<(), String> {
    let missing = missing_tools();
    if !missing.is_empty() {
        return skip_or_fail(TEST, &missing);
    }
    let image = match SeedImage::ensure() {
        Ok(image) => image,
        Err(e) => return skip_or_fail(TEST, &[e]),
    };
    let driver = start_driver()?;
    let up = Up::start("ui", true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let story = runtime.block_on(async {
        let (status, answer) = up.request("POST", "/v2/groups", Some(&seed_groups()))?;
        if status != 201 {
            return Err(format!("POST /v2/groups: {status} {answer}"));
        }
        up.wait_running(&[
            ("/arm-demo/group1/ubuntu1", 2),
            ("/arm-demo/group2/ubuntu2", 2),
        ])?;
        let client = browser(&driver).await?;
        let result = async {
            marathon_story(&client, &up).await?;
            mesos_story(&client, &up).await?;
            report_story(&client).await
        }
        .await;
        if result.is_err() {
            shot(&client, "failure").await;
        }
        let _ = client.close().await;
        result
    });
    let stopped = up.stop_and_check(true);
    drop(driver);
    drop(image);
    story?;
    stopped
}
