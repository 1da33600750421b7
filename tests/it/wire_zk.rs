//! ZooKeeper wire compatibility, checked with real clients (kazoo, ZooKeeper's own zkCli.sh) and
//! proven against a real ZooKeeper 3.8 (Debian's `zookeeper` package) started on loopback.
//!
//! The scripts live in `tests/zk/` (see `.ci/install-wire-deps` for what they need). When a tool is
//! missing, a test prints `skipped: ...` and passes, unless `DROVER_REQUIRE_WIRE_TESTS` is set (to
//! anything but "" or "0"): then a missing tool fails the test. Only 127.0.0.1 is ever contacted.
//!
//! Reusable against any server: [`run_kazoo_check`] and [`run_zkcli_check`] take a host list;
//! [`RealZooKeeper`] starts a real standalone server or ensemble and stops it when dropped.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{root, scratch};

/// Set (to anything but "" or "0") in CI: a missing tool is then a failure, not a skip.
pub const REQUIRE_ENV: &str = "DROVER_REQUIRE_WIRE_TESTS";

/// How long ZooKeeper may take to serve after being started (the helper waits this long).
const START_SECS: u64 = 60;
/// A hard limit on every child process of these tests; none of them may hang the suite.
const KAZOO_SECS: u64 = 120;
const ZKCLI_SECS: u64 = 180;
const STOP_SECS: u64 = 30;

fn zk_scripts() -> PathBuf {
    root().join("tests").join("zk")
}

/// The Python that has kazoo: `DROVER_PYTHON`, else `python3` on PATH.
pub fn python() -> String {
    std::env::var("DROVER_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A unique scratch folder per call (tests run in parallel in one process).
pub fn fresh_scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = scratch(&format!("{name}-{}", N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch folder");
    dir
}

/// A loopback port nobody listens on right now (bind 127.0.0.1:0, read it, let it go).
///
/// The kernel may hand the same free port to two binds in a row once the first listener is
/// closed, so ports given out are remembered: no two callers of this process get the same one
/// (a coord's client and peer ports once collided that way).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.insert(port) {
            return port;
        }
    }
}

/// What a child process did within its time limit.
pub struct Ran {
    /// `None`: it outlived its limit and was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn describe(&self, what: &str) -> String {
        let how = match self.status {
            None => "was killed after its time limit".to_string(),
            Some(s) => format!("exited with {s}"),
        };
        format!(
            "{what} {how}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs `cmd` in its own process group with stdout/stderr in files (no pipe can fill up, no
/// thread needed), polling for its end; past `limit_secs` the whole group is killed. Counts sleeps
/// rather than reading a clock.
pub fn run_limited(mut cmd: Command, name: &str, limit_secs: u64) -> Result<Ran, String> {
    let dir = fresh_scratch(&format!("run-{name}"));
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let out = File::create(&out_path).map_err(|e| format!("create {}: {e}", out_path.display()))?;
    let err = File::create(&err_path).map_err(|e| format!("create {}: {e}", err_path.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!("cannot run {:?}: {e}", cmd.get_program()));
        }
    };
    const TICK: Duration = Duration::from_millis(50);
    let mut status = None;
    for _ in 0..limit_secs * 20 {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            status = Some(s);
            break;
        }
        std::thread::sleep(TICK);
    }
    if status.is_none() {
        kill_group(child.id());
        let _ = child.kill();
        let _ = child.wait();
    }
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let ran = Ran {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ran)
}

/// SIGKILL to the process group led by `pid` (the shell's builtin `kill`, always there).
fn kill_group(pid: u32) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -KILL -- -{pid} 2>/dev/null")])
        .status();
}

/// What the wire tests need and this machine lacks (empty: all there).
pub fn missing_tools(kazoo: bool, zkcli: bool) -> Vec<String> {
    let mut missing = Vec::new();
    let helper = zk_scripts().join("real_zookeeper.py");
    let mut check = Command::new(python());
    check.arg(&helper).arg("check");
    match run_limited(check, "tools-check", 60) {
        Err(e) => {
            missing.push(format!("python3 ({e})"));
            return missing;
        }
        Ok(r) if !r.ok() => missing.push(format!(
            "real ZooKeeper: {}{}",
            r.stdout.trim(),
            r.stderr.trim()
        )),
        Ok(_) => {}
    }
    if kazoo {
        let mut import = Command::new(python());
        import.args(["-c", "import kazoo.client"]);
        match run_limited(import, "kazoo-import", 60) {
            Ok(r) if r.ok() => {}
            _ => missing.push(format!(
                "kazoo for {} (pip install kazoo==2.10.0)",
                python()
            )),
        }
    }
    if zkcli {
        let cli = std::env::var("ZKCLI")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from("/usr/share/zookeeper/bin/zkCli.sh"));
        if !cli.is_file() {
            missing.push(format!("{} (apt-get install zookeeper)", cli.display()));
        }
    }
    missing
}

/// A missing tool: a skip (printed) unless [`REQUIRE_ENV`] is set, then a failure.
pub fn skip_or_fail(test: &str, missing: &[String]) -> Result<(), String> {
    let what = missing.join("; ");
    if required() {
        Err(format!(
            "{test}: {REQUIRE_ENV} is set but tools are missing: {what} (run .ci/install-wire-deps)"
        ))
    } else {
        println!("skipped: {test}: missing {what} (run .ci/install-wire-deps; set {REQUIRE_ENV}=1 to make this a failure)");
        Ok(())
    }
}

/// A real ZooKeeper (standalone or an ensemble) on loopback, from `tests/zk/real_zookeeper.py`.
/// Dropping it stops every node, also when a test fails or panics.
pub struct RealZooKeeper {
    dir: PathBuf,
    hosts: String,
}

impl RealZooKeeper {
    /// Starts `nodes` servers (1 = standalone) on fresh loopback ports and data folders and waits
    /// (at most 60 s) until each serves.
    pub fn start(name: &str, nodes: usize) -> Result<Self, String> {
        Self::start_with(name, nodes, &[])
    }

    /// `start`, with more arguments for `real_zookeeper.py start` (`--super-digest ID`).
    pub fn start_with(name: &str, nodes: usize, extra: &[&str]) -> Result<Self, String> {
        let mut zk = RealZooKeeper {
            dir: fresh_scratch(name).join("zk"),
            hosts: String::new(),
        };
        let ports: Vec<String> = (0..nodes).map(|_| free_port().to_string()).collect();
        let mut cmd = Command::new(python());
        cmd.arg(zk_scripts().join("real_zookeeper.py"))
            .arg("start")
            .arg("--dir")
            .arg(&zk.dir)
            .args(["--ensemble", &nodes.to_string()])
            .args(["--ports", &ports.join(",")])
            .args(["--timeout", &START_SECS.to_string()])
            .args(extra);
        let ran = run_limited(cmd, "zk-start", START_SECS + 30)?;
        if !ran.ok() {
            return Err(ran.describe("real_zookeeper.py start")); // zk's Drop stops what started
        }
        print!("{}", ran.stdout);
        zk.hosts = ran
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("hosts="))
            .ok_or_else(|| ran.describe("real_zookeeper.py start printed no hosts= line:"))?
            .to_string();
        Ok(zk)
    }

    /// `127.0.0.1:P1[,127.0.0.1:P2,...]`
    pub fn hosts(&self) -> &str {
        &self.hosts
    }

    /// The java processes (each leads its own process group).
    fn pids(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path().join("pid")).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }
}

impl Drop for RealZooKeeper {
    fn drop(&mut self) {
        let pids = self.pids();
        let mut cmd = Command::new(python());
        cmd.arg(zk_scripts().join("real_zookeeper.py"))
            .arg("stop")
            .arg("--dir")
            .arg(&self.dir);
        let stopped = run_limited(cmd, "zk-stop", STOP_SECS).is_ok_and(|r| r.ok());
        if !stopped {
            for pid in pids {
                kill_group(pid);
            }
        }
        if let Some(dir) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The last line must be exactly `N passed, 0 failed` with N > 0.
fn all_passed(stdout: &str) -> bool {
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    last.and_then(|l| l.strip_suffix(" passed, 0 failed"))
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n > 0)
}

/// Runs `tests/zk/kazoo_check.py` against `hosts` (`127.0.0.1:PORT[,...]`) under a unique root
/// path; `Ok` when every check passed. Its output is printed (seen with `--nocapture`).
pub fn run_kazoo_check(hosts: &str) -> Result<(), String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let root_path = format!(
        "/drover-wire-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut cmd = Command::new(python());
    cmd.arg(zk_scripts().join("kazoo_check.py"))
        .args(["--hosts", hosts])
        .args(["--root", &root_path])
        .args(["--deadline", &(KAZOO_SECS - 20).to_string()]);
    let ran = run_limited(cmd, "kazoo-check", KAZOO_SECS)?;
    println!("kazoo_check.py --hosts {hosts}\n{}", ran.stdout.trim_end());
    if ran.code() == Some(3) {
        return Err(ran.describe("kazoo_check.py (kazoo not importable)"));
    }
    if ran.ok() && all_passed(&ran.stdout) {
        Ok(())
    } else {
        Err(ran.describe("kazoo_check.py"))
    }
}

/// Runs `tests/zk/zkcli_check.sh` (ZooKeeper's Java CLI) against one `127.0.0.1:PORT`.
pub fn run_zkcli_check(server: &str) -> Result<(), String> {
    let mut cmd = Command::new("bash");
    cmd.arg(zk_scripts().join("zkcli_check.sh")).arg(server);
    let ran = run_limited(cmd, "zkcli-check", ZKCLI_SECS)?;
    println!("zkcli_check.sh {server}\n{}", ran.stdout.trim_end());
    if ran.ok() && all_passed(&ran.stdout) {
        Ok(())
    } else {
        Err(ran.describe("zkcli_check.sh"))
    }
}

/// Prints a failure in full (newlines intact) and returns its first line as the test's error.
fn report<T>(result: Result<T, String>) -> Result<T, String> {
    result.map_err(|e| {
        eprintln!("{e}");
        e.lines().next().unwrap_or("failed").to_string()
    })
}

#[test]
fn kazoo_script_passes_against_real_zookeeper() -> Result<(), String> {
    let test = "kazoo_script_passes_against_real_zookeeper";
    let missing = missing_tools(true, false);
    if !missing.is_empty() {
        return skip_or_fail(test, &missing);
    }
    report(RealZooKeeper::start("wire-kazoo", 1).and_then(|zk| run_kazoo_check(zk.hosts())))
}

#[test]
fn kazoo_script_passes_against_a_real_zookeeper_ensemble() -> Result<(), String> {
    let test = "kazoo_script_passes_against_a_real_zookeeper_ensemble";
    let missing = missing_tools(true, false);
    if !missing.is_empty() {
        return skip_or_fail(test, &missing);
    }
    report(RealZooKeeper::start("wire-ensemble", 3).and_then(|zk| run_kazoo_check(zk.hosts())))
}

#[test]
fn zkcli_reads_back_a_node_on_real_zookeeper() -> Result<(), String> {
    let test = "zkcli_reads_back_a_node_on_real_zookeeper";
    let missing = missing_tools(false, true);
    if !missing.is_empty() {
        return skip_or_fail(test, &missing);
    }
    report(RealZooKeeper::start("wire-zkcli", 1).and_then(|zk| run_zkcli_check(zk.hosts())))
}

#[test]
fn the_pass_line_is_read_strictly() {
    assert!(all_passed("ok a\n3 passed, 0 failed\n"));
    assert!(!all_passed("2 passed, 1 failed\n"));
    assert!(!all_passed("0 passed, 0 failed\n"));
    assert!(!all_passed("3 passed, 0 failed\nFAIL late\n"));
    assert!(!all_passed(""));
}

/// Runs `tests/zk/acl_check.py` against `hosts` under a unique root: its transcript.
fn acl_transcript(hosts: &str) -> Result<String, String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let root_path = format!(
        "/drover-acl-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut cmd = Command::new(python());
    cmd.arg(zk_scripts().join("acl_check.py"))
        .args(["--hosts", hosts])
        .args(["--root", &root_path]);
    let ran = run_limited(cmd, "acl-check", KAZOO_SECS)?;
    if !ran.ok() || ran.stdout.lines().last() != Some("done") {
        return Err(ran.describe(&format!("acl_check.py --hosts {hosts}")));
    }
    Ok(ran.stdout)
}

#[test]
fn kazoo_acl_script_gets_the_same_answers_from_drover_as_from_zookeeper() -> Result<(), String> {
    let test = "kazoo_acl_script_gets_the_same_answers_from_drover_as_from_zookeeper";
    let missing = missing_tools(true, false);
    if !missing.is_empty() {
        return skip_or_fail(test, &missing);
    }
    // ZooKeeper's administrator guide's superDigest, for `super:test`.
    let super_digest = "super:D/InIHSb7yEEbrWz8b9l71RjZJU=";
    let reference = RealZooKeeper::start_with("wire-acl", 1, &["--super-digest", super_digest])
        .and_then(|zk| acl_transcript(zk.hosts()));
    let reference = report(reference)?;
    // The reference itself must have refused and allowed, or the comparison proves nothing.
    for expected in [
        "anon reads it: NoAuthError",
        "alice reads it: ok b's'",
        "anon creates with the auth scheme: InvalidACLError",
        "bob writes it: ok version=1",
        "a client authenticates with an unknown scheme: AuthFailedError",
        "super reads alice's node: ok b'm'",
        "a wrong super password reads alice's node: NoAuthError",
    ] {
        assert!(
            reference.lines().any(|l| l == expected),
            "ZooKeeper's transcript lacks {expected:?}:\n{reference}"
        );
    }
    let coord = crate::coord_live::DroverCoord::start_with(
        "wire-acl",
        vec![vec!["--super-digest".to_string(), super_digest.to_string()]; 3],
    );
    let ours = report(acl_transcript(&coord.hosts()))?;
    let differ: Vec<String> = reference
        .lines()
        .zip(ours.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("  ZooKeeper: {a}\n  drover:    {b}"))
        .collect();
    assert!(
        differ.is_empty() && reference.lines().count() == ours.lines().count(),
        "drover coord answered the ACL script differently:\n{}\n--- ZooKeeper\n{reference}\n--- drover\n{ours}",
        differ.join("\n")
    );
    println!("{ours}");
    Ok(())
}
