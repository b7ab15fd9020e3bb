"""The local cluster's Prometheus finds the serving pods the way a cluster's Prometheus does,
labels them as the built-in checks and the shipped alerts read them, and every built-in
check's query gets data from them.

That Prometheus (3.x built from its Go module: Debian's leaves Kubernetes service
discovery out) runs the chart's scrape job (charts/modelrollout/files/
model-pods.scrape.yaml, the PodMonitor's relabelings in Prometheus' spelling) with
Kubernetes pod discovery against the local API server. The servers are the pods' own
(`PodProcesses`, the harness's stand-in for the kubelet) on their pod IPs; no label
here is written by the harness.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any, get_args

import pytest

from modelrollout.analysis.builtins import builtin_query
from modelrollout.analysis.templates import render
from modelrollout.models.spec import ServingBuiltin
from modelrollout_dev.load import BackgroundLoad
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.podprocesses import PodProcesses
from modelrollout_dev.prometheus import PrometheusHandle
from modelrollout_dev.traefik import Traefik
from tests.e2e.test_canary_traffic import wait_for_servers
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest

# Prometheus on this host discovers pods in the local pod network, through Traefik here.
pytestmark = [pytest.mark.e2e, pytest.mark.localharness]


# The builtins that read the serving pods' own series; the shadow comparison's read its
# proxy's (tests/e2e/test_shadow_comparison.py).
BUILTINS: tuple[ServingBuiltin, ...] = get_args(ServingBuiltin)
TARGET_LABELS = ("namespace", "rollout", "revision", "role", "pod")


def active_targets(prometheus: PrometheusHandle, namespace: str) -> list[dict[str, Any]]:
    url = f"{prometheus.url}/api/v1/targets?state=active"
    with urllib.request.urlopen(url, timeout=5) as answer:
        targets: list[dict[str, Any]] = json.load(answer)["data"]["activeTargets"]
    return [t for t in targets if t["labels"].get("namespace") == namespace]


def test_each_serving_pod_is_scraped_labelled_by_rollout_revision_and_role(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    traffic: tuple[PodProcesses, Traefik],
    tiny_models: list[Path],
    prometheus: PrometheusHandle,
) -> None:
    pods, gateway = traffic
    steps = [{"setWeight": 50}, {"pause": {}}]
    manifest = rollout_manifest(
        "chat", f"file://{tiny_models[0]}", steps, placement=pods.placement()
    )
    rollouts.create(manifest)
    stable = rollouts.wait_phase("chat", {"Succeeded"}, 60)["stableRevision"]
    rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": f"file://{tiny_models[1]}"}})
    canary = rollouts.wait_phase("chat", {"Paused"}, 60)["canaryRevision"]
    wait_for_servers(pods, stable)
    wait_for_servers(pods, canary, count=1)
    serving = {name: e.pod_labels for name, e in pods.endpoints().items() if e.healthy}

    def scraped() -> dict[str, dict[str, str]] | None:
        targets = active_targets(prometheus, rollouts.namespace)
        up = {t["labels"]["pod"]: t["labels"] for t in targets if t["health"] == "up"}
        return up if set(up) == set(serving) else None

    labelled = wait_until(scraped, 60, f"a target up for each serving pod {sorted(serving)}")
    expected = {
        name: {
            "namespace": rollouts.namespace,
            "rollout": "chat",
            "revision": labels["modelrollout.dev/revision"],
            "role": labels["modelrollout.dev/role"],
            "pod": name,
        }
        for name, labels in serving.items()
    }
    got = {name: {key: labels[key] for key in TARGET_LABELS} for name, labels in labelled.items()}
    assert got == expected
    roles = sorted((labels["revision"], labels["role"]) for labels in got.values())
    assert roles == sorted([(stable, "stable"), (stable, "stable"), (canary, "canary")])
    assert {labels["job"] for labels in labelled.values()} == {"modelrollout-model-pods"}

    # Under traffic, every built-in check's query, for either role, answers with a number.
    context = {
        "namespace": rollouts.namespace,
        "rollout": "chat",
        "canary.revision": canary,
        "stable.revision": stable,
    }
    queries = {
        (builtin, role): render(builtin_query(builtin, role, "30s"), context)
        for builtin in BUILTINS
        for role in ("canary", "stable")
    }
    with BackgroundLoad(gateway.url, "chat"):

        def answered() -> dict[tuple[str, str], float] | None:
            values = {}
            for key, query in queries.items():
                result = prometheus.query(query)
                if not result or result[0]["value"][1] == "NaN":
                    return None
                values[key] = float(result[0]["value"][1])
            return values

        values = wait_until(answered, 90, f"data for every built-in query: {queries}")
    assert values[("errorRate", "canary")] == 0.0 and values[("errorRate", "stable")] == 0.0
    assert all(value > 0 for (builtin, _), value in values.items() if builtin != "errorRate")
