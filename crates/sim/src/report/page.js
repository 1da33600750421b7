// Draws the run's timeline as SVG from the JSON above. Text from the trace only ever enters the
// page through textContent, never as markup.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const chart = document.getElementById("chart");
  const plot = document.getElementById("plot");
  const tip = document.getElementById("tip");
  const detail = document.getElementById("detail");
  const range = document.getElementById("range");
  // The namespace of the SVG element the HTML parser made, so no namespace URI is written here.
  const NS = plot.namespaceURI;

  const LABEL_W = 180, ROW_H = 18, GAP = 5, AXIS_H = 26, MERGE_PX = 4, TIP_LINES = 14;
  const ORDER = ["fault", "http", "election", "agent", "task", "deploy", "node", "dns", "other"];
  const lanes = data.lanes;
  const marks = data.marks; // [at_ms, lane, category, text]
  const end = Math.max(1, data.end_ms);

  const laneY = [], laneH = [];
  let height = AXIS_H;
  lanes.forEach(function (lane, i) {
    laneY[i] = height;
    laneH[i] = lane.rows * ROW_H + GAP;
    height += laneH[i];
  });
  height += 4;

  // Each lane's marks, in time order (the trace's order).
  const byLane = lanes.map(function () { return []; });
  marks.forEach(function (m, i) { byLane[m[1]].push(i); });
  // What the keyboard cursor visits on each lane, in time order: its events, or on a leaders'
  // lane its leaderships.
  const stops = byLane.map(function (list) {
    return list.map(function (i) { return { ms: marks[i][0], mark: i }; });
  });
  data.leaders.forEach(function (lead) { stops[lead.lane].push({ ms: lead.from_ms, lead: lead }); });
  stops.forEach(function (list) { list.sort(function (a, b) { return a.ms - b.ms; }); });
  // The fault a harness line began, told with the line.
  const bandOf = new Map();
  data.bands.forEach(function (band) { if (!bandOf.has(band.line)) bandOf.set(band.line, band); });

  const shown = new Set();
  document.querySelectorAll("input[data-category]").forEach(function (box) {
    if (box.checked) shown.add(box.dataset.category);
    box.addEventListener("change", function () {
      if (box.checked) shown.add(box.dataset.category); else shown.delete(box.dataset.category);
      if (cursor !== null && !visible(cursor)) cursor = null;
      draw();
    });
  });

  let view = { from: 0, to: end };
  let cursor = null; // the stop under the keyboard cursor
  let failureAt = -1; // the failure last jumped to
  let shapes = []; // what each drawn element shows, by its data-shape index
  let geometry = null;

  function lineOf(i) {
    const m = marks[i];
    return m[0] + " " + lanes[m[1]].name + " " + m[3];
  }

  // The first position of `list` whose time is at least `ms`; `time` reads an entry's time.
  function lowerBound(list, ms, time) {
    let lo = 0, hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (time(list[mid]) < ms) lo = mid + 1; else hi = mid;
    }
    return lo;
  }
  function markTime(i) { return marks[i][0]; }
  function stopTime(stop) { return stop.ms; }

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const key in attrs) node.setAttribute(key, attrs[key]);
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(content, attrs, parent) {
    const node = el("text", attrs, parent);
    node.textContent = content;
    return node;
  }

  function fit(label, px) {
    const chars = Math.floor(px / 6.2);
    if (chars < 3) return "";
    return label.length <= chars ? label : label.slice(0, chars - 1) + "…";
  }

  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const power = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1))));
    for (const f of [1, 2, 5, 10]) if (f * power >= raw) return f * power;
    return 10 * power;
  }

  function timeLabel(ms, step) {
    if (step >= 1000) return (ms / 1000).toFixed(step % 1000 === 0 ? 0 : 1) + " s";
    return ms + " ms";
  }

  function draw() {
    const width = Math.max(480, chart.clientWidth);
    const plotW = width - LABEL_W - 24;
    const scale = plotW / (view.to - view.from);
    const x = function (ms) { return LABEL_W + (ms - view.from) * scale; };
    const clampX = function (px) { return Math.min(LABEL_W + plotW, Math.max(LABEL_W, px)); };
    geometry = { width: width, plotW: plotW, scale: scale };
    shapes = [];
    plot.setAttribute("width", width);
    plot.setAttribute("height", height);
    plot.setAttribute("viewBox", "0 0 " + width + " " + height);
    while (plot.firstChild) plot.removeChild(plot.firstChild);
    const root = document.createDocumentFragment();
    const back = el("g", {}, root), bands = el("g", {}, root), items = el("g", {}, root);
    const front = el("g", {}, root), labels = el("g", {}, root);

    function shape(node, what) {
      node.setAttribute("data-shape", shapes.length);
      shapes.push(what);
      return node;
    }

    // Lanes and the time axis.
    lanes.forEach(function (lane, i) {
      el("rect", { class: "lane-bg" + (i % 2 ? " odd" : ""), x: 0, y: laneY[i], width: width,
        height: laneH[i] }, back);
    });
    const step = niceStep(view.to - view.from, plotW / 110);
    for (let t = Math.ceil(view.from / step) * step; t <= view.to; t += step) {
      const px = x(t);
      el("line", { class: "tick", x1: px, x2: px, y1: AXIS_H - 6, y2: height }, back);
      if (px < width - 40) text(timeLabel(t, step), { class: "tick-label", x: px + 3, y: AXIS_H - 9 }, back);
    }

    // Faults: the network's on every lane (faintly) and solid on the harness's, a node's on its
    // lane in a third of the height by kind (links, down, the rest).
    const slotOf = { partition: 0, cut: 0, hold: 0, crash: 1, stop: 1, pause: 1, skew: 2, disk: 2 };
    data.bands.forEach(function (band) {
      if (band.to_ms < view.from || band.from_ms > view.to) return;
      const x1 = clampX(x(band.from_ms)), x2 = Math.max(x1 + 2, clampX(x(band.to_ms)));
      if (band.lane === null) {
        el("rect", { class: "band global b-" + band.kind, x: x1, y: AXIS_H, width: x2 - x1,
          height: height - AXIS_H }, bands);
        shape(el("rect", { class: "band b-" + band.kind, x: x1, y: laneY[0] + 1,
          width: x2 - x1, height: laneH[0] - 2 }, bands), { band: band });
        const label = fit(band.label, x2 - x1 - 4);
        if (label) text(label, { class: "band-label", x: x1 + 3, y: laneY[0] + laneH[0] - 6 }, labels);
        return;
      }
      const third = (laneH[band.lane] - 2) / 3;
      const y = laneY[band.lane] + 1 + third * (slotOf[band.kind] || 0);
      shape(el("rect", { class: "band b-" + band.kind, x: x1, y: y, width: x2 - x1,
        height: third }, bands), { band: band });
      const label = fit(band.label, x2 - x1 - 4);
      if (label) text(label, { class: "band-label", x: x1 + 3, y: y + third - 1 }, labels);
    });

    // Who leads each role, and the HTTP steps, in their rows.
    data.leaders.forEach(function (lead) {
      if (lead.to_ms < view.from || lead.from_ms > view.to) return;
      const x1 = clampX(x(lead.from_ms)), x2 = Math.max(x1 + 3, clampX(x(lead.to_ms)));
      const y = laneY[lead.lane] + 2 + lead.row * ROW_H;
      const hue = (lanes.findIndex(function (l) { return l.name === lead.node; }) * 67) % 360;
      shape(el("rect", { class: "lead", x: x1, y: y, width: x2 - x1, height: ROW_H - 3, rx: 3,
        style: "fill: hsl(" + hue + ", 60%, 72%)" }, items), { lead: lead });
      const label = fit(lead.node + (lead.term === null ? "" : " term " + lead.term), x2 - x1 - 4);
      if (label) text(label, { x: x1 + 3, y: y + ROW_H - 7 }, labels);
    });
    const client = lanes.findIndex(function (l) { return l.kind === "client"; });
    data.http.forEach(function (req) {
      if (req.to_ms < view.from || req.from_ms > view.to) return;
      const x1 = clampX(x(req.from_ms)), x2 = Math.max(x1 + 4, clampX(x(req.to_ms)));
      const y = laneY[client] + 2 + req.row * ROW_H;
      const status = /^[2-5]/.test(req.status) ? "s" + req.status[0] : "s" + req.status;
      shape(el("rect", { class: "http " + status + (req.failed ? " failed" : ""), x: x1, y: y,
        width: x2 - x1, height: ROW_H - 3, rx: 2 }, items), { http: req });
      const words = req.lines[0].split(" ");
      const what = words.filter(function (w) { return /^(method|path)=/.test(w); })
        .map(function (w) { return w.slice(w.indexOf("=") + 1); }).join(" ");
      const label = fit(what + " → " + req.status, x2 - x1 - 4);
      if (label) text(label, { x: x1 + 3, y: y + ROW_H - 7 }, labels);
    });

    // Events: one mark per event, or per run of events closer than a few pixels on a lane.
    lanes.forEach(function (lane, li) {
      const list = byLane[li];
      let group = null;
      const flush = function () {
        if (group === null) return;
        let best = group.items[0];
        group.items.forEach(function (i) {
          if (ORDER.indexOf(marks[i][2]) < ORDER.indexOf(marks[best][2])) best = i;
        });
        shape(el("rect", { class: "mark c-" + marks[best][2], x: group.x1 - 1.5, y: laneY[li] + 2,
          width: group.x2 - group.x1 + 3, height: laneH[li] - 4 - GAP / 2 }, items),
        { marks: group.items });
        group = null;
      };
      for (let k = lowerBound(list, view.from, markTime); k < list.length; k++) {
        const i = list[k];
        if (marks[i][0] > view.to) break;
        if (!shown.has(marks[i][2])) continue;
        const px = x(marks[i][0]);
        if (group !== null && px - group.x1 < MERGE_PX) {
          group.items.push(i);
          group.x2 = px;
        } else {
          flush();
          group = { x1: px, x2: px, items: [i] };
        }
      }
      flush();
    });

    // Failures: a red line across every lane, a dot on the node's lane (or the axis).
    data.failures.forEach(function (failure, fi) {
      if (failure.at_ms < view.from || failure.at_ms > view.to) return;
      const px = x(failure.at_ms);
      el("line", { class: "failure-line", x1: px, x2: px, y1: AXIS_H - 4, y2: height }, front);
      const y = failure.lane === null ? AXIS_H - 4 : laneY[failure.lane] + laneH[failure.lane] / 2;
      shape(el("circle", { class: "failure-dot", cx: px, cy: y, r: 6 }, front), { failure: fi });
    });

    if (cursor !== null) {
      const px = x(cursor.ms);
      if (px >= LABEL_W && px <= LABEL_W + plotW) {
        el("line", { class: "cursor-line", x1: px, x2: px, y1: AXIS_H, y2: height }, front);
        const li = laneOfStop(cursor);
        const y = cursor.lead ? laneY[li] + 1 + cursor.lead.row * ROW_H : laneY[li] + 1;
        const h = cursor.lead ? ROW_H - 1 : laneH[li] - 2;
        el("rect", { class: "cursor", x: px - 4, y: y, width: 8, height: h }, front);
      }
    }

    // Lane names last, over anything that was clamped to the plot's left edge.
    el("rect", { class: "label-bg", x: 0, y: 0, width: LABEL_W - 2, height: height }, labels);
    lanes.forEach(function (lane, i) {
      el("rect", { class: "lane-bg" + (i % 2 ? " odd" : ""), x: 0, y: laneY[i], width: LABEL_W - 2,
        height: laneH[i] }, labels);
      const name = lane.kind === "leaders" ? lane.role + " leader" :
        lane.kind === "client" ? "http steps" : lane.kind === "harness" ? "harness (sim)" : lane.name;
      // The role, where the name does not already say it.
      const role = lane.kind === "node" && lane.name.indexOf(lane.role) !== 0 ? lane.role : "";
      const y = laneY[i] + Math.min(laneH[i], ROW_H + GAP) / 2 + 4;
      text(fit(name, role ? 110 : 170), { class: "lane-name", x: 6, y: y }, labels);
      if (role) text(fit(role, 60), { class: "lane-role", x: LABEL_W - 6, y: y,
        "text-anchor": "end" }, labels);
    });
    plot.appendChild(root);
    range.textContent = "showing " + Math.round(view.from) + "–" + Math.round(view.to) +
      " ms of " + end + " ms";
  }

  function describe(what) {
    if (what.marks) {
      const lines = what.marks.slice(0, TIP_LINES).map(lineOf);
      if (what.marks.length > TIP_LINES) lines.push("… and " + (what.marks.length - TIP_LINES) + " more");
      if (what.marks.length === 1 && bandOf.has(lines[0])) {
        const band = bandOf.get(lines[0]);
        lines.push("(" + band.label + ", " + band.from_ms + "–" + band.to_ms + " ms)");
      }
      return lines.join("\n");
    }
    if (what.band) {
      const b = what.band;
      return b.label + " (" + b.from_ms + "–" + b.to_ms + " ms)\n" + b.line + "\n" +
        (b.end === null ? "(until the end of the run)" : b.end);
    }
    if (what.lead) {
      const l = what.lead;
      return l.node + " leads " + l.role + (l.term === null ? "" : " in term " + l.term) + " (" +
        l.from_ms + "–" + l.to_ms + " ms)\n" + l.line + "\n" +
        (l.end === null ? "(still leading at the end)" : l.end);
    }
    if (what.http) {
      const h = what.http;
      return "HTTP step " + h.step + " → " + h.status + (h.failed ? " (not the expected status)" : "") +
        "\n" + h.lines.join("\n");
    }
    if (what.failure !== undefined) {
      const f = data.failures[what.failure];
      return "FAILED " + f.check + " at " + f.at_ms + " ms" +
        (f.nodes.length ? " on " + f.nodes.join(", ") : "") + ": " + f.message + "\nreplay: " +
        document.getElementById("replay").textContent;
    }
    return "";
  }

  // Pointer: a tooltip with the full trace line(s) of what is under it.
  plot.addEventListener("mousemove", function (event) {
    const target = event.target.closest ? event.target.closest("[data-shape]") : null;
    if (!target || dragging) { tip.hidden = true; return; }
    const content = describe(shapes[Number(target.getAttribute("data-shape"))]);
    tip.textContent = content;
    detail.textContent = content;
    tip.hidden = false;
    const room = window.innerWidth - event.clientX;
    tip.style.left = (room < 420 ? Math.max(4, event.clientX - 420) : event.clientX + 14) + "px";
    tip.style.top = (event.clientY + 16) + "px";
  });
  plot.addEventListener("mouseleave", function () { tip.hidden = true; });
  plot.addEventListener("click", function (event) {
    const target = event.target.closest ? event.target.closest("[data-shape]") : null;
    if (!target || moved) return;
    const what = shapes[Number(target.getAttribute("data-shape"))];
    if (what.marks) { cursor = stopOfMark(what.marks[0]); show(); }
    else if (what.lead) {
      cursor = stops[what.lead.lane].find(function (stop) { return stop.lead === what.lead; });
      show();
    }
    else if (what.failure !== undefined) goToFailure(what.failure);
    chart.focus({ preventScroll: true });
  });

  // Dragging pans; Ctrl+wheel and double-click zoom.
  let dragging = null, moved = false, pending = false;
  function redraw() {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () { pending = false; draw(); });
  }
  chart.addEventListener("pointerdown", function (event) {
    if (event.button !== 0) return;
    dragging = { x: event.clientX, from: view.from, to: view.to };
    moved = false;
  });
  window.addEventListener("pointermove", function (event) {
    if (!dragging) return;
    const dx = event.clientX - dragging.x;
    if (Math.abs(dx) > 3) { moved = true; chart.classList.add("dragging"); tip.hidden = true; }
    if (!moved) return;
    const span = dragging.to - dragging.from;
    let from = dragging.from - dx / geometry.scale;
    from = Math.max(0, Math.min(end - span, from));
    view = { from: from, to: from + span };
    redraw();
  });
  window.addEventListener("pointerup", function () {
    dragging = null;
    chart.classList.remove("dragging");
  });
  function msAt(clientX) {
    const box = plot.getBoundingClientRect();
    return view.from + (clientX - box.left - LABEL_W) / geometry.scale;
  }
  function zoom(factor, around) {
    const span = Math.min(end, Math.max(20, (view.to - view.from) * factor));
    const at = around === undefined ? (view.from + view.to) / 2 : around;
    const share = (at - view.from) / (view.to - view.from);
    let from = at - span * share;
    from = Math.max(0, Math.min(end - span, from));
    view = { from: from, to: from + span };
    draw();
  }
  chart.addEventListener("wheel", function (event) {
    if (!event.ctrlKey && !event.metaKey) return;
    event.preventDefault();
    zoom(event.deltaY > 0 ? 1.5 : 1 / 1.5, msAt(event.clientX));
  }, { passive: false });
  chart.addEventListener("dblclick", function (event) {
    zoom(event.shiftKey ? 2 : 0.5, msAt(event.clientX));
  });
  document.querySelectorAll("button[data-zoom]").forEach(function (button) {
    button.addEventListener("click", function () {
      const kind = button.dataset.zoom;
      if (kind === "fit") { view = { from: 0, to: end }; draw(); }
      else zoom(kind === "in" ? 0.5 : 2, cursor === null ? undefined : cursor.ms);
    });
  });

  // Keyboard: a cursor that walks the lanes' visible events and leaderships.
  function visible(stop) { return stop.lead !== undefined || shown.has(marks[stop.mark][2]); }
  function laneOfStop(stop) { return stop.lead ? stop.lead.lane : marks[stop.mark][1]; }
  function stopOfMark(i) {
    const list = stops[marks[i][1]];
    return list.find(function (stop) { return stop.mark === i; }) || null;
  }
  function nearest(li, ms) {
    const list = stops[li];
    const k = lowerBound(list, ms, stopTime);
    for (let d = 0; d <= list.length; d++) {
      let best = null;
      for (const j of [k + d, k - 1 - d]) {
        if (j >= 0 && j < list.length && visible(list[j]) &&
            (best === null || Math.abs(list[j].ms - ms) < Math.abs(best.ms - ms))) best = list[j];
      }
      if (best !== null) return best;
    }
    return null;
  }
  function show() {
    if (cursor === null) return;
    if (cursor.ms < view.from || cursor.ms > view.to) {
      const span = view.to - view.from;
      const from = Math.max(0, Math.min(end - span, cursor.ms - span / 2));
      view = { from: from, to: from + span };
    }
    detail.textContent = cursor.lead ? describe({ lead: cursor.lead }) : describe({ marks: [cursor.mark] });
    tip.hidden = true;
    draw();
  }
  function step(direction) {
    if (cursor === null) return start();
    const list = stops[laneOfStop(cursor)];
    let k = list.indexOf(cursor) + direction;
    while (k >= 0 && k < list.length && !visible(list[k])) k += direction;
    if (k >= 0 && k < list.length) { cursor = list[k]; show(); }
  }
  function edge(last) {
    const li = cursor === null ? firstLane(0, 1) : laneOfStop(cursor);
    if (li === null) return;
    const list = stops[li];
    for (let n = 0; n < list.length; n++) {
      const k = last ? list.length - 1 - n : n;
      if (visible(list[k])) { cursor = list[k]; show(); return; }
    }
  }
  function firstLane(from, direction) {
    for (let li = from; li >= 0 && li < lanes.length; li += direction) {
      if (stops[li].some(visible)) return li;
    }
    return null;
  }
  function start() {
    const li = firstLane(0, 1);
    if (li === null) return;
    cursor = nearest(li, view.from);
    show();
  }
  function lane(direction) {
    if (cursor === null) return start();
    const li = firstLane(laneOfStop(cursor) + direction, direction);
    if (li === null) return;
    cursor = nearest(li, cursor.ms);
    show();
  }
  function goToFailure(fi) {
    const failure = data.failures[fi];
    if (!failure) return;
    failureAt = fi;
    const span = Math.min(view.to - view.from, end);
    const from = Math.max(0, Math.min(end - span, failure.at_ms - span / 2));
    view = { from: from, to: from + span };
    if (failure.lane !== null) {
      const near = nearest(failure.lane, failure.at_ms);
      if (near !== null) cursor = near;
    }
    draw();
    detail.textContent = describe({ failure: fi });
    document.querySelectorAll("#failures li").forEach(function (li, i) {
      li.classList.toggle("current", i === fi);
    });
  }
  chart.addEventListener("keydown", function (event) {
    const key = event.key;
    let done = true;
    if (key === "ArrowRight" && event.shiftKey) zoomPan(0.25);
    else if (key === "ArrowLeft" && event.shiftKey) zoomPan(-0.25);
    else if (key === "ArrowRight") step(1);
    else if (key === "ArrowLeft") step(-1);
    else if (key === "ArrowDown") lane(1);
    else if (key === "ArrowUp") lane(-1);
    else if (key === "Home") edge(false);
    else if (key === "End") edge(true);
    else if (key === "+" || key === "=") zoom(0.5, cursor === null ? undefined : cursor.ms);
    else if (key === "-" || key === "_") zoom(2, cursor === null ? undefined : cursor.ms);
    else if (key === "0") { view = { from: 0, to: end }; draw(); }
    else if (key === "f" || key === "F") {
      if (data.failures.length) {
        const n = data.failures.length;
        goToFailure(((failureAt + (event.shiftKey ? -1 : 1)) % n + n) % n);
      }
    } else if (key === "Escape") tip.hidden = true;
    else done = false;
    if (done) event.preventDefault();
  });
  function zoomPan(share) {
    const span = view.to - view.from;
    const from = Math.max(0, Math.min(end - span, view.from + span * share));
    view = { from: from, to: from + span };
    draw();
  }

  document.querySelectorAll("button[data-failure]").forEach(function (button) {
    button.addEventListener("click", function () {
      goToFailure(Number(button.dataset.failure));
      chart.scrollIntoView({ block: "nearest" });
      chart.focus({ preventScroll: true });
    });
  });
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      const code = document.getElementById(button.dataset.copy);
      const selection = window.getSelection();
      const all = document.createRange();
      all.selectNodeContents(code);
      selection.removeAllRanges();
      selection.addRange(all);
      const said = function (word) { button.textContent = word; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(code.textContent).then(function () { said("copied"); },
          function () { said("selected: press Ctrl+C"); });
      } else {
        said(document.execCommand && document.execCommand("copy") ? "copied" : "selected: press Ctrl+C");
      }
    });
  });
  window.addEventListener("resize", redraw);
  draw();
})();
