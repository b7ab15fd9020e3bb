"""Blue-green's prePromotionEvaluation: quality gates judge the preview before the switch.

The same real pieces as test_quality_gates.py (the evaluation Job's pod runs
its own `modelserve eval` against real servers of the preview and the active
revision), told as Given/When/Then on watches: besides the scenario's own,
the namespace's Services (the switch is one patch of the `chat` Service's
selector) and Jobs are watched from before the rollout exists, so every
version the API server wrote is checked, never a sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelrollout.engine.evaluation import evaluation_job_name, job_is_finished
from modelrollout.kube.labels import EVALUATION_LABEL, REVISION_LABEL, revision_object_name
from modelrollout_dev.podprocesses import PodProcesses
from tests.e2e.test_quality_gates import gate_suite
from tests.support.rollouts import Rollouts, rollout_manifest
from tests.support.scenario import Body, Scenario
from tests.support.status_watch import ObjectWatch

pytestmark = [pytest.mark.e2e, pytest.mark.localharness]

__all__ = ["gate_suite"]  # a fixture shared with the gate tests

# The steps blue-green runs: autoPromotionAfter, the evaluation, the switch.
EVALUATION_STEP = 1
# The model servers load for seconds, the suite runs against both, under a 90 s Job timeout.
GATES_WITHIN = 150


class ServicesAndJobs:
    """Every version of a namespace's Services and Jobs, from a watch each."""

    def __init__(self, rollouts: Rollouts) -> None:
        self.services = ObjectWatch(rollouts.core.list_namespaced_service, rollouts.namespace)
        self.jobs = ObjectWatch(
            client.BatchV1Api(rollouts.apps.api_client).list_namespaced_job, rollouts.namespace
        )

    def selected_revisions(self, service: str) -> list[str]:
        """The revision each version of `service` selected ("" for none: every pod of the
        rollout), consecutive repeats once."""
        selected: list[str] = []
        for body in self.services.versions(service):
            revision = str((body["spec"].get("selector") or {}).get(REVISION_LABEL, ""))
            if selected[-1:] != [revision]:
                selected.append(revision)
        return selected

    def expect_evaluation_ended(
        self, rollout: str, preview: str, active: str, within: float
    ) -> Body | None:
        """The preview's evaluation Job finished, or was deleted (its end, as the operator read
        the result from the pod before the Job controller marked the Job finished); and the
        Services it addressed the two revisions by deleted (the service router has none of
        its own). Returns the Job when it stays."""
        job_name = evaluation_job_name(rollout, preview, EVALUATION_STEP)

        def ended() -> tuple[Body | None] | None:
            job = self.jobs.current.get(job_name)
            if job is not None:
                return (job,) if job_is_finished(job) else None
            deleted = any(
                kind == "DELETED" and body["metadata"]["name"] == job_name
                for kind, body in self.jobs.events
            )
            return (None,) if deleted else None

        (job,) = self.jobs.wait_for(ended, within, f"evaluation Job {job_name} to end")
        evaluation_services = {revision_object_name(rollout, r) for r in (preview, active)}
        created = {body["metadata"]["name"] for _, body in self.services.events}
        assert evaluation_services <= created, created
        self.services.wait_for(
            lambda: not evaluation_services & set(self.services.current),
            within,
            f"the evaluation's Services {sorted(evaluation_services)} to be deleted",
        )
        return job


def expect_no_evaluation_pod_running(scenario: Scenario, within: float) -> None:
    """Every pod of the rollout's evaluation Jobs ran to its end or is gone."""
    watched = scenario.pod_watch
    watched.wait_for(
        lambda: all(
            (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            for pod in watched.current.values()
            if (pod["metadata"].get("labels") or {}).get(EVALUATION_LABEL) == scenario.name
        ),
        within,
        "no evaluation pod running",
    )


@pytest.fixture
def services_and_jobs(rollouts: Rollouts) -> Iterator[ServicesAndJobs]:
    watched = ServicesAndJobs(rollouts)
    with ExitStack() as stack:
        for watch in (watched.services, watched.jobs):
            stack.enter_context(watch)
        # Runs first on the way out: both asked to end at once, their streams end together.
        for watch in (watched.services, watched.jobs):
            stack.callback(watch.stop)
        yield watched


@pytest.fixture
def blue_green(pods: PodProcesses, tiny_models: list[Path], gate_suite: dict[str, Any]) -> Body:
    """A blue-green rollout of the first tiny model, its preview judged by the gate suite;
    `pods` runs its servers and the evaluation Job's pod."""
    manifest = rollout_manifest(
        "chat", f"file://{tiny_models[0]}", [], replicas=1, placement=pods.placement()
    )
    manifest["spec"]["strategy"] = {
        "blueGreen": {"autoPromotionAfter": "1s", "prePromotionEvaluation": gate_suite}
    }
    return manifest


def condition(status: Body, kind: str) -> Body:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_a_preview_that_passes_the_gates_is_switched_to(
    scenario: Scenario, services_and_jobs: ServicesAndJobs, blue_green: Body
) -> None:
    scenario.given().rollout(blue_green).ready()
    active = scenario.stable_revision

    # Same weights, another runtime argument: a preview answering exactly as the active one.
    then = scenario.when().update_runtime(args=["--request-timeout=300"]).then()
    status = then.expect_phase("Succeeded", "RolledBack", within=GATES_WITHIN).status
    preview = scenario.new_revision
    assert status["phase"] == "Succeeded", status
    assert status["stableRevision"] == preview != active
    assert status["previousRevision"] == active
    assert (status["gatesRevision"], status["gatesStep"]) == (preview, EVALUATION_STEP)
    gates = {gate["name"]: gate for gate in status["gates"]}
    assert set(gates) == {"agreement", "perplexity"}, gates
    assert all(gate["passed"] for gate in gates.values()), gates
    assert (gates["agreement"]["value"], gates["agreement"]["threshold"]) == (1.0, ">= 1")
    assert gates["perplexity"]["threshold"] == "<= +3% vs stable"
    assert gates["perplexity"]["value"] <= 3, gates["perplexity"]

    # One switch, active to preview, in every version of the Service since it was created.
    services = services_and_jobs.services
    services.wait_for(
        lambda: services_and_jobs.selected_revisions("chat")[-1:] == [preview],
        30,
        f"Service chat to select {preview}",
    )
    assert services_and_jobs.selected_revisions("chat") == [active, preview]
    # No status gave the preview traffic before it had passed its gates.
    early = [
        seen
        for seen in scenario.story_statuses()
        if (seen.get("weights") or {}).get("canary", 0) > 0
        and not (
            seen.get("gatesRevision") == preview
            and seen.get("gates")
            and all(gate["passed"] for gate in seen["gates"])
        )
    ]
    assert early == [], early

    job = services_and_jobs.expect_evaluation_ended("chat", preview, active, within=30)
    assert job is None or condition(job["status"], "Complete")["status"] == "True", job
    expect_no_evaluation_pod_running(scenario, within=30)


def test_a_preview_that_fails_the_gates_is_rolled_back_without_ever_taking_traffic(
    scenario: Scenario,
    services_and_jobs: ServicesAndJobs,
    blue_green: Body,
    tiny_models: list[Path],
) -> None:
    scenario.given().rollout(blue_green).ready()
    active = scenario.stable_revision

    # Different weights: the greedy answers and the perplexity part from the active one's.
    then = scenario.when().update_model(f"file://{tiny_models[1]}").then()
    status = then.expect_phase("RolledBack", "Succeeded", within=GATES_WITHIN).status
    preview = scenario.new_revision
    assert status["phase"] == "RolledBack", status
    assert status["stableRevision"] == active
    assert status["weights"]["canary"] == 0
    assert (status["gatesRevision"], status["gatesStep"]) == (preview, EVALUATION_STEP)
    failed = {gate["name"]: gate for gate in status["gates"] if not gate["passed"]}
    assert "agreement" in failed, status["gates"]
    assert failed["agreement"]["value"] < 1.0, failed
    assert status["history"][0]["revision"] == preview
    assert status["history"][0]["outcome"] == "RolledBack"
    assert status["history"][0]["reason"].startswith("quality gates failed: "), status
    assert condition(status, "Progressing")["reason"] == "GateFailed"

    # The failed gate is the Job's exit 1: a Job still there is Failed, and nothing runs on.
    job = services_and_jobs.expect_evaluation_ended("chat", preview, active, within=30)
    assert job is None or condition(job["status"], "Failed")["status"] == "True", job
    jobs = services_and_jobs.jobs
    assert all(job_is_finished(body) for body in jobs.current.values()), jobs.current
    expect_no_evaluation_pod_running(scenario, within=30)
    # Every version of the Service, from before the rollout existed: only ever the active one.
    assert services_and_jobs.selected_revisions("chat") == [active]
    assert all(
        (seen.get("weights") or {}).get("canary", 0) == 0 for seen in scenario.story_statuses()
    ), scenario.states()
