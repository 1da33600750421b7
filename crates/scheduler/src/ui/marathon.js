// The scheduler's web UI (Marathon's UI is the anchor): the group tree with each app's status
// and instance counts, an app's page (tasks, configuration, versions, actions), deployments
// (steps, rollback, stop) and the launch queue with why each app waits. It reads the /v2 API and
// refreshes when /v2/events says something changed (server-sent events), not by polling.
"use strict";

const marathon = { root: null, deployments: [], queue: [], info: null, error: null, notice: null, versions: {},
  // What the user typed in an app's instances field, kept across re-renders until sent.
  drafts: {} };

const pages = [["#/apps", "Applications"], ["#/deployments", "Deployments"], ["#/queue", "Queue"]];

function appsOf(group, out = []) {
  for (const a of group.apps || []) out.push(a);
  for (const g of group.groups || []) appsOf(g, out);
  return out;
}
function allApps() { return marathon.root ? appsOf(marathon.root) : []; }
function appById(id) { return allApps().find((a) => a.id === id); }
function queued(id) { return marathon.queue.find((q) => q.app && q.app.id === id); }
function link(href, text) { return `<a href="${ui.esc(href)}">${ui.esc(text)}</a>`; }
function appHref(id) { return `#/apps${id}`; }

// Marathon UI's status of an app.
function status(app) {
  const q = queued(app.id);
  if ((app.deployments || []).length) return ["Deploying", "warn"];
  if (q && q.delay && !q.delay.overdue) return ["Delayed", "bad"];
  if (q) return ["Waiting", "warn"];
  if (app.instances === 0 && !app.tasksRunning) return ["Suspended", "idle"];
  return ["Running", "ok"];
}

function counts(app) {
  const running = app.tasksRunning || 0;
  const health = (app.healthChecks || []).length
    ? ` <span class="muted">${app.tasksHealthy || 0} healthy${app.tasksUnhealthy ? `, ${app.tasksUnhealthy} unhealthy` : ""}</span>` : "";
  const staged = app.tasksStaged ? ` <span class="muted">${app.tasksStaged} staged</span>` : "";
  return `<span class="running" data-app="${ui.esc(app.id)}">${running} of ${app.instances}</span>${staged}${health}`;
}

function appRow(app) {
  const [text, kind] = status(app);
  const share = app.instances ? Math.min(100, Math.round((100 * (app.tasksRunning || 0)) / app.instances)) : 0;
  return [link(appHref(app.id), app.id), ui.badge(text, kind), counts(app),
    `<div class="bar" title="${share}%"><span style="width:${share}%"></span></div>`,
    ui.esc(ui.num(app.cpus)), ui.esc(ui.mem(app.mem))];
}

function groupTree(group) {
  const apps = (group.apps || []).filter((a) => ui.matches("apps-filter", a.id));
  const groups = (group.groups || []).map(groupTree).filter(Boolean);
  if (!apps.length && !groups.length && ui.filters["apps-filter"]) return "";
  const items = apps.map((a) => {
    const [text, kind] = status(a);
    return `<li>${link(appHref(a.id), a.id.split("/").pop())} ${ui.badge(text, kind)} ${counts(a)}</li>`;
  });
  return `<li><strong>${ui.esc(group.id === "/" ? "/" : group.id.split("/").pop() + "/")}</strong>
    ${(group.dependencies || []).length ? `<span class="muted"> after ${ui.esc(group.dependencies.join(", "))}</span>` : ""}
    <ul>${items.join("")}${groups.join("")}</ul></li>`;
}

function appsPage() {
  const apps = allApps().filter((a) => ui.matches("apps-filter", a.id));
  return `<h1>Applications</h1><div class="toolbar">${ui.filterBox("apps-filter", "Filter applications")}</div>
    <div class="split"><div class="tree"><ul>${marathon.root ? groupTree(marathon.root) : ""}</ul></div><div>` +
    ui.table([{ title: "ID" }, { title: "Status" }, { title: "Running instances" }, { title: "" },
      { title: "CPU", num: true }, { title: "Memory", num: true }], apps.map(appRow), "No applications.") + `</div></div>`;
}

function taskHealth(t) {
  const results = t.healthCheckResults || [];
  if (!results.length) return "";
  return results.every((r) => r.alive) ? ui.badge("healthy", "ok") : ui.badge("unhealthy", "bad");
}

function sandboxLink(t) {
  const base = marathon.info && marathon.info.marathon_config && marathon.info.marathon_config.mesos_leader_ui_url;
  if (!base) return "";
  const framework = marathon.info.frameworkId || "";
  return `<a href="${ui.esc(base.replace(/\/$/, ""))}/#/sandbox/${encodeURIComponent(t.slaveId)}/${encodeURIComponent(framework)}/${encodeURIComponent(t.id)}">sandbox</a>`;
}

function appPage(id) {
  const app = appById(id);
  if (!app) return `<h1>${ui.esc(id)}</h1><p class="muted">No such application.</p>`;
  const [text, kind] = status(app);
  const tasks = (app.tasks || []).filter((t) => ui.matches("tasks-filter", t.id, t.host, t.state));
  const rows = tasks.map((t) => [
    `<input type="checkbox" class="pick" value="${ui.esc(t.id)}" aria-label="select ${ui.esc(t.id)}">`,
    `<span class="mono">${ui.esc(t.id)}</span>`, ui.esc(t.host), ui.esc((t.ports || []).join(", ")),
    ui.esc((t.ipAddresses || []).map((a) => a.ipAddress).join(", ")), ui.stateBadge(t.state), taskHealth(t),
    ui.esc(t.startedAt ? ui.ago(Date.parse(t.startedAt) / 1000) : ""), sandboxLink(t)]);
  const q = queued(app.id);
  const waiting = q ? `<div class="error">Waiting: ${q.count} to launch${q.delay && !q.delay.overdue ? `, delayed ${q.delay.timeLeftSeconds} s` : ""}.
    ${reasons(q)}</div>` : "";
  const versions = marathon.versions[app.id];
  const config = { ...app };
  for (const k of ["tasks", "deployments", "tasksRunning", "tasksStaged", "tasksHealthy", "tasksUnhealthy", "lastTaskFailure"]) delete config[k];
  return `<h1>${ui.esc(app.id)} ${ui.badge(text, kind)}</h1>
    <div class="toolbar">
      <label>Instances <input type="number" id="scale-to" min="0" value="${ui.esc(marathon.drafts[app.id] ?? app.instances)}" style="width:6em"></label>
      <button class="primary" id="scale">Scale</button>
      <button id="restart">Restart</button>
      <button id="suspend">Suspend</button>
      <button class="danger" id="destroy">Destroy</button>
      <span class="muted">${counts(app)}</span>
    </div>${waiting}
    <h2>Tasks</h2>
    <div class="toolbar">${ui.filterBox("tasks-filter", "Filter tasks")}
      <button id="kill">Kill selected</button><button id="kill-scale">Kill and scale</button></div>
    ${ui.table([{ title: "" }, { title: "ID" }, { title: "Host" }, { title: "Ports" }, { title: "IP addresses" },
      { title: "State" }, { title: "Health" }, { title: "Started" }, { title: "" }], rows, "No tasks.")}
    <h2>Configuration</h2><pre>${ui.esc(JSON.stringify(config, null, 2))}</pre>
    <h2>Versions</h2>${versions ? ui.table([{ title: "Version" }], versions.map((v) => [`<span class="mono">${ui.esc(v)}</span>`]), "None.")
      : `<button id="versions">Show versions</button>`}`;
}

function reasons(q) {
  const s = q.processedOffersSummary || {};
  const declined = (s.rejectSummaryLastOffers || []).filter((r) => r.declined > 0);
  if (!declined.length) return `<span class="muted">${ui.esc(s.processedOffersCount || 0)} offers processed.</span>`;
  return `Offers declined for: ${declined.map((r) => `${ui.esc(r.reason)} (${ui.esc(r.declined)} of ${ui.esc(r.processed)})`).join(", ")}.`;
}

async function act(what, method, path, body) {
  try {
    const answer = await ui.json(path, { method, body: body === undefined ? undefined : JSON.stringify(body) });
    marathon.notice = `${what}: ${answer && answer.deploymentId ? `deployment ${answer.deploymentId}` : "done"}`;
    marathon.error = null;
  } catch (e) {
    marathon.error = `${what}: ${e.message}`;
  }
  await refresh();
}

function bindApp(id) {
  const on = (el, f) => { const b = document.getElementById(el); if (b) b.addEventListener("click", f); };
  const picked = () => [...document.querySelectorAll(".pick:checked")].map((c) => c.value);
  const enc = id.split("/").map(encodeURIComponent).join("/");
  on("scale", () => {
    const instances = Number(document.getElementById("scale-to").value);
    delete marathon.drafts[id];
    act("Scale", "PUT", `/v2/apps${enc}`, { instances });
  });
  on("restart", () => act("Restart", "POST", `/v2/apps${enc}/restart`, {}));
  on("suspend", () => act("Suspend", "PUT", `/v2/apps${enc}`, { instances: 0 }));
  on("destroy", () => { if (confirm(`Destroy ${id}?`)) act("Destroy", "DELETE", `/v2/apps${enc}`); });
  on("kill", () => act("Kill", "POST", "/v2/tasks/delete", { ids: picked() }));
  on("kill-scale", () => act("Kill and scale", "POST", "/v2/tasks/delete?scale=true", { ids: picked() }));
  on("versions", async () => {
    try { marathon.versions[id] = (await ui.json(`/v2/apps${enc}/versions`)).versions || []; } catch (e) { marathon.error = e.message; }
    render();
  });
  const box = document.getElementById("scale-to");
  if (box) {
    box.addEventListener("input", () => { marathon.drafts[id] = box.value; });
    box.addEventListener("keydown", (e) => { if (e.key === "Enter") document.getElementById("scale").click(); });
  }
}

function deploymentsPage() {
  const rows = marathon.deployments.map((d) => {
    const steps = (d.steps || []).map((s, i) =>
      `<div class="${i + 1 === d.currentStep ? "" : "muted"}">${i + 1}. ${(s.actions || []).map((a) => `${ui.esc(a.action || a.type)} ${ui.esc(a.app || "")}`).join(", ")}</div>`).join("");
    return [`<span class="mono">${ui.esc(d.id)}</span>`, ui.esc((d.affectedApps || []).join(", ")),
      `${ui.esc(d.currentStep)} / ${ui.esc(d.totalSteps)}`, steps, ui.esc(d.version),
      `<button data-rollback="${ui.esc(d.id)}">Rollback</button> <button class="danger" data-stop="${ui.esc(d.id)}">Stop</button>`];
  });
  return `<h1>Deployments</h1>` + ui.table([{ title: "ID" }, { title: "Applications" }, { title: "Step" },
    { title: "Steps" }, { title: "Version" }, { title: "" }], rows, "No deployments in progress.");
}

function bindDeployments() {
  document.querySelectorAll("[data-rollback]").forEach((b) => b.addEventListener("click", () =>
    act("Rollback", "DELETE", `/v2/deployments/${encodeURIComponent(b.dataset.rollback)}`)));
  document.querySelectorAll("[data-stop]").forEach((b) => b.addEventListener("click", () =>
    act("Stop", "DELETE", `/v2/deployments/${encodeURIComponent(b.dataset.stop)}?force=true`)));
}

function queuePage() {
  const rows = marathon.queue.map((q) => [link(appHref(q.app.id), q.app.id), ui.esc(q.count),
    q.delay && !q.delay.overdue ? ui.badge(`delayed ${q.delay.timeLeftSeconds} s`, "bad") : ui.badge("waiting for offers", "warn"),
    reasons(q)]);
  return `<h1>Launch queue</h1>` + ui.table([{ title: "Application" }, { title: "To launch", num: true },
    { title: "State" }, { title: "Why" }], rows, "Nothing waits to launch.");
}

function render() {
  const { parts } = ui.route();
  const page = parts[0] || "apps";
  document.getElementById("nav").innerHTML = ui.nav(pages, `#/${page}`);
  if (marathon.info) {
    document.getElementById("where").textContent =
      `${marathon.info.name} ${marathon.info.version} · leader ${marathon.info.leader || "none"}`;
  }
  const main = document.getElementById("main");
  ui.keepFocus(() => {
    let html;
    if (page === "apps") html = parts.length > 1 ? appPage("/" + parts.slice(1).join("/")) : appsPage();
    else if (page === "deployments") html = deploymentsPage();
    else if (page === "queue") html = queuePage();
    else html = `<h1>Not found</h1>${link("#/apps", "Applications")}`;
    const notes = (marathon.error ? `<div class="error" role="alert">${ui.esc(marathon.error)}</div>` : "") +
      (marathon.notice ? `<p class="muted" role="status">${ui.esc(marathon.notice)}</p>` : "");
    main.innerHTML = notes + html;
    ui.bindFilter("apps-filter", render);
    ui.bindFilter("tasks-filter", render);
    if (page === "apps" && parts.length > 1) bindApp("/" + parts.slice(1).join("/"));
    if (page === "deployments") bindDeployments();
  });
}

async function refresh() {
  try {
    const embed = ["group.groups", "group.apps", "group.apps.counts", "group.apps.tasks", "group.apps.deployments"]
      .map((e) => `embed=${e}`).join("&");
    const [root, deployments, queue] = await Promise.all([
      ui.json(`/v2/groups?${embed}`), ui.json("/v2/deployments"), ui.json("/v2/queue")]);
    marathon.root = root;
    marathon.deployments = deployments || [];
    marathon.queue = (queue && queue.queue) || [];
  } catch (e) {
    marathon.error = `cannot read the scheduler: ${e.message}`;
  }
  render();
}

// Changes arrive as events: refresh once per burst (a deployment sends many).
let pending = null;
function soon() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; refresh(); }, 150);
}

function listen() {
  const events = new EventSource("/v2/events");
  for (const type of ["deployment_info", "deployment_success", "deployment_failed", "deployment_step_success",
    "deployment_step_failure", "status_update_event", "instance_changed_event", "api_post_event",
    "app_terminated_event", "group_change_success", "health_status_changed_event", "instance_health_changed_event",
    "failed_health_check_event", "unhealthy_instance_kill_event", "add_health_check_event"]) {
    events.addEventListener(type, soon);
  }
  events.onmessage = soon;
  // On a lost stream (a leader change), the browser reconnects; refresh in case events were missed.
  events.onopen = soon;
}

window.addEventListener("hashchange", () => { marathon.notice = null; render(); document.getElementById("main").focus(); });
ui.json("/v2/info").then((info) => { marathon.info = info; render(); }).catch(() => {});
refresh();
listen();
