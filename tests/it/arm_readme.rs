//! The README's "Two Arm hosts" section, run as written; and the shape of the GitHub Actions
//! workflow that tests drover on x86_64 and on native Arm.
//!
//! The section's host blocks are its fenced blocks whose first line is `# od1000-N (ADDRESS): ...`.
//! Both hosts become loopback addresses of this machine (od1000-0 at 127.0.0.10, od1000-1 at
//! 127.0.0.11), so every daemon keeps the README's port: each listens on its own host's address.
//! What changes from the README: the binary is this build's, the work dirs are a scratch folder's,
//! the agents run processes only (`--containerizers mesos`: no Docker, no swarm), dns answers on a
//! free UDP port instead of 53 (a privileged port, which `drover up`'s Docker test also wants), and
//! another port the README names is swapped for a free one only when something already holds it.
//! The host names stay od1000-0 and od1000-1. Every process of the run (daemons and the tasks the
//! agents leave behind) is stopped at the end, SIGTERM then SIGKILL, also when the test fails.
//!
//! `.github/workflows/ci.yml` cannot run on this machine (GitHub's runners run it): only its
//! structure is checked here.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

use crate::mesos_live::wait_until;
use crate::root;
use crate::wire_zk::fresh_scratch;

const SECTION: &str = "## Two Arm hosts";
/// Every daemon, and through it every task, carries this variable: what is left is found by it.
const RUN_MARKER: &str = "DROVER_ARM_README_RUN";
const HOSTS: [&str; 2] = ["od1000-0", "od1000-1"];
const SEED_APPS: [&str; 2] = ["/arm-demo/group1/ubuntu1", "/arm-demo/group2/ubuntu2"];

/// The section, from its heading to the next `## `.
fn section() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("read README.md");
    let start = readme
        .find(&format!("\n{SECTION}\n"))
        .expect("README.md has no '## Two Arm hosts' section")
        + 1;
    let body = &readme[start + SECTION.len()..];
    let end = body.find("\n## ").map_or(body.len(), |i| i + 1);
    readme[start..start + SECTION.len() + end].to_string()
}

/// The fenced code blocks of `text`, without their fences.
fn code_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut open: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("```") {
            match open.take() {
                Some(block) => blocks.push(block),
                None => open = Some(String::new()),
            }
        } else if let Some(block) = open.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    assert!(open.is_none(), "an unclosed code block in {SECTION}");
    blocks
}

/// One host's block: `# od1000-N (ADDRESS): roles`, then its commands, split into words.
struct HostBlock {
    host: String,
    address: String,
    commands: Vec<Vec<String>>,
}

fn host_block(block: &str) -> Option<HostBlock> {
    let header = block.lines().next()?.strip_prefix("# od1000-")?;
    let (host, rest) = header.split_once(" (")?;
    let (address, _) = rest.split_once(')')?;
    let mut commands = Vec::new();
    let mut command = String::new();
    for line in block.lines().skip(1) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => command.push_str(start),
            None => {
                command.push_str(line);
                let daemon = command.trim().trim_end_matches('&').trim().to_string();
                commands.push(words(&daemon));
                command.clear();
            }
        }
    }
    assert!(
        command.is_empty(),
        "a command of od1000-{host} ends in '\\'"
    );
    Some(HostBlock {
        host: format!("od1000-{host}"),
        address: address.to_string(),
        commands,
    })
}

/// A command's words, as sh splits them: blanks, '...' and "..." (without expansions inside).
/// Anything beyond plain commands (pipes, variables, redirections) is refused: the README's host
/// blocks stay runnable as they are.
fn words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, '$' | '|' | ';' | '<' | '>' | '`' | '&' | '*') => {
                panic!("{command:?}: a host block holds plain commands only, not {c:?}")
            }
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(quote.is_none(), "{command:?}: an unclosed quote");
    words.extend(word);
    words
}

/// The value after `flag` in a command.
fn flag<'a>(command: &'a [String], flag: &str) -> Option<&'a str> {
    let at = command.iter().position(|w| w == flag)?;
    command.get(at + 1).map(String::as_str)
}

/// `text` with every run of digits equal to `from` made `to` (`:2181/`, `2181`; not `21810`).
fn swap_number(text: &str, from: u16, to: u16) -> String {
    let (from, to) = (from.to_string(), to.to_string());
    let mut out = String::new();
    let mut digits = String::new();
    for c in text.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        out.push_str(if digits == from { &to } else { &digits });
        digits.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

/// The loopback address a host plays on: od1000-N at 127.0.0.1N.
fn loopback(host: &str) -> String {
    let n = host.strip_prefix("od1000-").expect("an od1000-N host");
    format!("127.0.0.1{n}")
}

fn tcp_free(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok()
}

fn free_tcp_port() -> u16 {
    let listener = TcpListener::bind("0.0.0.0:0").expect("bind 0.0.0.0:0");
    listener.local_addr().expect("local addr").port()
}

fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind udp 0.0.0.0:0");
    socket.local_addr().expect("local addr").port()
}

/// How the README's text becomes this machine's: addresses, ports, work dirs.
struct Rewrite {
    addresses: Vec<(String, String)>,
    ports: Vec<(u16, u16)>,
    dir: PathBuf,
}

impl Rewrite {
    fn new(blocks: &[HostBlock], dir: &Path) -> Rewrite {
        let addresses = blocks
            .iter()
            .map(|b| (b.address.clone(), loopback(&b.host)))
            .collect();
        let mut tcp = BTreeSet::new();
        let mut udp = BTreeSet::new();
        for command in blocks.iter().flat_map(|b| &b.commands) {
            let dns = command.get(1).is_some_and(|role| role == "dns");
            for name in ["--port", "--client-port", "--http-port"] {
                let Some(port) = flag(command, name).and_then(|p| p.parse::<u16>().ok()) else {
                    continue;
                };
                if dns && name == "--port" {
                    udp.insert(port);
                } else {
                    tcp.insert(port);
                }
            }
        }
        let mut ports: Vec<(u16, u16)> = udp.iter().map(|&p| (p, free_udp_port())).collect();
        for port in tcp.into_iter().filter(|p| !udp.contains(p)) {
            if !tcp_free(port) {
                let free = free_tcp_port();
                println!("port {port} is taken on this machine: {free} plays it");
                ports.push((port, free));
            }
        }
        Rewrite {
            addresses,
            ports,
            dir: dir.to_path_buf(),
        }
    }

    fn text(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (from, to) in &self.addresses {
            text = text.replace(from.as_str(), to);
        }
        for &(from, to) in &self.ports {
            text = swap_number(&text, from, to);
        }
        text
    }

    /// One command of `host`'s block as it runs here.
    fn command(&self, host: &str, command: &[String]) -> Vec<String> {
        assert_eq!(
            command.first().map(String::as_str),
            Some("drover"),
            "{command:?}"
        );
        let mut out = vec![env!("CARGO_BIN_EXE_drover").to_string()];
        let mut previous = "";
        for word in &command[1..] {
            let rewritten = match previous {
                "--work-dir" => {
                    let name = Path::new(word).file_name().expect("a work dir's name");
                    self.dir.join(host).join(name).display().to_string()
                }
                "--containerizers" => {
                    assert!(word.split(',').any(|c| c == "mesos"), "{word}: no mesos");
                    "mesos".to_string()
                }
                _ => self.text(word),
            };
            previous = word;
            out.push(rewritten);
        }
        out
    }
}

/// One daemon of the README, in its own process group, its output in a log file.
struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

/// Every daemon of the two hosts; stopped (SIGTERM, then SIGKILL) with their tasks when dropped.
struct Hosts {
    daemons: Vec<Daemon>,
    run: String,
    dir: PathBuf,
}

impl Hosts {
    fn start(&mut self, name: String, command: &[String]) -> Result<(), String> {
        let log = self.dir.join(format!("{name}.log"));
        let file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(&command[0])
            .args(&command[1..])
            .env(RUN_MARKER, &self.run)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start {command:?}: {e}"))?;
        self.daemons.push(Daemon {
            name,
            child: Some(child),
            log,
        });
        Ok(())
    }

    /// The daemons that are no longer running.
    fn exited(&mut self) -> Vec<String> {
        self.daemons
            .iter_mut()
            .filter_map(|d| {
                let running = d
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_none());
                (!running).then(|| d.name.clone())
            })
            .collect()
    }

    /// The end of every daemon's log, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for daemon in &self.daemons {
            let log = without_colours(&std::fs::read_to_string(&daemon.log).unwrap_or_default());
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            out.push_str(&format!("--- {}\n{tail}\n", daemon.name));
        }
        out
    }

    /// SIGTERM to every daemon, SIGKILL to the group of one still there after 15 s, then SIGKILL
    /// to every task left (agents leave their tasks running when they stop, as Mesos' do).
    /// `Err` names a daemon SIGTERM did not stop, or a process still alive at the end.
    fn stop(&mut self) -> Result<(), String> {
        let mut children: Vec<(String, Child)> = self
            .daemons
            .iter_mut()
            .filter_map(|d| d.child.take().map(|c| (d.name.clone(), c)))
            .collect();
        for (_, child) in &children {
            signal(&child.id().to_string(), "TERM");
        }
        wait_until(15, || {
            children
                .iter_mut()
                .all(|(_, c)| c.try_wait().ok().flatten().is_some())
        });
        let mut problems = Vec::new();
        for (name, child) in &mut children {
            if child.try_wait().ok().flatten().is_none() {
                problems.push(format!("{name} did not stop on SIGTERM within 15 s"));
                signal(&format!("-{}", child.id()), "KILL");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for pid in self.processes_left() {
            signal(&format!("-{pid}"), "KILL");
            signal(&pid.to_string(), "KILL");
        }
        wait_until(10, || self.processes_left().is_empty());
        let left = self.processes_left();
        if !left.is_empty() {
            problems.push(format!("processes of the run still alive: {left:?}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    /// The live processes (not zombies) that carry this run's marker: daemons and their tasks.
    fn processes_left(&self) -> Vec<u32> {
        let marker = format!("{RUN_MARKER}={}", self.run);
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut left = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            if !environ
                .split(|&b| b == 0)
                .any(|variable| variable == marker.as_bytes())
            {
                continue;
            }
            if crate::scheduler_live::alive(i64::from(pid)) {
                left.push(pid);
            }
        }
        left
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if self.daemons.iter().any(|d| d.child.is_some()) {
            if let Err(e) = self.stop() {
                eprintln!("stopping the two hosts: {e}");
            }
        }
    }
}

/// `text` without its terminal colour sequences (`ESC [ ... m`).
fn without_colours(text: &str) -> String {
    let mut out = String::new();
    let mut in_sequence = false;
    for c in text.chars() {
        match (in_sequence, c) {
            (false, '\u{1b}') => in_sequence = true,
            (false, c) => out.push(c),
            (true, 'm') => in_sequence = false,
            (true, _) => {}
        }
    }
    out
}

fn signal(target: &str, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}").as_str(), "--", target])
        .stderr(Stdio::null())
        .status();
}

/// One HTTP/1.0 exchange with a JSON body: the status and the JSON answer (`null` if none).
fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, Value), String> {
    crate::scheduler_live::http_json(address, method, path, body)
}

fn get(address: SocketAddr, path: &str) -> Option<Value> {
    match http(address, "GET", path, None) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// Whether the master at `address` leads (Mesos' `master/elected` metric).
fn elected(address: SocketAddr) -> bool {
    get(address, "/metrics/snapshot").is_some_and(|s| s["master/elected"].as_f64() == Some(1.0))
}

/// `--ip` and a port flag of a command, as a socket address.
fn address_of(command: &[String], port_flag: &str) -> SocketAddr {
    let ip = flag(command, "--ip").expect("an --ip");
    let port = flag(command, port_flag).expect("a port");
    format!("{ip}:{port}").parse().expect("an address")
}

/// The seed's groups without their Docker containers: the same apps as `sleep` processes.
fn seed_groups_as_processes() -> String {
    let text = std::fs::read_to_string(root().join("apps/basic.json")).expect("apps/basic.json");
    let mut groups: Value = serde_json::from_str(&text).expect("apps/basic.json is JSON");
    for group in groups["groups"].as_array_mut().expect("groups") {
        for app in group["apps"].as_array_mut().expect("apps") {
            app.as_object_mut().expect("an app").remove("container");
        }
    }
    groups.to_string()
}

#[test]
fn the_two_arm_hosts_commands_run_the_seed_on_two_loopback_hosts() -> Result<(), String> {
    let section = section();
    let blocks = code_blocks(&section);
    let hosts: Vec<HostBlock> = blocks.iter().filter_map(|b| host_block(b)).collect();
    let names: BTreeSet<&str> = hosts.iter().map(|h| h.host.as_str()).collect();
    assert_eq!(names, HOSTS.into(), "one block per host");
    let roles = |host: &str| -> Vec<String> {
        let block = hosts.iter().find(|h| h.host == host).expect("the host");
        block.commands.iter().map(|c| c[1].clone()).collect()
    };
    println!(
        "od1000-0 runs {:?}, od1000-1 {:?}",
        roles("od1000-0"),
        roles("od1000-1")
    );
    // The curl of the seed's apps, in a block of its own.
    let curl: Vec<String> = blocks
        .iter()
        .flat_map(|b| b.lines())
        .find(|l| l.starts_with("curl ") && l.contains("/v2/groups"))
        .map(words)
        .ok_or("no curl of /v2/groups in the section")?;
    assert!(
        curl.windows(2).any(|w| w == ["-d", "@apps/basic.json"]),
        "{curl:?}"
    );

    let dir = fresh_scratch("arm-readme");
    let rewrite = Rewrite::new(&hosts, &dir);
    let mut cluster = Hosts {
        daemons: Vec::new(),
        run: dir.display().to_string(),
        dir: dir.clone(),
    };
    let mut masters = Vec::new();
    let mut scheduler = None;
    let mut dns = Vec::new();
    for block in &hosts {
        for command in &block.commands {
            let command = rewrite.command(&block.host, command);
            match command[1].as_str() {
                "master" => masters.push(address_of(&command, "--port")),
                "scheduler" => scheduler = Some(address_of(&command, "--http-port")),
                "dns" => dns.push(address_of(&command, "--http-port")),
                _ => {}
            }
            println!("{}: {}", block.host, command[1..].join(" "));
            cluster.start(format!("{}-{}", block.host, command[1]), &command)?;
        }
    }
    let scheduler = scheduler.ok_or("no scheduler in the host blocks")?;
    assert_eq!(masters.len(), 2, "a master on each host");
    assert_eq!(dns.len(), 2, "dns on each host");

    // The leading master lists both agents by their host names.
    let mut agents = BTreeSet::new();
    let mut leader = None;
    let registered = wait_until(90, || {
        leader = masters.iter().copied().find(|&m| elected(m));
        let state = leader.and_then(|m| get(m, "/master/state"));
        agents = state
            .iter()
            .flat_map(|s| s["slaves"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["hostname"].as_str().map(str::to_string))
            .collect();
        agents == HOSTS.iter().map(|h| h.to_string()).collect()
    });
    if !registered {
        return Err(format!(
            "no leading master lists od1000-0 and od1000-1 ({agents:?}); exited: {:?}\n{}",
            cluster.exited(),
            cluster.logs()
        ));
    }
    // The standby sends clients to the leader, as the section says.
    for &standby in masters.iter().filter(|&&m| Some(m) != leader) {
        let answer = http(standby, "GET", "/master/redirect", None);
        if !answer.as_ref().is_ok_and(|(status, _)| *status == 307) {
            return Err(format!("{standby}/master/redirect: {answer:?}"));
        }
    }
    if !wait_until(60, || get(scheduler, "/v2/info").is_some()) {
        return Err(format!("no /v2/info at {scheduler}\n{}", cluster.logs()));
    }

    // The README's curl, at this machine's address, with the groups' containers taken out.
    let url = curl
        .iter()
        .find(|w| w.starts_with("http://"))
        .ok_or("the curl names no URL")?;
    let url = rewrite.text(url);
    let (authority, path) = url["http://".len()..]
        .split_once('/')
        .ok_or_else(|| format!("{url}: no path"))?;
    let target: SocketAddr = authority.parse().map_err(|e| format!("{url}: {e}"))?;
    let (status, answer) = http(
        target,
        "POST",
        &format!("/{path}"),
        Some(&seed_groups_as_processes()),
    )?;
    if status != 201 {
        return Err(format!("POST {url}: {status} {answer}\n{}", cluster.logs()));
    }

    // Each app's two instances run, one on od1000-0 and one on od1000-1.
    let mut tasks = Vec::new();
    let running = wait_until(120, || {
        tasks = get(scheduler, "/v2/tasks")
            .and_then(|t| t["tasks"].as_array().cloned())
            .unwrap_or_default();
        SEED_APPS.iter().all(|app| {
            let of_app: Vec<&Value> = tasks.iter().filter(|t| t["appId"] == *app).collect();
            of_app.len() == 2 && of_app.iter().all(|t| t["state"] == "TASK_RUNNING")
        })
    });
    if !running {
        return Err(format!(
            "the seed's tasks do not run: {tasks:?}\n{}",
            cluster.logs()
        ));
    }
    for app in SEED_APPS {
        let on: BTreeSet<&str> = tasks
            .iter()
            .filter(|t| t["appId"] == app)
            .filter_map(|t| t["host"].as_str())
            .collect();
        if on != HOSTS.into() {
            return Err(format!(
                "{app} runs on {on:?}, not on od1000-0 and od1000-1\n{}",
                cluster.logs()
            ));
        }
    }

    // Each host's dns names the tasks of both hosts (Mesos-DNS' HTTP API).
    let both: BTreeSet<String> = hosts.iter().map(|h| loopback(&h.host)).collect();
    for server in &dns {
        let mut ips = BTreeSet::new();
        let named = wait_until(30, || {
            ips = get(*server, "/v1/hosts/ubuntu1-group1-arm-demo.marathon.mesos")
                .and_then(|r| r.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|r| r["ip"].as_str().map(str::to_string))
                .collect();
            ips == both
        });
        if !named {
            return Err(format!(
                "dns at {server} names ubuntu1 at {ips:?}, not {both:?}"
            ));
        }
    }

    let exited = cluster.exited();
    if !exited.is_empty() {
        return Err(format!(
            "daemons exited early: {exited:?}\n{}",
            cluster.logs()
        ));
    }
    cluster.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The text of `value` if it is a string, else "".
fn text(value: &Yaml) -> &str {
    value.as_str().unwrap_or("")
}

#[test]
fn the_ci_workflow_tests_and_benches_on_x86_64_and_native_arm64() {
    let path = root().join(".github/workflows/ci.yml");
    let source = std::fs::read_to_string(&path).expect("read .github/workflows/ci.yml");
    let documents = YamlLoader::load_from_str(&source).expect("ci.yml is YAML");
    let workflow = &documents[0];
    // YAML 1.2: `on` is a key, not the boolean YAML 1.1 parsers make of it.
    assert!(!workflow["on"].is_badvalue(), "no `on:` triggers");
    let jobs = workflow["jobs"].as_hash().expect("jobs");
    for (job, runner, arch) in [
        ("x86_64", "ubuntu-24.04", "x86_64"),
        ("arm64", "ubuntu-24.04-arm", "aarch64"),
    ] {
        let job_yaml = &workflow["jobs"][job];
        assert_eq!(text(&job_yaml["runs-on"]), runner, "job {job}");
        let steps = job_yaml["steps"].as_vec().expect("steps");
        let run_at = |needle: &dyn Fn(&str) -> bool| -> Option<usize> {
            steps
                .iter()
                .position(|s| text(&s["run"]).lines().any(|l| needle(l.trim())))
        };
        let tests = run_at(&|l| l.starts_with("cargo test --locked"));
        let scenarios = run_at(&|l| l.contains("cargo run --release --locked -- sim scenarios/"));
        let bench = run_at(&|l| l.contains("cargo bench") && l.contains("--bench allocator"));
        let change = run_at(&|l| l.contains("change:"));
        assert!(tests.is_some(), "{job} runs no `cargo test --locked`");
        assert!(scenarios.is_some(), "{job} runs no scenarios");
        let bench = bench.unwrap_or_else(|| panic!("{job} runs no allocator bench"));
        assert!(
            change.is_some_and(|c| c > bench),
            "{job} prints no change against the baseline after the bench"
        );
        // criterion's measurements kept between runs, per architecture, restored before the bench.
        let cache = steps
            .iter()
            .position(|s| text(&s["uses"]).starts_with("actions/cache@"))
            .unwrap_or_else(|| panic!("{job} caches nothing"));
        let with = &steps[cache]["with"];
        assert!(cache < bench, "{job}: the cache comes after the bench");
        assert!(
            text(&with["path"])
                .lines()
                .any(|l| l.trim() == "target/criterion"),
            "{job}: the cache does not keep target/criterion"
        );
        assert!(
            text(&with["key"]).contains(arch),
            "{job}: key {:?}",
            with["key"]
        );
        let restore = text(&with["restore-keys"]);
        assert!(
            restore
                .lines()
                .any(|l| l.trim() == format!("criterion-{arch}-")),
            "{job}: restore-keys {restore:?} do not find the previous run"
        );
    }
    // Every action is pinned: a version tag or a commit, never a branch.
    let mut uses = Vec::new();
    for (_, job) in jobs {
        for step in job["steps"].as_vec().into_iter().flatten() {
            if let Some(action) = step["uses"].as_str() {
                uses.push(action.to_string());
            }
        }
    }
    assert!(uses.iter().any(|u| u == "actions/checkout@v4"), "{uses:?}");
    assert!(uses.iter().any(|u| u == "actions/cache@v4"), "{uses:?}");
    for action in &uses {
        let (_, version) = action
            .split_once('@')
            .unwrap_or_else(|| panic!("{action} is not pinned"));
        let tag = version
            .strip_prefix('v')
            .is_some_and(|v| !v.is_empty() && v.split('.').all(|n| n.parse::<u32>().is_ok()));
        let commit = version.len() == 40 && version.chars().all(|c| c.is_ascii_hexdigit());
        assert!(tag || commit, "{action} is not pinned to a version");
    }
}
