"""GPU capacity planning on the real scheduler's fake GPU nodes (2 nodes x 4 nvidia.com/gpu).

Each test first waits until no other test's pods hold GPUs, then fills the
cluster with its stable revision: 4 replicas x 2 GPUs.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes import client

from modelrollout_dev.operator_process import OperatorProcess
from tests.e2e.test_canary_operator import start_stable
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest

pytestmark = pytest.mark.e2e

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
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    full_cluster_manifest: Any,
    kube_api_client: client.ApiClient,
) -> None:
    start_stable(rollouts, full_cluster_manifest("file:///models/v1"))
    wait_until(
        lambda: rollouts.status("chat").get("gpus", {}).get("stable") == 8,
        30,
        "stable's 8 GPUs in status.gpus",
    )
    rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": "file:///models/v2"}})
    status = rollouts.wait_phase("chat", {"Pending"}, 30)

    condition = next(c for c in status["conditions"] if c["type"] == "InsufficientGPUCapacity")
    assert condition["status"] == "True"
    assert condition["message"] == (
        "capacity surge: the new revision needs room for 4 pods x 2 nvidia.com/gpu beside "
        "stable; 2 eligible nodes have 0 free, enough for 0 pods (free GPUs, lower "
        "runtime.replicas, or set runtime.capacity: shift)"
    )
    assert status.get("canaryRevision") is None
    assert status["weights"]["stable"] == 100
    time.sleep(3)  # several ticks: still nothing created
    assert list(rollouts.deployments("chat")) == [status["stableRevision"]]
    pods = client.CoreV1Api(kube_api_client).list_namespaced_pod(rollouts.namespace).items
    assert len(pods) == 4
    assert any(e.reason == "InsufficientGPUCapacity" for e in rollouts.events("chat"))


def test_shift_completes_on_a_cluster_with_no_spare_gpu_keeping_min_stable_replicas(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    full_cluster_manifest: Any,
    kube_api_client: client.ApiClient,
) -> None:
    shift = {"capacity": "shift", "minStableReplicas": 1}
    stable = start_stable(rollouts, full_cluster_manifest("file:///models/v1", **shift))
    apps = client.AppsV1Api(kube_api_client)
    wait_until(
        lambda: rollouts.deployments("chat")[stable].status.ready_replicas == 4,
        60,
        "stable's 4 pods Ready",
    )
    samples: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        # (stable replicas asked for, stable pods Ready) while the rollout runs.
        while not stop.is_set():
            for deployment in apps.list_namespaced_deployment(rollouts.namespace).items:
                if deployment.metadata.labels.get("modelrollout.dev/revision") == stable:
                    samples.append(
                        (deployment.spec.replicas or 0, deployment.status.ready_replicas or 0)
                    )
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": "file:///models/v2"}})
        shrunk = wait_until(
            lambda: (
                (rollouts.status("chat").get("gpus") or {}).get("canary") == 4
                and rollouts.status("chat")
            ),
            60,
            "the canary at 2 pods (4 GPUs) with stable shrunk to make room",
        )
        assert shrunk["gpus"]["stable"] == 4
        status = rollouts.wait_phase("chat", {"Succeeded"}, 120)
    finally:
        stop.set()
        sampler.join(timeout=5)

    assert status["history"][0]["outcome"] == "Promoted"
    assert status["stableRevision"] != stable
    assert not any(c["type"] == "InsufficientGPUCapacity" and c["status"] == "True"
                   for c in status.get("conditions", []))  # fmt: skip
    # Stable gave way step by step and kept at least minStableReplicas while it had traffic.
    asked = [replicas for replicas, _ in samples]
    assert {4, 3, 2, 1} <= set(asked), asked
    assert min(replicas for replicas in asked if replicas > 0) == 1
    ready_while_asked = [ready for replicas, ready in samples if replicas > 0]
    assert min(ready_while_asked) >= 1, samples
