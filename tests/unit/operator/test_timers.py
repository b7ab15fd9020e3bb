"""Every timed step of every strategy has a timer of its own: tick by tick, with a fake clock.

The walk ticks a rollout the way the scheduler does: at once after a tick
that moved it (its own status write wakes it), otherwise exactly at the
next timer the pure core names, and nowhere in between. A timed step whose
end had no timer would stop the walk or skip past it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from modelrollout.analysis.assessment import AnalysisVerdict
from modelrollout.engine.strategies.desired import revision_plan
from modelrollout.engine.strategies.timers import next_timer
from modelrollout.engine.timing import MIN_PERIOD_SECONDS, LastDecision, tick_period
from modelrollout.models import ModelRolloutStatus
from modelrollout.models.status import CheckStatus
from tests.unit.operator.builders import Rollout, example_spec, with_model_uri

pytestmark = pytest.mark.unit

V2 = "pvc://models/llama-3.2-3b/v1.4"
INTERVAL, RESYNC, SLOW = 2.0, 30.0, 10.0


def _moved(before: ModelRolloutStatus, after: ModelRolloutStatus) -> bool:
    return (before.phase, before.current_step, before.weights) != (
        after.phase,
        after.current_step,
        after.weights,
    )


def walk(spec: dict[str, Any], limit: int = 100) -> list[tuple[str, int | None, float]]:
    """(phase, step, seconds since the new revision) of each timer the walk waits for."""
    rollout = Rollout.of(spec)
    rollout.tick()
    rollout.apply(with_model_uri(spec, V2))
    start = rollout.now
    waited: list[tuple[str, int | None, float]] = []
    for _ in range(limit):
        before = rollout.status
        rollout.tick()
        if _moved(before, rollout.status):
            continue
        due = next_timer(rollout.spec, rollout.status, rollout.now)
        if due is None:
            assert rollout.status.phase == "Succeeded", rollout.status
            return waited
        status = rollout.status
        waited.append((status.phase, status.current_step, (due - start).total_seconds()))
        rollout.now = due
    raise AssertionError(f"no end after {limit} ticks: {waited}")


def test_canary_pause_and_analysis_steps_each_end_on_their_timer() -> None:
    # setWeight 5, pause 5m, setWeight 25, analysis 10m, setWeight 50.
    assert walk(example_spec()) == [
        ("Progressing", 1, 300.0),
        ("Progressing", 3, 900.0),
    ]


def test_blue_green_auto_promotion_post_promotion_analysis_and_scale_down() -> None:
    spec = example_spec()
    spec["strategy"] = {
        "blueGreen": {
            "autoPromotionAfter": "30s",
            "scaleDownDelay": "60s",
            "postPromotionAnalysis": {"duration": "5m"},
        }
    }
    # pause 30s (autoPromotionAfter), setWeight 100, analysis 5m, then the old color
    # is scaled down 60s after promotion.
    assert walk(spec) == [
        ("Progressing", 0, 30.0),
        ("Progressing", 2, 330.0),
        ("Succeeded", None, 390.0),
    ]


def test_a_canary_rollback_window_ends_on_its_timer() -> None:
    spec = example_spec()
    spec["strategy"]["canary"]["rollbackWindow"] = {"duration": "30m", "replicaPercent": 50}
    # The steps as above; promoted at 900 s, the previous stable is kept until 900 + 30m.
    assert walk(spec) == [
        ("Progressing", 1, 300.0),
        ("Progressing", 3, 900.0),
        ("Succeeded", None, 2700.0),
    ]


def test_blue_green_auto_promotion_counts_from_the_preview_being_ready() -> None:
    spec = example_spec()
    spec["strategy"] = {"blueGreen": {"autoPromotionAfter": "30s"}}
    rollout = Rollout.of(spec)
    rollout.tick()
    rollout.apply(with_model_uri(spec, V2))
    rollout.world.canary_ready = 1  # one of the preview's two pods still loads the model
    start = rollout.now
    rollout.tick()
    rollout.tick(100)
    assert rollout.status.current_step == 0
    assert rollout.status.preview_ready_at is None
    # Only the progress deadline (20m) is due: no autoPromotionAfter before readiness.
    assert next_timer(rollout.spec, rollout.status, rollout.now) == start + timedelta(minutes=20)
    rollout.world.canary_ready = 2
    rollout.tick(5)
    ready_at = rollout.now
    assert rollout.status.preview_ready_at == ready_at
    assert next_timer(rollout.spec, rollout.status, rollout.now) == ready_at + timedelta(seconds=30)


def test_shadow_duration_then_canary_steps_of_the_same_duration() -> None:
    spec = example_spec()
    spec["traffic"]["router"] = "gatewayAPI"
    spec["strategy"] = {"shadow": {"mirrorPercent": 30, "duration": "60s", "then": "canary"}}
    # analysis 60s (mirrored), setWeight 10, analysis 60s, setWeight 50, analysis 60s.
    assert walk(spec) == [
        ("Progressing", 0, 60.0),
        ("Progressing", 2, 120.0),
        ("Progressing", 4, 180.0),
    ]


def running(spec: dict[str, Any]) -> Rollout:
    rollout = Rollout.of(spec)
    rollout.tick()
    rollout.apply(with_model_uri(spec, V2))
    rollout.tick(1)
    rollout.tick(1)  # at weight 5: analysis runs
    return rollout


def test_checks_are_due_an_interval_after_their_last_evaluation() -> None:
    rollout = running(example_spec())  # interval 15s
    evaluated = rollout.now - timedelta(seconds=5)
    status = rollout.status.with_checks(
        (CheckStatus(name="error-rate", state="Passing", last_evaluated=evaluated),)
    )
    assert next_timer(rollout.spec, status, rollout.now) == evaluated + timedelta(seconds=15)


def test_metrics_unavailable_for_too_long_is_a_timer() -> None:
    spec = example_spec()
    spec["analysis"]["interval"] = "10m"
    spec["analysis"]["whenMetricsUnavailable"] = {"after": "2m", "action": "rollback"}
    rollout = running(spec)
    since = rollout.now - timedelta(seconds=30)
    status = rollout.status.with_checks(
        (CheckStatus(name="error-rate", state="Unavailable", unavailable_since=since),)
    )
    assert next_timer(rollout.spec, status, rollout.now) == since + timedelta(minutes=2)


def test_the_progress_deadline_of_an_unready_canary_is_a_timer() -> None:
    spec = example_spec()
    spec["progressDeadline"] = "90s"
    rollout = Rollout.of(spec)
    rollout.tick()
    rollout.world.canary_ready = 0
    rollout.apply(with_model_uri(spec, V2))
    rollout.tick(1)
    started = rollout.now
    rollout.tick(1)  # setWeight 5 waits for pods
    assert next_timer(rollout.spec, rollout.status, rollout.now) == started + timedelta(seconds=90)
    rollout.now = started + timedelta(seconds=90)
    assert rollout.tick().rollback_now


def test_an_aborted_canary_keeps_its_pods_until_its_scale_down_timer() -> None:
    spec = example_spec()
    spec["traffic"]["router"] = "gatewayAPI"
    spec["strategy"]["canary"]["abortScaleDownDelay"] = "45s"
    rollout = running(spec)
    rollout.world.analysis = AnalysisVerdict.breach("error-rate", "rollback", 0.2, "breached")
    rollout.tick(1)
    aborted = rollout.now
    rollout.run_until("RolledBack", every=0)
    due = next_timer(rollout.spec, rollout.status, rollout.now)
    assert due == aborted + timedelta(seconds=45)
    canary = rollout.status.canary_revision
    assert canary in [r.revision for r in revision_plan(rollout.spec, rollout.status, rollout.now)]
    assert canary not in [r.revision for r in revision_plan(rollout.spec, rollout.status, due)]


def test_the_last_pause_ending_while_its_tick_runs_is_ticked_at_once() -> None:
    # Issue 17: at 100 rollouts a tick that began just before the last pause's end
    # (woken by a check evaluation, say) ended just after it; its period, asked
    # after the end, dropped the end as "past, seen by that tick" and waited the
    # canary resync (10 s) instead.
    spec = example_spec()
    rollout = running(spec)
    rollout.status = rollout.status.model_copy(
        update={"current_step": 3, "step_started_at": rollout.now - timedelta(seconds=599.9)}
    )
    decided_at = rollout.now
    decided = LastDecision(
        rollout.status, decided_at, next_timer(rollout.spec, rollout.status, decided_at)
    )
    body = {"metadata": {"generation": 1}, "spec": spec, "status": {}}
    ended = decided_at + timedelta(seconds=0.3)
    assert tick_period(body, ended, INTERVAL, RESYNC, SLOW, decided) == MIN_PERIOD_SECONDS


def test_the_period_follows_the_decided_status_not_an_older_body() -> None:
    # The scheduler's body predates the tick's own write: it knows no step end yet.
    spec = example_spec()
    rollout = running(spec)
    older = {"metadata": {"generation": 1}, "spec": spec, "status": rollout.status.to_patch()}
    rollout.tick(0)
    assert rollout.status.current_step == 1  # pause 5m started now
    decided = LastDecision(
        rollout.status, rollout.now, next_timer(rollout.spec, rollout.status, rollout.now)
    )
    later = rollout.now + timedelta(seconds=295)
    assert tick_period(older, later, INTERVAL, RESYNC, SLOW, decided) == pytest.approx(5.0)
