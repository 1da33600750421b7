//! Mesos health checks, run by the agent for a task whose `TaskInfo` carries `health_check`
//! (Marathon's `COMMAND`, `MESOS_HTTP`, `MESOS_HTTPS` and `MESOS_TCP` checks arrive this way).
//!
//! [`parse`] reads Mesos' `HealthCheck` JSON (`type` COMMAND/HTTP/TCP, `delay_seconds`,
//! `interval_seconds`, `timeout_seconds`, `consecutive_failures`, `grace_period_seconds`, with
//! Mesos' defaults 15/10/20/3/10). [`HealthTracker`] holds Mesos' rules, as plain code (`now_ms`
//! in, what to report out):
//!
//! - a failure while the task has not passed yet and is within the grace period (from the start of
//!   checking) is ignored;
//! - the first success, and the first success after failures, report `healthy: true`;
//! - the first counted failure reports `healthy: false`; when `consecutive_failures` failures are
//!   counted in a row, the report also asks for the task to be killed (`0`: never, as Marathon's
//!   `maxConsecutiveFailures: 0`).
//!
//! The agent turns a report into a TASK_RUNNING update with `healthy` and reason
//! `REASON_TASK_HEALTH_CHECK_STATUS_UPDATED`, and a kill into TASK_KILLED with `healthy: false`.

use std::time::Duration;

use serde_json::Value as Json;

/// What a check runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// `sh -c` next to the task (in its sandbox or container, with its environment).
    Command {
        command: String,
        environment: Vec<(String, String)>,
    },
    /// `GET path` on the agent's host at `port`; 200..=399 passes. HTTPS is probed as HTTP.
    Http { port: u16, path: String },
    /// A TCP connection to the agent's host at `port` opens.
    Tcp { port: u16 },
}

/// A task's health check, as the agent runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckSpec {
    pub kind: CheckKind,
    /// Before the first check.
    pub delay: Duration,
    /// Between the end of a check and the start of the next.
    pub interval: Duration,
    /// A check that takes longer fails.
    pub timeout: Duration,
    /// Failures in a row that kill the task; 0 never kills.
    pub consecutive_failures: u32,
    /// From the start of checking, failures before the first success are ignored.
    pub grace_period: Duration,
}

fn seconds(check: &Json, key: &str, default: f64) -> Result<Duration, String> {
    match check.get(key) {
        None | Some(Json::Null) => Ok(Duration::from_secs_f64(default)),
        Some(value) => value
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                format!("health_check.{key}: expected a non-negative number of seconds")
            }),
    }
}

fn port_of(section: Option<&Json>, what: &str) -> Result<u16, String> {
    section
        .and_then(|s| s.get("port"))
        .and_then(Json::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("health_check.{what}.port: expected a port number"))
}

/// Reads a Mesos `HealthCheck` (the `health_check` of a `TaskInfo`).
pub fn parse(check: &Json) -> Result<HealthCheckSpec, String> {
    if !check.is_object() {
        return Err("health_check: expected an object".into());
    }
    // Before Mesos 1.2 a check had no type: a command check had `command`.
    let kind_name = match check.get("type").and_then(Json::as_str) {
        Some(name) => name,
        None if check.get("command").is_some() => "COMMAND",
        None if check.get("http").is_some() => "HTTP",
        None if check.get("tcp").is_some() => "TCP",
        None => return Err("health_check.type: expected COMMAND, HTTP or TCP".into()),
    };
    let kind = match kind_name {
        "COMMAND" => {
            let command = check.get("command");
            let value = command
                .and_then(|c| c.get("value"))
                .and_then(Json::as_str)
                .filter(|v| !v.trim().is_empty())
                .ok_or("health_check.command.value: expected the command to run")?;
            let shell = command
                .and_then(|c| c.get("shell"))
                .and_then(Json::as_bool)
                .unwrap_or(true);
            let command_line = if shell {
                value.to_string()
            } else {
                let arguments = command
                    .and_then(|c| c.get("arguments"))
                    .and_then(Json::as_array)
                    .map(|a| {
                        a.iter()
                            .skip(1)
                            .filter_map(Json::as_str)
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                let mut words = vec![crate::shell::quote(value)];
                words.extend(arguments.into_iter().map(crate::shell::quote));
                format!("exec {}", words.join(" "))
            };
            let environment = command
                .and_then(|c| c.pointer("/environment/variables"))
                .and_then(Json::as_array)
                .map(|vars| {
                    vars.iter()
                        .filter_map(|v| {
                            let name = v.get("name")?.as_str()?;
                            let value = v.get("value").and_then(Json::as_str).unwrap_or("");
                            Some((name.to_string(), value.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            CheckKind::Command {
                command: command_line,
                environment,
            }
        }
        "HTTP" => {
            let http = check.get("http");
            let path = http
                .and_then(|h| h.get("path"))
                .and_then(Json::as_str)
                .unwrap_or("/");
            let path = if path.starts_with('/') {
                path.to_string()
            } else {
                format!("/{path}")
            };
            CheckKind::Http {
                port: port_of(http, "http")?,
                path,
            }
        }
        "TCP" => CheckKind::Tcp {
            port: port_of(check.get("tcp"), "tcp")?,
        },
        other => {
            return Err(format!(
                "health_check.type: {other:?} is not supported (COMMAND, HTTP or TCP)"
            ))
        }
    };
    let consecutive_failures = match check.get("consecutive_failures") {
        None | Some(Json::Null) => 3,
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or("health_check.consecutive_failures: expected a non-negative integer")?,
    };
    Ok(HealthCheckSpec {
        kind,
        delay: seconds(check, "delay_seconds", 15.0)?,
        interval: seconds(check, "interval_seconds", 10.0)?,
        timeout: seconds(check, "timeout_seconds", 20.0)?,
        consecutive_failures,
        grace_period: seconds(check, "grace_period_seconds", 10.0)?,
    })
}

/// What a check's outcome changes, to be reported in a status update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub healthy: bool,
    /// The task failed too many checks in a row: kill it.
    pub kill: bool,
}

/// One task's health, as Mesos' health checker keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthTracker {
    start_ms: u64,
    grace_ms: u64,
    max_failures: u32,
    /// No success yet.
    initializing: bool,
    consecutive_failures: u32,
}

impl HealthTracker {
    /// Checking of `spec` started at `start_ms`.
    pub fn new(spec: &HealthCheckSpec, start_ms: u64) -> Self {
        HealthTracker {
            start_ms,
            grace_ms: spec.grace_period.as_millis().min(u128::from(u64::MAX)) as u64,
            max_failures: spec.consecutive_failures,
            initializing: true,
            consecutive_failures: 0,
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Records a check's outcome at `now_ms`; `Some` when it is to be reported.
    pub fn record(&mut self, now_ms: u64, passed: bool) -> Option<Report> {
        if passed {
            let report = (self.initializing || self.consecutive_failures > 0).then_some(Report {
                healthy: true,
                kill: false,
            });
            self.initializing = false;
            self.consecutive_failures = 0;
            return report;
        }
        if self.initializing && now_ms.saturating_sub(self.start_ms) <= self.grace_ms {
            return None;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let kill = self.max_failures > 0 && self.consecutive_failures >= self.max_failures;
        (self.consecutive_failures == 1 || kill).then_some(Report {
            healthy: false,
            kill,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_mesos_health_checks_with_defaults() {
        let spec = parse(&json!({"type": "COMMAND", "command": {"value": "true"}})).unwrap();
        assert_eq!(
            spec,
            HealthCheckSpec {
                kind: CheckKind::Command {
                    command: "true".into(),
                    environment: vec![]
                },
                delay: Duration::from_secs(15),
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(20),
                consecutive_failures: 3,
                grace_period: Duration::from_secs(10),
            }
        );
        let spec = parse(
            &json!({"type": "HTTP", "http": {"port": 31000, "path": "health"},
            "delay_seconds": 0, "interval_seconds": 0.5, "timeout_seconds": 1,
            "consecutive_failures": 0, "grace_period_seconds": 2}),
        )
        .unwrap();
        assert_eq!(
            spec.kind,
            CheckKind::Http {
                port: 31000,
                path: "/health".into()
            }
        );
        assert_eq!(spec.interval, Duration::from_millis(500));
        assert_eq!(spec.consecutive_failures, 0);
        assert_eq!(
            parse(&json!({"tcp": {"port": 80}})).unwrap().kind,
            CheckKind::Tcp { port: 80 }
        );
        let spec = parse(&json!({"command": {"shell": false, "value": "/bin/test",
            "arguments": ["test", "-f", "it's"], "environment": {"variables": [{"name": "A", "value": "1"}]}}}))
        .unwrap();
        assert_eq!(
            spec.kind,
            CheckKind::Command {
                command: r"exec '/bin/test' '-f' 'it'\''s'".into(),
                environment: vec![("A".into(), "1".into())]
            }
        );
        for bad in [
            json!("x"),
            json!({}),
            json!({"type": "COMMAND"}),
            json!({"type": "HTTP", "http": {}}),
            json!({"type": "GRPC"}),
            json!({"type": "TCP", "tcp": {"port": 1}, "interval_seconds": -1}),
            json!({"type": "TCP", "tcp": {"port": 1}, "consecutive_failures": "3"}),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }

    fn tracker(max: u32, grace_s: u64) -> HealthTracker {
        let mut spec = parse(&json!({"type": "TCP", "tcp": {"port": 1}})).unwrap();
        spec.consecutive_failures = max;
        spec.grace_period = Duration::from_secs(grace_s);
        HealthTracker::new(&spec, 1_000)
    }

    const HEALTHY: Option<Report> = Some(Report {
        healthy: true,
        kill: false,
    });
    const UNHEALTHY: Option<Report> = Some(Report {
        healthy: false,
        kill: false,
    });
    const KILL: Option<Report> = Some(Report {
        healthy: false,
        kill: true,
    });

    #[test]
    fn reports_changes_and_kills_after_consecutive_failures() {
        let mut t = tracker(3, 10);
        // Inside the grace period failures are ignored.
        assert_eq!(t.record(2_000, false), None);
        assert_eq!(t.record(11_000, false), None);
        // The first success is reported, repeats are not.
        assert_eq!(t.record(12_000, true), HEALTHY);
        assert_eq!(t.record(13_000, true), None);
        // After a success the grace period is over.
        assert_eq!(t.record(14_000, false), UNHEALTHY);
        assert_eq!(t.record(15_000, false), None);
        assert_eq!(t.record(16_000, true), HEALTHY);
        assert_eq!(t.consecutive_failures(), 0);
        assert_eq!(t.record(17_000, false), UNHEALTHY);
        assert_eq!(t.record(18_000, false), None);
        assert_eq!(t.record(19_000, false), KILL);
    }

    #[test]
    fn grace_period_ends_by_time_and_zero_never_kills() {
        let mut t = tracker(1, 5);
        assert_eq!(t.record(6_000, false), None);
        assert_eq!(t.record(6_001, false), KILL);
        let mut t = tracker(0, 0);
        assert_eq!(t.record(1_001, false), UNHEALTHY);
        for i in 0..50 {
            assert_eq!(t.record(2_000 + i, false), None);
        }
    }
}
