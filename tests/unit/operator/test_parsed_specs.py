"""The spec memo: one parse per spec, any change seen at the next tick."""

from __future__ import annotations

import pytest

from modelrollout.engine.parsed_specs import ParsedSpecs
from modelrollout.models import InvalidSpecError
from tests.unit.operator.builders import example_spec, with_model_uri

pytestmark = pytest.mark.unit

V2 = "pvc://models/llama-3.2-3b/v2"


def test_an_unchanged_spec_is_parsed_once() -> None:
    specs = ParsedSpecs()
    first = specs.parse("uid-1", example_spec())
    assert specs.parse("uid-1", example_spec()) is first


def test_a_changed_spec_is_seen_at_once() -> None:
    specs = ParsedSpecs()
    body_spec = example_spec()
    assert specs.parse("uid-1", body_spec).model.uri == example_spec()["model"]["uri"]
    # Changed in place, as a body handed over again would be: the digest tells.
    body_spec["model"]["uri"] = V2
    assert specs.parse("uid-1", body_spec).model.uri == V2
    changed = with_model_uri(example_spec(), V2)
    changed["runtime"]["replicas"] = 3
    assert specs.parse("uid-1", changed).runtime.replicas == 3


def test_an_invalid_spec_raises_every_time_and_a_fix_is_seen() -> None:
    specs = ParsedSpecs()
    valid = specs.parse("uid-1", example_spec())
    invalid = example_spec()
    invalid["runtime"]["replicas"] = "two"
    for _ in range(2):
        with pytest.raises(InvalidSpecError, match="replicas"):
            specs.parse("uid-1", invalid)
    assert specs.parse("uid-1", example_spec()) == valid


def test_rollouts_are_kept_apart_and_forgotten() -> None:
    specs = ParsedSpecs()
    first = specs.parse("uid-1", example_spec())
    other = specs.parse("uid-2", with_model_uri(example_spec(), V2))
    assert specs.parse("uid-1", example_spec()) is first
    assert other.model.uri == V2
    specs.forget("uid-1")
    again = specs.parse("uid-1", example_spec())
    assert again == first and again is not first
