"""When a rollout's next tick is due, from its body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelrollout.engine.timing import progress_marker, tick_period
from tests.unit.operator.builders import example_spec

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
STEPS = [{"setWeight": 20}, {"pause": {"duration": "30s"}}, {"analysis": {"duration": "5m"}}]
INTERVAL, RESYNC, SLOW = 2.0, 30.0, 10.0


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def body(phase: str, step: int | None = None, started_ago: float = 0.0, **status: Any) -> dict:
    spec = example_spec()
    spec["strategy"] = {"canary": {"steps": STEPS}}
    spec["analysis"]["interval"] = "4s"
    spec["progressDeadline"] = "60s"
    return {
        "metadata": {"generation": 2},
        "spec": spec,
        "status": {
            "phase": phase,
            "stableRevision": "stable1",
            "canaryRevision": "canary1",
            "weights": {"stable": 80, "canary": 20},
            "currentStep": step,
            "stepStartedAt": ago(started_ago),
            "observedGeneration": 2,
            **status,
        },
    }


def period(rollout: dict[str, Any]) -> float:
    return tick_period(rollout, NOW, INTERVAL, RESYNC, SLOW)


def test_a_settled_rollout_waits_for_the_resync_period() -> None:
    assert period(body("Succeeded")) == RESYNC


def test_settled_means_nothing_left_to_do() -> None:
    assert period(body("Succeeded", previousRevision="old")) == INTERVAL
    unhandled_spec = body("Succeeded")
    unhandled_spec["metadata"]["generation"] = 3
    assert period(unhandled_spec) == INTERVAL


def test_other_phases_tick_every_interval() -> None:
    for phase in ("Pending", "Promoting", "RollingBack", "RolledBack"):
        assert period(body(phase, 1, started_ago=29.5)) == INTERVAL


def test_a_canary_with_no_timer_soon_waits_the_slow_period() -> None:
    assert period(body("Progressing", 0)) == SLOW
    assert period(body("Paused", 1, started_ago=29.5)) == SLOW  # a paused pause does not end
    assert period({"metadata": {}, "status": {"phase": "Progressing"}}) == SLOW


def test_a_timed_step_is_ticked_at_its_end() -> None:
    assert period(body("Progressing", 1, started_ago=29.25)) == 0.75
    assert period(body("Progressing", 2, started_ago=299.5)) == 0.5
    assert period(body("Progressing", 1, started_ago=10)) == SLOW


def test_the_next_check_evaluation_is_a_timer() -> None:
    checks = [{"name": "errors", "lastEvaluated": ago(1)}, {"name": "p99", "lastEvaluated": ago(3)}]
    assert period(body("Progressing", 0, checks=checks)) == 1.0


def test_the_progress_deadline_and_the_scale_down_are_timers() -> None:
    assert period(body("Progressing", 0, canaryUnreadySince=ago(57))) == 3.0
    later = (NOW + timedelta(seconds=4)).isoformat()
    assert period(body("Progressing", 0, previousScaleDownAt=later)) == 4.0


def test_timers_already_past_do_not_make_it_spin() -> None:
    # The tick that just ran saw them and chose to wait (e.g. analysis not healthy yet).
    past = body("Progressing", 1, started_ago=45, canaryUnreadySince=ago(600))
    past["status"]["checks"] = [{"name": "errors", "lastEvaluated": ago(30)}]
    assert period(past) == SLOW


def test_the_progress_marker_moves_with_phase_step_or_weights() -> None:
    weights = {"stable": 100, "canary": 0}
    base = body("Progressing", 0, weights=weights)
    assert progress_marker(base) == progress_marker(
        body("Progressing", 0, started_ago=9, weights=weights)
    )
    assert progress_marker(base) != progress_marker(body("Progressing", 1, weights=weights))
    assert progress_marker(base) != progress_marker(
        body("Progressing", 0, weights={"stable": 80, "canary": 20})
    )
