"""When a rollout's next tick is due, from its body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modelrollout.engine.timing import progress_marker, tick_period

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
STEPS = [{"setWeight": 20}, {"pause": {"duration": "30s"}}, {"analysis": {"duration": "5m"}}]


def body(phase: str, step: int | None = None, started_ago: float = 0.0, **status: Any) -> dict:
    started = (NOW - timedelta(seconds=started_ago)).isoformat().replace("+00:00", "Z")
    return {
        "metadata": {"generation": 2},
        "spec": {"strategy": {"canary": {"steps": STEPS}}},
        "status": {
            "phase": phase,
            "currentStep": step,
            "stepStartedAt": started,
            "observedGeneration": 2,
            **status,
        },
    }


def test_a_settled_rollout_waits_for_the_resync_period() -> None:
    assert tick_period(body("Succeeded"), NOW, 2.0, 30.0) == 30.0


def test_settled_means_nothing_left_to_do() -> None:
    blue_green_previous = body("Succeeded", previousRevision="old")
    assert tick_period(blue_green_previous, NOW, 2.0, 30.0) == 2.0
    unhandled_spec = body("Succeeded")
    unhandled_spec["metadata"]["generation"] = 3
    assert tick_period(unhandled_spec, NOW, 2.0, 30.0) == 2.0


def test_a_pause_ending_before_the_interval_is_ticked_at_its_end() -> None:
    assert tick_period(body("Progressing", 1, started_ago=29.25), NOW, 2.0, 30.0) == 0.75
    assert tick_period(body("Progressing", 1, started_ago=10), NOW, 2.0, 30.0) == 2.0
    assert tick_period(body("Progressing", 1, started_ago=45), NOW, 2.0, 30.0) == 0.05
    assert tick_period(body("Progressing", 2, started_ago=299.5), NOW, 2.0, 30.0) == 0.5


def test_untimed_steps_and_other_phases_use_the_interval() -> None:
    assert tick_period(body("Progressing", 0), NOW, 2.0, 30.0) == 2.0
    assert tick_period(body("Paused", 1, started_ago=29.5), NOW, 2.0, 30.0) == 2.0
    assert tick_period(body("Progressing", 7), NOW, 2.0, 30.0) == 2.0
    assert tick_period({"metadata": {}}, NOW, 2.0, 30.0) == 2.0


def test_the_progress_marker_moves_with_phase_step_or_weights() -> None:
    base = body("Progressing", 0, weights={"stable": 100, "canary": 0})
    assert progress_marker(base) == progress_marker(
        body("Progressing", 0, started_ago=9, weights={"stable": 100, "canary": 0})
    )
    assert progress_marker(base) != progress_marker(
        body("Progressing", 1, weights={"stable": 100, "canary": 0})
    )
    assert progress_marker(base) != progress_marker(
        body("Progressing", 0, weights={"stable": 80, "canary": 20})
    )
