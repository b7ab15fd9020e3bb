"""Prometheus finds the serving pods the way a cluster's Prometheus does, and labels them
as the built-in checks and the shipped alerts read them.

A second Prometheus (3.x built from its Go module: Debian's leaves Kubernetes
service discovery out) runs the chart's scrape job (charts/modelrollout/files/
model-pods.scrape.yaml, the PodMonitor's relabelings in Prometheus' spelling)
with Kubernetes pod discovery against the local API server. The targets it
discovers, and their labels after relabeling, are what this checks; kwok's pod
IPs serve nothing, so the scrapes themselves fail (a real node's pods would
answer: see the real-node issue).
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout_dev import toolchain
from tests.conftest import ClusterUnderTest
from tests.support.helm import CHART
from tests.support.kube import wait_until
from tests.support.rollouts import rollout_manifest
from tests.support.scenario import Scenario

pytestmark = [pytest.mark.e2e, pytest.mark.kubernetes_sd]


@pytest.fixture
def discovering_prometheus(
    cluster_under_test: ClusterUnderTest, namespace: str, tmp_path: Path
) -> Iterator[str]:
    """A Prometheus with only the chart's scrape job, discovering pods in `namespace`."""
    job = yaml.safe_load((CHART / "files" / "model-pods.scrape.yaml").read_text())
    # In a cluster Prometheus uses its ServiceAccount; here, the local cluster's kubeconfig.
    for discovery in job["kubernetes_sd_configs"]:
        discovery["kubeconfig_file"] = cluster_under_test.kubeconfig
        discovery["namespaces"] = {"names": [namespace]}
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({"global": {"scrape_interval": "5s"}, "scrape_configs": [job]}))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path / "prometheus.log").open("ab")
    process = subprocess.Popen(
        [
            str(toolchain.ensure_prometheus_with_kubernetes_sd()),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def active_targets(url: str) -> list[dict[str, Any]] | None:
    try:
        with urllib.request.urlopen(f"{url}/api/v1/targets?state=active", timeout=5) as answer:
            targets: list[dict[str, Any]] = json.load(answer)["data"]["activeTargets"]
    except OSError:
        return None  # not up yet
    return targets


def test_each_serving_pod_is_a_target_labelled_by_rollout_revision_and_role(
    scenario: Scenario, discovering_prometheus: str, namespace: str
) -> None:
    steps = [{"setWeight": 50}, {"pause": {}}]
    scenario.given().rollout(rollout_manifest("chat", "file:///models/v1", steps)).ready()
    then = scenario.when().update_model("file:///models/v2").then()
    then.expect_phase("Paused", within=60).expect_replicas(
        scenario.new_revision, 1, ready=True, within=60
    )
    stable, canary = scenario.stable_revision, scenario.new_revision
    pods = {
        pod["metadata"]["name"]: pod["metadata"]["labels"]
        for pod in scenario.pod_watch.current.values()
        if not pod["metadata"].get("deletionTimestamp")
    }
    assert len(pods) == 3

    def discovered() -> dict[str, dict[str, str]] | None:
        targets = active_targets(discovering_prometheus) or []
        found = {target["labels"].get("pod", ""): target["labels"] for target in targets}
        return found if set(found) == set(pods) else None

    labelled = wait_until(discovered, 90, "a target for each of the 3 serving pods")
    expected = {
        name: {
            "namespace": namespace,
            "rollout": "chat",
            "revision": labels["modelrollout.dev/revision"],
            "role": labels["modelrollout.dev/role"],
            "pod": name,
        }
        for name, labels in pods.items()
    }
    got = {
        name: {key: labels[key] for key in ("namespace", "rollout", "revision", "role", "pod")}
        for name, labels in labelled.items()
    }
    assert got == expected
    roles = sorted((labels["revision"], labels["role"]) for labels in got.values())
    assert roles == sorted([(stable, "stable"), (stable, "stable"), (canary, "canary")])
    assert {labels["job"] for labels in labelled.values()} == {"modelrollout-model-pods"}
