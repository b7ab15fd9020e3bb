"""Label, annotation and finalizer names: all the operator owns is under modelrollout.dev/."""

from __future__ import annotations

import re

GROUP = "modelrollout.dev"
VERSION = "v1alpha1"
PLURAL = "modelrollouts"
KIND = "ModelRollout"

ROLLOUT_LABEL = f"{GROUP}/rollout"
REVISION_LABEL = f"{GROUP}/revision"
ROLE_LABEL = f"{GROUP}/role"
# On serving pods under the service router: "true" while the pod's revision has a
# weight above 0. The rollout's Service selects it, so weight 0 means no traffic.
SERVING_LABEL = f"{GROUP}/serving"
# On quality-gate Jobs and their pods (value: the rollout), which must not carry
# ROLLOUT_LABEL: the rollout's Service selects every pod with that label.
EVALUATION_LABEL = f"{GROUP}/evaluation"
# On analysis-load Jobs and their pods (value: the rollout), for the same reason.
LOAD_LABEL = f"{GROUP}/load"
STEP_LABEL = f"{GROUP}/step"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "modelrollout"

FINALIZER = f"{GROUP}/finalizer"
ANNOTATION_PREFIX = GROUP
# On a quality-gate Job: status.stepStartedAt when it was created (see engine/evaluation.py).
STEP_STARTED_ANNOTATION = f"{GROUP}/step-started-at"
# On a Deployment an operator before the scale subresource named (its revision hashed the
# replicas): the id today's operator gives the same model and runtime (engine/revision.py).
SPEC_REVISION_ANNOTATION = f"{GROUP}/spec-revision"

ROLE_STABLE = "stable"
ROLE_CANARY = "canary"
ROLE_PREVIOUS = "previous"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def revision_object_name(rollout: str, revision: str) -> str:
    """Name of a revision's Deployment and Service: `<rollout>-<revision>`, a DNS label."""
    name = f"{rollout}-{revision}"
    if len(name) > 63 or not _DNS_LABEL.match(name):
        raise ValueError(
            f"metadata.name: {rollout!r} leaves no room for the revision suffix "
            f"(`{name}` must be a DNS label of at most 63 characters)"
        )
    return name


def selector_labels(rollout: str, revision: str | None = None) -> dict[str, str]:
    labels = {ROLLOUT_LABEL: rollout}
    if revision is not None:
        labels[REVISION_LABEL] = revision
    return labels


def label_selector(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


# On the shadow comparison proxy's Deployment, Service and pods (value: the rollout), which
# must not carry ROLLOUT_LABEL: the rollout's Services and Deployments select by it.
SHADOW_COMPARE_LABEL = f"{GROUP}/shadow-compare"
ROLE_SHADOW_COMPARE = "shadow-compare"


def proxy_selector(rollout: str) -> dict[str, str]:
    """The labels of the comparison proxy's pods, which its Service (and the rollout's, under
    the service router, while it fronts stable) selects."""
    return {SHADOW_COMPARE_LABEL: rollout}


def comparison_object_name(rollout: str) -> str:
    """The comparison proxy's Deployment and Service: `<rollout>-shadow-compare`."""
    return f"{rollout}-shadow-compare"
