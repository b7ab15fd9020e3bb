"""The status survives the API server round trip and patches what changed."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from modelrollout.models import CheckStatus, ModelRolloutStatus, Weights
from tests.unit.operator.builders import T0

pytestmark = pytest.mark.unit


def progressing() -> ModelRolloutStatus:
    return ModelRolloutStatus(
        phase="Progressing",
        stable_revision="aaaa",
        canary_revision="bbbb",
        current_step=2,
        step_started_at=T0,
        weights=Weights(stable=75, canary=25),
        checks=(CheckStatus(name="error-rate", value=0.002, threshold="> 0.01", state="Passing"),),
        handled_commands={"promote": "n1"},
    )


def test_patch_is_camel_case_json_with_rfc3339_times() -> None:
    patch = progressing().to_patch()
    assert patch["canaryRevision"] == "bbbb"
    assert patch["currentStep"] == 2
    assert patch["stepStartedAt"] == "2026-01-01T12:00:00Z"
    assert patch["weights"] == {"stable": 75, "canary": 25, "mirror": 0}
    assert patch["checks"] == [
        {"name": "error-rate", "value": 0.002, "threshold": "> 0.01", "state": "Passing",
         "message": ""}
    ]  # fmt: skip
    assert patch["handledCommands"] == {"promote": "n1"}
    json.dumps(patch)  # the API server takes JSON


def test_cleared_fields_are_deleted_by_the_merge_patch() -> None:
    done = progressing().model_copy(update={"canary_revision": None, "current_step": None})
    patch = done.to_patch()
    assert patch["canaryRevision"] is None
    assert patch["currentStep"] is None


def test_round_trip_through_json_is_lossless() -> None:
    status = progressing()
    assert ModelRolloutStatus.model_validate(json.loads(json.dumps(status.to_patch()))) == status


def test_unknown_status_fields_from_a_newer_operator_are_ignored() -> None:
    assert (
        ModelRolloutStatus.model_validate({"phase": "Paused", "futureField": 1}).phase == "Paused"
    )


def test_condition_transition_time_moves_only_when_status_flips() -> None:
    status = ModelRolloutStatus().with_condition("Paused", "True", "PauseStep", "a", T0)
    later = T0 + timedelta(minutes=1)
    reworded = status.with_condition("Paused", "True", "UserPaused", "b", later)
    assert reworded.condition("Paused").last_transition_time == T0  # type: ignore[union-attr]
    flipped = reworded.with_condition("Paused", "False", "Resumed", "", later)
    assert flipped.condition("Paused").last_transition_time == later  # type: ignore[union-attr]
    assert flipped.with_condition("Paused", "False", "Resumed", "", later) is flipped


def test_a_false_condition_is_not_added_where_there_was_none() -> None:
    status = ModelRolloutStatus()
    assert status.without_true_condition("Unschedulable", "Scheduled", "", T0) == status


def test_invalid_spec_sets_the_condition_and_message_only() -> None:
    status = progressing()
    invalid = status.with_invalid_spec("spec.runtime.replicas: too many", 3, T0)
    assert invalid.condition("InvalidSpec").status == "True"  # type: ignore[union-attr]
    assert invalid.message == "invalid spec: spec.runtime.replicas: too many"
    assert invalid.observed_generation == 3
    assert (
        invalid.model_copy(update={"conditions": (), "message": "", "observed_generation": None})
        == status
    )


def reading(status: ModelRolloutStatus, **changes: object) -> ModelRolloutStatus:
    check = status.checks[0].model_copy(update=changes)
    return status.with_checks((check,))


def test_a_new_reading_of_a_check_is_not_a_difference_that_must_be_written() -> None:
    before = reading(progressing(), last_evaluated=T0)
    later = reading(before, value=0.004, message="0.004", last_evaluated=T0 + timedelta(seconds=1))
    assert not later.differs_beyond_check_readings(before)


@pytest.mark.parametrize(
    "change",
    [
        {"state": "Breached"},
        {"breaching_since": T0},
        {"unavailable_since": T0},
        {"threshold": "> 0.02"},
    ],
)
def test_a_checks_state_is_a_difference(change: dict[str, object]) -> None:
    before = reading(progressing(), last_evaluated=T0)
    assert reading(before, **change).differs_beyond_check_readings(before)


def test_anything_else_in_status_is_a_difference() -> None:
    before = progressing()
    assert before.model_copy(update={"current_step": 3}).differs_beyond_check_readings(before)
    assert before.with_checks(()).differs_beyond_check_readings(before)
