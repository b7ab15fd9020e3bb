"""Check states over evaluations: Prometheus `for` semantics, no data never healthy."""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelrollout.analysis.assessment import Sample, assess, check_events, verdict_of
from modelrollout.models import Analysis, CheckStatus
from tests.unit.operator.builders import T0

pytestmark = pytest.mark.unit

ANALYSIS = Analysis.model_validate(
    {
        "prometheus": {"address": "http://p:9090"},
        "checks": [
            {"name": "errors", "query": "e", "breachWhen": "> 0.01", "for": "1m"},
            {"name": "latency", "query": "l", "breachWhen": "> 2", "action": "pause"},
        ],
        "alerts": [{"alertname": "ModelDown"}],
    }
)
OK = {"errors": Sample(0.0), "latency": Sample(1.0), "alert:ModelDown": Sample(0.0)}


def walk(*errors: Sample, every: float = 15) -> list[CheckStatus]:
    """Evaluate the `errors` check once per sample, `every` seconds apart."""
    checks: tuple[CheckStatus, ...] = ()
    states = []
    for index, sample in enumerate(errors):
        checks, _ = assess(
            ANALYSIS, checks, {**OK, "errors": sample}, T0 + timedelta(seconds=index * every)
        )
        states.append(checks[0])
    return states


def test_breach_must_hold_at_every_evaluation_for_the_for_duration() -> None:
    bad = Sample(0.05)
    states = walk(bad, bad, bad, bad, bad)
    assert [s.state for s in states] == ["Breaching"] * 4 + ["Breached"]
    assert all(s.breaching_since == T0 for s in states)


def test_a_good_sample_resets_the_timer() -> None:
    bad, good = Sample(0.05), Sample(0.0)
    states = walk(bad, bad, bad, good, bad, bad, bad, bad, bad)
    assert states[3].state == "Passing" and states[3].breaching_since is None
    assert states[4].breaching_since == T0 + timedelta(seconds=60)
    assert [s.state for s in states[4:]] == ["Breaching"] * 4 + ["Breached"]


def test_an_unavailable_sample_resets_the_timer_and_is_not_healthy() -> None:
    bad, missing = Sample(0.05), Sample.unavailable("query returned no data")
    states = walk(bad, bad, missing, bad)
    assert states[2].state == "Unavailable"
    assert states[2].breaching_since is None
    assert states[2].unavailable_since == T0 + timedelta(seconds=30)
    assert states[3].breaching_since == T0 + timedelta(seconds=45)


def test_unavailable_since_is_the_first_of_a_run() -> None:
    missing = Sample.unavailable("timeout")
    checks: tuple[CheckStatus, ...] = ()
    for seconds in (0, 15, 30):
        checks, verdict = assess(
            ANALYSIS, checks, {**OK, "latency": missing}, T0 + timedelta(seconds=seconds)
        )
    assert verdict.kind == "unavailable"
    assert verdict.since == T0
    assert "latency" in verdict.message and "timeout" in verdict.message


def test_all_passing_is_healthy_and_pending_until_evaluated() -> None:
    assert verdict_of(ANALYSIS, ()).kind == "pending"
    checks, verdict = assess(ANALYSIS, (), OK, T0)
    assert verdict.kind == "healthy"
    assert [c.state for c in checks] == ["Passing", "Passing", "Passing"]
    assert [c.name for c in checks] == ["errors", "latency", "alert:ModelDown"]


def test_breaching_but_not_yet_for_long_enough_is_pending() -> None:
    _, verdict = assess(ANALYSIS, (), {**OK, "errors": Sample(0.5)}, T0)
    assert verdict.kind == "pending"


def test_a_firing_alert_is_an_immediate_breach_with_its_action() -> None:
    _, verdict = assess(ANALYSIS, (), {**OK, "alert:ModelDown": Sample(2.0)}, T0)
    assert (verdict.kind, verdict.check, verdict.action) == (
        "breach",
        "alert:ModelDown",
        "rollback",
    )
    assert "ModelDown is firing" in verdict.message


def test_zero_for_breaches_at_once_and_reports_value_and_threshold() -> None:
    _, verdict = assess(ANALYSIS, (), {**OK, "latency": Sample(3.5)}, T0)
    assert (verdict.kind, verdict.check, verdict.action, verdict.value) == (
        "breach",
        "latency",
        "pause",
        3.5,
    )
    assert "3.5" in verdict.message and "> 2" in verdict.message


def test_rollback_breach_wins_over_pause_breach() -> None:
    checks: tuple[CheckStatus, ...] = ()
    for seconds in (0, 60):
        checks, verdict = assess(
            ANALYSIS,
            checks,
            {**OK, "errors": Sample(0.5), "latency": Sample(9.0)},
            T0 + timedelta(seconds=seconds),
        )
    assert (verdict.check, verdict.action) == ("errors", "rollback")


def test_breach_wins_over_unavailable() -> None:
    _, verdict = assess(
        ANALYSIS, (), {**OK, "errors": Sample.unavailable("x"), "latency": Sample(9.0)}, T0
    )
    assert verdict.kind == "breach"


def test_infinite_value_breaches_and_is_reported_in_the_message() -> None:
    checks, verdict = assess(ANALYSIS, (), {**OK, "latency": Sample(float("inf"))}, T0)
    assert verdict.kind == "breach"
    assert checks[1].value is None and checks[1].message == "value +Inf"


def test_events_for_state_changes_only() -> None:
    first, _ = assess(ANALYSIS, (), OK, T0)
    second, _ = assess(ANALYSIS, first, {**OK, "latency": Sample(9.0)}, T0 + timedelta(seconds=15))
    assert check_events(first, first) == []
    events = check_events(first, second)
    assert len(events) == 1
    assert events[0][:2] == ("Warning", "CheckBreached")
    assert "latency" in events[0][2]
