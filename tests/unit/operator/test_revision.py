"""A revision names exactly what the pods run: spec.model + spec.runtime."""

from __future__ import annotations

import re

import pytest

from modelrollout.engine.revision import (
    revision_before_scale_subresource,
    revision_of,
    revision_to_mark,
    serving_revision,
)
from modelrollout.kube.labels import SPEC_REVISION_ANNOTATION
from modelrollout.models import parse_spec
from tests.unit.operator.builders import example_spec

pytestmark = pytest.mark.unit

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def test_revision_is_a_short_label_value_and_stable() -> None:
    revision = revision_of(parse_spec(example_spec()))
    assert len(revision) == 10
    assert LABEL_VALUE.match(revision)
    assert revision == revision_of(parse_spec(example_spec()))


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("model", "uri", "pvc://models/v2"),
        ("model", "name", "chat-2"),
        ("runtime", "image", "vllm/vllm-openai:v0.12.0"),
        ("runtime", "args", ["--max-model-len=4096"]),
        ("runtime", "env", [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}]),
    ],
)
def test_model_and_runtime_changes_make_a_new_revision(
    section: str, key: str, value: object
) -> None:
    spec = example_spec()
    spec[section][key] = value
    assert revision_of(parse_spec(spec)) != revision_of(parse_spec(example_spec()))


def test_other_changes_keep_the_revision() -> None:
    spec = example_spec()
    spec["strategy"]["canary"]["steps"] = [{"setWeight": 50}]
    spec["analysis"]["checks"] = []
    spec["traffic"] = {"router": "service"}
    spec["progressDeadline"] = "1h"
    assert revision_of(parse_spec(spec)) == revision_of(parse_spec(example_spec()))


def test_scaling_keeps_the_revision() -> None:
    """`kubectl scale` or an HPA changes how many pods serve a revision, not which."""
    spec = example_spec()
    spec["runtime"]["replicas"] = 40
    spec["runtime"]["minStableReplicas"] = 10
    assert revision_of(parse_spec(spec)) == revision_of(parse_spec(example_spec()))


def test_a_revision_an_older_operator_named_stays_the_specs_revision_when_scaled() -> None:
    """Operators before the scale subresource hashed replicas: their revisions keep serving."""
    spec = example_spec()
    spec["runtime"]["replicas"] = 2
    parsed = parse_spec(spec)
    old = revision_before_scale_subresource(parsed)
    assert old != revision_of(parsed)
    unmarked = {old: {"metadata": {"name": f"chat-{old}"}}, "0123456789": {"metadata": {}}}
    # Recognized by the old hash of the spec as it is, then marked once.
    assert serving_revision(parsed, unmarked, (old,)) == old
    assert revision_to_mark(parsed, unmarked) == old
    marked = {
        **unmarked,
        old: {"metadata": {"annotations": {SPEC_REVISION_ANNOTATION: revision_of(parsed)}}},
    }
    assert revision_to_mark(parsed, marked) is None
    # Scaled afterwards (its old hash changes): still that revision, no new rollout.
    spec["runtime"]["replicas"] = 7
    scaled = parse_spec(spec)
    assert serving_revision(scaled, marked, (old,)) == old
    # A rolled-back canary has no Deployment left: its status still names it.
    assert serving_revision(parsed, {}, ("0123456789", old)) == old
    # Another model is a new revision, named the new way.
    spec["model"]["uri"] = "pvc://models/v9"
    assert serving_revision(parse_spec(spec), marked, (old,)) == revision_of(parse_spec(spec))


def test_writing_a_default_explicitly_keeps_the_revision() -> None:
    spec = example_spec()
    spec["runtime"]["port"] = 8000
    spec["runtime"]["capacity"] = "surge"
    assert revision_of(parse_spec(spec)) == revision_of(parse_spec(example_spec()))
