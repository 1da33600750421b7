// The master's web UI (Mesos' UI is the anchor): overview, agents, frameworks, tasks, offers,
// roles, and a task's sandbox read through the master (`/agent/{id}/files/...`), so the browser
// needs to reach only the master. State comes from /master/state and /metrics/snapshot, polled
// every two seconds while the page is visible.
"use strict";

const master = { state: null, metrics: {}, error: null, sandbox: null };

const pages = [
  ["#/", "Overview"], ["#/agents", "Agents"], ["#/frameworks", "Frameworks"],
  ["#/tasks", "Tasks"], ["#/offers", "Offers"], ["#/roles", "Roles"],
];

function frameworks() { return (master.state && master.state.frameworks) || []; }
function agents() { return (master.state && master.state.slaves) || []; }
function agentOf(id) { return agents().find((a) => a.id === id); }
function frameworkOf(id) { return frameworks().find((f) => f.id === id); }
function allTasks(withCompleted) {
  const out = [];
  for (const f of frameworks()) {
    for (const t of f.tasks || []) out.push(t);
    if (withCompleted) for (const t of f.completed_tasks || []) out.push(t);
  }
  return out;
}
function hostOf(agentId) { const a = agentOf(agentId); return a ? a.hostname : agentId; }
function resources(r) {
  if (!r) return "";
  return `${ui.num(r.cpus)} cpus · ${ui.mem(r.mem)}${r.disk ? ` · ${ui.mem(r.disk)} disk` : ""}`;
}
function addresses(task) {
  const s = (task.statuses || [])[(task.statuses || []).length - 1];
  const infos = (s && s.container_status && s.container_status.network_infos) || [];
  return infos.flatMap((n) => (n.ip_addresses || []).map((a) => a.ip_address)).join(", ");
}
function health(task) {
  const s = (task.statuses || [])[(task.statuses || []).length - 1];
  if (!s || s.healthy === undefined) return "";
  return s.healthy ? ui.badge("healthy", "ok") : ui.badge("unhealthy", "bad");
}
// When it started: its first TASK_RUNNING status (the master keeps that one and the latest).
function started(task) {
  const s = (task.statuses || []).find((x) => x.state === "TASK_RUNNING");
  return s && s.timestamp ? ui.ago(s.timestamp) : "";
}
function container(task) {
  const c = task.container;
  if (!c || !c.type) return "";
  return c.docker ? `${ui.esc(c.type)} ${ui.esc(c.docker.image)}` : ui.esc(c.type);
}
function link(href, text) { return `<a href="${ui.esc(href)}">${ui.esc(text)}</a>`; }

function overview() {
  const m = master.metrics;
  const s = master.state;
  const total = { cpus: 0, mem: 0, disk: 0 }, used = { cpus: 0, mem: 0, disk: 0 }, offered = { cpus: 0, mem: 0 };
  for (const a of agents()) for (const k of Object.keys(total)) {
    total[k] += Number((a.resources || {})[k] || 0);
    used[k] += Number((a.used_resources || {})[k] || 0);
  }
  for (const f of frameworks()) for (const o of f.offers || []) {
    offered.cpus += Number((o.resources || {}).cpus || 0);
    offered.mem += Number((o.resources || {}).mem || 0);
  }
  const card = (label, value, sub) =>
    `<div class="card"><div class="label">${ui.esc(label)}</div><div class="value">${value}</div><div class="sub">${sub || ""}</div></div>`;
  const pct = (a, b) => (b ? Math.round((100 * a) / b) : 0);
  const counts = ["staging", "starting", "running", "killing", "finished", "failed", "killed", "lost", "unreachable", "error"]
    .map((k) => [k, m[`master/tasks_${k}`] || 0]);
  return `<h1>Cluster</h1>
    <div class="cards">
      ${card("Leader", ui.esc(s.hostname || ""), `${ui.esc(s.leader || "")}<br>version ${ui.esc(s.version || "")}`)}
      ${card("Uptime", `${Math.floor((m["master/uptime_secs"] || 0) / 60)} min`, `${ui.num(m["master/uptime_secs"] || 0, 0)} s`)}
      ${card("Agents", `${s.activated_slaves || 0} active`, `${s.deactivated_slaves || 0} inactive · ${s.unreachable_slaves || 0} unreachable`)}
      ${card("Frameworks", `${frameworks().length}`, `${(s.completed_frameworks || []).length} completed`)}
      ${card("CPUs", `${ui.num(used.cpus)} / ${ui.num(total.cpus)}`, `${pct(used.cpus, total.cpus)}% used · ${ui.num(offered.cpus)} offered`)}
      ${card("Memory", `${ui.mem(used.mem)} / ${ui.mem(total.mem)}`, `${pct(used.mem, total.mem)}% used · ${ui.mem(offered.mem)} offered`)}
      ${card("Disk", `${ui.mem(used.disk)} / ${ui.mem(total.disk)}`, `${pct(used.disk, total.disk)}% used`)}
      ${card("Offers", `${m["master/outstanding_offers"] || 0}`, "outstanding")}
    </div>
    <h2>Tasks by state</h2>
    ${ui.table([{ title: "State" }, { title: "Tasks", num: true }],
      counts.map(([k, n]) => [ui.stateBadge(k.toUpperCase()), ui.esc(n)]))}
    <h2>Active tasks</h2>${taskTable(allTasks(false).slice(0, 50), "overview-tasks")}`;
}

function taskTable(tasks, filterId) {
  const rows = tasks
    .filter((t) => ui.matches(filterId, t.id, t.name, t.state, hostOf(t.slave_id), addresses(t)))
    .slice(0, 1000)
    .map((t) => {
      const f = frameworkOf(t.framework_id);
      return [
        link(`#/tasks/${t.framework_id}/${t.id}`, t.id),
        ui.esc(t.name),
        f ? link(`#/frameworks/${f.id}`, f.name) : ui.esc(t.framework_id),
        link(`#/agents/${t.slave_id}`, hostOf(t.slave_id)),
        ui.stateBadge(t.state),
        health(t),
        ui.esc(started(t)),
        container(t),
        ui.esc(addresses(t)),
        link(`#/sandbox/${t.slave_id}/${t.framework_id}/${t.id}`, "Sandbox"),
      ];
    });
  return ui.table(
    [{ title: "ID" }, { title: "Name" }, { title: "Framework" }, { title: "Agent" }, { title: "State" },
     { title: "Health" }, { title: "Started" }, { title: "Container" }, { title: "Addresses" }, { title: "" }],
    rows, "No tasks.");
}

function agentsPage() {
  const rows = agents()
    .filter((a) => ui.matches("agents-filter", a.hostname, a.id, a.pid))
    .map((a) => {
      const tasks = allTasks(false).filter((t) => t.slave_id === a.id).length;
      const attrs = Object.entries(a.attributes || {}).map(([k, v]) => `${k}:${v}`).join(", ");
      const state = a.active ? ui.badge("active", "ok") : ui.badge("inactive", "warn");
      return [link(`#/agents/${a.id}`, a.hostname), ui.esc((a.pid || "").replace(/^slave\(1\)@/, "")),
        state, ui.esc(resources(a.resources)), ui.esc(resources(a.used_resources)), ui.esc(attrs), ui.esc(tasks)];
    });
  return `<h1>Agents</h1><div class="toolbar">${ui.filterBox("agents-filter", "Filter agents")}</div>` +
    ui.table([{ title: "Host" }, { title: "Address" }, { title: "State" }, { title: "Resources" },
      { title: "Used" }, { title: "Attributes" }, { title: "Tasks", num: true }], rows, "No agents.");
}

function agentPage(id) {
  const a = agentOf(id);
  if (!a) return `<h1>Agent ${ui.esc(id)}</h1><p class="muted">Not known to this master.</p>`;
  const tasks = allTasks(true).filter((t) => t.slave_id === id);
  return `<h1>Agent ${ui.esc(a.hostname)}</h1>
    <dl class="kv"><dt>ID</dt><dd class="mono">${ui.esc(a.id)}</dd><dt>PID</dt><dd class="mono">${ui.esc(a.pid)}</dd>
    <dt>Registered</dt><dd>${ui.esc(ui.ago(a.registered_time))}</dd><dt>Resources</dt><dd>${ui.esc(resources(a.resources))}</dd>
    <dt>Used</dt><dd>${ui.esc(resources(a.used_resources))}</dd>
    <dt>Attributes</dt><dd>${ui.esc(Object.entries(a.attributes || {}).map(([k, v]) => `${k}:${v}`).join(", "))}</dd></dl>
    <h2>Tasks</h2><div class="toolbar">${ui.filterBox("agent-tasks", "Filter tasks")}</div>${taskTable(tasks, "agent-tasks")}`;
}

function frameworksPage() {
  const rows = frameworks()
    .filter((f) => ui.matches("fw-filter", f.name, f.id, f.role))
    .map((f) => [link(`#/frameworks/${f.id}`, f.name), ui.esc(f.id), ui.esc(f.role),
      f.connected ? ui.badge("connected", "ok") : ui.badge("disconnected", "warn"),
      f.active ? ui.badge("active", "ok") : ui.badge("suppressed", "idle"),
      ui.esc(resources(f.used_resources)), ui.esc((f.tasks || []).length), ui.esc((f.offers || []).length)]);
  return `<h1>Frameworks</h1><div class="toolbar">${ui.filterBox("fw-filter", "Filter frameworks")}</div>` +
    ui.table([{ title: "Name" }, { title: "ID" }, { title: "Role" }, { title: "Connection" }, { title: "Offers" },
      { title: "Resources" }, { title: "Tasks", num: true }, { title: "Offers", num: true }], rows, "No frameworks.");
}

function frameworkPage(id) {
  const f = frameworkOf(id);
  if (!f) return `<h1>Framework ${ui.esc(id)}</h1><p class="muted">Not known to this master.</p>`;
  return `<h1>${ui.esc(f.name)}</h1>
    <dl class="kv"><dt>ID</dt><dd class="mono">${ui.esc(f.id)}</dd><dt>Role</dt><dd>${ui.esc(f.role)}</dd>
    <dt>User</dt><dd>${ui.esc(f.user)}</dd><dt>Host</dt><dd>${ui.esc(f.hostname)}</dd>
    <dt>Failover timeout</dt><dd>${ui.esc(f.failover_timeout)} s</dd>
    <dt>Capabilities</dt><dd>${ui.esc((f.capabilities || []).join(", "))}</dd>
    <dt>Resources</dt><dd>${ui.esc(resources(f.used_resources))}</dd></dl>
    <h2>Active tasks</h2><div class="toolbar">${ui.filterBox("fw-tasks", "Filter tasks")}</div>${taskTable(f.tasks || [], "fw-tasks")}
    <h2>Completed tasks</h2>${taskTable((f.completed_tasks || []).slice(-200), "fw-done")}`;
}

function tasksPage() {
  return `<h1>Tasks</h1><div class="toolbar">${ui.filterBox("tasks-filter", "Filter by id, name, state, agent, address")}</div>` +
    taskTable(allTasks(true), "tasks-filter");
}

function taskPage(frameworkId, taskId) {
  const t = allTasks(true).find((x) => x.framework_id === frameworkId && x.id === taskId);
  if (!t) return `<h1>Task ${ui.esc(taskId)}</h1><p class="muted">Not known to this master.</p>`;
  return `<h1>Task ${ui.esc(t.id)}</h1>
    <p>${link(`#/sandbox/${t.slave_id}/${t.framework_id}/${t.id}`, "Sandbox")}</p>
    <dl class="kv"><dt>Name</dt><dd>${ui.esc(t.name)}</dd><dt>State</dt><dd>${ui.stateBadge(t.state)} ${health(t)}</dd>
    <dt>Agent</dt><dd>${link(`#/agents/${t.slave_id}`, hostOf(t.slave_id))}</dd>
    <dt>Framework</dt><dd>${link(`#/frameworks/${t.framework_id}`, (frameworkOf(t.framework_id) || {}).name || t.framework_id)}</dd>
    <dt>Resources</dt><dd>${ui.esc(resources(t.resources))}</dd><dt>Addresses</dt><dd>${ui.esc(addresses(t))}</dd>
    <dt>Container</dt><dd>${container(t)}</dd></dl>
    <h2>Latest status</h2><pre>${ui.esc(JSON.stringify((t.statuses || []).slice(-1)[0] || {}, null, 2))}</pre>`;
}

function offersPage() {
  const rows = [];
  for (const f of frameworks()) for (const o of f.offers || []) {
    rows.push([ui.esc(o.id), link(`#/frameworks/${f.id}`, f.name), link(`#/agents/${o.slave_id}`, hostOf(o.slave_id)),
      ui.esc(resources(o.resources))]);
  }
  return `<h1>Offers</h1>` + ui.table([{ title: "ID" }, { title: "Framework" }, { title: "Agent" }, { title: "Resources" }],
    rows, "No outstanding offers.");
}

function rolesPage() {
  const roles = new Map();
  for (const f of frameworks()) {
    const role = f.role || "*";
    const r = roles.get(role) || { frameworks: 0, cpus: 0, mem: 0, tasks: 0 };
    r.frameworks += 1;
    r.cpus += Number((f.used_resources || {}).cpus || 0);
    r.mem += Number((f.used_resources || {}).mem || 0);
    r.tasks += (f.tasks || []).length;
    roles.set(role, r);
  }
  const rows = [...roles.entries()].sort().map(([role, r]) =>
    [ui.esc(role), ui.esc(r.frameworks), ui.esc(ui.num(r.cpus)), ui.esc(ui.mem(r.mem)), ui.esc(r.tasks)]);
  return `<h1>Roles</h1>` + ui.table([{ title: "Role" }, { title: "Frameworks", num: true },
    { title: "CPUs", num: true }, { title: "Memory", num: true }, { title: "Tasks", num: true }], rows, "No roles in use.");
}

// ---------------------------------------------------------------- sandbox

const READ_CHUNK = 64 * 1024;

async function openSandbox(agentId, frameworkId, taskId, path) {
  const box = { agentId, frameworkId, taskId, path, entries: null, file: null, error: null };
  master.sandbox = box;
  try {
    if (!box.path) {
      const state = await ui.json(`/agent/${encodeURIComponent(agentId)}/state`);
      box.path = sandboxOf(state, frameworkId, taskId);
      if (!box.path) throw new Error(`the agent reports no sandbox for task ${taskId}`);
      box.root = box.path;
    }
    box.entries = await ui.json(`/agent/${encodeURIComponent(agentId)}/files/browse?path=${encodeURIComponent(box.path)}`);
  } catch (e) {
    box.error = e.message;
  }
  render();
}

// The task's sandbox directory as the agent's /state reports it (Mesos: its executor's `directory`).
function sandboxOf(state, frameworkId, taskId) {
  for (const f of [...(state.frameworks || []), ...(state.completed_frameworks || [])]) {
    if (f.id && f.id !== frameworkId) continue;
    for (const e of [...(f.executors || []), ...(f.completed_executors || [])]) {
      const tasks = [...(e.tasks || []), ...(e.completed_tasks || []), ...(e.queued_tasks || [])];
      if (e.id === taskId || tasks.some((t) => t.id === taskId)) return e.directory;
    }
  }
  return null;
}

async function readFile(path, offset) {
  const box = master.sandbox;
  try {
    const q = (o, l) => `/agent/${encodeURIComponent(box.agentId)}/files/read?path=${encodeURIComponent(path)}&offset=${o}&length=${l}`;
    const size = (await ui.json(q(-1, 0))).offset;
    const from = offset == null ? Math.max(0, size - READ_CHUNK) : offset;
    const chunk = await ui.json(q(from, READ_CHUNK));
    box.file = { path, from, data: chunk.data, size };
  } catch (e) {
    box.error = e.message;
  }
  render();
}

function sandboxPage(agentId, frameworkId, taskId) {
  const box = master.sandbox;
  if (!box || box.agentId !== agentId || box.taskId !== taskId) {
    openSandbox(agentId, frameworkId, taskId, null);
    return `<h1>Sandbox of ${ui.esc(taskId)}</h1><p class="muted">Loading…</p>`;
  }
  const parts = [`<h1>Sandbox of ${ui.esc(taskId)}</h1>`,
    `<p class="muted">on ${link(`#/agents/${agentId}`, hostOf(agentId))} · <span class="mono">${ui.esc(box.path || "")}</span></p>`];
  if (box.error) parts.push(`<div class="error" role="alert">${ui.esc(box.error)}</div>`);
  if (box.entries) {
    const up = box.root && box.path !== box.root
      ? [[`<button data-dir="${ui.esc(box.path.replace(/\/[^/]+$/, ""))}">..</button>`, "", "", "", ""]] : [];
    const rows = up.concat(box.entries.map((e) => {
      const name = e.path.split("/").pop();
      const dir = String(e.mode || "").startsWith("d");
      const open = dir ? `<button data-dir="${ui.esc(e.path)}">${ui.esc(name)}/</button>`
        : `<button data-file="${ui.esc(e.path)}">${ui.esc(name)}</button>`;
      return [open, `<span class="mono">${ui.esc(e.mode)}</span>`, ui.esc(e.size), ui.esc(e.mtime ? new Date(e.mtime * 1000).toISOString() : ""),
        dir ? "" : `<a href="/agent/${encodeURIComponent(agentId)}/files/download?path=${encodeURIComponent(e.path)}">download</a>`];
    }));
    parts.push(ui.table([{ title: "Name" }, { title: "Mode" }, { title: "Size", num: true }, { title: "Modified" }, { title: "" }],
      rows, "Empty."));
  }
  if (box.file) {
    const f = box.file;
    const older = f.from > 0 ? `<button id="older">Earlier</button>` : "";
    const newer = f.from + f.data.length < f.size ? `<button id="newer">Later</button>` : "";
    parts.push(`<h2>${ui.esc(f.path.split("/").pop())}</h2>
      <div class="toolbar">${older}${newer}<button id="tail">Latest</button>
      <span class="muted">bytes ${f.from}–${f.from + f.data.length} of ${f.size}</span></div>
      <pre id="file-data">${ui.esc(f.data)}</pre>`);
  }
  return parts.join("");
}

function bindSandbox() {
  const box = master.sandbox;
  if (!box) return;
  document.querySelectorAll("[data-dir]").forEach((b) => b.addEventListener("click", async () => {
    box.path = b.dataset.dir;
    box.file = null;
    try { box.entries = await ui.json(`/agent/${encodeURIComponent(box.agentId)}/files/browse?path=${encodeURIComponent(box.path)}`); box.error = null; }
    catch (e) { box.error = e.message; }
    render();
  }));
  document.querySelectorAll("[data-file]").forEach((b) => b.addEventListener("click", () => readFile(b.dataset.file, null)));
  const f = box.file;
  if (f) {
    const at = (id, offset) => { const b = document.getElementById(id); if (b) b.addEventListener("click", () => readFile(f.path, offset)); };
    at("older", Math.max(0, f.from - READ_CHUNK));
    at("newer", f.from + f.data.length);
    at("tail", null);
  }
}

// ---------------------------------------------------------------- page

function render() {
  const { parts } = ui.route();
  const here = `#/${parts[0] || ""}`;
  document.getElementById("nav").innerHTML = ui.nav(pages, here === "#/sandbox" ? "#/tasks" : here);
  const main = document.getElementById("main");
  if (!master.state) {
    main.innerHTML = master.error ? `<div class="error" role="alert">${ui.esc(master.error)}</div>` : `<p class="muted">Loading…</p>`;
    return;
  }
  document.getElementById("where").textContent = `leader ${master.state.hostname || ""} · ${master.state.leader || ""}`;
  ui.keepFocus(() => {
    const [page, a, b, c] = parts;
    let html;
    if (!page) html = overview();
    else if (page === "agents") html = a ? agentPage(a) : agentsPage();
    else if (page === "frameworks") html = a ? frameworkPage(a) : frameworksPage();
    else if (page === "tasks") html = a && b ? taskPage(a, b) : tasksPage();
    else if (page === "offers") html = offersPage();
    else if (page === "roles") html = rolesPage();
    else if (page === "sandbox") html = sandboxPage(a, b, c);
    else html = `<h1>Not found</h1><p>${link("#/", "Overview")}</p>`;
    if (master.error) html = `<div class="error" role="alert">${ui.esc(master.error)}</div>` + html;
    main.innerHTML = html;
    for (const id of ["agents-filter", "fw-filter", "tasks-filter", "agent-tasks", "fw-tasks", "overview-tasks"]) ui.bindFilter(id, render);
    if (page === "sandbox") bindSandbox();
  });
}

async function refresh() {
  try {
    const [state, metrics] = await Promise.all([ui.json("/master/state"), ui.json("/metrics/snapshot")]);
    master.state = state;
    master.metrics = metrics || {};
    master.error = null;
  } catch (e) {
    master.error = `cannot read the master's state: ${e.message}`;
  }
  // The sandbox view re-renders on its own actions only (reading a file is not interrupted).
  if (ui.route().parts[0] !== "sandbox" || !master.sandbox) render();
}

window.addEventListener("hashchange", () => { master.sandbox = ui.route().parts[0] === "sandbox" ? master.sandbox : null; render(); document.getElementById("main").focus(); });
refresh();
setInterval(() => { if (!document.hidden) refresh(); }, 2000);
