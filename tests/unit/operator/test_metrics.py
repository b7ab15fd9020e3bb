"""The operator's metrics follow what a tick decided, and go with a deleted rollout."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest

from modelrollout.metrics import OperatorMetrics
from modelrollout.models import ModelRolloutStatus
from modelrollout.models.status import CheckStatus

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_a_tick_sets_phase_and_weight_and_counts_steps_and_evaluations() -> None:
    metrics = OperatorMetrics()
    before = ModelRolloutStatus.model_validate({"phase": "Progressing"})
    after = ModelRolloutStatus.model_validate(
        {"phase": "Progressing", "weights": {"stable": 75, "canary": 25}}
    ).with_checks((CheckStatus(name="errors", state="Passing", last_evaluated=NOW),))
    metrics.observe_tick("ml", "chat", before, after, [("Normal", "StepStarted", "step 2/4")])
    # The same evaluation seen again (no new lastEvaluated) is not counted twice.
    metrics.observe_tick("ml", "chat", after, after, [])
    registry = metrics.registry
    labels = {"namespace": "ml", "rollout": "chat"}
    assert (
        registry.get_sample_value("modelrollout_rollout_phase", {**labels, "phase": "Progressing"})
        == 1
    )
    assert (
        registry.get_sample_value("modelrollout_rollout_phase", {**labels, "phase": "Paused"}) == 0
    )
    assert registry.get_sample_value("modelrollout_rollout_canary_weight", labels) == 25
    assert registry.get_sample_value("modelrollout_step_transitions_total", labels) == 1
    evaluations = {**labels, "check": "errors", "state": "Passing"}
    assert registry.get_sample_value("modelrollout_check_evaluations_total", evaluations) == 1


def test_forgetting_a_rollout_removes_its_series_only() -> None:
    metrics = OperatorMetrics()
    status = ModelRolloutStatus.model_validate({"phase": "Succeeded"})
    metrics.observe_tick("ml", "chat", status, status, [])
    metrics.observe_tick("ml", "other", status, status, [])
    metrics.forget("ml", "chat")
    text = generate_latest(metrics.registry).decode()
    assert 'rollout="chat"' not in text
    assert 'rollout="other"' in text


def test_phase_and_weight_follow_each_change_and_come_back_after_forget() -> None:
    metrics = OperatorMetrics()
    labels = {"namespace": "ml", "rollout": "chat"}
    progressing = ModelRolloutStatus.model_validate(
        {"phase": "Progressing", "weights": {"stable": 80, "canary": 20}}
    )
    paused = progressing.model_copy(update={"phase": "Paused"})
    for status in (progressing, progressing, paused, paused, progressing):
        metrics.observe_tick("ml", "chat", status, status, [])
        for phase in ("Progressing", "Paused"):
            shown = metrics.registry.get_sample_value(
                "modelrollout_rollout_phase", {**labels, "phase": phase}
            )
            assert shown == (1 if status.phase == phase else 0)
    metrics.forget("ml", "chat")
    metrics.observe_tick("ml", "chat", progressing, progressing, [])
    assert metrics.registry.get_sample_value("modelrollout_rollout_canary_weight", labels) == 20
