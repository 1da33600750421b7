// Shared by drover's web UIs: escaping, JSON over fetch, a hash router, small formatters.
"use strict";

const ui = {
  esc(value) {
    return String(value ?? "").replace(/[&<>"']/g, (c) => ({
      "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
    })[c]);
  },

  async json(path, options = {}) {
    const response = await fetch(path, {
      headers: { "Accept": "application/json", "Content-Type": "application/json" },
      ...options,
    });
    const text = await response.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
    if (!response.ok) {
      const why = body && typeof body === "object" ? (body.message || JSON.stringify(body)) : text;
      throw new Error(`${options.method || "GET"} ${path}: ${response.status} ${why}`);
    }
    return body;
  },

  // `#/apps/a/b?x=1` -> { parts: ["apps", "a", "b"], query: URLSearchParams }
  route() {
    const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
    const [path, query] = hash.split("?");
    return { parts: path ? path.split("/").filter(Boolean) : [], query: new URLSearchParams(query || "") };
  },

  badge(text, kind) {
    return `<span class="badge ${kind || ""}">${ui.esc(text)}</span>`;
  },

  stateBadge(state) {
    const s = String(state || "").replace(/^TASK_/, "");
    const kind = { RUNNING: "ok", FINISHED: "idle", STAGING: "warn", STARTING: "warn", KILLING: "warn",
      UNREACHABLE: "warn", FAILED: "bad", LOST: "bad", ERROR: "bad", KILLED: "idle", GONE: "bad",
      DROPPED: "bad", UNKNOWN: "bad" }[s];
    return ui.badge(s, kind);
  },

  num(value, digits = 2) {
    const n = Number(value || 0);
    return Number.isInteger(n) ? String(n) : n.toFixed(digits);
  },

  mem(mb) {
    const n = Number(mb || 0);
    return n >= 1024 ? `${(n / 1024).toFixed(1)} GB` : `${ui.num(n, 0)} MB`;
  },

  ago(seconds) {
    if (!seconds) return "";
    const s = Math.max(0, Date.now() / 1000 - Number(seconds));
    if (s < 60) return `${Math.floor(s)} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  },

  // A table: columns [{title, num?}], rows of cell HTML (already escaped where needed).
  table(columns, rows, empty = "Nothing here.") {
    if (!rows.length) return `<p class="muted">${ui.esc(empty)}</p>`;
    const head = columns.map((c) => `<th class="${c.num ? "num" : ""}" scope="col">${ui.esc(c.title)}</th>`).join("");
    const body = rows.map((r) => `<tr>${r.map((cell, i) =>
      `<td class="${columns[i] && columns[i].num ? "num" : ""}">${cell}</td>`).join("")}</tr>`).join("");
    return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
  },

  // Keeps the text of a filter box across re-renders.
  filters: {},
  filterBox(id, placeholder) {
    const value = ui.filters[id] || "";
    return `<input type="search" id="${id}" placeholder="${ui.esc(placeholder)}" aria-label="${ui.esc(placeholder)}" value="${ui.esc(value)}">`;
  },
  bindFilter(id, rerender) {
    const box = document.getElementById(id);
    if (!box) return;
    box.addEventListener("input", () => { ui.filters[id] = box.value; rerender(); });
  },
  matches(id, ...fields) {
    const wanted = (ui.filters[id] || "").toLowerCase();
    return !wanted || fields.some((f) => String(f ?? "").toLowerCase().includes(wanted));
  },

  // Re-renders keeping the focused element (by id) and its caret.
  keepFocus(render) {
    const focused = document.activeElement && document.activeElement.id;
    const caret = focused && document.activeElement.selectionStart;
    render();
    if (focused) {
      const again = document.getElementById(focused);
      if (again) {
        again.focus();
        if (caret != null && again.setSelectionRange) again.setSelectionRange(caret, caret);
      }
    }
  },

  nav(links, current) {
    return links.map(([href, label]) =>
      `<a href="${href}" class="${current === href ? "current" : ""}">${ui.esc(label)}</a>`).join("");
  },
};
