"""Revision names: which model and runtime a set of pods serves."""

from __future__ import annotations

import hashlib
import json

from modelrollout.models.spec import ModelRolloutSpec

REVISION_LENGTH = 10


def revision_of(spec: ModelRolloutSpec) -> str:
    """A short stable hash of `spec.model` and `spec.runtime`, valid as a label value.

    Fields left at their defaults are left out of the hash, so a new optional
    runtime field in a later operator version does not roll every model out
    again, and writing a default explicitly is no change. Everything outside
    model/runtime (steps, checks, traffic) never makes a new revision.
    """
    canonical = json.dumps(
        {
            "model": spec.model.model_dump(mode="json", by_alias=True, exclude_defaults=True),
            "runtime": spec.runtime.model_dump(mode="json", by_alias=True, exclude_defaults=True),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:REVISION_LENGTH]
