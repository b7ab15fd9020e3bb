"""The scale subresource on the real API server: `kubectl scale` and a real HPA resize a rollout.

`kubectl scale` writes the subresource the way an HPA or KEDA does (PATCH
.../modelrollouts/<name>/scale). The HorizontalPodAutoscaler here is acted on by
the cluster's own kube-controller-manager; no metrics API runs in the local
cluster, so it is made to act by its bounds (a rollout below minReplicas, then
one above maxReplicas), the path the controller takes before it asks for metrics.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from modelrollout.kube.labels import GROUP, KIND, PLURAL, REVISION_LABEL, ROLLOUT_LABEL, VERSION
from modelrollout.models.spec import MAX_REPLICAS
from modelrollout_dev import toolchain
from tests.conftest import ClusterUnderTest
from tests.support.kube import wait_until
from tests.support.rollouts import rollout_manifest
from tests.support.scenario import Scenario
from tests.support.status_watch import ObjectWatch

pytestmark = pytest.mark.e2e

Body = dict[str, Any]


@pytest.fixture
def kubectl(cluster_under_test: ClusterUnderTest, namespace: str) -> Any:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(toolchain.expected_binaries().kubectl),
                "--kubeconfig",
                cluster_under_test.kubeconfig,
                "-n",
                namespace,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


@pytest.fixture
def autoscalers(kube_api_client: client.ApiClient, namespace: str) -> Iterator[ObjectWatch]:
    autoscaling = client.AutoscalingV2Api(kube_api_client)
    with ObjectWatch(autoscaling.list_namespaced_horizontal_pod_autoscaler, namespace) as watched:
        yield watched


def chat(steps: list[Body]) -> Body:
    # Without GPUs: the counts here are past what the test cluster's GPU nodes hold, and
    # capacity planning is not what these tests are about.
    return rollout_manifest("chat", "file:///models/v1", steps, gpus=0)


def scale_status(scenario: Scenario) -> Body:
    """The scale subresource as an HPA reads it."""
    rollouts = scenario.rollouts
    scale: Body = rollouts.custom.get_namespaced_custom_object_scale(
        GROUP, VERSION, rollouts.namespace, PLURAL, scenario.name
    )
    return scale


def test_kubectl_scale_resizes_every_phase_in_place(scenario: Scenario, kubectl: Any) -> None:
    steps = [{"setWeight": 25}, {"pause": {}}]
    scenario.given().rollout(chat(steps)).ready()
    v1 = scenario.stable_revision

    # Succeeded: the stable revision grows, no new revision.
    scaled = kubectl("scale", "modelrollout", "chat", "--replicas=4")
    assert scaled.returncode == 0, scaled.stderr
    then = scenario.then().expect_replicas(v1, 4, ready=True, within=60)
    then.expect_status(
        "the scale status: stable's 4 pods and their selector",
        lambda s: (
            s.get("replicas") == 4
            and s.get("selector") == f"{REVISION_LABEL}={v1},{ROLLOUT_LABEL}=chat"
        ),
        within=60,
    )
    scale = scale_status(scenario)
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (4, 4)
    assert scale["status"]["selector"] == f"{REVISION_LABEL}={v1},{ROLLOUT_LABEL}=chat"
    then.expect_deployments({v1}, within=10)
    assert scenario.rollouts.status("chat")["stableRevision"] == v1

    # Paused mid-canary at 25%: both revisions follow the new total at the same weight.
    then = scenario.when().update_model("file:///models/v2").then()
    then.expect_phase("Paused", within=60)
    v2 = scenario.new_revision
    then.expect_replicas(v2, 1, ready=True, within=60)
    assert kubectl("scale", "modelrollout", "chat", "--replicas=8").returncode == 0
    then.expect_replicas(v1, 8, ready=True, within=60).expect_replicas(v2, 2, ready=True, within=60)
    status = scenario.rollouts.status("chat")
    assert (status["phase"], status["currentStep"], status["canaryRevision"]) == ("Paused", 1, v2)
    assert status["weights"]["canary"] == 25

    # Rolled back: the stable keeps serving at the count asked for.
    then = scenario.when().abort().then().expect_phase("RolledBack", within=60)
    then.expect_deployments({v1}, within=60)
    assert kubectl("scale", "modelrollout", "chat", "--replicas=3").returncode == 0
    then.expect_replicas(v1, 3, ready=True, within=60)
    assert scenario.rollouts.status("chat")["phase"] == "RolledBack"

    # Promoted: the new stable at the latest count.
    then = scenario.when().update_model("file:///models/v3").then()
    then.expect_phase("Paused", within=60)
    v3 = scenario.new_revision
    assert kubectl("scale", "modelrollout", "chat", "--replicas=5").returncode == 0
    then.expect_replicas(v3, 2, ready=True, within=60)  # 25% of 5, rounded up
    then = scenario.when().promote().then().expect_phase("Succeeded", within=90)
    then.expect_deployments({v3}, within=60).expect_replicas(v3, 5, ready=True, within=60)


def test_the_replica_bound_is_enforced_through_the_subresource(
    scenario: Scenario, kubectl: Any
) -> None:
    scenario.given().rollout(chat([{"pause": {}}]))
    at_bound = kubectl(
        "scale", "modelrollout", "chat", f"--replicas={MAX_REPLICAS}", "--dry-run=server"
    )
    assert at_bound.returncode == 0, at_bound.stderr
    past = kubectl("scale", "modelrollout", "chat", f"--replicas={MAX_REPLICAS + 1}")
    assert past.returncode != 0
    assert "spec.runtime.replicas" in past.stderr, past.stderr
    assert f"less than or equal to {MAX_REPLICAS}" in past.stderr, past.stderr
    assert scenario.rollouts.get("chat")["spec"]["runtime"]["replicas"] == 2


def test_a_real_hpa_scales_the_rollout_through_the_subresource(
    scenario: Scenario, kube_api_client: client.ApiClient, autoscalers: ObjectWatch
) -> None:
    scenario.given().rollout(chat([{"pause": {}}])).ready()
    v1 = scenario.stable_revision
    autoscaling = client.AutoscalingV2Api(kube_api_client)
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "chat"},
        "spec": {
            "scaleTargetRef": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": "chat"},
            "minReplicas": 3,
            "maxReplicas": 6,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }
    autoscaling.create_namespaced_horizontal_pod_autoscaler(scenario.rollouts.namespace, hpa)

    # Below minReplicas: the controller-manager raises the rollout to 3.
    scenario.then().expect_replicas(v1, 3, ready=True, within=120)
    assert scenario.rollouts.get("chat")["spec"]["runtime"]["replicas"] == 3
    autoscalers.wait_for(
        lambda: (
            (autoscalers.current.get("chat") or {}).get("status", {}).get("currentReplicas") == 3
        ),
        120,
        "the HPA reading 3 current replicas from the scale status",
    )
    assert scenario.rollouts.status("chat")["stableRevision"] == v1

    # Above maxReplicas after a hand edit: brought back down to 6.
    scenario.when().update_runtime(replicas=9)
    scenario.then().expect_replicas(v1, 6, ready=True, within=120)
    assert scenario.rollouts.status("chat")["stableRevision"] == v1


def test_an_hpa_aimed_at_a_revisions_deployment_is_undone_and_named(
    scenario: Scenario, kube_api_client: client.ApiClient
) -> None:
    """The operator sizes each revision; an HPA on a revision's Deployment is told so."""
    scenario.given().rollout(chat([{"pause": {}}])).ready()
    v1 = scenario.stable_revision
    deployment = f"chat-{v1}"
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "chat-deployment"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicas": 4,
            "maxReplicas": 6,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }
    client.AutoscalingV2Api(kube_api_client).create_namespaced_horizontal_pod_autoscaler(
        scenario.rollouts.namespace, hpa
    )

    def warned() -> str | None:
        for event in scenario.rollouts.events("chat"):
            if event.reason == "ScaledOutsideRollout" and event.type == "Warning":
                return str(event.message)
        return None

    message = wait_until(warned, 120, "a ScaledOutsideRollout warning")
    assert f"Deployment {deployment} was resized to 4" in message
    assert "set it back to 2" in message
    # The rollout's own count stands: no new revision, the spec untouched.
    scenario.then().expect_replicas(v1, 2, ready=False, within=60)
    rollout = scenario.rollouts.get("chat")
    assert rollout["spec"]["runtime"]["replicas"] == 2
    assert rollout["status"]["stableRevision"] == v1
