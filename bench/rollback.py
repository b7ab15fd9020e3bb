"""Breach-to-rollback latency: a breach visible in Prometheus -> canary weight 0 in the API.

On the local cluster with the real operator and a real Prometheus. Each run
rolls out a new revision with the gatewayAPI router (exact weights) and one
check on a gauge that a loopback endpoint exports for the canary's revision;
once the canary has traffic, the gauge flips to 1. The clock starts when
Prometheus first answers the breaching value (polled every 20 ms) and stops
when the HTTPRoute's canary weight is 0 (polled every 20 ms).

    .venv/bin/python bench/rollback.py --runs 30
    .venv/bin/python bench/rollback.py --runs 30 --background 299   # N = 300
    .venv/bin/python bench/rollback.py --runs 15 --hanging-sink
    .venv/bin/python bench/rollback.py --push --runs 40 --interval 5

With `--push`, the rollout's analysis is an `alerts` entry instead of a check:
a Prometheus rule (`BenchBreach`, `bench_breach > 0`) fires, and a real
Alertmanager (Debian's prometheus-alertmanager, `group_wait: 0s`) routes it to
the operator's receiver, on alternate runs only: the other runs are polled
(the alert carries `path="polled"`, which Alertmanager's route drops). Both
clocks start when the alert fires in Prometheus (its `activeAt`) and stop when
a watch on the HTTPRoute sees the canary's weight at 0; for pushed runs a
second clock starts when Alertmanager's POST reaches the receiver (a loopback
proxy in front of it records the arrival).

With `--hanging-sink`, every rollout notifies a webhook sink (its URL in a
Secret) that accepts connections and never answers: the rollback must not
wait for it (docs/notifications.md).

With `--background K`, K more rollouts in the same namespace each run a
canary (weight 50, an hour-long analysis step with the same kind of check,
passing), so the operator ticks and queries for K + 1 rollouts while the
measured one breaches.

Prints p50, p95, p99 and max, and each run's figure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import config

from hanging_sink import HangingSink
from modelrollout.engine.revision import revision_of
from modelrollout.kube.api import HTTPROUTES, MODELROLLOUTS, SECRETS, KubeApi
from modelrollout.kube.labels import GROUP, VERSION
from modelrollout.models import parse_spec
from modelrollout_dev import cluster
from modelrollout_dev.alertmanager import Alertmanager, start_alertmanager
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.processes import free_port
from modelrollout_dev.prometheus import MetricsEndpoint

NAMESPACE = "bench-rollback"
NAME = "chat"
ANALYSIS_INTERVAL_SECONDS = 1.0
ALERTNAME = "BenchBreach"
ALERT_RULES = f"""groups:
- name: bench-rollback
  rules:
  - alert: {ALERTNAME}
    expr: bench_breach > 0
"""
TICK_INTERVAL_SECONDS = 1.0
POLL_SECONDS = 0.02


class BreachGauge:
    """Serves `bench_breach{revision=...,path=...}`: 0 until a run sets its revision's to 1."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        # With --push, which way the revision's alert goes: "pushed" or "polled".
        self.paths: dict[str, str] = {}
        self._endpoint = MetricsEndpoint(self._render)

    def _render(self) -> str:
        lines = [
            f'bench_breach{{revision="{r}",path="{self.paths.get(r, "polled")}"}} {v}'
            for r, v in list(self.values.items())
        ]
        return "\n".join(lines) + "\n"

    @property
    def address(self) -> str:
        return self._endpoint.address


class ReceiptProxy:
    """In front of the operator's alert receiver: forwards each POST, noting when it arrived."""

    def __init__(self, upstream: str) -> None:
        # (arrival, wall clock; the revisions its alerts name)
        self.arrivals: list[tuple[float, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                proxy.arrivals.append((arrived, body.decode(errors="replace")))
                request = urllib.request.Request(
                    upstream + self.path,
                    data=body,
                    method="POST",
                    headers={
                        "Content-Type": "application/json",
                        "Authorization": self.headers.get("Authorization", ""),
                    },
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        payload, status = response.read(), response.status
                except urllib.error.HTTPError as error:
                    payload, status = error.read(), error.code
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def first_for(self, revision: str) -> float | None:
        """When the first POST naming `revision` arrived."""
        return next((at for at, body in self.arrivals if f'"{revision}"' in body), None)


class RouteWatch:
    """Watches the HTTPRoute; keeps (wall clock, {backend: weight}) for each version seen."""

    def __init__(self, api: KubeApi) -> None:
        self.versions: list[tuple[float, dict[str, int]]] = []
        self._api = api
        self._stopped = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            _, version = self._api.list_with_version(HTTPROUTES, NAMESPACE)
            for event in self._api.watch(HTTPROUTES, NAMESPACE, "", version, 60):
                seen = time.time()
                route = event["object"]
                if event["type"] == "BOOKMARK" or route["metadata"]["name"] != NAME:
                    continue
                refs = route["spec"]["rules"][0].get("backendRefs", [])
                self.versions.append((seen, {r["name"]: int(r.get("weight", 0)) for r in refs}))

    def zero_at(self, canary: str) -> float | None:
        """When the canary's weight was first seen at 0 (or gone) after it was above 0."""
        backend, live = f"{NAME}-{canary}", False
        for seen, weights in list(self.versions):
            if weights.get(backend, 0) > 0:
                live = True
            elif live:
                return seen
        return None

    def stop(self) -> None:
        self._stopped.set()


# Set by main() with --hanging-sink: every rollout notifies it.
NOTIFICATIONS: dict[str, Any] | None = None
# Set by main() with --push: the rollout's analysis is this alert, not a check.
PUSH = False
SINK_SECRET = "bench-notifications"


def manifest(uri: str, prometheus_url: str, name: str = NAME) -> dict[str, Any]:
    body = _manifest(uri, prometheus_url, name)
    if NOTIFICATIONS is not None:
        body["spec"]["notifications"] = NOTIFICATIONS
    if PUSH:
        analysis = body["spec"]["analysis"]
        del analysis["checks"]
        analysis["alerts"] = [
            {
                "alertname": ALERTNAME,
                "matchLabels": {"revision": "{{canary.revision}}"},
                "action": "rollback",
            }
        ]
    return body


def _manifest(uri: str, prometheus_url: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRollout",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {"name": name, "uri": uri},
            "runtime": {"engine": "torch", "image": "modelrollout/modelserve:dev", "replicas": 1},
            "traffic": {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
            "strategy": {
                "canary": {"steps": [{"setWeight": 50}, {"analysis": {"duration": "1h"}}]}
            },
            "analysis": {
                "prometheus": {"address": prometheus_url, "timeout": "2s"},
                "interval": f"{ANALYSIS_INTERVAL_SECONDS:g}s",
                "checks": [
                    {
                        "name": "breach",
                        "query": 'max(bench_breach{revision="{{canary.revision}}"})',
                        "breachWhen": "> 0",
                        "action": "rollback",
                    }
                ],
            },
        },
    }


def canary_weight(api: KubeApi, canary: str, name: str = NAME) -> int | None:
    route = api.get(HTTPROUTES, NAMESPACE, name)
    for ref in (route or {}).get("spec", {}).get("rules", [{}])[0].get("backendRefs", []):
        if ref["name"] == f"{name}-{canary}":
            return int(ref.get("weight", 0))
    return None


def create_stable(api: KubeApi, prometheus_url: str) -> None:
    """The bench's rollout, its first revision stable."""
    api.create(MODELROLLOUTS, NAMESPACE, manifest("file:///bench/model-stable", prometheus_url))
    wait(
        lambda: (
            (api.get(MODELROLLOUTS, NAMESPACE, NAME) or {}).get("status", {}).get("phase")
            == "Succeeded"
        ),
        60,
        "the first revision to become stable",
    )


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(POLL_SECONDS)


def one_run(api: KubeApi, state: cluster.ClusterState, gauge: BreachGauge, index: int) -> float:
    body = manifest(f"file:///bench/model-{index}", state.prometheus_url)
    canary = revision_of(parse_spec(body["spec"]))
    gauge.values[canary] = 0
    api.merge_patch(MODELROLLOUTS, NAMESPACE, NAME, {"spec": body["spec"]})
    wait(lambda: canary_weight(api, canary) == 50, 60, "canary weight 50")
    # Let the check pass once, so the breach is a change the operator must notice.
    wait(
        lambda: any(
            c.get("state") == "Passing"
            for c in (api.get(MODELROLLOUTS, NAMESPACE, NAME) or {})
            .get("status", {})
            .get("checks", [])
        ),
        60,
        "the check to pass",
    )
    gauge.values[canary] = 1
    query = f'max(bench_breach{{revision="{canary}"}})'
    wait(
        lambda: any(float(s["value"][1]) > 0 for s in state.prometheus.query(query)),
        30,
        "the breach to be visible in Prometheus",
    )
    visible = time.monotonic()
    wait(lambda: canary_weight(api, canary) in (0, None), 60, "canary weight 0")
    return time.monotonic() - visible


def prometheus_active_at(state: cluster.ClusterState, revision: str) -> float | None:
    """When Prometheus's alert for `revision` became active (for: 0, so firing), wall clock."""
    url = f"{state.prometheus_url}/api/v1/alerts"
    with urllib.request.urlopen(url, timeout=10) as response:
        alerts = json.load(response)["data"]["alerts"]
    for alert in alerts:
        labels = alert["labels"]
        if labels.get("alertname") == ALERTNAME and labels.get("revision") == revision:
            # RFC 3339 with nanoseconds: Python parses microseconds.
            whole, _, fraction = alert["activeAt"].rstrip("Z").partition(".")
            at = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC)
            return at.timestamp() + float(f"0.{fraction or 0}")
    return None


def one_push_run(
    api: KubeApi,
    state: cluster.ClusterState,
    gauge: BreachGauge,
    routes: RouteWatch,
    proxy: ReceiptProxy,
    index: int,
    path: str,
) -> tuple[float, float | None]:
    """(alert firing in Prometheus -> weight 0, Alertmanager's POST arrived -> weight 0)."""
    body = manifest(f"file:///bench/model-{index}", state.prometheus_url)
    canary = revision_of(parse_spec(body["spec"]))
    gauge.values[canary], gauge.paths[canary] = 0, path
    api.merge_patch(MODELROLLOUTS, NAMESPACE, NAME, {"spec": body["spec"]})
    backend = f"{NAME}-{canary}"
    wait(
        lambda: any(w.get(backend) == 50 for _, w in list(routes.versions)),
        60,
        "canary weight 50",
    )
    wait(
        lambda: any(
            c.get("state") == "Passing"
            for c in (api.get(MODELROLLOUTS, NAMESPACE, NAME) or {})
            .get("status", {})
            .get("checks", [])
        ),
        60,
        "the alert's first poll (not firing)",
    )
    gauge.values[canary] = 1
    wait(lambda: routes.zero_at(canary) is not None, 120, "canary weight 0")
    zero = routes.zero_at(canary)
    assert zero is not None
    fired: list[float | None] = [None]

    def active() -> bool:
        fired[0] = prometheus_active_at(state, canary)
        return fired[0] is not None

    wait(active, 10, "Prometheus's alert")
    assert fired[0] is not None
    received = proxy.first_for(canary)
    gauge.values[canary] = 0
    return zero - fired[0], (None if received is None else zero - received)


def start_background(
    api: KubeApi, state: cluster.ClusterState, gauge: BreachGauge, count: int
) -> None:
    """`count` rollouts with a canary at weight 50 under a passing check, left running."""
    names = [f"bg-{index:04d}" for index in range(count)]
    for name in names:
        body = manifest("file:///bench/bg-v1", state.prometheus_url, name)
        api.create(MODELROLLOUTS, NAMESPACE, body)

    def settled(what: str, done: Any) -> None:
        # One list per second, not one GET per rollout every 20 ms.
        deadline = time.monotonic() + 900
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            time.sleep(1)

    def phases() -> dict[str, str]:
        return {
            body["metadata"]["name"]: (body.get("status") or {}).get("phase", "")
            for body in api.list(MODELROLLOUTS, NAMESPACE)
        }

    settled("background stable", lambda: all(phases().get(n) == "Succeeded" for n in names))
    canaries: dict[str, str] = {}
    for name in names:
        body = manifest("file:///bench/bg-v2", state.prometheus_url, name)
        canaries[name] = revision_of(parse_spec(body["spec"]))
        gauge.values[canaries[name]] = 0
        api.merge_patch(MODELROLLOUTS, NAMESPACE, name, {"spec": body["spec"]})

    def at_fifty() -> bool:
        weights = {
            ref["name"]: int(ref.get("weight", 0))
            for route in api.list(HTTPROUTES, NAMESPACE)
            for ref in route["spec"]["rules"][0].get("backendRefs", [])
        }
        return all(weights.get(f"{n}-{canaries[n]}") == 50 for n in names)

    settled("background canaries at weight 50", at_fifty)
    print(f"{count} background rollouts at canary weight 50", flush=True)


def main() -> int:
    global NOTIFICATIONS, PUSH, ANALYSIS_INTERVAL_SECONDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--background", type=int, default=0, help="other rollouts progressing")
    parser.add_argument(
        "--hanging-sink", action="store_true", help="notify a webhook that never answers"
    )
    parser.add_argument(
        "--cluster", default=cluster.DEFAULT_NAME, help="the local cluster's name (up if not)"
    )
    parser.add_argument(
        "--push",
        action="store_true",
        help="an alert, pushed by a real Alertmanager on alternate runs, polled on the others",
    )
    parser.add_argument(
        "--interval", type=float, default=ANALYSIS_INTERVAL_SECONDS, help="analysis.interval, s"
    )
    args = parser.parse_args()
    PUSH, ANALYSIS_INTERVAL_SECONDS = args.push, args.interval
    if args.push:
        return push_main(args)

    # Each rollout runs a stable and a canary pod; a kwok node takes 110 pods.
    state = cluster.up(args.cluster, cpu_nodes=max(1, math.ceil(2 * (args.background + 1) / 100)))
    crd = Path(__file__).resolve().parents[1] / "crds" / "modelrollouts.modelrollout.dev.yaml"
    kubectl = [state.kubectl, "--kubeconfig", state.kubeconfig]
    subprocess.run(
        [*kubectl, "apply", "--server-side", "-f", str(crd)], check=True, capture_output=True
    )
    subprocess.run(
        [*kubectl, "delete", "ns", NAMESPACE, "--ignore-not-found", "--wait"], check=True
    )
    subprocess.run([*kubectl, "create", "ns", NAMESPACE], check=True, capture_output=True)
    api = KubeApi(config.new_client_from_config(config_file=state.kubeconfig))
    sink = HangingSink() if args.hanging_sink else None
    if sink is not None:
        api.create(
            SECRETS,
            NAMESPACE,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SINK_SECRET},
                "stringData": {"url": sink.url},
            },
        )
        NOTIFICATIONS = {
            "sinks": [
                {"name": "dead", "type": "webhook",
                 "urlSecretRef": {"name": SINK_SECRET, "key": "url"}}
            ]
        }  # fmt: skip
    gauge = BreachGauge()
    state.prometheus.register_target("bench-rollback", gauge.address, {"job_kind": "bench"})

    operator = OperatorProcess(
        state.kubeconfig, NAMESPACE, Path(tempfile.gettempdir()), TICK_INTERVAL_SECONDS
    )
    operator.start()
    latencies: list[float] = []
    try:
        create_stable(api, state.prometheus_url)
        start_background(api, state, gauge, args.background)
        for index in range(args.runs):
            latency = one_run(api, state, gauge, index)
            latencies.append(latency)
            print(f"run {index + 1:2d}: {latency * 1000:7.0f} ms", flush=True)
    finally:
        operator.stop()
        if sink is not None:
            print(f"the hanging sink accepted {sink.accepted} connection(s)", flush=True)
            sink.close()
        state.prometheus.unregister_target("bench-rollback")
        subprocess.run([*kubectl, "delete", "ns", NAMESPACE, "--wait=false"], capture_output=True)

    ordered = sorted(latencies)
    p95, p99 = (ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] for q in (0.95, 0.99))
    print(
        f"breach visible in Prometheus -> canary weight 0 in the API, {len(ordered)} runs, "
        f"N={args.background + 1}, analysis interval {ANALYSIS_INTERVAL_SECONDS:g}s, "
        f"tick {TICK_INTERVAL_SECONDS:g}s"
        f"{', notifying a sink that never answers' if sink is not None else ''}:"
    )
    print(
        f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, "
        f"max {ordered[-1] * 1000:.0f} ms, min {ordered[0] * 1000:.0f} ms"
    )
    return 0


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95, p99 = (ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] for q in (0.95, 0.99))
    return (
        f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms, min {ordered[0] * 1000:.0f} ms"
    )


def push_main(args: argparse.Namespace) -> int:
    """Pushed and polled runs, alternated, on one cluster, one operator, one Alertmanager."""
    state = cluster.up(args.cluster)
    crd = Path(__file__).resolve().parents[1] / "crds" / "modelrollouts.modelrollout.dev.yaml"
    kubectl = [state.kubectl, "--kubeconfig", state.kubeconfig]
    subprocess.run(
        [*kubectl, "apply", "--server-side", "-f", str(crd)], check=True, capture_output=True
    )
    subprocess.run(
        [*kubectl, "delete", "ns", NAMESPACE, "--ignore-not-found", "--wait"], check=True
    )
    subprocess.run([*kubectl, "create", "ns", NAMESPACE], check=True, capture_output=True)
    api = KubeApi(config.new_client_from_config(config_file=state.kubeconfig))
    gauge = BreachGauge()
    state.prometheus.register_target("bench-rollback", gauge.address, {"job_kind": "bench"})
    state.prometheus.write_rules("bench-rollback", ALERT_RULES)
    pushed: list[tuple[float, float | None]] = []
    polled: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-push-") as scratch:
        work = Path(scratch)
        token_file = work / "token"
        token_file.write_text("bench-" + str(time.time_ns()))
        port = free_port()
        operator = OperatorProcess(
            state.kubeconfig,
            NAMESPACE,
            work,
            TICK_INTERVAL_SECONDS,
            extra_env={
                "MODELROLLOUT_ALERT_RECEIVER_PORT": str(port),
                "MODELROLLOUT_ALERT_RECEIVER_TOKEN_FILE": str(token_file),
            },
        )
        proxy = ReceiptProxy(f"http://127.0.0.1:{port}")
        manager: Alertmanager | None = None
        operator.start()
        routes = RouteWatch(api)
        try:
            manager = start_alertmanager(
                work / "alertmanager", proxy.url, token_file, matchers=['path="pushed"']
            )
            state.prometheus.register_alertmanager("bench-rollback", manager.address)
            create_stable(api, state.prometheus_url)
            for index in range(2 * args.runs):
                path = "pushed" if index % 2 == 0 else "polled"
                fired, sent = one_push_run(api, state, gauge, routes, proxy, index, path)
                if path == "pushed":
                    pushed.append((fired, sent))
                    shown = "none" if sent is None else f"{sent * 1000:7.0f} ms"
                    print(f"run {index + 1:2d} pushed: fired {fired * 1000:7.0f} ms, sent {shown}")
                else:
                    polled.append(fired)
                    print(f"run {index + 1:2d} polled: fired {fired * 1000:7.0f} ms", flush=True)
        finally:
            routes.stop()
            operator.stop()
            if manager is not None:
                manager.stop()
            proxy.server.shutdown()
            state.prometheus.unregister_alertmanager("bench-rollback")
            state.prometheus.remove_rules("bench-rollback")
            state.prometheus.unregister_target("bench-rollback")
            subprocess.run(
                [*kubectl, "delete", "ns", NAMESPACE, "--wait=false"], capture_output=True
            )
    print(
        f"alert {ALERTNAME} firing in Prometheus (activeAt) -> canary weight 0 (HTTPRoute watch), "
        f"analysis interval {ANALYSIS_INTERVAL_SECONDS:g}s, tick {TICK_INTERVAL_SECONDS:g}s, "
        f"Alertmanager group_wait 0s:"
    )
    print(f"pushed, {len(pushed)} runs: {percentiles([f for f, _ in pushed])}")
    print(f"polled, {len(polled)} runs: {percentiles(polled)}")
    sends = [s for _, s in pushed if s is not None]
    print(
        f"Alertmanager's POST reached the receiver -> canary weight 0, {len(sends)} runs: "
        f"{percentiles(sends) if sends else 'no push arrived'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
