"""Analysis load: the Job that gives an idle candidate's checks data, tick by tick."""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout.engine.commands import annotation_for
from modelrollout.engine.load import build_load_job, load_job_name
from modelrollout.kube.api import JOBS, MODELROLLOUTS, SERVICES
from modelrollout.kube.labels import LOAD_LABEL, REVISION_LABEL, ROLLOUT_LABEL
from modelrollout.kube.workloads import RolloutRef
from modelrollout.models import parse_spec
from tests.unit.operator.builders import example_spec
from tests.unit.operator.test_reconciler_ticks import (
    NAME,
    NAMESPACE,
    V1,
    V2,
    Cluster,
    blue_green_spec,
    revision,
)

pytestmark = pytest.mark.unit


def with_load(spec: dict[str, Any], **load: Any) -> dict[str, Any]:
    return {**spec, "analysis": {**spec["analysis"], "load": load}}


def load_jobs(cluster: Cluster) -> dict[str, str]:
    """Each load Job (not being deleted) by name, with the revision it loads."""
    return {
        job["metadata"]["name"]: job["metadata"]["labels"][REVISION_LABEL]
        for job in cluster.api.list(JOBS, NAMESPACE)
        if LOAD_LABEL in job["metadata"]["labels"]
    }


def command(cluster: Cluster, name: str) -> None:
    """`kubectl modelrollout <name>`: its annotation with a new nonce."""
    nonce = {annotation_for(name): f"{name}-{cluster.now.timestamp()}"}
    cluster.api.merge_patch(MODELROLLOUTS, NAMESPACE, NAME, {"metadata": {"annotations": nonce}})


def services(cluster: Cluster) -> set[str]:
    return {service["metadata"]["name"] for service in cluster.api.list(SERVICES, NAMESPACE)}


def test_the_job_sends_the_candidates_own_service_bounded_load() -> None:
    spec = parse_spec(
        with_load(
            example_spec(),
            rate=5,
            duration="10m",
            maxTokens=8,
            prompts={"configMapName": "chat-prompts"},
        )
    )
    assert spec.analysis.load is not None
    job = build_load_job(RolloutRef(NAMESPACE, NAME, "uid-1"), spec, "abc123", spec.analysis.load)
    assert job["metadata"]["name"] == load_job_name(NAME, "abc123") == "chat-load-abc123"
    assert job["spec"]["activeDeadlineSeconds"] == 600 + 120
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]
    # The rollout's Service selects ROLLOUT_LABEL: the load pod must not be an endpoint.
    assert ROLLOUT_LABEL not in pod["metadata"]["labels"]
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["modelserve", "loadgen"]
    assert container["args"] == [
        "--target", f"http://chat-abc123:{spec.runtime.port}",
        "--model", spec.model.name,
        "--rate", "5",
        "--duration", "600",
        "--max-tokens", "8",
        "--prompts-file", "/prompts/prompts.txt",
    ]  # fmt: skip
    assert pod["spec"]["volumes"] == [{"name": "prompts", "configMap": {"name": "chat-prompts"}}]
    # A vLLM image has no modelserve: the operator's evaluation image runs it.
    assert spec.runtime.engine == "vllm"
    assert container["image"] == spec.runtime.image
    with_default = build_load_job(
        RolloutRef(NAMESPACE, NAME, "uid-1"), spec, "abc123", spec.analysis.load, "ms:1"
    )
    assert with_default["spec"]["template"]["spec"]["containers"][0]["image"] == "ms:1"


def test_a_preview_gets_load_until_promoted_then_its_job_and_service_go() -> None:
    cluster = Cluster()
    spec = with_load(blue_green_spec(), rate=2)
    cluster.started(spec)
    green = revision(V2, spec)
    cluster.tick(1)
    assert load_jobs(cluster) == {}  # the preview has no ready pod yet
    cluster.settle()
    cluster.tick(1)
    assert load_jobs(cluster) == {f"{NAME}-load-{green}": green}
    assert f"{NAME}-{green}" in services(cluster)
    # One Job per candidate: later ticks leave it be.
    assert [w for w in cluster.tick(1) if w.resource == JOBS] == []

    cluster.run_until_phase("Succeeded")
    assert load_jobs(cluster) == {}
    # The service router keeps no per-revision Service once nothing needs it.
    assert f"{NAME}-{green}" not in services(cluster)


def test_a_rolled_back_candidate_loses_its_load_and_a_retry_gets_a_new_job() -> None:
    cluster = Cluster()
    spec = with_load(blue_green_spec(), rate=2)
    cluster.started(spec)
    green = revision(V2, spec)
    cluster.tick(1)
    cluster.settle()
    cluster.tick(1)
    first = cluster.api.get(JOBS, NAMESPACE, f"{NAME}-load-{green}")
    assert first is not None
    command(cluster, "abort")
    cluster.tick(1)
    # Load stops in the tick that starts the rollback.
    assert cluster.status.phase == "RollingBack"
    assert load_jobs(cluster) == {}
    cluster.run_until_phase("RolledBack")

    command(cluster, "retry")
    cluster.tick(1)
    cluster.settle()
    cluster.tick(1)
    again = cluster.api.get(JOBS, NAMESPACE, f"{NAME}-load-{green}")
    assert again is not None and again["metadata"]["uid"] != first["metadata"]["uid"]


def test_without_load_there_is_no_job() -> None:
    cluster = Cluster()
    spec = blue_green_spec()
    cluster.started(spec)
    cluster.run_until_phase("Succeeded")
    assert load_jobs(cluster) == {}
    assert revision(V1, spec) != revision(V2, spec)
