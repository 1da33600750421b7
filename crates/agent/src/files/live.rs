//! The filesystem side of the file endpoints: a located path resolved (symlinks followed) and
//! checked to stay in its sandbox, then listed, read or streamed. Reached only for sandboxes a
//! live containerizer made; each request's blocking work is one `spawn_blocking`, never the
//! agent's core task.
//!
//! A task owns its sandbox and may change it while it is read, so the check is made twice: on
//! the resolved path before opening, and on what was opened (the kernel's name for the open file,
//! `/proc/self/fd/N`). Files are opened without following a last symlink and without blocking (a
//! FIFO named `stdout` must not hold a thread), and only regular files are read.

// Live only: blocking filesystem calls, run on tokio's blocking threads.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde_json::Value as Json;
use tokio::io::AsyncReadExt;
use tokio_util::codec::{BytesCodec, FramedRead};

use super::{entry_path, mode_string, read_answer, window, Entry, FilesError, Located, Window};
use super::{MAX_ENTRIES, MAX_READ_BYTES};

/// Runs blocking work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, FilesError> + Send + 'static,
) -> Result<T, FilesError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(FilesError::Failed(format!("the file request failed: {e}"))))
}

/// The error an I/O failure on `requested` answers with.
fn io_error(requested: &str, error: &io::Error) -> FilesError {
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
            FilesError::NotFound(format!("{requested:?} does not exist"))
        }
        io::ErrorKind::PermissionDenied => {
            FilesError::Forbidden(format!("{requested:?}: permission denied"))
        }
        _ if error.raw_os_error() == Some(libc::ELOOP) => FilesError::Forbidden(format!(
            "{requested:?} is a symlink that was replaced while it was opened"
        )),
        _ => FilesError::Failed(format!("{requested:?}: {error}")),
    }
}

fn escapes(requested: &str) -> FilesError {
    FilesError::Forbidden(format!("{requested:?} resolves outside the task's sandbox"))
}

/// The sandbox's real directory and the real path of the located file (no symlinks left), which
/// must be inside it.
pub fn resolve(located: &Located) -> Result<(PathBuf, PathBuf), FilesError> {
    let requested = &located.requested;
    let root = std::fs::canonicalize(&located.directory).map_err(|e| io_error(requested, &e))?;
    let real =
        std::fs::canonicalize(root.join(&located.relative)).map_err(|e| io_error(requested, &e))?;
    if !real.starts_with(&root) {
        return Err(escapes(requested));
    }
    Ok((root, real))
}

/// Opens a resolved path and checks that what was opened is still inside the sandbox.
fn open_inside(located: &Located, root: &Path, real: &Path) -> Result<File, FilesError> {
    let requested = &located.requested;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(real)
        .map_err(|e| io_error(requested, &e))?;
    // Without /proc the check on the resolved path is the only one.
    if let Ok(opened) = std::fs::read_link(fd_path(&file)) {
        if !opened.starts_with(root) {
            return Err(escapes(requested));
        }
    }
    Ok(file)
}

fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// `/files/browse`: the entries of a directory, by name (a file: itself).
pub async fn browse(located: Located) -> Result<Vec<Entry>, FilesError> {
    blocking(move || browse_blocking(&located)).await
}

fn browse_blocking(located: &Located) -> Result<Vec<Entry>, FilesError> {
    let requested = &located.requested;
    let (root, real) = resolve(located)?;
    let opened = open_inside(located, &root, &real)?;
    let metadata = opened.metadata().map_err(|e| io_error(requested, &e))?;
    let mut names = Names::default();
    if !metadata.is_dir() {
        return Ok(vec![names.entry(requested.clone(), &metadata)]);
    }
    // Listed through the open directory, so it is the one that was checked.
    let listing = if fd_path(&opened).exists() {
        std::fs::read_dir(fd_path(&opened))
    } else {
        std::fs::read_dir(&real)
    };
    let mut children: Vec<_> = listing
        .map_err(|e| io_error(requested, &e))?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .collect();
    children.sort();
    children.truncate(MAX_ENTRIES);
    let mut entries = Vec::with_capacity(children.len());
    for name in children {
        let child = real.join(&name);
        let Ok(link) = std::fs::symlink_metadata(&child) else {
            continue;
        };
        // A symlink shows what it points at when that is inside the sandbox, else itself.
        let shown = if link.file_type().is_symlink() {
            let inside =
                std::fs::canonicalize(&child).is_ok_and(|target| target.starts_with(&root));
            match inside.then(|| std::fs::metadata(&child)) {
                Some(Ok(target)) => target,
                _ => link,
            }
        } else {
            link
        };
        let path = entry_path(requested, &name.to_string_lossy());
        entries.push(names.entry(path, &shown));
    }
    Ok(entries)
}

/// User and group names by number, looked up once per request.
#[derive(Default)]
struct Names {
    users: BTreeMap<u32, String>,
    groups: BTreeMap<u32, String>,
}

impl Names {
    fn entry(&mut self, path: String, metadata: &Metadata) -> Entry {
        let uid = metadata.uid();
        let gid = metadata.gid();
        Entry {
            path,
            mode: mode_string(metadata.mode()),
            nlink: metadata.nlink(),
            uid: self
                .users
                .entry(uid)
                .or_insert_with(|| user_name(uid))
                .clone(),
            gid: self
                .groups
                .entry(gid)
                .or_insert_with(|| group_name(gid))
                .clone(),
            size: metadata.size(),
            mtime: metadata.mtime(),
        }
    }
}

/// Room for the strings of a passwd or group entry.
const NAME_BUFFER: usize = 16 * 1024;

fn user_name(uid: u32) -> String {
    let mut buffer = vec![0 as libc::c_char; NAME_BUFFER];
    // SAFETY: an all-zero passwd is a valid value (null pointers, zero numbers).
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r fills `entry` with pointers into `buffer` (both live until the name is
    // copied below) and sets `found` to `&entry` or null.
    let code = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if code != 0 || found.is_null() || entry.pw_name.is_null() {
        return uid.to_string();
    }
    // SAFETY: pw_name points at a NUL-terminated string inside `buffer`.
    unsafe { CStr::from_ptr(entry.pw_name) }
        .to_string_lossy()
        .into_owned()
}

fn group_name(gid: u32) -> String {
    let mut buffer = vec![0 as libc::c_char; NAME_BUFFER];
    // SAFETY: an all-zero group is a valid value (null pointers, zero numbers).
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in `user_name`, with getgrgid_r.
    let code = unsafe {
        libc::getgrgid_r(
            gid,
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if code != 0 || found.is_null() || entry.gr_name.is_null() {
        return gid.to_string();
    }
    // SAFETY: gr_name points at a NUL-terminated string inside `buffer`.
    unsafe { CStr::from_ptr(entry.gr_name) }
        .to_string_lossy()
        .into_owned()
}

/// Opens the located regular file (a directory is refused with `directory_refusal`); its size.
fn open_regular(located: &Located, directory_refusal: &str) -> Result<(File, u64), FilesError> {
    let requested = &located.requested;
    let (root, real) = resolve(located)?;
    let file = open_inside(located, &root, &real)?;
    let metadata = file.metadata().map_err(|e| io_error(requested, &e))?;
    if metadata.is_dir() {
        return Err(FilesError::BadRequest(directory_refusal.into()));
    }
    if !metadata.is_file() {
        return Err(FilesError::BadRequest(format!(
            "{requested:?} is not a regular file"
        )));
    }
    Ok((file, metadata.len()))
}

/// `/files/read`: `{"data", "offset"}` for a window of the file (see [`super::window`]).
pub async fn read(
    located: Located,
    offset: Option<u64>,
    length: Option<u64>,
) -> Result<Json, FilesError> {
    blocking(move || {
        let (file, size) = open_regular(&located, "Cannot read a directory.")?;
        let window = window(size, offset, length);
        let data = match window {
            Window::Size => Vec::new(),
            Window::Bytes { offset, length } => {
                read_at(&file, offset, length).map_err(|e| io_error(&located.requested, &e))?
            }
        };
        Ok(read_answer(size, window, &data))
    })
    .await
}

/// Up to `length` bytes from `offset` (fewer when the file ends first).
fn read_at(file: &File, offset: u64, length: u64) -> io::Result<Vec<u8>> {
    let length = length.min(MAX_READ_BYTES) as usize;
    let mut data = vec![0u8; length];
    let mut filled = 0;
    while filled < length {
        match file.read_at(&mut data[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    data.truncate(filled);
    Ok(data)
}

/// `/files/download`: the file's bytes as they were when it was opened (a file that grows
/// meanwhile is cut at that size), as an attachment.
pub async fn download(located: Located) -> Result<Response, FilesError> {
    let name = Path::new(&located.requested)
        .file_name()
        .map(|n| n.to_string_lossy().replace(['"', '\\', '\r', '\n'], "_"))
        .unwrap_or_else(|| "download".into());
    let (file, size) =
        blocking(move || open_regular(&located, "Cannot download a directory.")).await?;
    let reader = tokio::fs::File::from_std(file).take(size);
    let chunks =
        FramedRead::new(reader, BytesCodec::new()).map(|chunk| chunk.map(BytesMut::freeze));
    Ok((
        [
            (
                http::header::CONTENT_TYPE,
                "application/octet-stream".to_string(),
            ),
            (http::header::CONTENT_LENGTH, size.to_string()),
            (
                http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{locate, Sandbox};
    use serde_json::json;

    /// A sandbox with `stdout`, `logs/app.log`, a symlink inside (`latest` -> `logs/app.log`,
    /// `logdir` -> `logs`), symlinks out (`escape` -> a file outside, `up` -> the folder outside),
    /// a dangling one and a FIFO; next to a folder `outside` with a secret.
    struct Scratch {
        dir: PathBuf,
        sandboxes: Vec<Sandbox>,
    }

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("drover-files-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let sandbox = dir.join("sandboxes").join("t1");
            let outside = dir.join("outside");
            std::fs::create_dir_all(sandbox.join("logs")).unwrap();
            std::fs::create_dir_all(&outside).unwrap();
            std::fs::write(outside.join("secret"), "secret").unwrap();
            std::fs::write(sandbox.join("stdout"), "hello\nworld\n").unwrap();
            std::fs::write(sandbox.join("logs").join("app.log"), "log line\n").unwrap();
            let link = |target: &Path, name: &str| {
                std::os::unix::fs::symlink(target, sandbox.join(name)).unwrap()
            };
            link(Path::new("logs/app.log"), "latest");
            link(Path::new("logs"), "logdir");
            link(&outside.join("secret"), "escape");
            link(Path::new("../../outside"), "up");
            link(Path::new("nothing-here"), "dangling");
            let fifo = std::ffi::CString::new(sandbox.join("fifo").to_str().unwrap()).unwrap();
            // SAFETY: mkfifo reads a NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
            Scratch {
                sandboxes: vec![Sandbox::new(sandbox, "f1", "t1")],
                dir,
            }
        }

        fn sandbox(&self) -> String {
            self.sandboxes[0].directory.to_string_lossy().into_owned()
        }

        fn locate(&self, path: &str) -> Located {
            locate(path, &self.sandboxes).unwrap()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn status(result: Result<impl std::fmt::Debug, FilesError>) -> u16 {
        match result {
            Ok(_) => 200,
            Err(e) => e.status().as_u16(),
        }
    }

    #[tokio::test]
    async fn symlinks_may_point_inside_the_sandbox_but_not_out_of_it() {
        let scratch = Scratch::new("confine");
        let root = scratch.sandbox();
        let read = |path: String| read(scratch.locate(&path), Some(0), None);
        assert_eq!(
            read(format!("{root}/latest")).await,
            Ok(json!({"data": "log line\n", "offset": 0}))
        );
        assert_eq!(
            read(format!("{root}/logdir/app.log")).await,
            Ok(json!({"data": "log line\n", "offset": 0}))
        );
        let refused = read(format!("{root}/escape")).await.unwrap_err();
        assert_eq!(refused.status(), 403, "{refused}");
        assert!(refused.to_string().contains("outside the task's sandbox"));
        assert_eq!(status(read(format!("{root}/up/secret")).await), 403);
        assert_eq!(
            status(browse(scratch.locate(&format!("{root}/up"))).await),
            403
        );
        assert_eq!(status(read(format!("{root}/dangling")).await), 404);
        assert_eq!(status(read(format!("{root}/missing")).await), 404);
        assert_eq!(status(read(format!("{root}/stdout/below")).await), 404);
        // A FIFO is not read (nor waited on).
        assert_eq!(status(read(format!("{root}/fifo")).await), 400);
        let directory = read(root.clone()).await.unwrap_err();
        assert_eq!(
            directory,
            FilesError::BadRequest("Cannot read a directory.".into())
        );
        // The virtual path reaches the same files.
        assert_eq!(
            read("/frameworks/f1/executors/t1/runs/latest/stdout".into())
                .await
                .unwrap()["data"],
            "hello\nworld\n"
        );
    }

    #[tokio::test]
    async fn browse_lists_entries_in_mesos_shape() {
        let scratch = Scratch::new("browse");
        let root = scratch.sandbox();
        let entries = browse(scratch.locate(&format!("{root}/"))).await.unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        let expected: Vec<String> = [
            "dangling", "escape", "fifo", "latest", "logdir", "logs", "stdout", "up",
        ]
        .iter()
        .map(|n| format!("{root}/{n}"))
        .collect();
        assert_eq!(names, expected);
        let by_name = |name: &str| {
            entries
                .iter()
                .find(|e| e.path.ends_with(&format!("/{name}")))
                .unwrap()
        };
        let stdout = by_name("stdout");
        assert_eq!((stdout.size, stdout.nlink), (12, 1));
        assert!(stdout.mode.starts_with("-rw"), "{stdout:?}");
        assert!(stdout.mtime > 1_600_000_000, "{stdout:?}");
        assert!(!stdout.uid.is_empty() && !stdout.gid.is_empty());
        assert!(by_name("logs").mode.starts_with('d'));
        // Links inside show their target; links out show themselves, not what they point at.
        assert!(by_name("logdir").mode.starts_with('d'));
        assert_eq!(by_name("latest").size, 9);
        assert!(by_name("escape").mode.starts_with('l'));
        assert!(by_name("up").mode.starts_with('l'));
        assert!(by_name("fifo").mode.starts_with('p'));
        let json = serde_json::to_value(stdout).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            ["gid", "mode", "mtime", "nlink", "path", "size", "uid"]
        );

        // Through the virtual path, entries are named by it; a file lists itself.
        let virtual_root = "/frameworks/f1/executors/t1/runs/latest";
        let logs = browse(scratch.locate(&format!("{virtual_root}/logs")))
            .await
            .unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].path, format!("{virtual_root}/logs/app.log"));
        let file = browse(scratch.locate(&format!("{root}/stdout")))
            .await
            .unwrap();
        assert_eq!(file[0].path, format!("{root}/stdout"));
        assert_eq!(
            status(browse(scratch.locate(&format!("{root}/missing"))).await),
            404
        );
    }

    #[tokio::test]
    async fn reads_page_with_offset_and_length() {
        let scratch = Scratch::new("read");
        let stdout = format!("{}/stdout", scratch.sandbox());
        let read = |offset, length| read(scratch.locate(&stdout), offset, length);
        assert_eq!(
            read(None, None).await,
            Ok(json!({"data": "", "offset": 12}))
        );
        assert_eq!(
            read(Some(0), Some(5)).await,
            Ok(json!({"data": "hello", "offset": 0}))
        );
        assert_eq!(
            read(Some(6), Some(100)).await,
            Ok(json!({"data": "world\n", "offset": 6}))
        );
        assert_eq!(
            read(Some(12), Some(5)).await,
            Ok(json!({"data": "", "offset": 12}))
        );
        assert_eq!(
            read(Some(3), Some(0)).await,
            Ok(json!({"data": "", "offset": 12}))
        );
    }

    #[tokio::test]
    async fn downloads_carry_the_file_as_an_attachment() {
        let scratch = Scratch::new("download");
        let root = scratch.sandbox();
        let response = download(scratch.locate(&format!("{root}/stdout")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-length"], "12");
        assert_eq!(
            response.headers()["content-disposition"],
            "attachment; filename=\"stdout\""
        );
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], b"hello\nworld\n");
        let directory = download(scratch.locate(&root)).await.unwrap_err();
        assert_eq!(
            directory,
            FilesError::BadRequest("Cannot download a directory.".into())
        );
        assert_eq!(
            status(
                download(scratch.locate(&format!("{root}/escape")))
                    .await
                    .map(drop)
            ),
            403
        );
    }
}
