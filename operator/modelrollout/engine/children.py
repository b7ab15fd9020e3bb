"""Observe and converge a rollout's Deployments (create, size, relabel and delete them) and
their PodDisruptionBudgets.

Every write is conditional on a difference, so a tick with nothing to do
makes no write. The service router (traffic/service.py) also scales the
canary's Deployment, in the same tick: with that router, scaling is how a
weight is set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelrollout.engine.workloads import DesiredRevision, disruption_budget
from modelrollout.kube.api import (
    DEPLOYMENTS,
    POD_DISRUPTION_BUDGETS,
    PODS,
    KubeApi,
    KubeApiError,
    label_pod,
)
from modelrollout.kube.labels import (
    REVISION_LABEL,
    ROLE_LABEL,
    SPEC_REVISION_ANNOTATION,
    label_selector,
    revision_object_name,
    selector_labels,
)
from modelrollout.kube.workloads import RolloutRef, build_deployment, build_disruption_budget
from modelrollout.models import InvalidSpecError

logger = logging.getLogger("modelrollout")


@dataclass(frozen=True)
class PodTemplate:
    """What a revision's pods are: their spec, and the user's labels and annotations."""

    spec: dict[str, Any]
    metadata: dict[str, dict[str, str]]


# Where the API server's message blames the pod template (`spec.template.spec.affinity...`),
# the runtime field that wrote it. Longest first: container fields before pod fields.
_RUNTIME_FIELD_OF = (
    ("spec.template.spec.containers[0].securityContext", "containerSecurityContext"),
    ("spec.template.spec.containers[0].volumeMounts", "volumeMounts"),
    ("spec.template.spec.topologySpreadConstraints", "topologySpreadConstraints"),
    ("spec.template.spec.securityContext", "securityContext"),
    ("spec.template.spec.affinity", "affinity"),
    ("spec.template.spec.volumes", "volumes"),
    ("spec.template.spec.imagePullSecrets", "imagePullSecrets"),
    ("spec.template.metadata.annotations", "podAnnotations"),
    ("spec.template.metadata.labels", "podLabels"),
)


def refused_deployment(message: str) -> InvalidSpecError:
    """The API server's refusal (422) of a Deployment the spec made, as the spec's error: the
    field it blames, when the message names one of the pass-through runtime fields."""
    for prefix, field in _RUNTIME_FIELD_OF:
        if prefix in message:
            return InvalidSpecError(
                f"spec.runtime.{field}", f"the API server refused the Deployment: {message}"
            )
    return InvalidSpecError("spec.runtime", f"the API server refused the Deployment: {message}")


@dataclass(frozen=True)
class ObservedRevision:
    revision: str
    role: str | None
    desired_replicas: int
    ready_replicas: int


def observe_deployments(api: KubeApi, rollout: RolloutRef) -> dict[str, dict[str, Any]]:
    """This rollout's Deployments by revision: read-only, as the cache holds them.

    Every reader of a tick only reads them (a tick read a copy of each before: the
    largest copies of a tick, whole pod templates, for nothing).
    """
    deployments = api.list_read_only(
        DEPLOYMENTS, rollout.namespace, label_selector(selector_labels(rollout.name))
    )
    return {
        d["metadata"]["labels"][REVISION_LABEL]: d
        for d in deployments
        if REVISION_LABEL in d["metadata"].get("labels", {})
    }


def mark_spec_revision(
    api: KubeApi, rollout: RolloutRef, revision: str, spec_revision: str
) -> None:
    """Mark an older operator's Deployment as serving the spec revision `spec_revision`."""
    api.merge_patch(
        DEPLOYMENTS,
        rollout.namespace,
        revision_object_name(rollout.name, revision),
        {"metadata": {"annotations": {SPEC_REVISION_ANNOTATION: spec_revision}}},
    )


def revision_state(deployment: dict[str, Any]) -> ObservedRevision:
    status = deployment.get("status", {})
    return ObservedRevision(
        revision=deployment["metadata"]["labels"][REVISION_LABEL],
        role=deployment["metadata"]["labels"].get(ROLE_LABEL),
        desired_replicas=int(deployment["spec"].get("replicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
    )


def unschedulable_message(api: KubeApi, rollout: RolloutRef, revision: str) -> str | None:
    """The scheduler's reason when a revision's pods cannot be placed (e.g. no GPU left)."""
    pods = api.list(
        PODS, rollout.namespace, label_selector(selector_labels(rollout.name, revision))
    )
    for pod in pods:
        for condition in pod.get("status", {}).get("conditions", []):
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                return f"pod {pod['metadata']['name']}: {condition.get('message', 'Unschedulable')}"
    return None


def _relabel_pods(api: KubeApi, rollout: RolloutRef, revision: str, role: str) -> None:
    # Pods are relabeled in place: changing the template would restart them.
    pods = api.list(
        PODS, rollout.namespace, label_selector(selector_labels(rollout.name, revision))
    )
    for pod in pods:
        if pod["metadata"].get("labels", {}).get(ROLE_LABEL) != role:
            label_pod(api, rollout.namespace, pod["metadata"]["name"], {ROLE_LABEL: role})


@dataclass(frozen=True)
class ForeignScale:
    """A Deployment someone else resized since the operator last wrote its replicas."""

    name: str
    replicas: int  # what the other writer set
    planned: int  # what the operator sets back


def converge_deployments(
    api: KubeApi,
    rollout: RolloutRef,
    plan: list[DesiredRevision],
    observed: dict[str, dict[str, Any]],
    pod_template_for: Callable[[str], PodTemplate | None],
    progress_deadline_seconds: int,
    written_generations: dict[str, int],
) -> list[ForeignScale]:
    """Create, scale, relabel and delete Deployments to match the plan.

    `written_generations`: each Deployment's metadata.generation as of the operator's last
    write of its spec (by name), kept by the caller across ticks and updated here. A
    Deployment whose replicas differ from the plan at a later generation was resized by
    someone else (an HPA or `kubectl scale` aimed at the Deployment); it is set back and
    returned. An earlier generation is only the watch cache lagging behind that write.

    Raises InvalidSpecError when the API server refuses (422) a Deployment the spec made: the
    pass-through pod fields (affinity, securityContext, volumes ...) are checked there only.
    """
    foreign: list[ForeignScale] = []
    wanted = {item.revision: item for item in plan}
    for item in plan:
        current = observed.get(item.revision)
        name = revision_object_name(rollout.name, item.revision)
        if current is None:
            template = pod_template_for(item.revision)
            if template is None:
                # Only the spec's revision can be built: an older revision's Deployment
                # deleted by hand stays missing until the spec names that revision
                # again or the rollout moves past it.
                logger.warning(
                    "cannot recreate %s/%s: its spec is no longer known", rollout.namespace, name
                )
                continue
            deployment = build_deployment(
                rollout,
                item.revision,
                item.role,
                item.replicas,
                template.spec,
                progress_deadline_seconds,
                template.metadata,
            )
            try:
                created = api.create(DEPLOYMENTS, rollout.namespace, deployment)
            except KubeApiError as error:
                if error.status == 422:
                    raise refused_deployment(error.message) from error
                raise
            written_generations[name] = int(created["metadata"].get("generation") or 0)
            logger.debug(
                "created %s/%s (%s, %d replicas)", rollout.namespace, name, item.role, item.replicas
            )
            continue
        patch: dict[str, Any] = {}
        replicas = int(current["spec"].get("replicas") or 0)
        if replicas != item.replicas:
            patch["spec"] = {"replicas": item.replicas}
            generation = int(current["metadata"].get("generation") or 0)
            if generation > written_generations.get(name, generation):
                foreign.append(ForeignScale(name, replicas, item.replicas))
        if current["metadata"].get("labels", {}).get(ROLE_LABEL) != item.role:
            patch["metadata"] = {"labels": {ROLE_LABEL: item.role}}
        if patch:
            updated = api.merge_patch(DEPLOYMENTS, rollout.namespace, name, patch)
            if "spec" in patch:
                written_generations[name] = int(updated["metadata"].get("generation") or 0)
            logger.debug("updated %s/%s: %s", rollout.namespace, name, patch)
        # Every tick, not only when the role changes: a pod the ReplicaSet recreates
        # (eviction, node loss) comes from the template, which keeps the first role.
        _relabel_pods(api, rollout, item.revision, item.role)
    for revision, deployment in observed.items():
        if revision not in wanted:
            name = deployment["metadata"]["name"]
            api.delete(DEPLOYMENTS, rollout.namespace, name)
            written_generations.pop(name, None)
            logger.debug("deleted %s/%s", rollout.namespace, name)
    return foreign


def converge_disruption_budgets(
    api: KubeApi, rollout: RolloutRef, plan: list[DesiredRevision]
) -> None:
    """One PodDisruptionBudget per revision of the plan (`disruption_budget` says how many of its
    pods may be evicted at once); a revision's budget goes with it."""
    observed = {
        budget["metadata"]["labels"][REVISION_LABEL]: budget
        for budget in api.list(
            POD_DISRUPTION_BUDGETS,
            rollout.namespace,
            label_selector(selector_labels(rollout.name)),
        )
        if REVISION_LABEL in budget["metadata"].get("labels", {})
    }
    for item in plan:
        wanted = build_disruption_budget(rollout, item.revision, disruption_budget(item, plan))
        current = observed.get(item.revision)
        if current is None:
            api.create(POD_DISRUPTION_BUDGETS, rollout.namespace, wanted)
            continue
        spec = {
            "maxUnavailable": wanted["spec"]["maxUnavailable"],
            "minAvailable": None,
            "unhealthyPodEvictionPolicy": wanted["spec"]["unhealthyPodEvictionPolicy"],
        }
        if any(current["spec"].get(key) != value for key, value in spec.items()):
            api.merge_patch(
                POD_DISRUPTION_BUDGETS,
                rollout.namespace,
                current["metadata"]["name"],
                {"spec": spec},
            )
    wanted_revisions = {item.revision for item in plan}
    for revision, budget in observed.items():
        if revision not in wanted_revisions:
            api.delete(POD_DISRUPTION_BUDGETS, rollout.namespace, budget["metadata"]["name"])
