"""Pure builders of the Deployments, Services and PodDisruptionBudgets the operator owns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelrollout.kube.labels import (
    GROUP,
    KIND,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ROLE_LABEL,
    VERSION,
    revision_object_name,
    selector_labels,
)

HTTP_PORT_NAME = "http"


@dataclass(frozen=True)
class RolloutRef:
    """The ModelRollout that owns a child object."""

    namespace: str
    name: str
    uid: str

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def _metadata(rollout: RolloutRef, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": rollout.namespace,
        "labels": {**labels, MANAGED_BY_LABEL: MANAGED_BY},
        "ownerReferences": [rollout.owner_reference()],
    }


def build_deployment(
    rollout: RolloutRef,
    revision: str,
    role: str,
    replicas: int,
    pod_spec: dict[str, Any],
    progress_deadline_seconds: int,
    pod_metadata: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """One Deployment per live revision; its selector never includes the role.

    The role changes on promotion; putting it in the selector or changing the
    template would restart pods that took minutes to load a model, so the
    operator relabels pods and the Deployment's metadata instead.
    """
    selector = selector_labels(rollout.name, revision)
    labels = {**selector, ROLE_LABEL: role}
    extra = pod_metadata or {}
    # The operator's labels come last: the user's never replace the selector.
    template_metadata: dict[str, Any] = {"labels": {**extra.get("labels", {}), **labels}}
    if extra.get("annotations"):
        template_metadata["annotations"] = dict(extra["annotations"])
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(rollout, revision_object_name(rollout.name, revision), labels),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 1,
            "progressDeadlineSeconds": progress_deadline_seconds,
            "selector": {"matchLabels": selector},
            # Bring a replacement up before taking a loaded replica away.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {"metadata": template_metadata, "spec": pod_spec},
        },
    }


def build_service(
    rollout: RolloutRef, name: str, selector: dict[str, str], port: int
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(rollout, name, selector),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": HTTP_PORT_NAME,
                    "port": port,
                    "targetPort": HTTP_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_revision_service(rollout: RolloutRef, revision: str, port: int) -> dict[str, Any]:
    """A Service selecting one revision's pods: what a route's backendRef points at."""
    return build_service(
        rollout,
        revision_object_name(rollout.name, revision),
        selector_labels(rollout.name, revision),
        port,
    )


def build_disruption_budget(
    rollout: RolloutRef, revision: str, max_unavailable: int
) -> dict[str, Any]:
    """A PodDisruptionBudget over one revision's pods, named like its Deployment.

    `maxUnavailable` is counted by the API server against the Deployment's
    replicas as they are now, so a scale-down by the operator (or the service
    router) never leaves a budget that asks for more pods than exist. Pods
    that are not Ready may always be evicted: a crash-looping pod never
    holds a node drain.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(
            rollout,
            revision_object_name(rollout.name, revision),
            selector_labels(rollout.name, revision),
        ),
        "spec": {
            "maxUnavailable": max_unavailable,
            "selector": {"matchLabels": selector_labels(rollout.name, revision)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
