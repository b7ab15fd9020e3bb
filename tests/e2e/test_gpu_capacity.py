"""GPU capacity planning on the real scheduler's fake GPU nodes (2 nodes x 4 nvidia.com/gpu).

Each test first waits until no other test's pods hold GPUs, then fills the
cluster with its stable revision: 4 replicas x 2 GPUs.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.support.kube import wait_until
from tests.support.rollouts import rollout_manifest
from tests.support.scenario import Scenario

# kwok's fake GPU nodes and the pod harness: a kind cluster has neither.
pytestmark = [pytest.mark.e2e, pytest.mark.localharness]

STEPS = [{"setWeight": 25}, {"setWeight": 50}, {"setWeight": 75}]


def _gpus_in_use(core: client.CoreV1Api) -> int:
    total = 0
    for pod in core.list_pod_for_all_namespaces().items:
        if pod.spec.node_name and pod.status.phase not in ("Succeeded", "Failed"):
            for container in pod.spec.containers:
                limits = (container.resources.limits if container.resources else None) or {}
                total += int(limits.get("nvidia.com/gpu", 0))
    return total


def _cluster_gpus(core: client.CoreV1Api) -> int:
    return sum(
        int((node.status.allocatable or {}).get("nvidia.com/gpu", 0))
        for node in core.list_node().items
    )


@pytest.fixture
def full_cluster_manifest(kube_api_client: client.ApiClient) -> Any:
    core = client.CoreV1Api(kube_api_client)
    # Namespaces of earlier tests are deleted asynchronously: wait for their pods.
    wait_until(lambda: _gpus_in_use(core) == 0, 120, "earlier tests' GPU pods to go")
    assert _cluster_gpus(core) == 8, "the local cluster has 2 GPU nodes x 4"

    def manifest(uri: str, **runtime: Any) -> dict[str, Any]:
        body = rollout_manifest("chat", uri, STEPS, replicas=4, gpus=2)
        body["spec"]["runtime"].update(runtime)
        return body

    return manifest


def test_surge_on_a_full_cluster_creates_no_pods_and_names_the_shortfall(
    scenario: Scenario, full_cluster_manifest: Any
) -> None:
    scenario.given().rollout(full_cluster_manifest("file:///models/v1"))
    stable = scenario.stable_revision
    scenario.then().expect_status(
        "stable's 8 GPUs in status.gpus", lambda s: s.get("gpus", {}).get("stable") == 8, within=30
    )

    then = scenario.when().update_model("file:///models/v2").then()
    status = then.expect_phase("Pending", within=30).status
    condition = next(c for c in status["conditions"] if c["type"] == "InsufficientGPUCapacity")
    assert condition["status"] == "True"
    assert condition["message"] == (
        "capacity surge: the new revision needs room for 4 pods x 2 nvidia.com/gpu beside "
        "stable; 2 eligible nodes have 0 free, enough for 0 pods (free GPUs, lower "
        "runtime.replicas, or set runtime.capacity: shift)"
    )
    assert status.get("canaryRevision") is None
    assert status["weights"]["stable"] == 100

    # Several ticks on, nothing was ever created: the watches saw every Deployment and pod.
    scenario.when().ticks_pass(6)
    assert {rev for at in scenario.replicas_timeline() for rev in at} == {stable}
    assert scenario.pods_created(scenario.new_revision) == []
    then.expect_pods(stable, "all 4 still there", lambda pods: len(pods) == 4, within=30)
    assert len(scenario.pod_watch.current) == 4
    assert any(e.reason == "InsufficientGPUCapacity" for e in scenario.rollouts.events("chat"))


def test_shift_completes_on_a_cluster_with_no_spare_gpu_keeping_min_stable_replicas(
    scenario: Scenario, full_cluster_manifest: Any
) -> None:
    shift = {"capacity": "shift", "minStableReplicas": 1}
    scenario.given().rollout(full_cluster_manifest("file:///models/v1", **shift)).ready()
    stable = scenario.stable_revision

    then = scenario.when().update_model("file:///models/v2").then()
    # status.gpus counts the pods each Deployment reports, which lags a scale-down: a
    # version may show the canary's 4 before stable's 6 become 4, so both are waited for.
    then.expect_status(
        "the canary at 2 pods (4 GPUs) with stable shrunk to 2 (4 GPUs) to make room",
        lambda s: ((gpus := s.get("gpus") or {}).get("canary"), gpus.get("stable")) == (4, 4),
        within=60,
    )
    status = then.expect_phase("Succeeded", within=120).status
    canary = scenario.new_revision
    assert status["history"][0]["outcome"] == "Promoted"
    assert status["stableRevision"] == canary != stable
    assert not any(
        c["type"] == "InsufficientGPUCapacity" and c["status"] == "True"
        for seen in scenario.story_statuses()
        for c in seen.get("conditions", [])
    ), "capacity ran short at some point"

    # Every version of the Deployments from the watch, as the API server wrote them.
    then.expect_deployments({canary}, within=30)
    timeline = scenario.replicas_timeline()
    asked = {
        rev: distinct([at[rev][0] for at in timeline if rev in at]) for rev in (stable, canary)
    }
    # Stable gives way by one replica per canary replica, down to minStableReplicas while it
    # has traffic, and to nothing once promoted; the canary grows with its weight (25, 50, 75).
    assert asked[stable] == [4, 3, 2, 1, 0], timeline
    assert asked[canary] == [1, 2, 3, 4], timeline
    # Never more pods asked for than the cluster's 8 GPUs hold (2 each).
    assert max(sum(r for r, _ in at.values()) for at in timeline) * 2 <= 8, timeline
    # Stable served with at least one Ready pod while it was asked for any.
    assert all(at[stable][1] >= 1 for at in timeline if at.get(stable, (0, 0))[0] > 0), timeline


def distinct(values: list[int]) -> list[int]:
    """`values` without consecutive repeats."""
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]
