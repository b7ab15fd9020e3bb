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
import math
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import config

from hanging_sink import HangingSink
from modelrollout.engine.revision import revision_of
from modelrollout.kube.api import HTTPROUTES, MODELROLLOUTS, SECRETS, KubeApi
from modelrollout.kube.labels import GROUP, VERSION
from modelrollout.models import parse_spec
from modelrollout_dev import cluster
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.prometheus import MetricsEndpoint

NAMESPACE = "bench-rollback"
NAME = "chat"
ANALYSIS_INTERVAL_SECONDS = 1.0
TICK_INTERVAL_SECONDS = 1.0
POLL_SECONDS = 0.02


class BreachGauge:
    """Serves `bench_breach{revision=...}`: 0 until `breach(revision)` sets it to 1."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self._endpoint = MetricsEndpoint(self._render)

    def _render(self) -> str:
        lines = [f'bench_breach{{revision="{r}"}} {v}' for r, v in self.values.items()]
        return "\n".join(lines) + "\n"

    @property
    def address(self) -> str:
        return self._endpoint.address


# Set by main() with --hanging-sink: every rollout notifies it.
NOTIFICATIONS: dict[str, Any] | None = None
SINK_SECRET = "bench-notifications"


def manifest(uri: str, prometheus_url: str, name: str = NAME) -> dict[str, Any]:
    body = _manifest(uri, prometheus_url, name)
    if NOTIFICATIONS is not None:
        body["spec"]["notifications"] = NOTIFICATIONS
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--background", type=int, default=0, help="other rollouts progressing")
    parser.add_argument(
        "--hanging-sink", action="store_true", help="notify a webhook that never answers"
    )
    parser.add_argument(
        "--cluster", default=cluster.DEFAULT_NAME, help="the local cluster's name (up if not)"
    )
    args = parser.parse_args()
    global NOTIFICATIONS

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
        api.create(
            MODELROLLOUTS,
            NAMESPACE,
            manifest("file:///bench/model-stable", state.prometheus_url),
        )
        wait(
            lambda: (
                (api.get(MODELROLLOUTS, NAMESPACE, NAME) or {}).get("status", {}).get("phase")
                == "Succeeded"
            ),
            60,
            "the first revision to become stable",
        )
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


if __name__ == "__main__":
    raise SystemExit(main())
