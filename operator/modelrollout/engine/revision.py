"""Revision names: which model and runtime a set of pods serves."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from modelrollout.kube.labels import SPEC_REVISION_ANNOTATION
from modelrollout.models.spec import ModelRolloutSpec

REVISION_LENGTH = 10
# How many pods serve a revision, not what they serve: the scale subresource (an HPA)
# changes them in place, without a new revision.
SCALE_FIELDS = frozenset({"replicas", "minStableReplicas"})


def _hash(model: Mapping[str, Any], runtime: Mapping[str, Any]) -> str:
    canonical = json.dumps(
        {"model": model, "runtime": runtime}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:REVISION_LENGTH]


def revision_of(spec: ModelRolloutSpec) -> str:
    """A short stable hash of `spec.model` and `spec.runtime`, valid as a label value.

    Fields left at their defaults are left out of the hash, so a new optional
    runtime field in a later operator version does not roll every model out
    again, and writing a default explicitly is no change. Everything outside
    model/runtime (steps, checks, traffic) never makes a new revision, and nor
    do the replica counts (SCALE_FIELDS).
    """
    runtime = spec.runtime.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return _hash(
        spec.model.model_dump(mode="json", by_alias=True, exclude_defaults=True),
        {key: value for key, value in runtime.items() if key not in SCALE_FIELDS},
    )


def revision_before_scale_subresource(spec: ModelRolloutSpec) -> str:
    """The revision an operator before the scale subresource named `spec`: replicas hashed too."""
    return _hash(
        spec.model.model_dump(mode="json", by_alias=True, exclude_defaults=True),
        spec.runtime.model_dump(mode="json", by_alias=True, exclude_defaults=True),
    )


def serving_revision(
    spec: ModelRolloutSpec,
    deployments: Mapping[str, Mapping[str, Any]],
    status_revisions: Iterable[str | None],
    current: str | None = None,
) -> str:
    """The revision of `spec`, among this rollout's Deployments (by revision) and the
    revisions its status names (stable, canary). `current`: `revision_of(spec)` if known.

    Its own id, unless an older operator named the same model and runtime
    otherwise (replicas were hashed then): a Deployment of such a revision is
    marked with SPEC_REVISION_ANNOTATION once recognized (`revision_to_mark`),
    so it stays the spec's revision whatever the replicas become; until then,
    and for a rolled-back canary that has no Deployment left, the old hash of
    the spec as it is recognizes it.
    """
    current = revision_of(spec) if current is None else current
    if current in deployments:
        return current
    for revision, deployment in deployments.items():
        annotations = deployment.get("metadata", {}).get("annotations") or {}
        if annotations.get(SPEC_REVISION_ANNOTATION) == current:
            return revision
    before = revision_before_scale_subresource(spec)
    return before if before in deployments or before in set(status_revisions) else current


def revision_to_mark(
    spec: ModelRolloutSpec,
    deployments: Mapping[str, Mapping[str, Any]],
    current: str | None = None,
) -> str | None:
    """An older operator's revision serving `spec` whose Deployment lacks the mark; else None.

    `current`: `revision_of(spec)` if known.
    """
    current = revision_of(spec) if current is None else current
    revision = serving_revision(spec, deployments, (), current)
    if revision == current:
        return None
    annotations = deployments[revision].get("metadata", {}).get("annotations") or {}
    return None if SPEC_REVISION_ANNOTATION in annotations else revision


def is_spec_revision(spec: ModelRolloutSpec, revision: str) -> bool:
    """Whether `revision` names `spec`, by today's hash or the one before the scale subresource."""
    return revision in (revision_of(spec), revision_before_scale_subresource(spec))
