//! What the web UIs (the master's at `/`, the scheduler's at `/` and `/ui/`) share: one
//! stylesheet and one script of helpers, embedded in the binary (no CDN, no build step: the UIs
//! work offline), and the way an embedded asset is served.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The shared stylesheet.
pub const STYLE: &str = include_str!("ui/style.css");
/// The shared script (escaping, fetching JSON, the hash router, tables, formatters).
pub const COMMON: &str = include_str!("ui/common.js");

/// An embedded asset with its content type; the browser may keep it for a minute.
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=60"),
        ],
        body,
    )
        .into_response()
}

/// `/ui/style.css` and `/ui/common.js`, for any router state.
pub fn shared<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route(
            "/ui/style.css",
            axum::routing::get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/ui/common.js",
            axum::routing::get(|| async { asset("text/javascript; charset=utf-8", COMMON) }),
        )
}

/// The page of a UI: `title`, the shared assets, then the UI's own script at `script`.
pub fn page(title: &str, script: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head>\
         <body><header><span class=\"brand\">{title}</span><nav id=\"nav\"></nav>\
         <span class=\"where\" id=\"where\"></span></header>\
         <main id=\"main\" tabindex=\"-1\"><p class=\"muted\">Loading…</p></main>\
         <script src=\"/ui/common.js\"></script><script src=\"{script}\"></script></body></html>\n"
    )
}
