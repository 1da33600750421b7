//! The trace: every event of a run as `<sim ms> <node> <event>` lines, in the order they happened.
//! It holds only simulation-derived data, so the same seed gives the same bytes.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use drover_core::Event;
use tokio::sync::Notify;

/// The node name the harness uses for its own actions.
pub const HARNESS: &str = "sim";

/// The host the harness sends its HTTP requests from (its lines are the `client http` ones).
pub const CLIENT: &str = "client";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceLine {
    pub at_ms: u64,
    pub node: String,
    pub event: Event,
}

impl fmt::Display for TraceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.at_ms, self.node, self.event)
    }
}

/// A shared, append-only record; readers take what is new with [`Trace::take_new`].
#[derive(Clone, Default)]
pub struct Trace(Arc<Mutex<TraceState>>);

#[derive(Default)]
struct TraceState {
    lines: Vec<TraceLine>,
    read: usize,
    news: Arc<Notify>,
}

impl Trace {
    fn state(&self) -> MutexGuard<'_, TraceState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn record(&self, at_ms: u64, node: &str, event: Event) {
        let mut state = self.state();
        state.lines.push(TraceLine {
            at_ms,
            node: node.to_string(),
            event,
        });
        state.news.notify_one();
    }

    /// Notified whenever a line is recorded (a permit is kept when nobody waits).
    pub fn news(&self) -> Arc<Notify> {
        self.state().news.clone()
    }

    /// The lines recorded since the last call.
    pub fn take_new(&self) -> Vec<TraceLine> {
        let mut state = self.state();
        let new = state.lines[state.read..].to_vec();
        state.read = state.lines.len();
        new
    }

    pub fn lines(&self) -> Vec<TraceLine> {
        self.state().lines.clone()
    }

    /// The whole trace as text, one line per event.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.state().lines {
            out.push_str(&line.to_string());
            out.push('\n');
        }
        out
    }
}
