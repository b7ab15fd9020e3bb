"""Shadow through the canary engine: mirror, judge, then promote, continue as canary, or stop."""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout.analysis.assessment import AnalysisVerdict
from modelrollout.engine.revision import revision_of
from modelrollout.models import InvalidSpecError, Weights, parse_spec
from tests.unit.operator.builders import Rollout, example_spec, with_model_uri

pytestmark = pytest.mark.unit

V2 = "pvc://models/llama-3.2-3b/v1.4"
MIRRORING = Weights(stable=100, canary=0, mirror=30)


def shadow_spec(then: str) -> dict[str, Any]:
    spec = example_spec()
    spec["traffic"]["router"] = "gatewayAPI"
    spec["strategy"] = {"shadow": {"mirrorPercent": 30, "duration": "60s", "then": then}}
    return spec


def started(then: str) -> Rollout:
    rollout = Rollout.of(shadow_spec(then))
    rollout.tick()
    rollout.apply(with_model_uri(shadow_spec(then), V2))
    rollout.tick(1)
    return rollout


def test_the_candidate_only_gets_mirrored_requests_then_is_promoted() -> None:
    rollout = started("promote")
    assert rollout.status.canary_revision == revision_of(rollout.spec)
    assert rollout.status.weights == MIRRORING
    rollout.tick(30)
    assert rollout.status.weights == MIRRORING  # judged for the whole duration
    rollout.run_until("Succeeded")
    assert rollout.status.stable_revision == revision_of(rollout.spec)
    assert rollout.status.weights == Weights(stable=100, canary=0, mirror=0)
    assert rollout.status.history[0].outcome == "Promoted"


def test_a_breaching_shadow_is_torn_down_and_its_mirror_removed() -> None:
    rollout = started("promote")
    stable = rollout.status.stable_revision
    rollout.world.analysis = AnalysisVerdict.breach(
        "latency-vs-stable", "rollback", 3.2, "check latency-vs-stable breached: value 3.2"
    )
    decision = rollout.tick(5)
    assert decision.rollback_now
    assert rollout.status.weights.mirror == 0
    rollout.run_until("RolledBack")
    assert rollout.status.stable_revision == stable


def test_then_stop_tears_a_healthy_shadow_down_and_never_promotes_it() -> None:
    rollout = started("stop")
    stable = rollout.status.stable_revision
    rollout.run_until("RolledBack")
    assert rollout.status.stable_revision == stable
    assert rollout.status.history[0].outcome == "Aborted"
    progressing = rollout.status.condition("Progressing")
    assert progressing is not None and progressing.reason == "ShadowStopped"
    assert "healthy" in progressing.message


def test_then_canary_continues_with_real_traffic_and_no_mirror() -> None:
    rollout = started("canary")
    rollout.tick(61)
    rollout.tick(1)
    assert rollout.status.weights == Weights(stable=90, canary=10, mirror=0)
    rollout.run_until("Succeeded")
    assert rollout.status.stable_revision == revision_of(rollout.spec)


def test_no_data_from_the_mirror_is_never_taken_for_healthy() -> None:
    rollout = started("promote")
    rollout.world.analysis = AnalysisVerdict.unavailable(rollout.now, "no samples")
    for _ in range(3):
        rollout.tick(15)
    assert rollout.status.phase == "Progressing"
    assert rollout.status.weights == MIRRORING
    # whenMetricsUnavailable (pause after 60s) then takes over; still never promoted.
    rollout.tick(15)
    assert (rollout.status.phase, rollout.status.pause_reason) == ("Paused", "MetricsUnavailable")


def test_then_canary_runs_the_canary_steps_the_spec_gives() -> None:
    spec = shadow_spec("canary")
    spec["strategy"]["shadow"]["canarySteps"] = [
        {"setWeight": 25},
        {"pause": {"duration": "2m"}},
        {"setWeight": 75},
        {"analysis": {"duration": "1m"}},
    ]
    rollout = Rollout.of(spec)
    rollout.tick()
    rollout.apply(with_model_uri(spec, V2))
    rollout.tick(1)
    rollout.tick(61)
    rollout.tick(1)
    assert rollout.status.weights == Weights(stable=75, canary=25, mirror=0)
    rollout.tick(60)
    assert rollout.status.weights.canary == 25  # the 2m pause holds it
    rollout.tick(61)
    rollout.tick(1)
    assert rollout.status.weights == Weights(stable=25, canary=75, mirror=0)
    rollout.run_until("Succeeded")
    assert rollout.status.stable_revision == revision_of(rollout.spec)


@pytest.mark.parametrize(
    ("then", "steps", "field", "message"),
    [
        (
            "promote",
            [{"setWeight": 50}],
            "spec.strategy.shadow.canarySteps",
            "only for then: canary",
        ),
        ("canary", [], "spec.strategy.shadow.canarySteps", "at least 1"),
        (
            "canary",
            [{"setWeight": 50, "pause": {}}],
            "spec.strategy.shadow.canarySteps[0]",
            "exactly one of setWeight, pause, analysis, evaluation",
        ),
        (
            "canary",
            [{"evaluation": {"suite": {"configMapName": "gates"}, "timeout": "0s"}}],
            "spec.strategy.shadow.canarySteps[0].evaluation.timeout",
            "at least 1s",
        ),
    ],
)
def test_canary_steps_are_validated_like_a_canarys(
    then: str, steps: list[dict[str, Any]], field: str, message: str
) -> None:
    spec = shadow_spec(then)
    spec["strategy"]["shadow"]["canarySteps"] = steps
    with pytest.raises(InvalidSpecError) as error:
        parse_spec(spec)
    assert error.value.field_path == field
    assert message in error.value.message


def test_the_shadows_duration_counts_from_when_it_serves_not_while_its_model_loads() -> None:
    rollout = Rollout.of(shadow_spec("promote"))
    rollout.tick()
    rollout.world.canary_ready = 0  # the candidate's model is still loading
    rollout.apply(with_model_uri(shadow_spec("promote"), V2))
    rollout.tick(1)
    rollout.tick(90)  # longer than the 60 s duration: none of it counts
    assert rollout.status.phase == "Progressing"
    assert "waiting for canary pods to be ready" in rollout.status.message
    rollout.world.canary_ready = 1
    rollout.tick(1)
    rollout.tick(59)
    assert rollout.status.phase == "Progressing"
    assert rollout.status.weights == MIRRORING  # judged for a whole duration of serving
    rollout.tick(2)
    rollout.tick(1)
    assert rollout.status.phase == "Succeeded", rollout.status.message
