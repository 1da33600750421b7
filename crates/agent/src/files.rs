//! Mesos' file endpoints over task sandboxes: `/files/browse`, `/files/read` and
//! `/files/download`, the calls a Mesos UI makes to show a task's `stdout`.
//!
//! A path is served only when it lies in the sandbox of a task the agent knows (running, or among
//! the completed ones `/state` lists), named by the sandbox's directory (the executor's
//! `directory` in `/state`) or by Mesos' virtual path of it,
//! `/frameworks/<framework>/executors/<executor>/runs/latest`. A `..` is refused, and so is
//! anything that resolves (through symlinks) outside the sandbox. The agent's core task only
//! lists the sandboxes; the checks that need the filesystem and the reads run in the request's
//! own task ([`live`]). The simulated containerizer gives tasks no sandbox, so a simulated agent
//! answers 404 to every path without touching any filesystem.

pub mod live;

use std::path::{Component, Path, PathBuf};

use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;
use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, oneshot};

/// The most `/files/read` returns at once (Mesos' own bound is 16 pages).
pub const MAX_READ_BYTES: u64 = 1024 * 1024;
/// The most entries one `/files/browse` lists (the first ones by name).
pub const MAX_ENTRIES: usize = 10_000;

/// A task's sandbox as the agent's core lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    /// The directory on this machine: the executor's `directory` in `/state`.
    pub directory: PathBuf,
    /// Mesos' virtual path of the same directory.
    pub virtual_path: String,
}

impl Sandbox {
    pub fn new(directory: PathBuf, framework_id: &str, executor_id: &str) -> Sandbox {
        Sandbox {
            directory,
            virtual_path: format!("/frameworks/{framework_id}/executors/{executor_id}/runs/latest"),
        }
    }
}

/// How the handlers ask the agent's core for the sandboxes of its tasks.
pub type SandboxRequests = mpsc::Sender<oneshot::Sender<Vec<Sandbox>>>;

/// Why a file request is refused; each is one HTTP status with a sentence as its body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilesError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

impl FilesError {
    pub fn status(&self) -> StatusCode {
        match self {
            FilesError::BadRequest(_) => StatusCode::BAD_REQUEST,
            FilesError::Forbidden(_) => StatusCode::FORBIDDEN,
            FilesError::NotFound(_) => StatusCode::NOT_FOUND,
            FilesError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for FilesError {
    fn into_response(self) -> Response {
        (self.status(), format!("{self}\n")).into_response()
    }
}

/// Where a requested path is: a sandbox's directory and the part of the path below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The path as it was asked for (what answers name).
    pub requested: String,
    pub directory: PathBuf,
    /// Relative, without `..`; empty for the sandbox itself.
    pub relative: PathBuf,
}

/// Finds the sandbox that holds `path` (by its directory or its virtual path; the longest match
/// wins) without touching the filesystem. Symlinks are [`live::resolve`]'s to check.
pub fn locate(path: &str, sandboxes: &[Sandbox]) -> Result<Located, FilesError> {
    let requested = Path::new(path);
    if requested
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(FilesError::Forbidden(format!(
            "{path:?}: '..' is not allowed in a sandbox path"
        )));
    }
    let mut best: Option<(usize, Located)> = None;
    for sandbox in sandboxes {
        let prefixes = [
            sandbox.directory.as_path(),
            Path::new(&sandbox.virtual_path),
        ];
        for prefix in prefixes {
            if !prefix.is_absolute() {
                continue;
            }
            let Ok(rest) = requested.strip_prefix(prefix) else {
                continue;
            };
            let depth = prefix.components().count();
            if best.as_ref().is_none_or(|(deepest, _)| depth > *deepest) {
                let relative = rest
                    .components()
                    .filter(|c| matches!(c, Component::Normal(_)))
                    .collect();
                let located = Located {
                    requested: path.to_string(),
                    directory: sandbox.directory.clone(),
                    relative,
                };
                best = Some((depth, located));
            }
        }
    }
    best.map(|(_, located)| located).ok_or_else(|| {
        FilesError::NotFound(format!(
            "{path:?} is not in the sandbox of a task of this agent"
        ))
    })
}

/// One entry of `/files/browse`, as Mesos gives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The requested path joined with the entry's name.
    pub path: String,
    /// `ls -l`'s: `drwxr-xr-x`, `-rw-r--r--`.
    pub mode: String,
    pub nlink: u64,
    /// The owner's and group's names (their numbers when they have none).
    pub uid: String,
    pub gid: String,
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
}

/// `ls -l`'s mode column for `st_mode`, as Mesos writes it (no setuid, setgid or sticky marks).
pub fn mode_string(mode: u32) -> String {
    let kind = match mode & 0o170_000 {
        0o040_000 => 'd',
        0o120_000 => 'l',
        0o020_000 => 'c',
        0o060_000 => 'b',
        0o010_000 => 'p',
        0o140_000 => 's',
        _ => '-',
    };
    let mut text = String::with_capacity(10);
    text.push(kind);
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 0o7;
        text.push(if bits & 0o4 != 0 { 'r' } else { '-' });
        text.push(if bits & 0o2 != 0 { 'w' } else { '-' });
        text.push(if bits & 0o1 != 0 { 'x' } else { '-' });
    }
    text
}

/// The requested path joined with an entry's name, as Mesos names browse entries.
pub fn entry_path(requested: &str, name: &str) -> String {
    format!("{}/{name}", requested.trim_end_matches('/'))
}

/// A `/files/read` query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadQuery {
    pub path: String,
    /// `None` (absent, or -1): only the file's size is wanted.
    pub offset: Option<u64>,
    /// `None` (absent, or -1): as much as one read gives.
    pub length: Option<u64>,
    pub jsonp: Option<String>,
}

/// What part of a file one read returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// Nothing: answer `{"data": "", "offset": size}`.
    Size,
    /// `length` bytes (fewer at the end of the file) from `offset`.
    Bytes { offset: u64, length: u64 },
}

/// Mesos' rules: no offset (or -1) or a zero length asks for the size; an offset at or past the
/// end gets nothing at the size; else up to `length` bytes, at most [`MAX_READ_BYTES`].
pub fn window(size: u64, offset: Option<u64>, length: Option<u64>) -> Window {
    let Some(offset) = offset else {
        return Window::Size;
    };
    let length = length.unwrap_or(MAX_READ_BYTES).min(MAX_READ_BYTES);
    if length == 0 || offset >= size {
        return Window::Size;
    }
    Window::Bytes {
        offset,
        length: length.min(size - offset),
    }
}

/// `/files/read`'s answer for a window of a file of `size` bytes whose bytes there are `data`.
pub fn read_answer(size: u64, window: Window, data: &[u8]) -> Json {
    match window {
        Window::Size => json!({"data": "", "offset": size}),
        // Mesos sends the bytes as they are; JSON needs text, so bytes that are not UTF-8 (or a
        // character cut at the window's edge) become U+FFFD. Offsets stay byte offsets.
        Window::Bytes { offset, .. } => {
            json!({"data": String::from_utf8_lossy(data), "offset": offset})
        }
    }
}

type Params = Query<Vec<(String, String)>>;

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn path_param(params: &[(String, String)]) -> Result<String, FilesError> {
    match param(params, "path") {
        Some(path) if !path.is_empty() => Ok(path.to_string()),
        _ => Err(FilesError::BadRequest(
            "Expecting 'path=value' in query.".into(),
        )),
    }
}

/// An `offset` or `length`: a number, -1 for none.
fn count_param(params: &[(String, String)], name: &str) -> Result<Option<u64>, FilesError> {
    let Some(text) = param(params, name) else {
        return Ok(None);
    };
    let value: i64 = text
        .trim()
        .parse()
        .map_err(|e| FilesError::BadRequest(format!("Failed to parse {name} {text:?}: {e}.")))?;
    match value {
        -1 => Ok(None),
        v if v < -1 => Err(FilesError::BadRequest(format!(
            "Negative {name} provided: {v}."
        ))),
        v => Ok(Some(v as u64)),
    }
}

/// A JSONP callback (Mesos' UI asks agents that way): a JavaScript name, nothing else.
fn jsonp_param(params: &[(String, String)]) -> Result<Option<String>, FilesError> {
    let Some(name) = param(params, "jsonp") else {
        return Ok(None);
    };
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.$".contains(c));
    if valid {
        Ok(Some(name.to_string()))
    } else {
        Err(FilesError::BadRequest(format!(
            "{name:?} is not a JSONP callback name"
        )))
    }
}

pub fn parse_read_query(params: &[(String, String)]) -> Result<ReadQuery, FilesError> {
    Ok(ReadQuery {
        path: path_param(params)?,
        offset: count_param(params, "offset")?,
        length: count_param(params, "length")?,
        jsonp: jsonp_param(params)?,
    })
}

fn json_answer(body: Json, jsonp: Option<String>) -> Response {
    match jsonp {
        Some(callback) => (
            [(http::header::CONTENT_TYPE, "text/javascript")],
            format!("{callback}({body});"),
        )
            .into_response(),
        None => axum::Json(body).into_response(),
    }
}

/// The sandboxes of the agent's tasks, from its core.
async fn sandboxes(requests: &SandboxRequests) -> Result<Vec<Sandbox>, FilesError> {
    let (reply, answer) = oneshot::channel();
    let stopping = || FilesError::Failed("the agent is stopping".into());
    requests.send(reply).await.map_err(|_| stopping())?;
    answer.await.map_err(|_| stopping())
}

async fn locate_in_sandboxes(
    requests: &SandboxRequests,
    path: &str,
) -> Result<Located, FilesError> {
    locate(path, &sandboxes(requests).await?)
}

async fn browse(requests: SandboxRequests, Query(params): Params) -> Response {
    let answer = async {
        let path = path_param(&params)?;
        let jsonp = jsonp_param(&params)?;
        let located = locate_in_sandboxes(&requests, &path).await?;
        let entries = live::browse(located).await?;
        Ok::<_, FilesError>(json_answer(json!(entries), jsonp))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn read(requests: SandboxRequests, Query(params): Params) -> Response {
    let answer = async {
        let query = parse_read_query(&params)?;
        let located = locate_in_sandboxes(&requests, &query.path).await?;
        let body = live::read(located, query.offset, query.length).await?;
        Ok::<_, FilesError>(json_answer(body, query.jsonp))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

async fn download(requests: SandboxRequests, Query(params): Params) -> Response {
    let answer = async {
        let path = path_param(&params)?;
        let located = locate_in_sandboxes(&requests, &path).await?;
        live::download(located).await
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// `/files/browse`, `/files/read`, `/files/download` (and their `.json` names, as Mesos has).
pub fn router(requests: SandboxRequests) -> axum::Router {
    use axum::routing::get;
    let browse = {
        let requests = requests.clone();
        move |params: Params| browse(requests.clone(), params)
    };
    let read = {
        let requests = requests.clone();
        move |params: Params| read(requests.clone(), params)
    };
    let download = move |params: Params| download(requests.clone(), params);
    axum::Router::new()
        .route("/files/browse", get(browse.clone()))
        .route("/files/browse.json", get(browse))
        .route("/files/read", get(read.clone()))
        .route("/files/read.json", get(read))
        .route("/files/download", get(download.clone()))
        .route("/files/download.json", get(download))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandboxes() -> Vec<Sandbox> {
        vec![
            Sandbox::new("/work/sandboxes/t1".into(), "f1", "t1"),
            Sandbox::new("/work/sandboxes/t1.inner/x".into(), "f1", "t9"),
        ]
    }

    fn check(path: &str, expected: Result<(&str, &str), &str>) {
        let got = locate(path, &sandboxes());
        match (expected, got) {
            (Ok((directory, relative)), Ok(located)) => {
                assert_eq!(located.directory, Path::new(directory), "{path}");
                assert_eq!(located.relative, Path::new(relative), "{path}");
            }
            (Err(status), Err(e)) => assert_eq!(e.status().as_str(), status, "{path}: {e}"),
            (expected, got) => panic!("{path}: expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn paths_are_served_only_inside_a_known_sandbox() {
        check("/work/sandboxes/t1", Ok(("/work/sandboxes/t1", "")));
        check("/work/sandboxes/t1/", Ok(("/work/sandboxes/t1", "")));
        check(
            "/work/sandboxes/t1/./logs//stdout",
            Ok(("/work/sandboxes/t1", "logs/stdout")),
        );
        check(
            "/frameworks/f1/executors/t1/runs/latest/stdout",
            Ok(("/work/sandboxes/t1", "stdout")),
        );
        check(
            "/frameworks/f1/executors/t9/runs/latest",
            Ok(("/work/sandboxes/t1.inner/x", "")),
        );
        // A prefix of a name is not a parent directory.
        check("/work/sandboxes/t10/stdout", Err("404"));
        check("/work/sandboxes/t1.inner/y", Err("404"));
        check("/etc/passwd", Err("404"));
        check("/", Err("404"));
        check("stdout", Err("404"));
        check("/work/sandboxes/t1/../t2/stdout", Err("403"));
        check("/work/sandboxes/t1/logs/../stdout", Err("403"));
        check(
            "/frameworks/f1/executors/t1/runs/latest/../../t2",
            Err("403"),
        );
    }

    #[test]
    fn modes_read_as_ls_writes_them() {
        assert_eq!(mode_string(0o100_644), "-rw-r--r--");
        assert_eq!(mode_string(0o040_755), "drwxr-xr-x");
        assert_eq!(mode_string(0o120_777), "lrwxrwxrwx");
        assert_eq!(mode_string(0o104_750), "-rwxr-x---");
        assert_eq!(mode_string(0o010_600), "prw-------");
    }

    #[test]
    fn reads_page_through_a_file_as_mesos_does() {
        let size = 3 * MAX_READ_BYTES;
        // The web UI's first read: offset -1 for the size.
        assert_eq!(window(size, None, None), Window::Size);
        assert_eq!(window(size, None, Some(10)), Window::Size);
        assert_eq!(window(size, Some(0), Some(0)), Window::Size);
        assert_eq!(window(size, Some(size), Some(10)), Window::Size);
        assert_eq!(window(size, Some(size + 7), None), Window::Size);
        assert_eq!(
            window(size, Some(5), Some(10)),
            Window::Bytes {
                offset: 5,
                length: 10
            }
        );
        assert_eq!(
            window(size, Some(size - 4), Some(10)),
            Window::Bytes {
                offset: size - 4,
                length: 4
            }
        );
        assert_eq!(
            window(size, Some(1), None),
            Window::Bytes {
                offset: 1,
                length: MAX_READ_BYTES
            }
        );
        assert_eq!(
            window(size, Some(1), Some(u64::MAX)),
            Window::Bytes {
                offset: 1,
                length: MAX_READ_BYTES
            }
        );
        assert_eq!(
            read_answer(42, Window::Size, b""),
            json!({"data": "", "offset": 42})
        );
        let bytes = Window::Bytes {
            offset: 3,
            length: 3,
        };
        assert_eq!(
            read_answer(42, bytes, b"lo\n"),
            json!({"data": "lo\n", "offset": 3})
        );
        assert_eq!(
            read_answer(42, bytes, &[b'a', 0xff]),
            json!({"data": "a\u{fffd}", "offset": 3})
        );
    }

    #[test]
    fn read_queries_parse_or_say_why() {
        let params = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            parse_read_query(&params(&[
                ("path", "/s/stdout"),
                ("offset", "-1"),
                ("jsonp", "angular.callbacks._1")
            ])),
            Ok(ReadQuery {
                path: "/s/stdout".into(),
                offset: None,
                length: None,
                jsonp: Some("angular.callbacks._1".into()),
            })
        );
        assert_eq!(
            parse_read_query(&params(&[
                ("path", "/s/stdout"),
                ("offset", "10"),
                ("length", "50000")
            ]))
            .map(|q| (q.offset, q.length)),
            Ok((Some(10), Some(50_000)))
        );
        let refused = |pairs: &[(&str, &str)]| match parse_read_query(&params(pairs)) {
            Err(FilesError::BadRequest(message)) => message,
            other => panic!("{pairs:?}: {other:?}"),
        };
        assert_eq!(refused(&[]), "Expecting 'path=value' in query.");
        assert_eq!(refused(&[("path", "")]), "Expecting 'path=value' in query.");
        assert!(refused(&[("path", "/s"), ("offset", "ten")]).starts_with("Failed to parse offset"));
        assert_eq!(
            refused(&[("path", "/s"), ("length", "-2")]),
            "Negative length provided: -2."
        );
        assert!(refused(&[("path", "/s"), ("jsonp", "alert(1)")]).contains("JSONP"));
    }

    #[test]
    fn entries_are_named_from_the_requested_path() {
        assert_eq!(entry_path("/s/t1", "stdout"), "/s/t1/stdout");
        assert_eq!(entry_path("/s/t1/", "stdout"), "/s/t1/stdout");
    }
}
