"""An evaluation step's Job and Services are cleaned up once the rollout leaves the step.

Tick by tick on the in-memory API server (tests/support/fake_kube.py): the
Job of an evaluation still running is deleted, with its pod, when the rollout
is aborted or superseded; a finished one stays for its logs; under the
service router the per-revision Services the evaluation created go too.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelrollout.engine.commands import annotation_for
from modelrollout.engine.evaluation import evaluation_job_name
from modelrollout.kube.api import JOBS, MODELROLLOUTS, PODS, SERVICES
from modelrollout.kube.labels import REVISION_LABEL
from tests.support.fake_kube import Write
from tests.unit.operator.test_reconciler_ticks import (
    NAME,
    NAMESPACE,
    V1,
    V2,
    V3,
    Cluster,
    canary_spec,
    child,
    revision,
)

pytestmark = pytest.mark.unit

EVALUATION = {"suite": {"configMapName": "chat-gates"}, "timeout": "5m"}


def gated_spec(router: str) -> dict[str, Any]:
    spec = canary_spec(router)
    spec["strategy"]["canary"]["steps"] = [
        {"setWeight": 20},
        {"evaluation": copy.deepcopy(EVALUATION)},
        {"setWeight": 50},
    ]
    return spec


def at_evaluation(router: str) -> tuple[Cluster, dict[str, Any], str]:
    """A canary of V2 whose evaluation Job runs (with its pod); the Job's name."""
    cluster = Cluster()
    spec = gated_spec(router)
    cluster.started(spec)
    name = evaluation_job_name(NAME, revision(V2, spec), 1)
    cluster.run_until(lambda _: cluster.api.get(JOBS, NAMESPACE, name) is not None, "the Job")
    job = cluster.api.get(JOBS, NAMESPACE, name)
    assert job is not None
    cluster.api.create(
        PODS,
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-pod",
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": name,
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": {"containers": [{"name": "eval", "image": "modelserve"}]},
        },
    )
    return cluster, spec, name


def command(cluster: Cluster, verb: str) -> None:
    cluster.api.merge_patch(
        MODELROLLOUTS, NAMESPACE, NAME, {"metadata": {"annotations": {annotation_for(verb): "1"}}}
    )


def job_deletes(writes: list[Write]) -> list[tuple[str, Any]]:
    return [(w.name, w.body) for w in writes if w.verb == "delete" and w.resource == JOBS]


def revision_services(cluster: Cluster) -> set[str]:
    return {
        service["metadata"]["name"]
        for service in cluster.api.list(SERVICES, NAMESPACE)
        if REVISION_LABEL in (service["metadata"].get("labels") or {})
    }


def test_an_aborted_canary_deletes_its_running_evaluation_job_and_its_pod() -> None:
    cluster, _, name = at_evaluation("gatewayAPI")
    for _ in range(3):
        assert job_deletes(cluster.tick(1)) == []  # the evaluation runs: its Job stays
    command(cluster, "abort")
    writes = cluster.tick(1)
    assert cluster.status.phase != "Progressing"
    assert job_deletes(writes) == [(name, "Background")]
    assert cluster.api.get(JOBS, NAMESPACE, name) is None
    assert cluster.api.get(PODS, NAMESPACE, f"{name}-pod") is None
    assert job_deletes(cluster.tick(15)) == []


def test_a_newer_revision_deletes_the_superseded_evaluation_job() -> None:
    cluster, spec, name = at_evaluation("gatewayAPI")
    cluster.apply({**spec, "model": {**spec["model"], "uri": V3}})
    writes = cluster.tick(1)
    assert cluster.status.canary_revision == revision(V3, spec)
    assert job_deletes(writes) == [(name, "Background")]
    assert cluster.api.get(PODS, NAMESPACE, f"{name}-pod") is None


def test_a_finished_evaluation_job_stays_for_its_logs() -> None:
    cluster, _, name = at_evaluation("gatewayAPI")
    cluster.api.merge_patch(
        JOBS,
        NAMESPACE,
        name,
        {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "Evicted"}]}},
        subresource="status",
    )
    cluster.tick(1)
    assert cluster.status.phase == "Paused"  # an evaluation error
    command(cluster, "abort")
    assert job_deletes(cluster.tick(1)) == []
    assert cluster.api.get(JOBS, NAMESPACE, name) is not None


def test_under_the_service_router_the_evaluation_services_go_once_no_evaluation_needs_them() -> (
    None
):
    cluster, spec, _ = at_evaluation("service")
    evaluated = {child(V1, spec), child(V2, spec)}
    assert revision_services(cluster) == evaluated
    command(cluster, "pause")
    cluster.tick(1)
    assert cluster.status.phase == "Paused"
    assert revision_services(cluster) == evaluated  # a paused evaluation still needs them
    command(cluster, "abort")
    cluster.tick(1)
    assert revision_services(cluster) == set()


def test_under_the_gateway_router_the_route_keeps_its_services() -> None:
    cluster, spec, _ = at_evaluation("gatewayAPI")
    command(cluster, "abort")
    cluster.tick(1)
    assert child(V2, spec) in revision_services(cluster)
