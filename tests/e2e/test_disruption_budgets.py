"""PodDisruptionBudgets on the real API server: what a node drain may evict, and what it may not.

`kubectl drain` evicts each pod through the Eviction subresource, which the
API server refuses (429) where the pod's budget allows no disruption. The
operator's own scaling and deletions are not evictions: they never wait on
a budget. kwok marks pods Ready at once and leaves a status written by hand
as it is, which is how a pod is made not Ready here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelrollout.kube.labels import KIND, REVISION_LABEL, ROLLOUT_LABEL
from tests.support.rollouts import rollout_manifest
from tests.support.scenario import Scenario
from tests.support.status_watch import ObjectWatch

pytestmark = pytest.mark.e2e

STEPS = [{"setWeight": 50}, {"pause": {}}]
Body = dict[str, Any]


@pytest.fixture
def budgets(kube_api_client: client.ApiClient, namespace: str) -> Iterator[ObjectWatch]:
    policy = client.PolicyV1Api(kube_api_client)
    with ObjectWatch(policy.list_namespaced_pod_disruption_budget, namespace) as watched:
        yield watched


def budget_reaches(
    budgets: ObjectWatch, name: str, what: str, met: Callable[[Body, Body], bool]
) -> Body:
    """The budget `name` once the disruption controller has counted its current spec and
    `met(spec, status)` holds."""

    def reached() -> Body | None:
        budget = budgets.current.get(name)
        if budget is None:
            return None
        status = budget.get("status") or {}
        counted = status.get("observedGeneration") == budget["metadata"]["generation"]
        return budget if counted and met(budget["spec"], status) else None

    return budgets.wait_for(reached, 60, f"budget {name}: {what}")


def allows(healthy: int, disruptions: int) -> Callable[[Body, Body], bool]:
    """Pods counted healthy, and evictions the budget allows now."""

    def met(spec: Body, status: Body) -> bool:
        counted = (status.get("currentHealthy"), status.get("disruptionsAllowed"))
        return counted == (healthy, disruptions)

    return met


def evict(core: client.CoreV1Api, namespace: str, pod: str) -> int:
    """What `kubectl drain` asks for each pod (POST pods/<pod>/eviction): the HTTP status."""
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=namespace))
    try:
        core.create_namespaced_pod_eviction(pod, namespace, eviction)
    except ApiException as error:
        return int(error.status)
    return 201


def live_pods(scenario: Scenario, revision: str) -> list[str]:
    return sorted(
        pod["metadata"]["name"]
        for pod in scenario.pod_watch.current.values()
        if (pod["metadata"].get("labels") or {}).get(REVISION_LABEL) == revision
        and not pod["metadata"].get("deletionTimestamp")
    )


def test_a_drain_cannot_take_a_revision_to_zero_and_never_holds_the_operator(
    scenario: Scenario, budgets: ObjectWatch, namespace: str
) -> None:
    core = scenario.rollouts.core
    scenario.given().rollout(rollout_manifest("chat", "file:///models/v1", STEPS)).ready()
    v1 = scenario.stable_revision
    stable = f"chat-{v1}"
    budget = budget_reaches(budgets, stable, "2 healthy, 1 eviction allowed", allows(2, 1))
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert budget["spec"]["selector"] == {
        "matchLabels": {ROLLOUT_LABEL: "chat", REVISION_LABEL: v1}
    }
    assert [owner["kind"] for owner in budget["metadata"]["ownerReferences"]] == [KIND]

    # One of the two stable pods stops being Ready: a drain may not take the other.
    unready, ready = live_pods(scenario, v1)
    not_ready = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    core.patch_namespaced_pod_status(unready, namespace, not_ready)
    budget_reaches(budgets, stable, "1 healthy, no eviction allowed", allows(1, 0))
    assert evict(core, namespace, ready) == 429
    assert core.read_namespaced_pod(ready, namespace).metadata.deletion_timestamp is None
    # A pod that is not Ready never holds a drain (unhealthyPodEvictionPolicy: AlwaysAllow).
    assert evict(core, namespace, unready) == 201
    scenario.pod_watch.wait_for(
        lambda: unready not in live_pods(scenario, v1), 60, "the not-Ready pod evicted"
    )
    scenario.then().expect_replicas(v1, 2, ready=True, within=60)
    budget_reaches(budgets, stable, "2 healthy again", allows(2, 1))

    # Mid-rollout the canary has one pod: a drain may not take it.
    then = scenario.when().update_model("file:///models/v2").then()
    then.expect_phase("Paused", within=60).expect_replicas(
        scenario.new_revision, 1, ready=True, within=60
    )
    v2 = scenario.new_revision
    canary = f"chat-{v2}"
    budget = budget_reaches(budgets, canary, "its one pod kept", allows(1, 0))
    assert budget["spec"]["maxUnavailable"] == 0
    [canary_pod] = live_pods(scenario, v2)
    assert evict(core, namespace, canary_pod) == 429

    # A rollback deletes that canary all the same, and its budget with it.
    then = scenario.when().abort().then().expect_phase("RolledBack", within=60)
    then.expect_deployments({v1}, within=60)
    scenario.pod_watch.wait_for(lambda: not live_pods(scenario, v2), 60, "the canary's pod gone")
    budgets.wait_for(lambda: set(budgets.current) == {stable}, 60, "only the stable's budget")

    # Promotion scales the old stable from two pods to none at once, past a budget of one.
    then = scenario.when().update_model("file:///models/v3").then()
    then.expect_phase("Paused", within=60)
    v3 = scenario.new_revision
    budget_reaches(budgets, stable, "2 healthy, 1 eviction allowed", allows(2, 1))
    then = scenario.when().promote().then().expect_phase("Succeeded", within=90)
    then.expect_deployments({v3}, within=60)
    scenario.pod_watch.wait_for(
        lambda: not live_pods(scenario, v1), 60, "the old stable's pods gone"
    )
    budgets.wait_for(lambda: set(budgets.current) == {f"chat-{v3}"}, 60, "only v3's budget")
    budget = budget_reaches(budgets, f"chat-{v3}", "the new stable's, 2 healthy", allows(2, 1))
    assert budget["spec"]["maxUnavailable"] == 1
