"""Blue-green through the canary engine: preview, switch, post-promotion window, previous color."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from modelrollout.analysis.assessment import AnalysisVerdict
from modelrollout.engine.revision import revision_of
from modelrollout.engine.workloads import plan_revisions
from modelrollout.models import parse_spec
from tests.unit.operator.builders import HEALTHY, Rollout, example_spec, with_model_uri

pytestmark = pytest.mark.unit

V2 = "pvc://models/llama-3.2-3b/v1.4"


def blue_green_spec(**options: Any) -> dict[str, Any]:
    spec = example_spec()
    spec["strategy"] = {
        "blueGreen": {
            "autoPromotionAfter": "30s",
            "scaleDownDelay": "60s",
            "postPromotionAnalysis": {"duration": "60s"},
            **options,
        }
    }
    return spec


def started(spec: dict[str, Any]) -> Rollout:
    rollout = Rollout.of(spec)
    rollout.tick()
    rollout.apply(with_model_uri(spec, V2))
    return rollout


def test_preview_switch_window_then_promoted_keeping_the_previous_color() -> None:
    rollout = started(blue_green_spec())
    old = rollout.status.stable_revision
    rollout.world.canary_ready = 1  # the preview is still loading
    rollout.tick(1)
    assert rollout.status.phase == "Progressing"
    assert rollout.status.canary_revision == revision_of(rollout.spec)
    assert rollout.status.weights.canary == 0

    # autoPromotionAfter counts from the preview's readiness: one pod is not ready yet.
    for _ in range(3):
        rollout.tick(15)
    assert rollout.status.current_step == 0
    assert rollout.status.weights.canary == 0
    assert rollout.status.preview_ready_at is None
    assert "waiting for preview pods" in rollout.status.message

    rollout.world.canary_ready = 2
    rollout.tick(1)
    ready_at = rollout.now
    assert rollout.status.preview_ready_at == ready_at
    rollout.tick(29)
    assert rollout.status.current_step == 0  # 29s of the 30s since the preview was ready
    assert rollout.status.weights.canary == 0
    rollout.tick(1)
    assert (rollout.status.weights.stable, rollout.status.weights.canary) == (0, 100)
    rollout.tick(1)
    assert rollout.status.current_step == 2  # the post-promotion window

    rollout.run_until("Succeeded")
    promoted_at = rollout.now
    assert rollout.status.stable_revision == revision_of(rollout.spec)
    assert rollout.status.previous_revision == old
    assert rollout.status.previous_scale_down_at == promoted_at + timedelta(seconds=60)
    assert rollout.status.history[0].outcome == "Promoted"
    rollout.tick(61)
    assert rollout.status.previous_revision is None


def test_a_breach_in_the_post_promotion_window_switches_back_at_once() -> None:
    rollout = started(blue_green_spec())
    for _ in range(4):
        rollout.tick(15)
    assert rollout.status.weights.canary == 100
    rollout.world.analysis = AnalysisVerdict.breach(
        "error-rate", "rollback", 0.3, "check error-rate breached: value 0.3"
    )
    decision = rollout.tick(1)
    assert decision.rollback_now
    assert rollout.status.weights.canary == 0
    rollout.world.analysis = HEALTHY
    rollout.run_until("RolledBack")
    assert rollout.status.history[0].outcome == "RolledBack"


def test_no_data_on_the_preview_is_never_taken_for_healthy() -> None:
    rollout = started(blue_green_spec())
    rollout.world.analysis = AnalysisVerdict.unavailable(rollout.now, "no samples")
    rollout.tick()  # the preview is ready: autoPromotionAfter counts from here
    for _ in range(3):
        rollout.tick(15)
    assert rollout.status.weights.canary == 0
    assert rollout.status.current_step == 0
    assert "waiting for analysis" in rollout.status.message


def test_without_auto_promotion_the_preview_waits_for_promote() -> None:
    rollout = started(blue_green_spec(autoPromotionAfter=None))
    for _ in range(5):
        rollout.tick(60)
    assert (rollout.status.phase, rollout.status.weights.canary) == ("Paused", 0)
    rollout.command(promote=True)
    rollout.tick(1)
    assert rollout.status.weights.canary == 100


def test_both_colors_run_at_full_size_and_the_previous_one_stays_until_let_go() -> None:
    spec = parse_spec(blue_green_spec())
    replicas = spec.runtime.replicas
    preview = plan_revisions(
        replicas=replicas,
        stable="blue",
        canary="green",
        stable_weight=100,
        canary_weight=0,
        canary_serving=True,
        keep_aborted_canary=False,
        blue_green=True,
    )
    assert [(p.revision, p.replicas) for p in preview] == [("blue", 2), ("green", 2)]
    switched = plan_revisions(
        replicas=replicas,
        stable="blue",
        canary="green",
        stable_weight=0,
        canary_weight=100,
        canary_serving=True,
        keep_aborted_canary=False,
        blue_green=True,
    )
    assert [(p.revision, p.replicas) for p in switched] == [("blue", 2), ("green", 2)]
    promoted = plan_revisions(
        replicas=replicas,
        stable="green",
        canary=None,
        stable_weight=100,
        canary_weight=0,
        canary_serving=False,
        keep_aborted_canary=False,
        blue_green=True,
        previous="blue",
    )
    assert [(p.revision, p.role, p.replicas) for p in promoted] == [
        ("blue", "previous", 2),
        ("green", "stable", 2),
    ]
