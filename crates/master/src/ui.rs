//! The master's web UI at `/` (Mesos' UI is the anchor): one page whose script reads
//! `/master/state`, `/metrics/snapshot` and a task's sandbox through the master's agent proxy.
//! Embedded in the binary; the shared parts are [`drover_core::ui`]'s.

use axum::routing::get;

const SCRIPT: &str = include_str!("ui/master.js");

/// `/`, `/ui/` and the UI's assets, for any router state.
pub fn router<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    let page =
        || async { axum::response::Html(drover_core::ui::page("drover master", "/ui/master.js")) };
    axum::Router::new()
        .route("/", get(page))
        .route("/ui/", get(page))
        .route(
            "/ui/master.js",
            get(|| async { drover_core::ui::asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .merge(drover_core::ui::shared())
}
