"use strict";
// Where the dashboard is served from: "/" locally, or a prefix such as the API server's service
// proxy (/api/v1/namespaces/NS/services/http:NAME:http/proxy/). Every URL is made from it.
const BASE = location.pathname.replace(/rollouts\/[^/]+\/[^/]+\/?$/, "").replace(/\/?$/, "/");

// Helpers shared by the pages. Text goes in with textContent only: nothing the
// cluster sends is ever parsed as HTML.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? "-"));
  }
  return node;
}

function row(cells, attrs) {
  return el("tr", attrs, ...cells.map((cell) => (cell instanceof Node && cell.tagName === "TD" ? cell : el("td", {}, cell))));
}

function ago(iso) {
  if (!iso) return "-";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 120) return `${seconds}s ago`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m ago`;
  return `${Math.round(seconds / 3600)}h ago`;
}

function number(value) {
  return value === null || value === undefined ? "-" : Number(value).toPrecision(4).replace(/\.?0+$/, "");
}

// One EventSource per page; it reconnects by itself and each (re)connection starts with a snapshot.
function live(url, handlers) {
  const status = document.getElementById("connection");
  const source = new EventSource(url);
  source.onopen = () => { status.textContent = "live"; };
  source.onerror = () => { status.textContent = "reconnecting…"; };
  // What the API server refused or could not answer (RBAC on a kind, a lost connection).
  const problems = el("div", { role: "alert", class: "error", id: "api-errors" });
  document.querySelector("main").prepend(problems);
  source.addEventListener("errors", (message) => {
    const errors = Object.entries(JSON.parse(message.data));
    problems.replaceChildren(...errors.map(([kind, text]) => el("p", {}, `${kind}: ${text}`)));
  });
  for (const [event, handler] of Object.entries(handlers)) {
    source.addEventListener(event, (message) => handler(JSON.parse(message.data)));
  }
  return source;
}
