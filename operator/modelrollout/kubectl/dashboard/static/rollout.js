"use strict";
const [namespace, name] = location.pathname.slice(BASE.length).split("/").slice(1, 3).map(decodeURIComponent);
const key = `${namespace}/${name}`;
const api = `${BASE}api/rollouts/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`;
const COMMANDS = [
  ["promote", "Promote", "complete the current step"],
  ["promote-full", "Promote fully", "skip every remaining step and move all traffic to the canary"],
  ["pause", "Pause", "hold the canary at its current step"],
  ["resume", "Resume", "let the paused canary go on"],
  ["abort", "Abort", "roll the canary back: all traffic to stable at once"],
  ["retry", "Retry", "start the rolled-back canary again from step 1"],
  ["rollback", "Roll back", "move all traffic back to the previous revision, kept warm since the promotion, in one write"],
];
let view = null;
// Read-only (--read-only, the chart's default): the server refuses commands; no buttons are drawn.
let readOnly = null;
// Which history entries' model records are open: redrawing keeps them open.
const openRecords = new Set();
let weightsPlot = null;
const checkPlots = new Map();
const PLOT_REFRESH_MS = 15000;
let plotsFetchedAt = 0;

document.getElementById("title").textContent = key;
document.title = `${key} — modelrollout dashboard`;

function notice(text, error) {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.className = error ? "error" : "";
}

async function send(command, toRevision) {
  const response = await fetch(`${api}/commands/${command}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Modelrollout-Dashboard": "1" },
    body: JSON.stringify(toRevision ? { toRevision } : {}),
  });
  const answer = await response.json().catch(() => ({}));
  if (response.ok) notice(answer.message);
  else notice(`${command} refused (${response.status}): ${answer.detail || response.statusText}`, true);
}

function confirmThen(text, action) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.onclose = () => { if (dialog.returnValue === "ok") action(); };
  dialog.showModal();
}

function rollbackText() {
  const w = view.rollbackWindow;
  if (!w) return "no previous revision kept warm: Roll back is possible only in the rollback window after a promotion";
  const left = Math.round((Date.parse(w.until) - Date.now()) / 1000);
  return `revision ${w.revision} (${w.model || "-"}) kept warm until ${w.until}${left > 0 ? ` (${left}s left)` : " (ending)"}`;
}

function drawActions() {
  const box = document.getElementById("actions");
  document.getElementById("rollback-window").textContent = `Rollback window: ${rollbackText()}`;
  if (readOnly) {
    box.replaceChildren(el("p", { class: "muted", id: "read-only" }, readOnly));
    return;
  }
  box.replaceChildren(...COMMANDS.map(([command, label, what]) => {
    const refusal = view.commands[command];
    const button = el("button", {
      type: "button", "data-command": command, class: command === "abort" ? "danger" : "",
      title: refusal || what, "aria-describedby": "notice", "aria-disabled": refusal ? "true" : null,
    }, label);
    // Refused commands stay focusable and clickable: the operator's reason is shown, not hidden.
    button.addEventListener("click", () => {
      if (refusal) { notice(`${label}: ${refusal}`, true); return; }
      const target = command === "rollback" && view.rollbackWindow
        ? ` to revision ${view.rollbackWindow.revision} (${view.rollbackWindow.model || "-"})` : "";
      confirmThen(`${label} ${key}${target}: ${what}?`, () => send(command));
    });
    return button;
  }));
}

function stepText(step) {
  if (step.state !== "current" || !step.startedAt || !step.durationSeconds) return step.text;
  const elapsed = (Date.now() - Date.parse(step.startedAt)) / 1000;
  const left = Math.max(0, Math.round(step.durationSeconds - elapsed));
  return `${step.text} (${left}s left)`;
}

function drawSteps() {
  const list = document.getElementById("steps");
  list.replaceChildren(...view.steps.map((step) => el("li", {
    class: `state-${step.state}`, "aria-current": step.state === "current" ? "step" : null,
    "data-state": step.state,
  }, `${step.index + 1}. ${stepText(step)}${step.state === "stopped" ? " — rolled back here" : ""}`)));
}

function drawWeights() {
  const w = view.weights;
  const bar = document.getElementById("weight-bar");
  bar.setAttribute("aria-label", `stable ${w.stable}%, canary ${w.canary}%, mirror ${w.mirror}%`);
  // The text says both weights whatever their sizes; a 0% part is not drawn.
  bar.replaceChildren(...[["stable", w.stable], ["canary", w.canary]]
    .filter(([, weight]) => weight > 0)
    .map(([role, weight]) => el("span", { class: role, style: `width:${weight}%` }, `${role} ${weight}%`)));
  document.getElementById("weight-text").textContent = `stable ${w.stable}% · canary ${w.canary}% · mirror ${w.mirror}%`;
  const points = view.weightHistory;
  const times = points.map((p) => Date.parse(p.at) / 1000);
  times.push(Date.now() / 1000);
  const stable = points.map((p) => p.stable); stable.push(w.stable);
  const canary = points.map((p) => p.canary); canary.push(w.canary);
  const data = [times, stable, canary];
  if (weightsPlot) { weightsPlot.setData(data); return; }
  weightsPlot = new uPlot({
    title: "Weights over time (%)", width: 640, height: 200,
    scales: { y: { range: [0, 100] } },
    series: [{}, { label: "stable", stroke: "#0550ae", paths: uPlot.paths.stepped({ align: 1 }) },
             { label: "canary", stroke: "#8250df", paths: uPlot.paths.stepped({ align: 1 }) }],
  }, data, document.getElementById("weights-plot"));
}

function drawChecks() {
  document.querySelector("#checks tbody").replaceChildren(...view.checks.map((c) => row([
    c.name, number(c.value), `${c.threshold}${c.for && c.for !== "0s" ? ` for ${c.for}` : ""}`,
    el("td", { class: `state-${c.state}` }, c.state),
    c.breachingSince ? `breaching since ${ago(c.breachingSince)}` : c.message || "-",
  ])));
  if (Date.now() - plotsFetchedAt > PLOT_REFRESH_MS) { plotsFetchedAt = Date.now(); fetchPlots(); }
}

async function fetchPlots() {
  const grid = document.getElementById("check-plots");
  for (const check of view.checks.filter((c) => c.plottable)) {
    let figure = checkPlots.get(check.name);
    if (!figure) {
      figure = { node: el("figure", { "data-check": check.name }, el("figcaption", {}, `${check.name} (canary)`)), plot: null };
      checkPlots.set(check.name, figure);
      grid.append(figure.node);
    }
    const response = await fetch(`${api}/checks/${encodeURIComponent(check.name)}/series`);
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      figure.plot?.destroy(); figure.plot = null;
      figure.node.replaceChildren(figure.node.firstChild, el("p", { class: "muted" }, answer.detail || response.statusText));
      continue;
    }
    const bound = answer.times.map(() => answer.threshold.bound);
    const data = [answer.times, answer.values, bound, answer.breaches];
    figure.node.setAttribute("aria-label", `${check.name}: ${answer.values.length} samples, breach when ${answer.threshold.text}, ${answer.breaches.filter((b) => b !== null).length} breaching`);
    if (figure.plot) { figure.plot.setData(data); continue; }
    figure.node.replaceChildren(figure.node.firstChild);
    figure.plot = new uPlot({
      width: 500, height: 220,
      series: [{}, { label: check.name, stroke: "#0550ae", spanGaps: false },
               { label: `breach when ${answer.threshold.text}`, stroke: "#a40e26", dash: [6, 4] },
               { label: "breaching", stroke: "#a40e26", width: 0, points: { show: true, size: 7, fill: "#a40e26" } }],
    }, data, figure.node);
  }
}

function drawExperiment() {
  const x = view.experiment;
  document.getElementById("experiment-of").textContent = x
    ? `step ${x.step + 1}, candidate ${x.revision}, ${x.windowSeconds}s window: ${x.decision}. ${x.reason}` : "no experiment run";
  const groups = x ? x.groups.map((g) => row([g.name, g.revision, number(g.requests), number(g.errorRate), number(g.ttftP99)])) : [];
  if (x) groups.push(row(["B-A", "-", "-", number(x.errorRateDifference), number(x.ttftP99Difference)]));
  document.querySelector("#experiment tbody").replaceChildren(...groups);
  const judged = x ? [
    ...x.checks.map((c) => row([c.name, number(c.value), c.threshold || "-",
      el("td", { class: c.breached ? "gate-Failed" : "gate-Passed" }, c.breached ? "Breached" : "Passed")])),
    ...x.gates.map((g) => row([`gate ${g.name}`, number(g.value), g.threshold || "-",
      el("td", { class: g.passed ? "gate-Passed" : "gate-Failed" }, g.passed ? "Passed" : "Failed")])),
  ] : [];
  document.querySelector("#experiment-judged tbody").replaceChildren(...judged);
}

function drawTables() {
  const g = view.gates;
  document.getElementById("gates-of").textContent = g.results.length
    ? `of revision ${g.revision || "-"}${g.step === null ? "" : `, step ${g.step + 1}`}` : "no gates evaluated";
  document.querySelector("#gates tbody").replaceChildren(...g.results.map((r) => row([
    r.name, el("td", { class: r.passed ? "gate-Passed" : "gate-Failed" }, r.passed ? "Passed" : "Failed"),
    number(r.value), r.threshold || "-", r.message || "-",
  ])));
  drawExperiment();
  document.querySelector("#events tbody").replaceChildren(...view.events.map((e) => row([
    `${ago(e.at)}${e.count > 1 ? ` (x${e.count})` : ""}`, el("td", { class: e.type }, e.type), e.reason, e.message,
  ])));
  document.querySelector("#history tbody").replaceChildren(...view.history.flatMap((h) => {
    const undo = readOnly ? "-" : el("button", { type: "button", "data-undo": h.revision, disabled: h.undoable ? null : "" }, `Undo to ${h.revision}`);
    if (!readOnly) undo.addEventListener("click", () => confirmThen(`Undo ${key} to revision ${h.revision} (${h.model})? This edits the spec.`, () => send("undo", h.revision)));
    const details = el("details", { "data-record": h.revision, open: openRecords.has(h.revision) ? "" : null },
      el("summary", {}, `Model record of ${h.revision}`));
    details.addEventListener("toggle", () => { if (details.open) openRecords.add(h.revision); else openRecords.delete(h.revision); });
    if (h.record) {
      details.append(el("dl", {}, ...h.record.flatMap(([label, text]) => [el("dt", {}, label), el("dd", {}, text)])));
      if (h.gates.length) details.append(el("p", {}, "Quality gates:"), el("ul", {}, ...h.gates.map((g) => el("li", {}, g))));
    } else {
      details.append(el("p", { class: "muted" }, h.noRecord));
    }
    return [
      row([h.revision, h.model, h.outcome, h.at, h.reason || "-", el("td", {}, undo)]),
      row([el("td", { colspan: "6", class: "record" }, details)]),
    ];
  }));
}

function draw() {
  document.getElementById("phase").textContent = view.phase + (view.pauseReason ? ` (${view.pauseReason})` : "");
  document.getElementById("phase").className = `phase phase-${view.phase}`;
  document.getElementById("message").textContent = view.message || "";
  document.getElementById("revisions").textContent =
    `stable ${view.stable || "-"} (${view.stableModel || "-"}) · canary ${view.canary || "-"} (${view.canaryModel || "-"}) · step ${view.step}`;
  document.getElementById("card").textContent = `Model card (spec.model.card, declared): ${view.card || "none"}`;
  drawActions(); drawSteps(); drawWeights(); drawChecks(); drawTables();
}

// The mode first, so that a read-only dashboard never draws a button.
fetch(`${BASE}api/config`).then((r) => r.json()).then((settings) => {
  readOnly = settings.readOnly;
  live(`${BASE}api/stream?rollout=${encodeURIComponent(key)}`, {
    detail: (data) => { view = data; draw(); },
    missing: () => { document.getElementById("phase").textContent = "not found (or not yet listed)"; },
  });
});
setInterval(() => { if (view) drawSteps(); }, 1000);
