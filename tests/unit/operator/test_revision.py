"""A revision names exactly what the pods run: spec.model + spec.runtime."""

from __future__ import annotations

import re

import pytest

from modelrollout.engine.revision import revision_of
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
        ("runtime", "replicas", 3),
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


def test_writing_a_default_explicitly_keeps_the_revision() -> None:
    spec = example_spec()
    spec["runtime"]["port"] = 8000
    spec["runtime"]["capacity"] = "surge"
    assert revision_of(parse_spec(spec)) == revision_of(parse_spec(example_spec()))
