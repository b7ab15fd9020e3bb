"""The spec memo: one parse per generation, a new generation parsed at the next tick."""

from __future__ import annotations

import pytest

from modelrollout.engine.parsed_specs import ParsedSpecs
from modelrollout.engine.revision import revision_of
from modelrollout.models import InvalidSpecError, parse_spec
from tests.unit.operator.builders import example_spec, with_model_uri

pytestmark = pytest.mark.unit

V2 = "pvc://models/llama-3.2-3b/v2"


def test_a_generation_is_parsed_once_with_its_revision() -> None:
    specs = ParsedSpecs()
    first = specs.parse("uid-1", 1, example_spec())
    assert specs.parse("uid-1", 1, example_spec()) is first
    assert specs.parses == 1
    assert first.spec == parse_spec(example_spec())
    assert first.revision == revision_of(first.spec)


def test_a_new_generation_is_parsed_again() -> None:
    specs = ParsedSpecs()
    first = specs.parse("uid-1", 1, example_spec())
    changed = with_model_uri(example_spec(), V2)
    second = specs.parse("uid-1", 2, changed)
    assert specs.parses == 2
    assert second.spec.model.uri == V2
    assert second.revision == revision_of(parse_spec(changed)) != first.revision
    # Back to the first spec (a revert): a third generation, parsed again.
    third = specs.parse("uid-1", 3, example_spec())
    assert specs.parses == 3
    assert third.revision == first.revision


def test_without_a_generation_a_changed_spec_is_seen_at_once() -> None:
    specs = ParsedSpecs()
    body_spec = example_spec()
    assert specs.parse("uid-1", None, body_spec).spec.model.uri == example_spec()["model"]["uri"]
    assert specs.parse("uid-1", None, example_spec()).spec.model.uri == body_spec["model"]["uri"]
    assert specs.parses == 1
    # Changed in place, as a body built by hand and handed over again would be: the digest tells.
    body_spec["model"]["uri"] = V2
    assert specs.parse("uid-1", None, body_spec).spec.model.uri == V2
    changed = with_model_uri(example_spec(), V2)
    changed["runtime"]["replicas"] = 3
    assert specs.parse("uid-1", 0, changed).spec.runtime.replicas == 3
    assert specs.parses == 3


def test_an_invalid_spec_raises_every_time_and_a_fix_is_seen() -> None:
    specs = ParsedSpecs()
    valid = specs.parse("uid-1", 1, example_spec())
    invalid = example_spec()
    invalid["runtime"]["replicas"] = "two"
    for _ in range(2):
        with pytest.raises(InvalidSpecError, match="replicas"):
            specs.parse("uid-1", 2, invalid)
    assert specs.parse("uid-1", 3, example_spec()) == valid


def test_rollouts_are_kept_apart_and_forgotten() -> None:
    specs = ParsedSpecs()
    first = specs.parse("uid-1", 1, example_spec())
    other = specs.parse("uid-2", 1, with_model_uri(example_spec(), V2))
    assert specs.parse("uid-1", 1, example_spec()) is first
    assert other.spec.model.uri == V2
    specs.forget("uid-1")
    again = specs.parse("uid-1", 1, example_spec())
    assert again == first and again is not first
