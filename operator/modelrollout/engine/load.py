"""Analysis load: a bounded Job that sends the candidate requests while it is analysed.

A blue-green preview, a shadow's candidate or a canary before its first
setWeight gets no user request, so checks on its own series have no data and
the rollout pauses on "metrics unavailable". With `spec.analysis.load` set,
the reconciler keeps one Job `<rollout>-load-<candidate>` running `modelserve
loadgen` against the candidate's own Service (`<rollout>-<revision>`, created
for it under a router without per-revision Services) for as long as the
candidate is under analysis (phases Progressing and Paused), at most
`load.duration`: a finished Job is not started again for the same candidate.

The Job goes when its candidate stops being analysed (promoted, rolled back,
aborted, replaced): every tick deletes the rollout's load Jobs of any other
revision, so an operator restart never leaves one running against a
revision that is gone. Its pods carry LOAD_LABEL, never ROLLOUT_LABEL: the
rollout's Service selects every pod with that label.
"""

from __future__ import annotations

import math
from typing import Any

from modelrollout.engine.evaluation import evaluation_services, modelserve_image, one_shot_job
from modelrollout.kube.api import JOBS, KubeApi, KubeApiError
from modelrollout.kube.labels import (
    LOAD_LABEL,
    REVISION_LABEL,
    label_selector,
    revision_object_name,
)
from modelrollout.kube.workloads import RolloutRef, _metadata
from modelrollout.models.durations import parse_duration
from modelrollout.models.spec import AnalysisLoad, ModelRolloutSpec
from modelrollout.models.status import ModelRolloutStatus
from modelrollout.traffic.base import (
    Capability,
    RouterCapabilities,
    ensure_revision_service,
    retire_revision_services,
)

PROMPTS_MOUNT = "/prompts"
# loadgen stops issuing at --duration; its last requests then have this long to finish.
DEADLINE_MARGIN_SECONDS = 120
ANALYSED_PHASES = ("Progressing", "Paused")


def load_job_name(rollout: str, revision: str) -> str:
    """`<rollout>-load-<revision>`, the rollout name cut so it stays a 63-character label."""
    suffix = f"-load-{revision}"
    return f"{rollout[: 63 - len(suffix)].rstrip('-')}{suffix}"


def load_target(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> str | None:
    """The candidate revision that gets analysis load now; None: no load: pure."""
    if spec.analysis.load is None or status.canary_revision is None:
        return None
    return status.canary_revision if status.phase in ANALYSED_PHASES else None


def load_services(
    rollout: RolloutRef, spec: ModelRolloutSpec, status: ModelRolloutStatus
) -> set[str]:
    """The per-revision Services the analysis load needs now (its target's)."""
    target = load_target(spec, status)
    return set() if target is None else {revision_object_name(rollout.name, target)}


def build_load_job(
    rollout: RolloutRef,
    spec: ModelRolloutSpec,
    revision: str,
    load: AnalysisLoad,
    default_image: str | None = None,
) -> dict[str, Any]:
    """The load Job for candidate `revision`: pure."""
    duration = max(1, math.ceil(parse_duration(load.duration)))
    url = f"http://{revision_object_name(rollout.name, revision)}:{spec.runtime.port}"
    args = [
        "--target", url,
        "--model", spec.model.name,
        "--rate", str(load.rate),
        "--duration", str(duration),
        "--max-tokens", str(load.max_tokens),
    ]  # fmt: skip
    volume_mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if load.prompts is not None:
        args += ["--prompts-file", f"{PROMPTS_MOUNT}/{load.prompts.key}"]
        volume_mounts.append({"name": "prompts", "mountPath": PROMPTS_MOUNT, "readOnly": True})
        volumes.append({"name": "prompts", "configMap": {"name": load.prompts.config_map_name}})
    metadata = _metadata(
        rollout,
        load_job_name(rollout.name, revision),
        {LOAD_LABEL: rollout.name, REVISION_LABEL: revision},
    )
    container: dict[str, Any] = {
        "name": "load",
        "image": modelserve_image(spec, load.image, default_image),
        "command": ["modelserve", "loadgen"],
        "args": args,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    }
    if volume_mounts:
        container["volumeMounts"] = volume_mounts
    # Load that failed (the candidate errs) is what the checks are for: no retry.
    return one_shot_job(
        metadata,
        {LOAD_LABEL: rollout.name},
        container,
        volumes,
        duration + DEADLINE_MARGIN_SECONDS,
    )


def converge_load(
    api: KubeApi,
    rollout: RolloutRef,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    deployments: dict[str, dict[str, Any]],
    router_capabilities: RouterCapabilities,
    default_image: str | None = None,
) -> None:
    """Delete load Jobs of revisions no longer analysed (and the Services only they needed);
    start the candidate's once it has ready pods (once per candidate: a finished Job stays
    finished)."""
    target = load_target(spec, status)
    retired = False
    for job in api.list(JOBS, rollout.namespace, label_selector({LOAD_LABEL: rollout.name})):
        revision = (job["metadata"].get("labels") or {}).get(REVISION_LABEL)
        if revision != target and not job["metadata"].get("deletionTimestamp"):
            # Background: the Job's pod goes too (a Job orphans its pods by default).
            api.delete(JOBS, rollout.namespace, job["metadata"]["name"], propagation="Background")
            retired = True
    if retired and Capability.REVISION_SERVICES not in router_capabilities:
        keep = load_services(rollout, spec, status) | evaluation_services(rollout, spec, status)
        retire_revision_services(api, rollout, keep)
    load = spec.analysis.load
    if target is None or load is None:
        return
    candidate = deployments.get(target)
    if int((candidate or {}).get("status", {}).get("readyReplicas") or 0) == 0:
        return
    ensure_revision_service(api, rollout, target, spec.runtime.port)
    if api.get(JOBS, rollout.namespace, load_job_name(rollout.name, target)) is not None:
        return
    try:
        api.create(
            JOBS, rollout.namespace, build_load_job(rollout, spec, target, load, default_image)
        )
    except KubeApiError as error:
        if error.status != 409:  # an earlier attempt's Job is still being deleted
            raise
