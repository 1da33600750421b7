//! Marathon-level health checks: the probe (HTTP or TCP from the scheduler, through the Env) and
//! a pure per-task tracker with Marathon's rules.
//!
//! - [`probe`] runs one check against one task: `HTTP`/`HTTPS` send `GET path` and count a status
//!   in `200..=399` as healthy (Marathon's rule); `HTTPS` is probed as plain HTTP (drover has no
//!   TLS client). `TCP` is healthy when a connection opens. `COMMAND` and the `MESOS_*` protocols
//!   are not probed by the scheduler: Mesos runs them on the agent and reports the outcome in the
//!   `healthy` field of the task's status updates.
//! - [`HealthState`] is one (task, check) pair's record, with no I/O and no clock: the caller
//!   passes `now_ms` (monotonic or wall milliseconds, as long as it is the same clock as the
//!   task's start) and the probe's outcome, and gets a [`Verdict`] back.
//!
//! Marathon's rules, as `HealthCheckActor` applies them:
//!
//! - a failure is ignored (the record is left as it was) while the task has never passed the check
//!   and is still inside `gracePeriodSeconds` from its start;
//! - otherwise a failure counts; when `maxConsecutiveFailures` failures had already been counted
//!   in a row before this one (the task "fails more than `maxConsecutiveFailures` checks
//!   consecutively"), the verdict is [`Verdict::Kill`]. `0` never kills;
//! - a success resets the count; `alive` means the last success is later than the last failure;
//! - the first probe of a task runs `min(intervalSeconds, 5 s)` after its start (Marathon starts
//!   checking "not after the default first health check", 5 s), then one every `intervalSeconds`.

use std::time::Duration;

use bytes::Bytes;
use drover_core::Env;
use serde_json::{json, Value};

use crate::app::{HealthCheck, HealthProtocol};

/// Marathon's `HealthCheck.DefaultFirstHealthCheckAfter`: the first check runs no later than this.
pub const FIRST_CHECK_AFTER_MS: u64 = 5_000;

/// Runs `check` once against a task on `host` whose host ports are `ports`.
///
/// `Ok(())` is a pass; `Err` carries the failure's cause (Marathon's `lastFailureCause`).
pub async fn probe(
    env: &Env,
    check: &HealthCheck,
    host: &str,
    ports: &[u32],
) -> Result<(), String> {
    let timeout = Duration::from_secs(u64::from(check.timeout_seconds.max(1)));
    match check.protocol {
        HealthProtocol::Http | HealthProtocol::Https => {
            let port = check_port(check, ports)?;
            let path = http_path(check.path.as_deref());
            let request = http::Request::get(path.as_str())
                .header(http::header::USER_AGENT, "drover-health-check")
                .body(Bytes::new())
                .map_err(|e| format!("bad health check path {path:?}: {e}"))?;
            let response = drover_core::http::request(env, host, port, request, timeout)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            if (200..=399).contains(&status) {
                Ok(())
            } else {
                Err(format!("HTTP {status} from {host}:{port}{path}"))
            }
        }
        HealthProtocol::Tcp => {
            let port = check_port(check, ports)?;
            env.connect(host, port, timeout)
                .await
                .map(drop)
                .map_err(|e| format!("TCP connection to {host}:{port} failed: {e}"))
        }
        HealthProtocol::Command
        | HealthProtocol::MesosHttp
        | HealthProtocol::MesosHttps
        | HealthProtocol::MesosTcp => Err(format!(
            "{} health checks run on the agent (Mesos), not in the scheduler",
            check.protocol.as_str()
        )),
    }
}

/// The port a Marathon-level check probes: `port`, or the task's host port at `portIndex`.
fn check_port(check: &HealthCheck, ports: &[u32]) -> Result<u16, String> {
    let port = match (check.port, check.port_index) {
        (Some(port), _) => port,
        (None, index) => {
            let index = index.unwrap_or(0);
            *ports.get(index as usize).ok_or_else(|| {
                format!(
                    "portIndex {index} is out of range: the task has {} port(s)",
                    ports.len()
                )
            })?
        }
    };
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("invalid health check port {port}"))
}

fn http_path(path: Option<&str>) -> String {
    match path {
        None | Some("") => "/".to_string(),
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{p}"),
    }
}

/// What a probe's outcome means for the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The check passed.
    Healthy,
    /// The check failed (or a failure was ignored inside the grace period).
    Unhealthy,
    /// The check failed more than `maxConsecutiveFailures` times in a row: kill the task.
    Kill,
}

/// One task's record for one of its app's health checks (Marathon's `Health`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthState {
    pub task_id: String,
    /// Index of the check in the app's `healthChecks`.
    pub check_index: usize,
    /// When the task started (became RUNNING), in the caller's clock.
    pub started_ms: u64,
    pub grace_period_ms: u64,
    pub interval_ms: u64,
    pub max_consecutive_failures: u32,
    pub consecutive_failures: u32,
    pub first_success: Option<u64>,
    pub last_success: Option<u64>,
    pub last_failure: Option<u64>,
    pub last_failure_cause: Option<String>,
    /// Whether a probe result has been recorded (an ignored failure counts: Marathon keeps a
    /// not-alive record for it).
    pub answered: bool,
    next_probe_ms: u64,
    in_flight: bool,
}

impl HealthState {
    /// The record of `check` (the app's check number `check_index`) for a task started at
    /// `started_ms`.
    pub fn new(task_id: &str, check_index: usize, check: &HealthCheck, started_ms: u64) -> Self {
        let interval_ms = u64::from(check.interval_seconds) * 1000;
        HealthState {
            task_id: task_id.to_string(),
            check_index,
            started_ms,
            grace_period_ms: u64::from(check.grace_period_seconds) * 1000,
            interval_ms,
            max_consecutive_failures: check.max_consecutive_failures,
            consecutive_failures: 0,
            first_success: None,
            last_success: None,
            last_failure: None,
            last_failure_cause: None,
            answered: false,
            next_probe_ms: started_ms.saturating_add(interval_ms.min(FIRST_CHECK_AFTER_MS)),
            in_flight: false,
        }
    }

    /// Whether the next probe is due at `now_ms` (and none is in flight).
    pub fn due(&self, now_ms: u64) -> bool {
        !self.in_flight && now_ms >= self.next_probe_ms
    }

    /// When the next probe is due (for the caller's timer).
    pub fn next_probe_ms(&self) -> u64 {
        self.next_probe_ms
    }

    /// Notes that a probe starts at `now_ms`: [`due`](Self::due) is false until its result is
    /// recorded, and the probe after it is due one interval after this start (Marathon ticks at
    /// a fixed rate). Calling it is optional; without it the next probe is due one interval after
    /// the result.
    pub fn begin(&mut self, now_ms: u64) {
        self.in_flight = true;
        self.next_probe_ms = now_ms.saturating_add(self.interval_ms.max(1));
    }

    /// Records a probe's outcome at `now_ms` and says what it means.
    pub fn record(&mut self, now_ms: u64, result: Result<(), String>) -> Verdict {
        if !std::mem::take(&mut self.in_flight) {
            self.next_probe_ms = now_ms.saturating_add(self.interval_ms.max(1));
        }
        self.answered = true;
        match result {
            Ok(()) => {
                self.first_success.get_or_insert(now_ms);
                self.last_success = Some(now_ms);
                self.consecutive_failures = 0;
                Verdict::Healthy
            }
            Err(cause) => {
                let in_grace = self.first_success.is_none()
                    && now_ms < self.started_ms.saturating_add(self.grace_period_ms);
                if in_grace {
                    return Verdict::Unhealthy;
                }
                let kill = self.max_consecutive_failures > 0
                    && self.consecutive_failures >= self.max_consecutive_failures;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last_failure = Some(now_ms);
                self.last_failure_cause = Some(cause);
                if kill {
                    Verdict::Kill
                } else {
                    Verdict::Unhealthy
                }
            }
        }
    }

    /// Marathon's `alive`: a success, and no failure since.
    pub fn alive(&self) -> bool {
        match (self.last_success, self.last_failure) {
            (Some(success), Some(failure)) => success > failure,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// One entry of a task's `healthCheckResults`, timestamps through `format_ts` (e.g.
    /// [`crate::app::format_version`] over wall milliseconds).
    pub fn to_json(&self, format_ts: impl Fn(u64) -> String) -> Value {
        let ts = |t: Option<u64>| t.map(&format_ts).map_or(Value::Null, Value::String);
        json!({
            "alive": self.alive(),
            "consecutiveFailures": self.consecutive_failures,
            "firstSuccess": ts(self.first_success),
            "lastFailure": ts(self.last_failure),
            "lastSuccess": ts(self.last_success),
            "lastFailureCause": self.last_failure_cause,
            "instanceId": self.task_id,
            "taskId": self.task_id,
        })
    }
}

/// A task's health over all its checks: `None` while no check has an answer, `Some(true)` when
/// every answered check is alive, `Some(false)` when one is not (Marathon counts a task healthy
/// when its recorded results are non-empty and all alive).
pub fn task_health(states: &[HealthState]) -> Option<bool> {
    let mut answered = states.iter().filter(|s| s.answered).peekable();
    answered.peek()?;
    Some(answered.all(HealthState::alive))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(protocol: HealthProtocol) -> HealthCheck {
        HealthCheck {
            protocol,
            path: Some("/".into()),
            port_index: Some(0),
            port: None,
            command: None,
            grace_period_seconds: 10,
            interval_seconds: 2,
            timeout_seconds: 1,
            max_consecutive_failures: 3,
            delay_seconds: 15,
            ignore_http1xx: false,
        }
    }

    fn fail() -> Result<(), String> {
        Err("boom".into())
    }

    #[test]
    fn schedule_first_probe_then_every_interval() {
        let mut hc = check(HealthProtocol::Http);
        hc.interval_seconds = 60;
        let mut s = HealthState::new("t1", 0, &hc, 1_000);
        assert!(!s.due(5_999));
        assert!(s.due(6_000)); // min(60 s, 5 s) after the start
        s.begin(6_000);
        assert!(!s.due(100_000), "a probe in flight is not due again");
        s.record(6_200, Ok(()));
        assert!(!s.due(65_999));
        assert!(s.due(66_000));
        // Without begin(), the next probe is an interval after the result.
        s.record(66_500, Ok(()));
        assert_eq!(s.next_probe_ms(), 126_500);
    }

    #[test]
    fn failures_in_grace_period_are_ignored_until_first_success() {
        let hc = check(HealthProtocol::Http);
        let mut s = HealthState::new("t1", 0, &hc, 0);
        for t in [2_000, 4_000, 6_000, 8_000] {
            assert_eq!(s.record(t, fail()), Verdict::Unhealthy);
        }
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(s.last_failure, None);
        assert!(s.answered && !s.alive());
        assert_eq!(task_health(std::slice::from_ref(&s)), Some(false));
        // The first success ends the grace period early.
        assert_eq!(s.record(9_000, Ok(())), Verdict::Healthy);
        assert_eq!(s.first_success, Some(9_000));
        assert!(s.alive());
        assert_eq!(s.record(9_500, fail()), Verdict::Unhealthy);
        assert_eq!(s.consecutive_failures, 1);
        assert_eq!(s.last_failure, Some(9_500));
        assert!(!s.alive());
    }

    #[test]
    fn failures_after_grace_count_and_kill_past_the_maximum() {
        let hc = check(HealthProtocol::Tcp); // grace 10 s, max 3
        let mut s = HealthState::new("t1", 0, &hc, 0);
        assert_eq!(s.record(10_000, fail()), Verdict::Unhealthy);
        assert_eq!(s.record(12_000, fail()), Verdict::Unhealthy);
        assert_eq!(s.record(14_000, fail()), Verdict::Unhealthy);
        assert_eq!(s.consecutive_failures, 3);
        // "fails more than maxConsecutiveFailures health checks consecutively"
        assert_eq!(s.record(16_000, fail()), Verdict::Kill);
        assert_eq!(s.consecutive_failures, 4);
        assert_eq!(s.last_failure_cause.as_deref(), Some("boom"));
    }

    #[test]
    fn a_success_resets_the_count() {
        let hc = check(HealthProtocol::Http);
        let mut s = HealthState::new("t1", 0, &hc, 0);
        for t in [20_000, 22_000, 24_000] {
            assert_eq!(s.record(t, fail()), Verdict::Unhealthy);
        }
        assert_eq!(s.record(26_000, Ok(())), Verdict::Healthy);
        assert_eq!(s.consecutive_failures, 0);
        for t in [28_000, 30_000, 32_000] {
            assert_eq!(s.record(t, fail()), Verdict::Unhealthy);
        }
        assert_eq!(s.record(34_000, fail()), Verdict::Kill);
    }

    #[test]
    fn zero_max_failures_never_kills() {
        let mut hc = check(HealthProtocol::Http);
        hc.max_consecutive_failures = 0;
        hc.grace_period_seconds = 0;
        let mut s = HealthState::new("t1", 0, &hc, 0);
        for i in 0..100 {
            assert_eq!(s.record(i * 1000, fail()), Verdict::Unhealthy);
        }
        assert_eq!(s.consecutive_failures, 100);
    }

    #[test]
    fn json_has_marathons_keys() {
        let hc = check(HealthProtocol::Http);
        let mut s = HealthState::new("app.1", 0, &hc, 0);
        let fmt = |ms: u64| format!("t{ms}");
        let fresh = s.to_json(fmt);
        assert_eq!(
            fresh,
            json!({"alive": false, "consecutiveFailures": 0, "firstSuccess": null,
                   "lastFailure": null, "lastSuccess": null, "lastFailureCause": null,
                   "instanceId": "app.1", "taskId": "app.1"})
        );
        s.record(1_000, Ok(()));
        s.record(20_000, Err("HTTP 500".into()));
        assert_eq!(
            s.to_json(fmt),
            json!({"alive": false, "consecutiveFailures": 1, "firstSuccess": "t1000",
                   "lastFailure": "t20000", "lastSuccess": "t1000",
                   "lastFailureCause": "HTTP 500", "instanceId": "app.1", "taskId": "app.1"})
        );
        s.record(22_000, Ok(()));
        let v = s.to_json(crate::app::format_version);
        assert_eq!(v["alive"], true);
        assert_eq!(v["lastSuccess"], "1970-01-01T00:00:22.000Z");
    }

    #[test]
    fn task_health_over_checks() {
        let hc = check(HealthProtocol::Http);
        let mut a = HealthState::new("t", 0, &hc, 0);
        let mut b = HealthState::new("t", 1, &hc, 0);
        assert_eq!(task_health(&[]), None);
        assert_eq!(task_health(&[a.clone(), b.clone()]), None);
        a.record(1_000, Ok(()));
        assert_eq!(task_health(&[a.clone(), b.clone()]), Some(true));
        b.record(20_000, fail());
        assert_eq!(task_health(&[a.clone(), b.clone()]), Some(false));
        b.record(22_000, Ok(()));
        assert_eq!(task_health(&[a, b]), Some(true));
    }

    #[test]
    fn port_choice() {
        let mut hc = check(HealthProtocol::Http);
        hc.port_index = Some(1);
        assert_eq!(check_port(&hc, &[31000, 31001]), Ok(31001));
        assert!(check_port(&hc, &[31000]).is_err());
        hc.port_index = None;
        hc.port = Some(8080);
        assert_eq!(check_port(&hc, &[]), Ok(8080));
        hc.port = Some(70_000);
        assert!(check_port(&hc, &[]).is_err());
        assert_eq!(http_path(None), "/");
        assert_eq!(http_path(Some("health")), "/health");
    }

    mod live {
        use super::*;
        use axum::http::StatusCode;
        use axum::routing::get;

        type Server = tokio::task::JoinHandle<std::io::Result<()>>;

        async fn server() -> (u16, tokio::sync::oneshot::Sender<()>, Server, Env) {
            let dir = std::env::temp_dir().join(format!("drover-health-{}", std::process::id()));
            let env = drover_core::env::live::env("test", &dir, Some(1));
            let listener = env.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let router = axum::Router::new()
                .route("/ok", get(|| async { "ok" }))
                .route("/moved", get(|| async { StatusCode::FOUND }))
                .route(
                    "/broken",
                    get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "no") }),
                );
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server =
                drover_core::env::spawn(drover_core::http::serve(listener, router, async {
                    let _ = stopped.await;
                }));
            (port, stop, server, env)
        }

        #[tokio::test]
        async fn http_and_tcp_probes_against_a_live_server() {
            let (port, stop, server, env) = server().await;
            let ports = [u32::from(port)];
            let mut hc = check(HealthProtocol::Http);
            hc.path = Some("/ok".into());
            assert_eq!(probe(&env, &hc, "127.0.0.1", &ports).await, Ok(()));
            hc.path = Some("/moved".into());
            assert_eq!(probe(&env, &hc, "127.0.0.1", &ports).await, Ok(()));
            hc.protocol = HealthProtocol::Https; // probed as HTTP
            assert_eq!(probe(&env, &hc, "127.0.0.1", &ports).await, Ok(()));
            hc.protocol = HealthProtocol::Http;
            hc.path = Some("/broken".into());
            let err = probe(&env, &hc, "127.0.0.1", &ports).await.unwrap_err();
            assert!(err.contains("HTTP 500"), "{err}");
            hc.path = Some("/missing".into());
            let err = probe(&env, &hc, "127.0.0.1", &ports).await.unwrap_err();
            assert!(err.contains("HTTP 404"), "{err}");

            let tcp = check(HealthProtocol::Tcp);
            assert_eq!(probe(&env, &tcp, "127.0.0.1", &ports).await, Ok(()));

            let mut command = check(HealthProtocol::Command);
            command.command = Some("true".into());
            assert!(probe(&env, &command, "127.0.0.1", &ports).await.is_err());

            // Once the server has stopped, its port refuses connections.
            let _ = stop.send(());
            server.await.unwrap().unwrap();
            let err = probe(&env, &tcp, "127.0.0.1", &ports).await.unwrap_err();
            assert!(err.contains("TCP connection"), "{err}");
            hc.path = Some("/ok".into());
            assert!(probe(&env, &hc, "127.0.0.1", &ports).await.is_err());
        }

        #[tokio::test]
        async fn tcp_refused_on_a_closed_port() {
            let dir = std::env::temp_dir().join(format!("drover-health-{}", std::process::id()));
            let env = drover_core::env::live::env("test", &dir, Some(1));
            // Bind then drop: the port is (very likely) closed now.
            let port = {
                let l = env.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
                l.local_addr().unwrap().port()
            };
            let tcp = check(HealthProtocol::Tcp);
            let err = probe(&env, &tcp, "127.0.0.1", &[u32::from(port)])
                .await
                .unwrap_err();
            assert!(err.contains("TCP connection"), "{err}");
        }
    }
}
