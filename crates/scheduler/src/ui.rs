//! The scheduler's web UI at `/` and `/ui/` (Marathon's UI is the anchor): one page whose
//! script reads the /v2 API and follows `/v2/events`. Embedded in the binary; the shared parts
//! are [`drover_core::ui`]'s.

use axum::routing::get;

const SCRIPT: &str = include_str!("ui/marathon.js");

/// `/`, `/ui/` and the UI's assets, for any router state.
pub fn router<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    let page = || async {
        axum::response::Html(drover_core::ui::page("drover scheduler", "/ui/marathon.js"))
    };
    axum::Router::new()
        .route("/", get(page))
        .route("/ui/", get(page))
        .route("/ui", get(page))
        .route(
            "/ui/marathon.js",
            get(|| async { drover_core::ui::asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .merge(drover_core::ui::shared())
}
