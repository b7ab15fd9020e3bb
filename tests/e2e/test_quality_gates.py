"""Quality gates as a canary step: a Job runs `modelserve eval --suite` against real servers.

Stand-ins, and nothing else: kwok runs no containers, so `PodProcesses` runs
each Ready serving pod's own `modelserve serve` command and the evaluation
Job's pod's own `modelserve eval` command (the local cluster's kwok stages
leave that pod to it), with the Service URLs pointed at the servers of the
revisions those Services select, and reports the result as the kubelet would
(the container's termination message). The operator, the API server, the Job
controller, the models and the suite are real; the operator reads the result
from the pod's status as it would in any cluster.

The same test runs on the real node (marker `realnode`): there the kubelet runs
the serving pods and the Job's pod from the project's image, and `modelserve
eval` finds the revisions' Services through the cluster DNS, with nothing
standing in.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes import client

from modelrollout_dev.operator_process import OperatorProcess
from tests.support.rollouts import Rollouts, rollout_manifest
from tests.support.serving_placement import ServingPlacement

pytestmark = [pytest.mark.e2e, pytest.mark.localharness]


SUITE = {
    "prompts": [
        {"name": f"p{index}", "prompt": prompt, "maxTokens": 8}
        for index, prompt in enumerate(
            ["The capital of France is", "Once upon a time", "1, 2, 3, 4,", "def main():"]
        )
    ],
    "agreement": {"minRatio": 1.0},
    "perplexity": {
        "maxIncreasePercent": 3,
        "texts": ["The quick brown fox jumps over the lazy dog. " * 4],
    },
}


@pytest.fixture
def gate_suite(kube_api_client: client.ApiClient, namespace: str) -> dict[str, Any]:
    """SUITE in the ConfigMap chat-gates; returns an evaluation step that runs it."""
    client.CoreV1Api(kube_api_client).create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="chat-gates"),
            data={"suite.yaml": yaml.safe_dump(SUITE)},
        ),
    )
    return {"suite": {"configMapName": "chat-gates"}, "timeout": "90s"}


def test_an_identical_model_passes_the_gates_and_different_weights_are_rolled_back(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    serving: ServingPlacement,
    gate_suite: dict[str, Any],
) -> None:
    steps = [{"evaluation": {**gate_suite, **serving.job_placement()}}]
    v1 = rollout_manifest(
        "chat", serving.model_uri(0), steps, replicas=1, placement=serving.placement()
    )
    # The eval Job runs modelserve, which the serving image is (on the real node it asks
    # the cluster DNS for the revisions' Services).
    rollouts.create(v1)
    stable = rollouts.wait_phase("chat", {"Succeeded"}, 180)["stableRevision"]
    serving.wait_for_servers(stable, count=1)

    # Same weights, another runtime argument: a new revision answering exactly as stable.
    rollouts.patch_spec(
        "chat", {"runtime": {**v1["spec"]["runtime"], "args": ["--request-timeout=300"]}}
    )
    promoted = rollouts.wait_phase("chat", {"Succeeded", "RolledBack", "Paused"}, 180)
    assert promoted["phase"] == "Succeeded", promoted
    same = promoted["stableRevision"]
    assert same != stable
    assert promoted["gatesRevision"] == same
    gates = {gate["name"]: gate for gate in promoted["gates"]}
    assert set(gates) == {"agreement", "perplexity"}, gates
    assert all(gate["passed"] for gate in gates.values()), gates
    assert gates["agreement"]["value"] == 1.0
    serving.wait_for_servers(same, count=1)

    # Different weights: the greedy answers and the perplexity part from stable's.
    rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": serving.model_uri(1)}})
    rolled_back = rollouts.wait_phase("chat", {"Succeeded", "RolledBack", "Paused"}, 180)
    assert rolled_back["phase"] == "RolledBack", rolled_back
    assert rolled_back["stableRevision"] == same
    different = rolled_back["history"][0]["revision"]
    assert rolled_back["gatesRevision"] == different
    failed = [gate["name"] for gate in rolled_back["gates"] if not gate["passed"]]
    assert "agreement" in failed, rolled_back["gates"]
    assert rolled_back["history"][0]["reason"].startswith("quality gates failed: "), rolled_back
    progressing = next(c for c in rolled_back["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "GateFailed"
