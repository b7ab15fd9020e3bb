"""Quality-gate evaluation steps: the Job that runs `modelserve eval --suite`, and its result.

While the current step is an evaluation, the reconciler keeps one Job
`<rollout>-eval-<canaryRevision>-<step>` running the serving image against
the per-revision Services of canary and stable, and reads the result the
suite writes as its container's termination message (at most 4096 bytes,
JSON: passed, error, gates). The Job is annotated with `status.stepStartedAt`
when created: a Job from an earlier attempt at the same step (a retried
canary, a resume after an evaluation error) no longer matches, is ignored
and replaced, so its result is never reused.

Exit 0 with `passed` is a pass; exit 1 with a failed gate and no error is a
failure (rolled back); anything else (exit 2, no readable result, a Job that
failed or ran past its timeout) is an error, which never counts as a pass.

An evaluation ends when its rollout leaves it: the step completes, the
rollout rolls back or is aborted, or a newer revision supersedes the one
under evaluation. Its Job, if still running, is then deleted with its pod; a
finished one stays for its logs. Under a router without per-revision Services
of its own (Capability.REVISION_SERVICES), the Services the evaluation
created are deleted too, unless the next evaluation step needs them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from modelrollout.engine.podspec import node_placement
from modelrollout.engine.strategies.bluegreen import is_blue_green, steps_strategy
from modelrollout.engine.strategies.types import EvaluationResult
from modelrollout.kube.api import JOBS, PODS, KubeApi, KubeApiError
from modelrollout.kube.labels import (
    EVALUATION_LABEL,
    REVISION_LABEL,
    ROLLOUT_LABEL,
    STEP_LABEL,
    STEP_STARTED_ANNOTATION,
    revision_object_name,
)
from modelrollout.kube.workloads import RolloutRef, _metadata
from modelrollout.models.durations import parse_duration
from modelrollout.models.spec import EvaluationStep, ModelRolloutSpec
from modelrollout.models.status import GateStatus, ModelRolloutStatus
from modelrollout.traffic.base import (
    Capability,
    RouterCapabilities,
    ensure_revision_service,
    retire_revision_services,
)

SUITE_MOUNT = "/suite"
# Finished Jobs stay an hour for `kubectl logs`; the result is in status by then.
JOB_TTL_SECONDS = 3600
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"


def evaluation_job_name(rollout: str, revision: str, step: int) -> str:
    """`<rollout>-eval-<revision>-<step>`, the rollout name cut so it stays a 63-character label."""
    suffix = f"-eval-{revision}-{step}"
    return f"{rollout[: 63 - len(suffix)].rstrip('-')}{suffix}"


def current_evaluation(
    spec: ModelRolloutSpec, status: ModelRolloutStatus
) -> tuple[int, EvaluationStep] | None:
    """The evaluation step the rollout is running now, with its index; None otherwise."""
    if status.phase != "Progressing" or status.canary_revision is None:
        return None
    if status.stable_revision is None or status.current_step is None:
        return None
    steps = steps_strategy(spec).steps
    if status.current_step >= len(steps):
        return None
    evaluation = steps[status.current_step].evaluation
    return None if evaluation is None else (status.current_step, evaluation)


def evaluation_in_progress(
    spec: ModelRolloutSpec, status: ModelRolloutStatus
) -> tuple[str, int] | None:
    """(canary revision, step) of the evaluation step the rollout is at, paused or not."""
    if status.phase == "Paused":
        status = status.model_copy(update={"phase": "Progressing"})
    current = current_evaluation(spec, status)
    return None if current is None else (status.canary_revision or "", current[0])


def ended_evaluation(
    spec: ModelRolloutSpec, before: ModelRolloutStatus, after: ModelRolloutStatus
) -> tuple[str, int] | None:
    """(canary revision, step) of the evaluation a tick left, from `before` to `after`: pure.

    A pause keeps the evaluation (resuming it starts a new attempt, which
    replaces the Job itself).
    """
    running = evaluation_in_progress(spec, before)
    if running is None or running == evaluation_in_progress(spec, after):
        return None
    return running


def job_is_finished(job: dict[str, Any]) -> bool:
    return any(
        condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True"
        for condition in job.get("status", {}).get("conditions") or []
    )


def _step_started(status: ModelRolloutStatus) -> str:
    started = status.step_started_at
    return started.isoformat(timespec="microseconds") if started is not None else ""


def modelserve_image(spec: ModelRolloutSpec, image: str | None, default_image: str | None) -> str:
    """An image with modelserve: `image` if given; else with engine torch the serving image
    (it is modelserve's); else `default_image` (the operator's setting), as a vLLM image has no
    modelserve; else the serving image."""
    if image:
        return image
    if spec.runtime.engine == "torch" or default_image is None:
        return spec.runtime.image
    return default_image


def evaluation_services(
    rollout: RolloutRef, spec: ModelRolloutSpec, status: ModelRolloutStatus
) -> set[str]:
    """The per-revision Services the current evaluation step needs (none outside one)."""
    if current_evaluation(spec, status) is None:
        return set()
    return {
        revision_object_name(rollout.name, revision or "")
        for revision in (status.stable_revision, status.canary_revision)
    }


def build_evaluation_job(
    rollout: RolloutRef,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    step: int,
    evaluation: EvaluationStep,
    default_image: str | None = None,
) -> dict[str, Any]:
    """The Job of the current evaluation step (its image: `modelserve_image`): pure."""
    canary = status.canary_revision or ""
    stable = status.stable_revision or ""
    port = spec.runtime.port

    def url(revision: str) -> str:
        return f"http://{revision_object_name(rollout.name, revision)}:{port}"

    metadata = _metadata(
        rollout,
        evaluation_job_name(rollout.name, canary, step),
        {
            ROLLOUT_LABEL: rollout.name,
            REVISION_LABEL: canary,
            STEP_LABEL: str(step),
            EVALUATION_LABEL: rollout.name,
        },
    )
    metadata["annotations"] = {STEP_STARTED_ANNOTATION: _step_started(status)}
    container = {
        "name": "eval",
        "image": modelserve_image(spec, evaluation.image, default_image),
        "command": ["modelserve", "eval"],
        "args": [
            "--suite",
            f"{SUITE_MOUNT}/{evaluation.suite.key}",
            "--candidate",
            url(canary),
            "--stable",
            url(stable),
            "--model",
            spec.model.name,
        ],
        "volumeMounts": [{"name": "suite", "mountPath": SUITE_MOUNT, "readOnly": True}],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
    }
    return one_shot_job(
        metadata,
        {EVALUATION_LABEL: rollout.name},
        container,
        [{"name": "suite", "configMap": {"name": evaluation.suite.config_map_name}}],
        max(1, math.ceil(parse_duration(evaluation.timeout))),
        node_placement(evaluation.node_selector, evaluation.tolerations),
    )


def one_shot_job(
    metadata: dict[str, Any],
    pod_labels: dict[str, str],
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    deadline_seconds: int,
    placement: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Job that runs `container` once (an evaluation, an analysis load): no retry (its
    outcome is the answer), at most `deadline_seconds`, kept an hour for its logs; its pod
    where `placement` (nodeSelector, tolerations) puts it."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": [container],
        **(placement or {}),
    }
    if volumes:
        pod_spec["volumes"] = volumes
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_seconds,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            # Not ROLLOUT_LABEL on the pods: the rollout's Service would send users to them.
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def _gates(raw: Any) -> tuple[GateStatus, ...] | None:
    if not isinstance(raw, list):
        return None
    try:
        return tuple(GateStatus.model_validate(gate) for gate in raw)
    except ValidationError:
        return None


def result_of_job(
    job: dict[str, Any], pods: list[dict[str, Any]], revision: str, step: int
) -> EvaluationResult | None:
    """The Job's outcome from its pod's termination message; None while it runs: pure."""
    terminated = [
        state
        for pod in pods
        for status in (pod.get("status", {}).get("containerStatuses") or [])[:1]
        if (state := (status.get("state") or {}).get("terminated"))
    ]

    def error(message: str) -> EvaluationResult:
        return EvaluationResult(revision, step, "error", (), message)

    if terminated:
        state = terminated[0]
        exit_code = state.get("exitCode")
        try:
            document = json.loads(state.get("message") or "")
        except ValueError:
            document = None
        gates = _gates(document.get("gates")) if isinstance(document, dict) else None
        if not isinstance(document, dict) or gates is None:
            return error(
                f"evaluation Job {job['metadata']['name']} left no readable result "
                f"(exit code {exit_code}, {state.get('reason') or 'no reason'})"
            )
        if document.get("error"):
            return error(f"the suite could not run: {document['error']}")
        failed = [g for g in gates if not g.passed]
        omitted = f", {document['omitted']} more omitted" if document.get("omitted") else ""
        if exit_code == 0 and document.get("passed") is True and not failed:
            return EvaluationResult(
                revision, step, "passed", gates, f"{len(gates)} quality gates passed{omitted}"
            )
        if exit_code == 1 and document.get("passed") is False and failed:
            message = "; ".join(f"{g.name}: {g.message}" for g in failed)
            return EvaluationResult(revision, step, "failed", gates, message + omitted)
        return error(
            f"inconsistent evaluation result: exit code {exit_code}, "
            f"passed {document.get('passed')}, {len(failed)} failed gates"
        )
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            reason = condition.get("reason") or "Failed"
            if reason == "DeadlineExceeded":
                deadline = job["spec"].get("activeDeadlineSeconds")
                return error(f"evaluation timed out after {deadline}s")
            return error(f"evaluation Job failed: {reason}: {condition.get('message', '')}")
    return None


def _current_job(
    api: KubeApi, rollout: RolloutRef, status: ModelRolloutStatus, step: int
) -> tuple[str, dict[str, Any] | None, bool]:
    """(name, the Job or None, whether it belongs to this attempt at the step)."""
    name = evaluation_job_name(rollout.name, status.canary_revision or "", step)
    job = api.get(JOBS, rollout.namespace, name)
    if job is None:
        return name, None, False
    annotations = job["metadata"].get("annotations") or {}
    return name, job, annotations.get(STEP_STARTED_ANNOTATION) == _step_started(status)


def observe_evaluation(
    api: KubeApi, rollout: RolloutRef, spec: ModelRolloutSpec, status: ModelRolloutStatus
) -> EvaluationResult | None:
    """The result of the current evaluation step's Job, when it has one."""
    current = current_evaluation(spec, status)
    if current is None:
        return None
    step = current[0]
    _, job, current_attempt = _current_job(api, rollout, status, step)
    if job is None or not current_attempt:
        return None
    pods = api.list(
        PODS, rollout.namespace, f"{CONTROLLER_UID_LABEL}={job['metadata'].get('uid', '')}"
    )
    return result_of_job(job, pods, status.canary_revision or "", step)


def end_evaluation(
    api: KubeApi,
    rollout: RolloutRef,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    ended: tuple[str, int],
    router_capabilities: RouterCapabilities,
    also_keep: set[str],
) -> None:
    """Stop the ended evaluation's Job if it still runs; retire the Services it alone needed
    (`also_keep`: those something else needs, the analysis load's)."""
    revision, step = ended
    name = evaluation_job_name(rollout.name, revision, step)
    job = api.get(JOBS, rollout.namespace, name)
    if job is not None and not job_is_finished(job):
        # Background: the Job's pod goes too (a Job orphans its pods by default).
        api.delete(JOBS, rollout.namespace, name, propagation="Background")
    if Capability.REVISION_SERVICES in router_capabilities:
        return
    retire_revision_services(api, rollout, evaluation_services(rollout, spec, status) | also_keep)


def converge_evaluation(
    api: KubeApi,
    rollout: RolloutRef,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    deployments: dict[str, dict[str, Any]],
    default_image: str | None = None,
) -> None:
    """Start the current evaluation step's Job once the canary has ready pods."""
    current = current_evaluation(spec, status)
    if current is None:
        return
    step, evaluation = current
    canary = deployments.get(status.canary_revision or "")
    ready = int((canary or {}).get("status", {}).get("readyReplicas") or 0)
    wanted = int((canary or {}).get("spec", {}).get("replicas") or 0)
    if ready == 0 or (is_blue_green(spec) and ready < wanted):
        return
    for revision in (status.stable_revision, status.canary_revision):
        # The Job addresses each revision by its own Service (the gatewayAPI router
        # keeps them anyway; the service router has only the shared one).
        ensure_revision_service(api, rollout, revision or "", spec.runtime.port)
    name, job, current_attempt = _current_job(api, rollout, status, step)
    if job is not None:
        if not current_attempt:
            # An earlier attempt's Job: its name is taken until it is gone; next tick.
            api.delete(JOBS, rollout.namespace, name, propagation="Background")
        return
    try:
        api.create(
            JOBS,
            rollout.namespace,
            build_evaluation_job(rollout, spec, status, step, evaluation, default_image),
        )
    except KubeApiError as error:
        if error.status != 409:  # the previous attempt's Job is still being deleted
            raise
