//! The HTML report of one run (`drover sim --report`): a single self-contained file, a lane per
//! node on the simulated time axis with the faults as bands, who led each role term by term, the
//! HTTP steps with their statuses, the notable events and every failure with its replay command.
//!
//! The Rust side is pure: [`model::build`] reads the trace into lanes, bands and marks, and
//! [`render`] writes the page: the verdict, failures and harness actions as plain HTML, the model
//! as embedded JSON, and a small inline script (`report/page.js`) that draws the timeline as SVG.
//! Nothing is fetched: no external URL, no `src`, no stylesheet link. Every string from the trace
//! or a failure is escaped, as HTML text or as JSON that cannot end its `<script>` element.

pub mod model;

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::run::Failure;
use crate::trace::HARNESS;
use model::Category;

const STYLE: &str = include_str!("report/page.css");
const SCRIPT: &str = include_str!("report/page.js");

/// One run, as the report needs it.
pub struct Run<'a> {
    pub scenario: &'a str,
    pub seed: u64,
    /// The simulator's trace: `<ms> <node> <event k=v ...>` lines.
    pub trace: &'a str,
    pub failures: &'a [Failure],
    /// The command that replays the run.
    pub replay: &'a str,
    /// The cluster's nodes as planned, (name, role), so that a node that recorded nothing still
    /// has a lane. May be empty: lanes then come from the trace alone.
    pub nodes: &'a [(String, String)],
    /// Where the run ended (simulated ms).
    pub end_ms: u64,
}

/// The report's file name for a run: `<scenario-name>-seed-<N>.html`, the name's characters
/// other than ASCII letters, digits, `.`, `_` and `-` replaced by `-`.
pub fn file_name(scenario: &str, seed: u64) -> String {
    let name: String = scenario
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_start_matches('.');
    let name = if name.is_empty() { "scenario" } else { name };
    format!("{name}-seed-{seed}.html")
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON that is safe inside a `<script>` element: no `<`, `>` or `&` (so no `</script>` and no
/// comment opener), and no line separators older JavaScript parsers reject.
fn script_json(value: &impl serde::Serialize) -> String {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "null".to_string());
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The categories a reader can show or hide, with what they hold; `Dns` and `Other` (chatty)
/// are hidden at first.
const FILTERS: &[(Category, &str, &str, bool)] = &[
    (Category::Fault, "fault", "harness faults", true),
    (Category::Http, "http", "HTTP steps", true),
    (Category::Election, "election", "elections", true),
    (Category::Agent, "agent", "agents and frameworks", true),
    (Category::Task, "task", "tasks", true),
    (Category::Deploy, "deploy", "deployments", true),
    (Category::Node, "node", "node life", true),
    (Category::Dns, "dns", "DNS", false),
    (Category::Other, "other", "everything else", false),
];

/// The band kinds in the legend, with their CSS class suffix and what they mean.
const BANDS: &[(&str, &str)] = &[
    ("partition", "partition"),
    ("cut", "one-way cut"),
    ("hold", "held links"),
    ("crash", "crashed"),
    ("stop", "stopped"),
    ("pause", "paused"),
    ("skew", "clock skew"),
    ("disk", "disk fault"),
    ("loss", "message loss"),
    ("latency", "latency"),
];

/// The page for one run.
pub fn render(run: &Run<'_>) -> String {
    let model = model::build(run.trace, run.nodes, run.failures, run.end_ms);
    let failed = !run.failures.is_empty();
    let verdict = if failed { "FAILED" } else { "PASSED" };
    let scenario = escape_html(run.scenario);
    let replay = escape_html(run.replay);
    let mut html = String::with_capacity(4096 + run.trace.len() * 5 / 4);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{verdict} {scenario} seed {seed} · drover sim</title>\n<style>\n{STYLE}</style>\n\
         </head>\n<body>\n",
        seed = run.seed,
    );

    let _ = write!(
        html,
        "<header>\n<h1><span class=\"verdict {class}\">{verdict}</span> {scenario} \
         <span class=\"seed\">seed {seed}</span></h1>\n\
         <p class=\"replay\">replay: <code id=\"replay\">{replay}</code> \
         <button type=\"button\" class=\"copy\" data-copy=\"replay\">copy</button></p>\n",
        class = verdict.to_lowercase(),
        seed = run.seed,
    );
    let node_lanes = model
        .lanes
        .iter()
        .filter(|l| l.kind == model::LaneKind::Node)
        .count();
    let mut actions: BTreeMap<&str, usize> = BTreeMap::new();
    for line in run.trace.lines() {
        let mut words = line.split(' ');
        if let (Some(_), Some(HARNESS), Some(kind)) = (words.next(), words.next(), words.next()) {
            *actions.entry(kind).or_default() += 1;
        }
    }
    let actions: Vec<String> = actions
        .iter()
        .map(|(kind, count)| format!("{} {count}", escape_html(kind)))
        .collect();
    let _ = write!(
        html,
        "<p class=\"summary\">{lines} trace lines from {node_lanes} nodes over {end} ms of \
         simulated time; harness actions: {actions}.</p>\n</header>\n",
        lines = model.marks.len(),
        end = model.end_ms,
        actions = if actions.is_empty() {
            "none".to_string()
        } else {
            actions.join(", ")
        },
    );

    failures_section(&mut html, &model, &replay);
    timeline_section(&mut html, &model);
    harness_section(&mut html, run.trace);

    let _ = write!(
        html,
        "<script type=\"application/json\" id=\"report-data\">{}</script>\n\
         <script>\n{SCRIPT}</script>\n</body>\n</html>\n",
        script_json(&model)
    );
    html
}

/// Every failure: when, which check, on which node, what it said, and how to replay it.
fn failures_section(html: &mut String, model: &model::Model, replay: &str) {
    if model.failures.is_empty() {
        html.push_str("<section id=\"failures\" class=\"passed\"><h2>No failure</h2></section>\n");
        return;
    }
    html.push_str("<section id=\"failures\">\n<h2>Failures</h2>\n<ol>\n");
    for (index, failure) in model.failures.iter().enumerate() {
        let node = match failure.nodes.first() {
            Some(node) => format!(" on <span class=\"node\">{}</span>", escape_html(node)),
            None => String::new(),
        };
        let _ = writeln!(
            html,
            "<li class=\"failure-marker\" id=\"failure-{index}\" data-at-ms=\"{at}\">\
             <button type=\"button\" class=\"goto\" data-failure=\"{index}\">{at} ms</button> \
             <strong class=\"check\">{check}</strong>{node}: \
             <span class=\"message\">{message}</span>\
             <div class=\"replay\">replay: <code>{replay}</code></div></li>",
            at = failure.at_ms,
            check = escape_html(&failure.check),
            message = escape_html(&failure.message),
        );
    }
    html.push_str("</ol>\n</section>\n");
}

/// The timeline's controls, its drawing surface and the line under the cursor.
fn timeline_section(html: &mut String, model: &model::Model) {
    let mut counts: BTreeMap<Category, usize> = BTreeMap::new();
    for mark in &model.marks {
        *counts.entry(mark.category).or_default() += 1;
    }
    html.push_str(
        "<section id=\"timeline\">\n<h2>Timeline</h2>\n<div class=\"controls\">\n\
         <fieldset class=\"filters\"><legend>events</legend>\n",
    );
    for (category, key, label, shown) in FILTERS {
        let _ = writeln!(
            html,
            "<label class=\"c-{key}\"><input type=\"checkbox\" data-category=\"{key}\"{checked}>\
             <span class=\"swatch\"></span>{label} ({count})</label>",
            checked = if *shown { " checked" } else { "" },
            count = counts.get(category).copied().unwrap_or(0),
        );
    }
    html.push_str("</fieldset>\n<fieldset class=\"bands\"><legend>faults</legend>\n");
    for (key, label) in BANDS {
        let _ = writeln!(
            html,
            "<span class=\"b-{key}\"><span class=\"swatch\"></span>{label}</span>"
        );
    }
    html.push_str(
        "</fieldset>\n<div class=\"zoom\">\
         <button type=\"button\" data-zoom=\"in\" aria-label=\"zoom in\">+</button>\
         <button type=\"button\" data-zoom=\"out\" aria-label=\"zoom out\">−</button>\
         <button type=\"button\" data-zoom=\"fit\">whole run</button> \
         <span id=\"range\" aria-live=\"polite\"></span></div>\n</div>\n\
         <div id=\"chart\" tabindex=\"0\" role=\"application\" \
         aria-label=\"timeline: arrow keys move between events, plus and minus zoom\" \
         aria-describedby=\"keys\"><svg id=\"plot\" role=\"presentation\"></svg></div>\n\
         <div id=\"tip\" role=\"tooltip\" hidden></div>\n\
         <pre id=\"detail\" aria-live=\"polite\">Hover over or move to an event to see its \
         trace line.</pre>\n\
         <p id=\"keys\" class=\"keys\">Keys on the timeline: <kbd>←</kbd> <kbd>→</kbd> previous / \
         next event of the lane, <kbd>↑</kbd> <kbd>↓</kbd> lane, <kbd>Home</kbd> <kbd>End</kbd> \
         first / last, <kbd>+</kbd> <kbd>−</kbd> zoom, <kbd>0</kbd> whole run, \
         <kbd>Shift</kbd>+<kbd>←</kbd> <kbd>→</kbd> pan, \
         <kbd>f</kbd> / <kbd>Shift</kbd>+<kbd>f</kbd> next / previous failure. Mouse: drag to pan, Ctrl+wheel or double-click to zoom.</p>\n\
         <noscript><p>The timeline is drawn by this page's script; the failures and the \
         harness's actions are listed as text.</p></noscript>\n</section>\n",
    );
}

/// The harness's actions as text, which read without the script.
fn harness_section(html: &mut String, trace: &str) {
    let lines: Vec<&str> = trace
        .lines()
        .filter(|line| line.split(' ').nth(1) == Some(HARNESS))
        .collect();
    let _ = write!(
        html,
        "<details id=\"harness\"><summary>The harness's actions ({})</summary>\n<pre>",
        lines.len()
    );
    for line in lines {
        html.push_str(&escape_html(line));
        html.push('\n');
    }
    html.push_str("</pre></details>\n");
}

#[cfg(test)]
mod tests;
