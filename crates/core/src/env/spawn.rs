//! Spawning tasks through the seam, so a simulated node owns every task it starts.
//!
//! Live, a role's tasks go to the multi-threaded runtime (`tokio::spawn`). In the simulator every
//! node incarnation runs in its own `LocalSet` on one shared, single-threaded runtime, and its
//! tasks must be spawned into that set: a crash then drops exactly the node's tasks and nothing
//! else. The simulator marks its thread with [`simulating`]; role code calls [`spawn`] and
//! [`spawn_into`] and never needs to know which world it is in.

use std::cell::Cell;
use std::future::Future;

use tokio::task::{AbortHandle, JoinHandle, JoinSet};

thread_local! {
    static SIMULATING: Cell<bool> = const { Cell::new(false) };
}

/// While the guard lives, tasks spawned on this thread go to the current `LocalSet`.
pub struct Simulating(bool);

/// Marks this thread as running a simulation until the guard is dropped.
pub fn simulating() -> Simulating {
    Simulating(SIMULATING.with(|s| s.replace(true)))
}

impl Drop for Simulating {
    fn drop(&mut self) {
        SIMULATING.with(|s| s.set(self.0));
    }
}

fn in_simulation() -> bool {
    SIMULATING.with(Cell::get)
}

/// Spawns `future` as a task of this node.
#[allow(
    clippy::disallowed_methods,
    reason = "the one place that chooses between the live runtime and the simulated node"
)]
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if in_simulation() {
        tokio::task::spawn_local(future)
    } else {
        tokio::spawn(future)
    }
}

/// Spawns `future` into `set` as a task of this node.
#[allow(
    clippy::disallowed_methods,
    reason = "the one place that chooses between the live runtime and the simulated node"
)]
pub fn spawn_into<T, F>(set: &mut JoinSet<T>, future: F) -> AbortHandle
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    if in_simulation() {
        set.spawn_local(future)
    } else {
        set.spawn(future)
    }
}

/// Runs CPU-heavy `work` (encoding a large snapshot, say) without holding up the node's other
/// tasks. Live it goes to tokio's blocking pool: on a runtime worker it could hold a task that
/// just woke there (tokio's LIFO slot is never stolen) for as long as it computes. In the
/// simulator it runs inline: simulated time does not pass while the CPU works.
#[allow(
    clippy::disallowed_methods,
    reason = "the one place that moves computation off the live runtime's workers"
)]
pub async fn compute<T, F>(work: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if in_simulation() {
        return work();
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("the blocking pool dropped a computation: {error}"),
    }
}
