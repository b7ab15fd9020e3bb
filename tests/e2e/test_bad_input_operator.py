"""The real operator judges what the API server stores but cannot judge.

Every "operator" case of tests/support/bad_inputs.py (stored by the API
server, see tests/cluster/test_bad_input_corpus.py) is given to the real
operator process twice, all cases at once in one namespace: as a new
rollout, which gets condition InvalidSpec naming the field and no child
object at all; and as the new spec of a healthy rollout, which gets
InvalidSpec while its Deployments, Services and HTTPRoute keep their
resourceVersion and its traffic stays where it was.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from modelrollout.kube.labels import GROUP, PLURAL, VERSION
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.prometheus import PrometheusHandle
from tests.support.bad_inputs import OPERATOR_CASES, BadInput, names_field
from tests.support.kube import wait_until
from tests.support.rollouts import GPU_TOLERATION, TEST_IMAGE, Rollouts
from tests.unit.operator.builders import example_spec

pytestmark = pytest.mark.e2e

NEW = {f"new-{index}": case for index, case in enumerate(OPERATOR_CASES)}
HEALTHY = {f"old-{index}": case for index, case in enumerate(OPERATOR_CASES)}


def base_spec(prometheus: PrometheusHandle) -> dict[str, Any]:
    """The corpus' example made runnable here: the test image, one pod without GPU, a route."""
    spec = example_spec()
    spec["model"]["uri"] = "file:///models/v1"
    spec["runtime"].update(
        engine="torch",
        image=TEST_IMAGE,
        args=[],
        replicas=1,
        resources={},
        tolerations=[GPU_TOLERATION],
        terminationGracePeriod="10s",
    )
    spec["traffic"]["router"] = "gatewayAPI"
    spec["analysis"]["prometheus"]["address"] = prometheus.url
    return spec


def manifest(name: str, spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRollout",
        "metadata": {"name": name},
        "spec": spec,
    }


def invalid_spec_message(rollouts: Rollouts, name: str) -> str | None:
    """InvalidSpec's message once the operator judged the latest spec; None before."""
    body = rollouts.get(name)
    status = body.get("status") or {}
    if status.get("observedGeneration") != body["metadata"]["generation"]:
        return None
    for condition in status.get("conditions", []):
        if condition["type"] == "InvalidSpec" and condition["status"] == "True":
            return str(condition["message"])
    return None


def assert_names_the_field(message: str, case: BadInput) -> None:
    field_path, _, _ = message.partition(": ")
    assert names_field(field_path, case.field), (case.name, message)
    assert case.says in message, (case.name, message)


def children(rollouts: Rollouts) -> dict[str, str]:
    """resourceVersion of every Deployment, Service and HTTPRoute in the namespace, by name."""
    namespace = rollouts.namespace
    routes = client.CustomObjectsApi(rollouts.apps.api_client).list_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes"
    )["items"]
    found = {f"HTTPRoute/{r['metadata']['name']}": r["metadata"]["resourceVersion"] for r in routes}
    for kind, items in (
        ("Deployment", rollouts.apps.list_namespaced_deployment(namespace).items),
        ("Service", rollouts.core.list_namespaced_service(namespace).items),
    ):
        found.update({f"{kind}/{o.metadata.name}": o.metadata.resource_version for o in items})
    return found


def settled_children(rollouts: Rollouts) -> dict[str, str]:
    """The children once every healthy rollout's pod is Ready and nothing moves any more."""

    def ready() -> bool:
        deployments = rollouts.apps.list_namespaced_deployment(rollouts.namespace).items
        return len(deployments) == len(HEALTHY) and all(
            d.status.ready_replicas == d.spec.replicas
            and d.status.observed_generation == d.metadata.generation
            for d in deployments
        )

    wait_until(ready, 90, "a Ready pod for every healthy rollout")

    def unchanged() -> dict[str, str] | None:
        first = children(rollouts)
        time.sleep(1.5)
        return first if children(rollouts) == first else None

    return wait_until(unchanged, 60, "the children to settle", interval=0)


def test_every_case_gets_invalid_spec_and_nothing_is_created_or_changed(
    rollouts: Rollouts, operator_process: OperatorProcess, prometheus: PrometheusHandle
) -> None:
    base = base_spec(prometheus)
    for name in HEALTHY:
        rollouts.create(manifest(name, base))
    for name, case in NEW.items():
        rollouts.create(manifest(name, case.spec(base)))

    def all_judged(names: dict[str, BadInput]) -> dict[str, str] | None:
        messages = {name: invalid_spec_message(rollouts, name) for name in names}
        return None if None in messages.values() else {k: str(v) for k, v in messages.items()}

    for name, message in wait_until(lambda: all_judged(NEW), 60, "InvalidSpec on all").items():
        assert_names_the_field(message, NEW[name])
    for name in HEALTHY:
        rollouts.wait_phase(name, {"Succeeded"}, 60)
    before = settled_children(rollouts)
    assert not [child for child in before if child.split("/")[1].startswith("new-")], before
    statuses = {name: rollouts.status(name) for name in HEALTHY}

    custom = client.CustomObjectsApi(rollouts.apps.api_client)
    for name, case in HEALTHY.items():
        body = rollouts.get(name)
        body["spec"] = case.spec(base)
        custom.replace_namespaced_custom_object(
            GROUP, VERSION, rollouts.namespace, PLURAL, name, body
        )
    for name, message in wait_until(lambda: all_judged(HEALTHY), 60, "InvalidSpec").items():
        assert_names_the_field(message, HEALTHY[name])
    time.sleep(2)  # a few more ticks (TEST_TICK_INTERVAL is 0.5 s)

    assert children(rollouts) == before, "a child was created or changed for an invalid spec"
    for name, status_before in statuses.items():
        status = rollouts.status(name)
        assert status["phase"] == "Succeeded", (name, status)
        assert status["stableRevision"] == status_before["stableRevision"]
        assert status.get("canaryRevision") is None
        assert (
            status["weights"]
            == status_before["weights"]
            == {
                "stable": 100,
                "canary": 0,
                "mirror": 0,
            }
        )
    for name in NEW:
        status = rollouts.status(name)
        assert status.get("stableRevision") is None, (name, status)
