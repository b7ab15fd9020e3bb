"""The canary strategy walked tick by tick, as the reconciler drives it.

Each `Rollout.tick` round-trips the status through its JSON merge patch, so
every walk below also proves that all progress lives in status.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from modelrollout.analysis.assessment import AnalysisVerdict
from modelrollout.engine.revision import revision_of
from modelrollout.engine.strategies.canary import decide
from modelrollout.models import ModelRolloutStatus, parse_spec
from tests.unit.operator.builders import Rollout, example_spec, with_model_uri

pytestmark = pytest.mark.unit

V2 = "pvc://models/llama-3.2-3b/v1.4"
V3 = "pvc://models/llama-3.2-3b/v1.5"


def started(spec: dict[str, Any] | None = None) -> Rollout:
    """A rollout with a stable first revision and the spec just changed to V2."""
    base = spec or example_spec()
    rollout = Rollout.of(base)
    rollout.tick()
    rollout.apply(with_model_uri(base, V2))
    return rollout


def steps(*items: dict[str, Any]) -> dict[str, Any]:
    spec = example_spec()
    spec["strategy"]["canary"]["steps"] = list(items)
    return spec


def breach(action: str = "rollback") -> AnalysisVerdict:
    return AnalysisVerdict.breach(
        "error-rate",
        action,  # type: ignore[arg-type]
        0.2,
        "check error-rate breached: value 0.2, breachWhen '> 0.01'",
    )


def test_first_revision_becomes_stable_directly() -> None:
    rollout = Rollout.of(example_spec())
    decision = rollout.tick()
    assert rollout.status.phase == "Succeeded"
    assert rollout.status.stable_revision == revision_of(rollout.spec)
    assert rollout.status.canary_revision is None
    assert (rollout.status.weights.stable, rollout.status.weights.canary) == (100, 0)
    assert not decision.rollback_now


def test_healthy_canary_walks_every_step_to_succeeded() -> None:
    rollout = started()
    old_stable = rollout.status.stable_revision
    new = revision_of(rollout.spec)
    rollout.run_until("Succeeded")
    assert rollout.status.stable_revision == new
    assert rollout.status.canary_revision is None
    assert (rollout.status.weights.stable, rollout.status.weights.canary) == (100, 0)
    assert rollout.status.history[0].outcome == "Promoted"
    assert rollout.status.history[0].revision == new
    assert rollout.status.history[0].model == V2
    assert rollout.status.history[1].revision == old_stable

    phases = [decision.status.phase for *_, decision in rollout.trace]
    assert "Promoting" in phases
    canary_weights: list[int] = []
    for _, before, _, decision in rollout.trace:
        weight = decision.status.weights.canary
        if not canary_weights or canary_weights[-1] != weight:
            canary_weights.append(weight)
        assert not decision.rollback_now
        # The weight never exceeds what the current step allows.
        if decision.status.phase == "Progressing" and before.phase == "Progressing":
            allowed = [
                s.set_weight
                for s in rollout.spec.canary.steps[: (decision.status.current_step or 0) + 1]
                if s.set_weight is not None
            ]
            assert weight <= (allowed[-1] if allowed else 0)
    assert canary_weights == [0, 5, 25, 50, 100, 0]


def test_timed_steps_last_their_duration() -> None:
    rollout = started()
    rollout.run_until("Succeeded")
    starts = {}
    for *_, obs, decision in rollout.trace:
        step = decision.status.current_step
        if step is not None and step not in starts:
            starts[step] = obs.now
    assert starts[2] - starts[1] >= timedelta(minutes=5)
    assert starts[4] - starts[3] >= timedelta(minutes=10)


def test_idle_tick_returns_an_equal_status() -> None:
    rollout = started()
    rollout.tick()
    rollout.tick(15)
    rollout.tick(15)
    assert rollout.status.current_step == 1  # the 5m pause
    before = rollout.status
    decision = rollout.tick(60)
    assert decision.status == before
    assert decision.events == []


def test_breach_with_rollback_moves_traffic_back_then_rolls_back() -> None:
    rollout = started()
    rollout.run_until("Progressing")
    for _ in range(3):
        rollout.tick(15)
    assert rollout.status.weights.canary == 5
    rollout.world.analysis = breach()
    rollout.world.achieved_canary = 5  # the router has not moved yet
    decision = rollout.tick(15)
    assert decision.rollback_now
    assert rollout.status.phase == "RollingBack"
    assert rollout.status.weights.canary == 0
    entry = rollout.status.history[0]
    assert entry.outcome == "RolledBack"
    assert "error-rate" in entry.reason and "0.2" in entry.reason
    assert rollout.status.condition("Progressing").reason == "CheckBreached"  # type: ignore[union-attr]
    # Still routed to the canary: not RolledBack yet.
    rollout.tick(1)
    assert rollout.status.phase == "RollingBack"
    rollout.world.achieved_canary = 0
    rollout.tick(1)
    assert rollout.status.phase == "RolledBack"
    assert "error-rate" in rollout.status.message
    # Stays rolled back while the spec still names the bad revision.
    rollout.world.analysis = AnalysisVerdict.healthy()
    assert rollout.tick(600).status.phase == "RolledBack"


def test_breach_with_pause_pauses_naming_the_check() -> None:
    rollout = started()
    rollout.tick()
    rollout.tick(15)
    rollout.world.analysis = breach("pause")
    decision = rollout.tick(15)
    assert not decision.rollback_now
    assert rollout.status.phase == "Paused"
    paused = rollout.status.condition("Paused")
    assert paused is not None and paused.status == "True" and paused.reason == "CheckBreached"
    assert "error-rate" in paused.message
    assert rollout.tick(3600).status.phase == "Paused"


def test_pause_without_duration_waits_for_promote() -> None:
    rollout = started(steps({"setWeight": 10}, {"pause": {}}, {"setWeight": 50}))
    rollout.run_until("Paused")
    assert rollout.status.current_step == 1
    assert rollout.status.pause_reason == "PauseStep"
    for _ in range(10):
        assert rollout.tick(3600).status.phase == "Paused"
    assert rollout.status.weights.canary == 10
    rollout.command(promote=True)
    assert rollout.status.phase == "Progressing"
    assert rollout.status.current_step == 2
    rollout.run_until("Succeeded")


def test_metrics_unavailable_never_advances_then_pauses() -> None:
    spec = steps({"setWeight": 10}, {"analysis": {"duration": "1m"}}, {"setWeight": 50})
    spec["analysis"]["whenMetricsUnavailable"] = {"action": "pause", "after": "2m"}
    rollout = started(spec)
    rollout.tick()
    rollout.tick(15)
    rollout.tick(15)
    assert rollout.status.current_step == 1
    rollout.world.analysis = AnalysisVerdict.unavailable(rollout.now, "no data for check x")
    rollout.tick(45)
    # The analysis step's minute is up, but there is no data: it holds.
    rollout.tick(30)
    assert (rollout.status.phase, rollout.status.current_step) == ("Progressing", 1)
    unavailable = rollout.status.condition("MetricsUnavailable")
    assert unavailable is not None and unavailable.status == "True"
    assert rollout.status.weights.canary == 10
    rollout.tick(30)
    assert rollout.status.phase == "Progressing"
    rollout.tick(30)  # 135s without data > after: 2m
    assert rollout.status.phase == "Paused"
    assert rollout.status.pause_reason == "MetricsUnavailable"


def test_metrics_unavailable_with_rollback_policy_rolls_back() -> None:
    spec = steps({"setWeight": 10}, {"analysis": {"duration": "10m"}})
    spec["analysis"]["whenMetricsUnavailable"] = {"action": "rollback", "after": "2m"}
    rollout = started(spec)
    rollout.tick()
    rollout.tick(15)
    rollout.world.analysis = AnalysisVerdict.unavailable(rollout.now, "prometheus down")
    rollout.tick(60)
    assert rollout.status.phase == "Progressing"
    decision = rollout.tick(60)
    assert decision.rollback_now
    assert rollout.status.phase == "RollingBack"
    assert rollout.status.condition("Progressing").reason == "MetricsUnavailable"  # type: ignore[union-attr]


def test_weight_is_not_raised_on_pending_analysis() -> None:
    rollout = started(steps({"setWeight": 10}, {"setWeight": 50}))
    rollout.tick()
    rollout.tick(15)
    rollout.tick(15)
    assert (rollout.status.current_step, rollout.status.weights.canary) == (1, 10)
    rollout.world.analysis = AnalysisVerdict.pending("waiting for checks: error-rate")
    for _ in range(5):
        rollout.tick(15)
    assert rollout.status.weights.canary == 10
    assert "waiting for checks" in rollout.status.message
    rollout.world.analysis = AnalysisVerdict.healthy()
    rollout.tick(15)
    assert rollout.status.weights.canary == 50


def test_no_traffic_before_the_canary_is_ready_then_progress_deadline() -> None:
    rollout = started()
    rollout.world.canary_ready = 0
    rollout.world.unschedulable = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    rollout.tick()
    for _ in range(10):
        rollout.tick(60)
    assert rollout.status.phase == "Progressing"
    assert rollout.status.weights.canary == 0
    unschedulable = rollout.status.condition("Unschedulable")
    assert unschedulable is not None and "Insufficient nvidia.com/gpu" in unschedulable.message
    assert "Insufficient nvidia.com/gpu" in rollout.status.message
    decision = rollout.tick(600)  # 20m after the canary started
    assert decision.rollback_now
    assert rollout.status.phase == "RollingBack"
    progressing = rollout.status.condition("Progressing")
    assert progressing is not None and progressing.reason == "ProgressDeadlineExceeded"
    assert "Insufficient nvidia.com/gpu" in progressing.message
    rollout.tick(1)
    assert rollout.status.phase == "RolledBack"


def test_router_must_achieve_the_weight_before_the_step_completes() -> None:
    rollout = started()
    rollout.world.achieved_canary = 0
    rollout.tick()
    rollout.tick(15)
    assert rollout.status.weights.canary == 5
    for _ in range(5):
        rollout.tick(15)
    assert rollout.status.current_step == 0
    assert "0% achieved" in rollout.status.message
    rollout.world.achieved_canary = 5
    rollout.tick(15)
    assert rollout.status.current_step == 1


def test_gateway_api_steps_complete_without_waiting_for_the_router() -> None:
    spec = example_spec()
    spec["traffic"]["router"] = "gatewayAPI"
    rollout = started(spec)
    rollout.world.achieved_canary = 0
    rollout.tick()
    rollout.tick(15)
    rollout.tick(15)
    assert rollout.status.current_step == 1


def test_new_spec_mid_rollout_supersedes_the_canary_and_starts_over() -> None:
    rollout = started()
    stable = rollout.status.stable_revision
    for _ in range(4):
        rollout.tick(15)
    first_canary = rollout.status.canary_revision
    assert rollout.status.weights.canary == 5
    rollout.apply(with_model_uri(example_spec(), V3))
    decision = rollout.tick(15)
    assert decision.rollback_now
    assert rollout.status.history[0].outcome == "Superseded"
    assert rollout.status.history[0].revision == first_canary
    assert rollout.status.stable_revision == stable
    assert rollout.status.canary_revision == revision_of(rollout.spec) != first_canary
    assert (rollout.status.phase, rollout.status.current_step) == ("Progressing", 0)
    assert rollout.status.weights.canary == 0
    rollout.run_until("Succeeded")
    assert rollout.status.stable_revision == revision_of(rollout.spec)


def test_spec_reverted_to_stable_aborts_the_canary() -> None:
    rollout = started()
    stable = rollout.status.stable_revision
    for _ in range(3):
        rollout.tick(15)
    rollout.apply(example_spec())
    decision = rollout.tick(15)
    assert decision.rollback_now
    assert rollout.status.phase == "Succeeded"
    assert rollout.status.stable_revision == stable
    assert rollout.status.canary_revision is None
    assert rollout.status.weights.canary == 0
    assert (rollout.status.history[0].outcome, rollout.status.history[0].reason) == (
        "Aborted",
        "spec reverted to stable",
    )


def test_abort_then_retry_restarts_the_same_canary_from_step_one() -> None:
    rollout = started()
    for _ in range(4):
        rollout.tick(15)
    canary = rollout.status.canary_revision
    decision = rollout.command(abort=True)
    assert decision.rollback_now
    assert rollout.status.phase == "RollingBack"
    assert rollout.status.history[0].outcome == "Aborted"
    rollout.tick(1)
    assert rollout.status.phase == "RolledBack"
    assert rollout.status.condition("Progressing").reason == "Aborted"  # type: ignore[union-attr]
    rollout.command(retry=True)
    assert (rollout.status.phase, rollout.status.current_step) == ("Progressing", 0)
    assert rollout.status.canary_revision == canary
    rollout.run_until("Succeeded")


def test_user_pause_does_not_count_towards_a_timed_step() -> None:
    rollout = started()
    rollout.tick()
    rollout.tick(15)
    rollout.tick(15)
    assert rollout.status.current_step == 1  # pause 5m
    rollout.tick(60)
    rollout.command(pause=True)
    assert (rollout.status.phase, rollout.status.pause_reason) == ("Paused", "UserPaused")
    rollout.tick(3600)
    rollout.command(resume=True)
    assert rollout.status.phase == "Progressing"
    rollout.tick(200)  # 260s of the 300s pause step have run
    assert rollout.status.current_step == 1
    rollout.tick(45)
    assert rollout.status.current_step == 2


def test_promote_full_skips_every_step() -> None:
    rollout = started()
    rollout.tick()
    rollout.tick(15)
    rollout.command(promote_full=True)
    assert rollout.status.phase == "Promoting"
    assert rollout.status.weights.canary == 100
    rollout.tick(1)
    assert rollout.status.phase == "Succeeded"
    assert rollout.status.history[0].outcome == "Promoted"


def test_the_promotion_tick_reports_the_new_stable_available_though_the_old_is_gone() -> None:
    """While Promoting, stable has no weight and no pods; the tick that promotes must not
    say "no stable pod is ready" (Argo CD would show the rollout Degraded)."""
    rollout = started()
    rollout.tick()
    rollout.command(promote_full=True)
    assert rollout.status.phase == "Promoting"
    rollout.world.stable_ready = 0
    rollout.tick(1)
    assert rollout.status.phase == "Succeeded"
    available = rollout.status.condition("Available")
    assert available is not None and available.status == "True", available
    assert available.message == "2/2 stable pods ready"


def test_a_valid_spec_clears_invalid_spec() -> None:
    rollout = Rollout.of(example_spec())
    rollout.tick()
    rollout.status = rollout.status.with_invalid_spec("spec.x: bad", 2, rollout.now)
    rollout.tick(15)
    invalid = rollout.status.condition("InvalidSpec")
    assert invalid is not None and invalid.status == "False"
    assert rollout.status.message == ""


def _walks() -> list[Rollout]:
    healthy = started()
    healthy.run_until("Succeeded")
    broken = started()
    for _ in range(6):
        broken.tick(15)
    broken.world.analysis = breach()
    broken.run_until("RolledBack")
    stuck = started()
    stuck.world.canary_ready = 0
    stuck.run_until("RolledBack", every=120)
    return [healthy, broken, stuck]


@pytest.mark.parametrize("walk", _walks(), ids=["healthy", "breach", "deadline"])
def test_restart_at_any_tick_gives_the_same_decision(walk: Rollout) -> None:
    """An operator restarted before tick n reads status n from the API and decides the same."""
    for spec, status, obs, decision in walk.trace:
        reread = ModelRolloutStatus.model_validate(status.to_patch())
        again = decide(parse_spec(spec.model_dump(by_alias=True)), reread, obs)
        assert again.status == decision.status
        assert again.events == decision.events
        assert again.rollback_now == decision.rollback_now


@pytest.mark.parametrize("walk", _walks(), ids=["healthy", "breach", "deadline"])
def test_a_repeated_tick_never_moves_further(walk: Rollout) -> None:
    """Killed after writing status n+1 but before acting: the same world must not skip a step."""
    for spec, _, obs, decision in walk.trace:
        again = decide(spec, decision.status, obs)
        if decision.status.phase == again.status.phase == "Progressing":
            assert (again.status.current_step or 0) <= (decision.status.current_step or 0) + 1
        if decision.status.phase in ("RollingBack", "RolledBack", "Succeeded"):
            # Nothing is recorded or rolled back twice.
            assert again.status.history == decision.status.history
            assert not again.rollback_now


def test_history_keeps_each_revision_spec_as_written_for_undo() -> None:
    rollout = started()
    first = rollout.status.history[0]
    assert first.spec is not None
    assert first.spec["model"] == example_spec()["model"]
    # Written as the user wrote it, defaults left out, so it hashes to the same revision.
    assert "port" not in first.spec["runtime"]
    assert revision_of(parse_spec({**example_spec(), **first.spec})) == first.revision
    rollout.run_until("Succeeded")
    promoted = rollout.status.history[0]
    assert promoted.spec is not None
    assert promoted.spec["model"]["uri"] == V2
    assert ModelRolloutStatus.model_validate(rollout.status.to_patch()) == rollout.status


def test_a_superseded_canary_has_no_spec_in_history_the_operator_no_longer_knows_it() -> None:
    rollout = started()
    rollout.tick(15)
    rollout.apply(with_model_uri(example_spec(), V3))
    rollout.tick(15)
    assert rollout.status.history[0].outcome == "Superseded"
    assert rollout.status.history[0].spec is None
    assert "spec" not in rollout.status.to_patch()["history"][0]


def test_no_room_for_the_new_revision_creates_no_canary_and_waits_naming_the_shortfall() -> None:
    rollout = started()
    stable = rollout.status.stable_revision
    shortfall = "capacity surge: the new revision needs room for 2 pods x 1 nvidia.com/gpu"
    rollout.world.capacity_shortfall = shortfall
    decision = rollout.tick(15)
    status = rollout.status
    assert (status.phase, status.canary_revision, status.stable_revision) == (
        "Pending",
        None,
        stable,
    )
    assert (status.weights.stable, status.weights.canary) == (100, 0)
    condition = status.condition("InsufficientGPUCapacity")
    assert condition is not None and (condition.status, condition.message) == ("True", shortfall)
    assert shortfall in status.message
    assert [reason for _, reason, _ in decision.events] == ["InsufficientGPUCapacity"]

    # Still no room: nothing changes, nothing is said again.
    before = rollout.status
    decision = rollout.tick(15)
    assert rollout.status == before and decision.events == []

    # Room again: the canary starts and the condition turns False.
    rollout.world.capacity_shortfall = None
    rollout.tick(15)
    assert rollout.status.phase == "Progressing"
    assert rollout.status.canary_revision == revision_of(rollout.spec)
    condition = rollout.status.condition("InsufficientGPUCapacity")
    assert condition is not None and condition.status == "False"


def test_spec_reverted_while_waiting_for_capacity_is_simply_stable_again() -> None:
    rollout = started()
    rollout.world.capacity_shortfall = "no room"
    rollout.tick(15)
    rollout.apply(example_spec())
    rollout.tick(15)
    assert rollout.status.phase == "Succeeded"
    condition = rollout.status.condition("InsufficientGPUCapacity")
    assert condition is not None and condition.status == "False"
    progressing = rollout.status.condition("Progressing")
    assert progressing is not None and progressing.reason == "SpecReverted"


def test_only_the_newest_history_entries_keep_their_spec() -> None:
    spec = example_spec()
    spec["revisionHistoryLimit"] = 20
    rollout = Rollout.of(spec)
    rollout.tick()
    for index in range(8):
        rollout.apply({**spec, "model": {"name": "chat", "uri": f"pvc://models/chat/v{index}"}})
        rollout.command(promote_full=True)
        rollout.run_until("Succeeded")
    history = rollout.status.history
    assert len(history) == 9
    assert [entry.spec is not None for entry in history] == [True] * 5 + [False] * 4


def test_the_weight_after_a_timed_step_is_set_in_the_same_tick() -> None:
    rollout = started(steps({"setWeight": 10}, {"pause": {"duration": "30s"}}, {"setWeight": 40}))
    rollout.tick()
    rollout.tick(15)
    rollout.tick(15)
    assert (rollout.status.current_step, rollout.status.weights.canary) == (1, 10)
    decision = rollout.tick(31)
    # One status write: the pause is done, step 3 has started and set its weight.
    assert (rollout.status.current_step, rollout.status.weights.canary) == (2, 40)
    # One Event too: StepStarted names the weight ("step 3/3 setWeight 40").
    assert [(reason, message) for _, reason, message in decision.events] == [
        ("StepStarted", "step 3/3 setWeight 40")
    ]
