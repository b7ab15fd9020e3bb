"""Observe and converge a rollout's Deployments: the only place that writes them.

Every write is conditional on a difference, so a tick with nothing to do
makes no write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modelrollout.engine.workloads import DesiredRevision
from modelrollout.kube.api import DEPLOYMENTS, PODS, KubeApi
from modelrollout.kube.labels import (
    REVISION_LABEL,
    ROLE_LABEL,
    label_selector,
    revision_object_name,
    selector_labels,
)
from modelrollout.kube.workloads import RolloutRef, build_deployment


@dataclass(frozen=True)
class ObservedRevision:
    revision: str
    role: str | None
    desired_replicas: int
    ready_replicas: int
    updated_replicas: int


def observe_deployments(api: KubeApi, rollout: RolloutRef) -> dict[str, dict[str, Any]]:
    """This rollout's Deployments by revision."""
    deployments = api.list(
        DEPLOYMENTS, rollout.namespace, label_selector(selector_labels(rollout.name))
    )
    return {
        d["metadata"]["labels"][REVISION_LABEL]: d
        for d in deployments
        if REVISION_LABEL in d["metadata"].get("labels", {})
    }


def revision_state(deployment: dict[str, Any]) -> ObservedRevision:
    status = deployment.get("status", {})
    return ObservedRevision(
        revision=deployment["metadata"]["labels"][REVISION_LABEL],
        role=deployment["metadata"]["labels"].get(ROLE_LABEL),
        desired_replicas=int(deployment["spec"].get("replicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
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
            api.merge_patch(
                PODS,
                rollout.namespace,
                pod["metadata"]["name"],
                {"metadata": {"labels": {ROLE_LABEL: role}}},
            )


def converge_deployments(
    api: KubeApi,
    rollout: RolloutRef,
    plan: list[DesiredRevision],
    observed: dict[str, dict[str, Any]],
    pod_spec_for: Callable[[str], dict[str, Any] | None],
    progress_deadline_seconds: int,
) -> list[str]:
    """Create, scale, relabel and delete Deployments to match the plan; returns what it did."""
    actions: list[str] = []
    wanted = {item.revision: item for item in plan}
    for item in plan:
        current = observed.get(item.revision)
        name = revision_object_name(rollout.name, item.revision)
        if current is None:
            pod_spec = pod_spec_for(item.revision)
            if pod_spec is None:
                actions.append(f"cannot recreate {name}: its spec is no longer known")
                continue
            api.create(
                DEPLOYMENTS,
                rollout.namespace,
                build_deployment(
                    rollout,
                    item.revision,
                    item.role,
                    item.replicas,
                    pod_spec,
                    progress_deadline_seconds,
                ),
            )
            actions.append(f"created {name} ({item.role}, {item.replicas} replicas)")
            continue
        patch: dict[str, Any] = {}
        if int(current["spec"].get("replicas") or 0) != item.replicas:
            patch["spec"] = {"replicas": item.replicas}
        if current["metadata"].get("labels", {}).get(ROLE_LABEL) != item.role:
            patch["metadata"] = {"labels": {ROLE_LABEL: item.role}}
        if patch:
            api.merge_patch(DEPLOYMENTS, rollout.namespace, name, patch)
            actions.append(f"updated {name}: {patch}")
        if "metadata" in patch:
            _relabel_pods(api, rollout, item.revision, item.role)
    for revision, deployment in observed.items():
        if revision not in wanted:
            api.delete(DEPLOYMENTS, rollout.namespace, deployment["metadata"]["name"])
            actions.append(f"deleted {deployment['metadata']['name']}")
    return actions
