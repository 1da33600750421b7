//! drover-scheduler: the Marathon-compatible scheduler.
//!
//! [`daemon`] is the I/O (election, store in coord, the framework on the master's v1 API),
//! [`api`] the `/v2` REST layer and [`core`] the leader's state machine. Below them is the
//! scheduler's **pure core**: plain code with no I/O, no async, no clock and no randomness.
//! Whatever needs the time or an id takes it as an argument (a version string, a deployment id), so the same inputs always give the same outputs, under
//! simulation as live, and proptest can drive everything without a runtime. Collections are
//! `BTreeMap`/`BTreeSet` (DESIGN §5): every output, including error bodies, is ordered the same
//! way on every run. Decoders never panic; they answer in Marathon's own error format.
//!
//! | module | what |
//! |---|---|
//! | [`path`] | `PathId`: absolute and relative app/group ids, Marathon's name rules, resolution of `.`/`..` |
//! | [`app`] | `AppDefinition`: Marathon's fields and defaults, strict reading (why `"cpus": ".25"` is a 422), Marathon's response shape |
//! | [`group`] | groups, group updates (`POST`/`PUT /v2/groups`), effective dependencies, cycle detection, service ports |
//! | [`validation`] | `parse_app`/`apply_app_update` and `ApiError`: Marathon's 400/422 bodies and error paths (`/apps(0)/cpus`) |
//! | [`constraints`] | UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER, IS: validation and placement decisions with a reason |
//! | [`core`] | the leader's state: deployments, instances, launch queue, offers, convergence (no I/O; Env for ids, time, trace) |
//! | [`health`] | Marathon-side HTTP/TCP health probes through the Env, and the health tracker |
//! | [`api`], [`daemon`] | the `/v2` REST layer; election, the store in coord, the v1 framework |
//! | [`plan`] | deployment plans (stop, start, one step per dependency layer), `/v2/deployments` JSON, launch backoff, restart bounds |
//!
//! The typical flow of `POST /v2/groups` with `apps/basic.json`:
//!
//! ```
//! use drover_scheduler::{group::{self, Group, UpdateMode}, path::PathId, plan::DeploymentPlan, validation};
//!
//! let body = br#"{"id": "/demo", "groups": [
//!     {"id": "/demo/db",  "apps": [{"id": "pg",  "cmd": "sleep 100"}]},
//!     {"id": "/demo/web", "dependencies": ["../db"], "apps": [{"id": "www", "cmd": "sleep 100"}]}]}"#;
//! let update = group::parse_group(body, &PathId::root())?;            // 400/422 here
//! let root = Group::root();
//! let target = root.apply_update(&PathId::root(), &update, UpdateMode::Create,
//!                                "2024-05-01T10:00:00.000Z")?;              // 409/422 here
//! let plan = DeploymentPlan::new("deployment-1".into(), "2024-05-01T10:00:00.000Z".into(),
//!                                &root, &target);
//! assert_eq!(plan.steps.len(), 3); // start both, scale pg, then scale www
//! # Ok::<(), validation::ApiError>(())
//! ```
//!
//! On top of this core: [`core`] (deployments, instances, launch queue, offer matching, rolling
//! restarts), [`health`] (Marathon-side HTTP/TCP checks), [`api`] and [`daemon`].

pub mod api;
pub mod app;
pub mod constraints;
pub mod core;
pub mod daemon;
mod decode;
pub mod group;
pub mod health;
pub mod path;
pub mod plan;
pub mod process;
pub mod ui;
pub mod validation;

pub use app::AppDefinition;
pub use group::parse_group;
pub use group::{Group, GroupUpdate};
pub use path::PathId;
pub use plan::DeploymentPlan;
pub use validation::{parse_app, ApiError};
