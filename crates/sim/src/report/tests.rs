use super::model::{build, mentioned, BandKind, Category, LaneKind, Model};
use super::*;

fn nodes(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, r)| (n.to_string(), r.to_string()))
        .collect()
}

fn failure(at_ms: u64, check: &str, message: &str) -> Failure {
    Failure {
        at_ms,
        check: check.to_string(),
        message: message.to_string(),
    }
}

fn lane(model: &Model, name: &str) -> usize {
    model
        .lanes
        .iter()
        .position(|l| l.name == name)
        .unwrap_or_else(|| panic!("no lane {name} in {:?}", model.lanes))
}

/// The bands of `kind` on `node`'s lane as (from, to).
fn bands(model: &Model, kind: BandKind, node: &str) -> Vec<(u64, u64)> {
    let at = lane(model, node);
    model
        .bands
        .iter()
        .filter(|b| b.kind == kind && b.lane == Some(at))
        .map(|b| (b.from_ms, b.to_ms))
        .collect()
}

fn page(trace: &str, failures: &[Failure]) -> String {
    render(&Run {
        scenario: "story",
        seed: 7,
        trace,
        failures,
        replay: "drover sim scenarios/story.json --seed 7",
        nodes: &nodes(&[("coord-1", "coord"), ("agent-1", "agent")]),
        end_ms: 10_000,
    })
}

#[test]
fn every_node_has_a_lane_even_one_that_recorded_nothing() {
    let trace = "0 coord-1 start applied=0 term=0\n\
                 5 fw subscribed\n\
                 9 sim crash node=agent-9\n";
    let plan = nodes(&[("coord-1", "coord"), ("agent-1", "agent")]);
    let model = build(trace, &plan, &[], 100);
    let names: Vec<(&str, LaneKind, &str)> = model
        .lanes
        .iter()
        .map(|l| (l.name.as_str(), l.kind, l.role.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("sim", LaneKind::Harness, "harness"),
            ("coord-1", LaneKind::Node, "coord"),
            ("agent-1", LaneKind::Node, "agent"),
            ("fw", LaneKind::Node, "fw"),
            ("agent-9", LaneKind::Node, "agent"),
        ]
    );
    assert_eq!(model.marks.len(), 3);
    assert_eq!(model.end_ms, 100);
    let html = page(trace, &[]);
    for name in ["\"coord-1\"", "\"agent-1\"", "\"fw\"", "\"agent-9\""] {
        assert!(
            html.contains(name),
            "{name} missing from the embedded lanes"
        );
    }
}

#[test]
fn events_are_sorted_into_categories_and_chatty_ones_start_hidden() {
    let trace = "1 agent-1 task_state task=t state=TASK_RUNNING\n\
                 2 resolver-1 dns_answer name=web ips=10.0.0.1\n\
                 3 coord-writer-1 call op=write\n\
                 4 master-1 agent_registered agent=agent-1 tasks=0\n\
                 5 scheduler-1 deployment id=d steps=2\n\
                 6 coord-1 leader term=2\n\
                 7 sim partition groups=a|b\n\
                 8 sim http step=0 node=a method=GET path=/v2/apps\n";
    let model = build(trace, &[], &[], 0);
    let categories: Vec<Category> = model.marks.iter().map(|m| m.category).collect();
    assert_eq!(
        categories,
        [
            Category::Task,
            Category::Dns,
            Category::Other,
            Category::Agent,
            Category::Deploy,
            Category::Election,
            Category::Fault,
            Category::Http,
        ]
    );
    let html = page(trace, &[]);
    assert!(html.contains("data-category=\"task\" checked"));
    assert!(html.contains("data-category=\"dns\">"));
    assert!(html.contains("data-category=\"other\">"));
}

#[test]
fn a_partition_lasts_until_heal_and_a_crash_until_restart() {
    let trace = "1000 sim partition groups=a|b,c\n\
                 2000 sim crash node=c\n\
                 3000 sim heal\n\
                 4000 sim restart node=c\n\
                 5000 sim partition from=a to=b\n\
                 6000 sim stop node=b\n";
    let model = build(
        trace,
        &nodes(&[("a", "x"), ("b", "x"), ("c", "x")]),
        &[],
        9000,
    );
    for node in ["a", "b", "c"] {
        assert_eq!(
            bands(&model, BandKind::Partition, node),
            [(1000, 3000)],
            "{node}"
        );
    }
    assert_eq!(bands(&model, BandKind::Crash, "c"), [(2000, 4000)]);
    // A one-way cut is on both sides; what nothing ended lasts to the end.
    assert_eq!(bands(&model, BandKind::Cut, "a"), [(5000, 9000)]);
    assert_eq!(bands(&model, BandKind::Cut, "b"), [(5000, 9000)]);
    assert_eq!(bands(&model, BandKind::Stop, "b"), [(6000, 9000)]);
    let crash = model
        .bands
        .iter()
        .find(|b| b.kind == BandKind::Crash)
        .unwrap();
    assert_eq!(crash.line, "2000 sim crash node=c");
    assert_eq!(crash.end.as_deref(), Some("4000 sim restart node=c"));
}

#[test]
fn holds_pauses_skew_disk_loss_and_latency_are_bands_too() {
    let trace = "100 sim hold groups=a|b\n\
                 200 sim release\n\
                 300 sim pause node=a for_ms=250\n\
                 400 sim skew node=b by_ms=3000\n\
                 500 sim skew node=b by_ms=-3000\n\
                 600 sim disk node=a fault=torn\n\
                 700 sim crash node=a\n\
                 800 sim disk node=b fault=fail\n\
                 900 sim disk node=b fault=ok\n\
                 1000 sim loss rate=0.2\n\
                 1050 sim loss rate=0.025612108838560542\n\
                 1100 sim loss rate=0\n\
                 1200 sim latency max_ms=100\n";
    let model = build(trace, &nodes(&[("a", "x"), ("b", "x")]), &[], 2000);
    assert_eq!(bands(&model, BandKind::Hold, "a"), [(100, 200)]);
    assert_eq!(bands(&model, BandKind::Pause, "a"), [(300, 550)]);
    // Back at offset 0 after the second jump: no band from then.
    assert_eq!(bands(&model, BandKind::Skew, "b"), [(400, 500)]);
    // A torn write is armed until the crash that uses it; a failing disk fails until `ok`.
    assert_eq!(bands(&model, BandKind::Disk, "a"), [(600, 700)]);
    assert_eq!(bands(&model, BandKind::Disk, "b"), [(800, 900)]);
    let network: Vec<(BandKind, u64, u64, &str)> = model
        .bands
        .iter()
        .filter(|b| b.lane.is_none())
        .map(|b| (b.kind, b.from_ms, b.to_ms, b.label.as_str()))
        .collect();
    assert_eq!(
        network,
        [
            (BandKind::Loss, 1000, 1050, "loss 20%"),
            (BandKind::Loss, 1050, 1100, "loss 2.6%"),
            (BandKind::Latency, 1200, 2000, "latency ≤ 100 ms"),
        ]
    );
}

#[test]
fn leader_terms_per_role_end_with_deposed_a_crash_or_the_next_term() {
    let trace = "100 coord-1 leader term=1\n\
                 200 master-1 leader term=0\n\
                 500 sim crash node=coord-1\n\
                 700 coord-2 leader term=2\n\
                 800 master-2 leader term=0\n\
                 900 master-1 deposed\n\
                 950 coord-2 leader term=3\n";
    let plan = nodes(&[
        ("coord-1", "coord"),
        ("coord-2", "coord"),
        ("master-1", "master"),
        ("master-2", "master"),
    ]);
    let model = build(trace, &plan, &[], 1000);
    let coord = lane(&model, "leader:coord");
    let master = lane(&model, "leader:master");
    assert_eq!(model.lanes[coord].kind, LaneKind::Leaders);
    // lane row: node term from..to
    let terms: Vec<String> = model
        .leaders
        .iter()
        .map(|l| {
            let term = l.term.as_deref().unwrap_or("?");
            let lane = &model.lanes[l.lane].name;
            format!(
                "{lane} {}: {} term {term} {}..{}",
                l.row, l.node, l.from_ms, l.to_ms
            )
        })
        .collect();
    assert_eq!(
        terms,
        [
            "leader:coord 0: coord-1 term 1 100..500",
            "leader:master 0: master-1 term 0 200..900",
            "leader:coord 0: coord-2 term 2 700..950",
            // Two masters claimed to lead at once: the second gets a row of its own.
            "leader:master 1: master-2 term 0 800..1000",
            "leader:coord 0: coord-2 term 3 950..1000",
        ]
    );
    assert_eq!(model.lanes[master].rows, 2);
    assert_eq!(model.lanes[coord].rows, 1);
}

#[test]
fn http_steps_pair_request_and_answer_and_flag_an_unexpected_status() {
    let trace = "1000 sim http step=0 node=s-1 method=POST path=/v2/groups\n\
                 1000 sim http step=1 node=s-1 method=GET path=/v2/apps\n\
                 1040 client http step=1 node=s-1 method=GET path=/v2/apps status=200\n\
                 1090 client http step=0 node=s-1 method=POST path=/v2/groups status=503\n\
                 2000 sim http step=2 node=s-2 method=GET path=/v2/info\n";
    let failures = [failure(
        1090,
        "timeline[0].expect_status",
        "POST /v2/groups on s-1 answered 503, expected 201",
    )];
    let model = build(trace, &[], &failures, 3000);
    let steps: Vec<(&str, u64, u64, &str, bool, usize)> = model
        .http
        .iter()
        .map(|h| {
            (
                h.step.as_str(),
                h.from_ms,
                h.to_ms,
                h.status.as_str(),
                h.failed,
                h.row,
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("0", 1000, 1090, "503", true, 0),
            ("1", 1000, 1040, "200", false, 1),
            ("2", 2000, 3000, "pending", false, 0),
        ]
    );
    assert_eq!(model.lanes[lane(&model, "client")].rows, 2);
    assert_eq!(model.failures[0].lane, Some(lane(&model, "s-1")));
}

#[test]
fn a_failure_is_marked_on_the_node_it_names_with_the_replay_command() {
    let trace = "700 coord-1 leader term=2\n";
    let failures = [
        failure(700, "expect.never[0]", "coord-1 recorded `leader term=2`"),
        failure(10_000, "expect.eventually[0]", "never saw `peer_up`"),
    ];
    let model = build(trace, &nodes(&[("coord-1", "coord")]), &failures, 10_000);
    assert_eq!(model.failures[0].nodes, ["coord-1"]);
    assert_eq!(model.failures[0].lane, Some(lane(&model, "coord-1")));
    assert_eq!(model.failures[1].lane, None);
    let html = page(trace, &failures);
    assert!(html.contains("<span class=\"verdict failed\">FAILED</span>"));
    let marker = "<li class=\"failure-marker\" id=\"failure-0\" data-at-ms=\"700\">";
    assert!(html.contains(marker), "{html}");
    assert!(html.contains(
        "<strong class=\"check\">expect.never[0]</strong> on <span class=\"node\">coord-1</span>"
    ));
    assert!(html.contains("id=\"failure-1\" data-at-ms=\"10000\""));
    let replay = "replay: <code>drover sim scenarios/story.json --seed 7</code>";
    assert_eq!(html.matches(replay).count(), 2, "one per failure");
    // The script draws each failure from the embedded JSON too.
    assert!(html.contains("\"failures\":[{\"at_ms\":700,\"check\":\"expect.never[0]\""));
}

#[test]
fn a_passing_run_says_so_and_still_gives_its_replay_command() {
    let html = page("0 coord-1 start applied=0 term=0\n", &[]);
    assert!(html.contains("<span class=\"verdict passed\">PASSED</span>"));
    assert!(html.contains("<h2>No failure</h2>"));
    assert!(html.contains("<code id=\"replay\">drover sim scenarios/story.json --seed 7</code>"));
    assert!(!html.contains("failure-marker"));
}

#[test]
fn node_names_are_found_as_whole_words_only() {
    let names = ["coord-1", "coord-10", "agent-1"];
    assert_eq!(
        mentioned("coord-10 and agent-1 disagree with coord-1", names),
        ["coord-10", "agent-1", "coord-1"]
    );
    assert!(mentioned("agent-12 is not agent-1x", ["agent-1"]).is_empty());
}

#[test]
fn the_page_is_self_contained() {
    let trace = "1000 sim partition groups=coord-1|agent-1\n\
                 2000 sim heal\n\
                 2500 sim http step=0 node=coord-1 method=GET path=/v2/apps\n";
    let html = page(trace, &[failure(2000, "one_leader:coord", "two leaders")]);
    for outside in [
        "http://", "https://", "src=", "url(", "<link", "@import", "//cdn", "<iframe", "<img",
    ] {
        assert!(!html.contains(outside), "the page contains {outside:?}");
    }
    assert!(html.contains("<style>") && html.contains("<svg id=\"plot\""));
    assert_eq!(html.matches("<script").count(), 2);
}

#[test]
fn nothing_from_the_trace_or_a_failure_becomes_markup() {
    let attack = "<script>alert(1)</script>";
    let trace =
        "100 agent-1 task_state task=</script><script>alert(1)</script> state=\"><img/src=x>\n\
                 200 sim crash node=a'\"<b>\n\
                 300 <i>node</i> x=&amp;\n";
    let failures = [failure(
        300,
        "check\"><svg/onload=alert(2)>",
        &format!("agent-1 said {attack} & <!-- more"),
    )];
    let html = render(&Run {
        scenario: "<b>bold</b>",
        seed: 1,
        trace,
        failures: &failures,
        replay: "drover sim <x>.json --seed 1",
        nodes: &[],
        end_ms: 0,
    });
    for markup in [
        "<script>alert",
        "<img",
        "<b>",
        "<i>",
        "<svg/onload",
        "<!-- more",
        "<x>",
    ] {
        assert!(!html.contains(markup), "{markup:?} reached the page");
    }
    // The page's own script elements are the only ones, and the data one ends where it should.
    assert_eq!(html.matches("<script").count(), 2);
    assert_eq!(html.matches("</script>").count(), 2);
    let data_start = html.find("id=\"report-data\">").unwrap();
    let data_end = data_start + html[data_start..].find("</script>").unwrap();
    let json = &html[data_start + "id=\"report-data\">".len()..data_end];
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    // The embedded JSON still holds the exact text, for the script to show as text.
    let marks = value["marks"].as_array().unwrap();
    assert_eq!(
        marks[0][3],
        "task_state task=</script><script>alert(1)</script> state=\"><img/src=x>"
    );
    assert!(html.contains("&lt;b&gt;bold&lt;/b&gt;"));
    assert!(html.contains("agent-1 said &lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;!-- more"));
    assert!(html.contains("drover sim &lt;x&gt;.json --seed 1"));
}

#[test]
fn file_names_are_the_scenario_and_the_seed() {
    assert_eq!(
        file_name("coord-leader-crash", 11),
        "coord-leader-crash-seed-11.html"
    );
    assert_eq!(file_name("../a b/c", 2), "-a-b-c-seed-2.html");
    assert_eq!(file_name("", 3), "scenario-seed-3.html");
}

#[test]
fn a_big_trace_is_read_in_one_pass() {
    let mut trace = String::new();
    for i in 0..50_000u64 {
        trace.push_str(&format!(
            "{} coord-writer-{} call op=write n={i}\n",
            i / 3,
            i % 4
        ));
    }
    let model = build(&trace, &[], &[], 0);
    assert_eq!(model.marks.len(), 50_000);
    assert_eq!(model.lanes.len(), 5);
    let html = page(&trace, &[]);
    assert!(html.len() < trace.len() * 2, "{} bytes", html.len());
}
