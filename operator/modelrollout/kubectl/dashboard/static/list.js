"use strict";
const params = new URLSearchParams(location.search);
const select = document.getElementById("namespace");
const body = document.querySelector("#rollouts tbody");
const rows = new Map();
let filter = params.get("namespace") || "";

function rowFor(r) {
  const link = el("a", { href: `${BASE}rollouts/${encodeURIComponent(r.namespace)}/${encodeURIComponent(r.name)}` }, r.name);
  const last = r.lastEvent ? `${r.lastEvent.reason}: ${r.lastEvent.message} (${ago(r.lastEvent.at)})` : "-";
  return row([
    r.namespace, el("td", {}, link), el("td", { class: `phase phase-${r.phase}` }, r.phase),
    r.strategy, el("td", { "data-field": "step" }, r.step), el("td", { "data-field": "weight" }, `${r.weights.canary}%`),
    r.stable || "-", r.canary || "-", el("td", { class: r.lastEvent?.type === "Warning" ? "Warning" : "" }, last),
  ], { "data-key": r.key });
}

function draw() {
  const keys = [...rows.keys()].sort();
  const namespaces = new Set(keys.map((k) => k.split("/")[0]));
  for (const ns of namespaces) {
    if (![...select.options].some((o) => o.value === ns)) select.append(el("option", { value: ns }, ns));
  }
  select.value = filter;
  const shown = keys.filter((k) => !filter || k.startsWith(`${filter}/`));
  body.replaceChildren(...shown.map((k) => rowFor(rows.get(k))));
  document.getElementById("count").textContent = `${shown.length} rollout${shown.length === 1 ? "" : "s"}`;
}

select.addEventListener("change", () => {
  filter = select.value;
  const url = new URL(location.href);
  if (filter) url.searchParams.set("namespace", filter); else url.searchParams.delete("namespace");
  history.replaceState(null, "", url);
  draw();
});

live(`${BASE}api/stream`, {
  rows: (data) => { rows.clear(); for (const r of data.rows) rows.set(r.key, r); draw(); },
  row: (r) => { rows.set(r.key, r); draw(); },
  removed: (data) => { rows.delete(data.key); draw(); },
});
