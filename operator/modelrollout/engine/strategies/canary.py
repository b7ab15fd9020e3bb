"""The canary strategy as a pure function: (spec, status, observations) -> Decision.

Phases: a first revision becomes stable directly (Succeeded). A new revision
starts a canary (Progressing) that walks `strategy.canary.steps`; after the
last step it is Promoting (all traffic on the canary) and then Succeeded
with the canary as the new stable. Behind a router with exact weights, a
weight step is done in the tick that sets its weight, and a canary that
already runs all its pods Ready is promoted in the tick that ends its steps:
one status write per step. Rollback (a breach, the progress
deadline, metrics missing for too long, or the user's abort) is RollingBack
(weight 0 first, `rollback_now`) and then RolledBack once the router reports
the canary at 0. A newer spec supersedes a running canary; a spec reverted
to the stable revision aborts it. With a rollback window (or blue-green's
scaleDownDelay) a promotion keeps the previous stable warm; the user's
rollback within it makes that revision stable again and the promoted one a
rolled-back canary, in one router write; a new spec releases it.

No data is not success: a timed step (pause with duration, analysis) and a
raise of a weight that is already above 0 wait for a healthy verdict. A
canary at weight 0 has no traffic, hence no data, and is not held for it.
Likewise an evaluation step (quality gates, engine/evaluation.py) completes
only on a pass: a failed gate rolls back, a Job that could not judge pauses.

Everything the next tick needs is in the returned status; a tick with
nothing to do returns a status equal to its input (so nothing is written),
which is why `now` is only stored when something changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from modelrollout.analysis.assessment import AnalysisVerdict, pending_checks
from modelrollout.analysis.runner import awaits_traffic
from modelrollout.engine.model_record import fold_records
from modelrollout.engine.redaction import redacted_spec
from modelrollout.engine.strategies.bluegreen import (
    is_blue_green,
    steps_strategy,
    timed_step_started,
    waits_for_ready_preview,
)
from modelrollout.engine.strategies.experiment import judge, summary
from modelrollout.engine.strategies.types import Decision, Event, Observations
from modelrollout.models.durations import parse_duration
from modelrollout.models.experiment import segment_reaches_canary
from modelrollout.models.spec import (
    CanaryStep,
    CanaryStrategy,
    ExperimentStep,
    ModelRolloutSpec,
    ShadowStrategy,
)
from modelrollout.models.status import (
    ConditionType,
    HistoryEntry,
    ModelRolloutStatus,
    Outcome,
    Weights,
)
from modelrollout.traffic.base import Capability

ALL_ON_STABLE = Weights(stable=100, canary=0)
# Each stored spec may carry up to 64 KiB of args and env: only the newest few
# keep theirs (for undo), so status stays far below etcd's 1.5 MiB object limit.
SPECS_KEPT_IN_HISTORY = 5


def _with_specs_bounded(history: tuple[HistoryEntry, ...]) -> tuple[HistoryEntry, ...]:
    kept = 0
    bounded = []
    for entry in history:
        if entry.spec is not None:
            kept += 1
            if kept > SPECS_KEPT_IN_HISTORY:
                entry = entry.model_copy(update={"spec": None})
        bounded.append(entry)
    return tuple(bounded)


def decide(spec: ModelRolloutSpec, status: ModelRolloutStatus, obs: Observations) -> Decision:
    tick = _Tick(spec, status, obs)
    tick.clear_invalid_spec()
    if status.stable_revision is None:
        tick.adopt_first_revision()
    elif status.canary_revision is None:
        tick.without_canary()
    elif status.phase == "RolledBack":
        tick.rolled_back()
    elif status.phase == "RollingBack":
        tick.rolling_back()
    elif status.phase == "Promoting":
        tick.promoting()
    else:
        tick.canary_running()
    tick.report_stable_availability()
    return Decision(fold_records(tick.status, obs.model_records), tick.events, tick.rollback_now)


def describe_step(step: CanaryStep) -> str:
    if step.set_weight is not None:
        return f"setWeight {step.set_weight}"
    if step.pause is not None:
        return f"pause {step.pause.duration}" if step.pause.duration else "pause until promoted"
    if step.analysis is not None:
        return f"analysis for {step.analysis.duration}"
    if step.experiment is not None:
        return f"experiment for {step.experiment.duration}"
    if step.evaluation is not None:
        suite = step.evaluation.suite
        return f"evaluation of quality gates ({suite.config_map_name}/{suite.key})"
    return "empty step"


def _step_label(steps: Sequence[CanaryStep], index: int) -> str:
    return f"step {index + 1}/{len(steps)} {describe_step(steps[index])}"


def _waiting_for_pods(label: str) -> str:
    return f"{label}: waiting for canary pods to be ready"


class _Tick:
    """One decision under construction: the evolving status, events, rollback flag."""

    def __init__(self, spec: ModelRolloutSpec, status: ModelRolloutStatus, obs: Observations):
        self.spec = spec
        self.obs = obs
        self.now: datetime = obs.now
        self.status = status
        self.events: list[Event] = []
        self.rollback_now = False

    # -- building blocks -------------------------------------------------

    def update(self, **changes: object) -> None:
        if any(getattr(self.status, name) != value for name, value in changes.items()):
            self.status = self.status.model_copy(update=changes)

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def condition(
        self, type_: ConditionType, status: Literal["True", "False"], reason: str, message: str
    ) -> None:
        self.status = self.status.with_condition(type_, status, reason, message, self.now)

    def clear_condition(self, type_: ConditionType, reason: str) -> None:
        self.status = self.status.without_true_condition(type_, reason, "", self.now)

    def record(self, revision: str, model: str | None, outcome: Outcome, reason: str) -> None:
        entry = HistoryEntry(
            revision=revision,
            model=model or "",
            outcome=outcome,
            at=self.now,
            reason=reason,
            spec=self.revision_spec(revision),
        )
        # Newest first; the spec's limit bounds how much status a rollout carries.
        history = (entry, *self.status.history)[: max(self.spec.revision_history_limit, 1)]
        self.update(history=_with_specs_bounded(history))

    def revision_spec(self, revision: str) -> dict[str, Any] | None:
        """`model` and `runtime` of a revision as the user wrote them (for undo), if known;
        literal env values only as their hashes (engine/redaction.py).

        Only the current spec or an earlier history entry can tell: a canary
        superseded by a newer spec no longer has its spec anywhere else.
        """
        if revision == self.obs.spec_revision:
            # Literal env values (tokens, say) go in as hashes: status is read more widely.
            return redacted_spec(
                {
                    "model": self.spec.model.model_dump(
                        mode="json", by_alias=True, exclude_defaults=True
                    ),
                    "runtime": self.spec.runtime.model_dump(
                        mode="json", by_alias=True, exclude_defaults=True
                    ),
                }
            )
        return next(
            (e.spec for e in self.status.history if e.revision == revision and e.spec), None
        )

    @property
    def strategy(self) -> CanaryStrategy:
        return steps_strategy(self.spec)

    @property
    def shadow(self) -> ShadowStrategy | None:
        return self.spec.strategy.shadow

    @property
    def blue_green(self) -> bool:
        return is_blue_green(self.spec)

    @property
    def gate_open(self) -> bool:
        """Whether analysis lets the rollout move forward now.

        A canary at weight 0 has no traffic, hence no data, and is not held for
        it; a blue-green preview always is (see bluegreen.py).
        """
        if self.obs.analysis.kind == "healthy":
            return True
        weights = self.status.weights
        return (
            weights.canary == 0
            and weights.mirror == 0
            and not self.blue_green
            # An experiment's segment reaches the canary at weight 0 too.
            and not segment_reaches_canary(self.spec, self.status)
        )

    # -- phases ------------------------------------------------------------

    def clear_invalid_spec(self) -> None:
        invalid = self.status.condition("InvalidSpec")
        if invalid is not None and invalid.status == "True":
            self.clear_condition("InvalidSpec", "SpecValid")
            self.update(message="")

    def adopt_first_revision(self) -> None:
        revision = self.obs.spec_revision
        self.update(
            phase="Succeeded",
            stable_revision=revision,
            stable_model=self.spec.model.uri,
            weights=ALL_ON_STABLE,
            message=f"revision {revision} ({self.spec.model.uri}) is stable",
        )
        self.record(revision, self.spec.model.uri, "Promoted", "first revision")
        self.condition("Progressing", "False", "RolloutComplete", f"revision {revision} is stable")
        self.event("Normal", "StableRevision", f"first revision {revision} is stable")

    def without_canary(self) -> None:
        until = self.status.previous_scale_down_at
        if until is not None and self.now >= until:
            self.release_previous()
        if self.obs.commands.rollback and self.status.previous_revision is not None:
            self.roll_back_to_previous()
            return
        revision = self.obs.spec_revision
        if revision == self.status.stable_revision:
            if self.status.phase == "Pending":  # a new revision was waiting for capacity
                message = f"spec is back on stable revision {revision}"
                self.update(message=message)
                self.condition("Progressing", "False", "SpecReverted", message)
                self.clear_condition("InsufficientGPUCapacity", "SpecReverted")
            self.update(phase="Succeeded", weights=ALL_ON_STABLE)
            return
        self.start_canary()

    def release_previous(self) -> None:
        """The revision kept warm goes: its pods scale down, its rollback window is over."""
        self.update(previous_revision=None, previous_model=None, previous_scale_down_at=None)

    def roll_back_to_previous(self) -> None:
        """All traffic back to the revision the last promotion kept warm, in one router write.

        The promoted revision becomes a rolled-back canary (RollingBack, then RolledBack
        once the router reports it at 0), exactly as if its canary had been aborted:
        the spec still names it, so the rollout holds until the spec changes or a retry.
        A kept revision without a Ready pod cannot take the traffic: the command is
        refused with a Warning Event instead.
        """
        previous = self.status.previous_revision or ""
        kept = self.obs.previous
        if kept is None or kept.ready_replicas == 0:
            ready = f"{kept.ready_replicas}/{kept.desired_replicas}" if kept else "no Deployment"
            self.event(
                "Warning",
                "RollbackRefused",
                f"revision {previous} kept for rollback has no Ready pod ({ready}): "
                "traffic stays on stable",
            )
            return
        demoted, demoted_model = self.status.stable_revision or "", self.status.stable_model
        why = f"rolled back by user to revision {previous} within the rollback window"
        self.record(demoted, demoted_model, "RolledBack", why)
        self.rollback_now = True
        self.update(
            phase="RollingBack",
            stable_revision=previous,
            stable_model=self.status.previous_model,
            canary_revision=demoted,
            canary_model=demoted_model,
            current_step=None,
            step_started_at=None,
            paused_at=None,
            pause_reason=None,
            canary_unready_since=None,
            preview_ready_at=None,
            aborted_at=self.now,
            weights=ALL_ON_STABLE,
            checks=(),
            message=f"rolling back {demoted}: {why}",
        )
        self.release_previous()
        self.condition("Progressing", "False", "RolledBackInWindow", why)
        self.event("Warning", "RollingBack", f"revision {demoted}: {why}")

    def start_canary(self) -> None:
        # A new rollout ends the rollback window: the kept revision's GPUs may be what the
        # new canary needs, and "back" past a newer canary would be ambiguous.
        self.release_previous()
        strategy = self.strategy
        revision = self.obs.spec_revision
        if self.obs.capacity_shortfall is not None:
            self.wait_for_capacity(revision, self.obs.capacity_shortfall)
            return
        first = strategy.steps[0]
        message = (
            f"rolling out {revision} ({self.spec.model.uri}): {_step_label(strategy.steps, 0)}"
        )
        self.update(
            phase="Progressing",
            canary_revision=revision,
            canary_model=self.spec.model.uri,
            current_step=0,
            step_started_at=self.now,
            paused_at=None,
            pause_reason=None,
            canary_unready_since=self.now,
            preview_ready_at=None,
            aborted_at=None,
            # A shadow starts mirroring at once: the mirror's answers are never seen.
            weights=Weights(stable=100, canary=0, mirror=self.shadow.mirror_percent)
            if self.shadow is not None
            else ALL_ON_STABLE,
            checks=(),
            experiment=None,
            message=message,
        )
        self.condition("Progressing", "True", "CanaryStarted", message)
        cleared: tuple[ConditionType, ...] = (
            "Paused",
            "MetricsUnavailable",
            "Unschedulable",
            "InsufficientGPUCapacity",
        )
        for condition in cleared:
            self.clear_condition(condition, "CanaryStarted")
        self.event("Normal", "CanaryStarted", message)
        # What the next tick would write about a first weight step whose pods do not exist
        # yet (its checks Pending, "waiting for canary pods") goes in this tick's status
        # write: one status write for the start, not two.
        if awaits_traffic(self.spec, self.status):
            self.update(checks=pending_checks(self.spec.analysis))
        has_pods = self.obs.canary is not None and self.obs.canary.revision == revision
        if first.set_weight is not None and not has_pods:
            self.update(message=_waiting_for_pods(_step_label(strategy.steps, 0)))

    def wait_for_capacity(self, revision: str, shortfall: str) -> None:
        """No pods for a revision the cluster cannot place: say so, re-check every tick."""
        message = f"revision {revision} waits for GPU capacity: {shortfall}"
        current = self.status.condition("InsufficientGPUCapacity")
        if current is None or current.status != "True" or current.message != shortfall:
            self.event("Warning", "InsufficientGPUCapacity", message)
        self.end_canary("Pending", message)
        self.condition("InsufficientGPUCapacity", "True", "InsufficientGPUCapacity", shortfall)
        self.condition("Progressing", "True", "WaitingForCapacity", message)

    def end_canary(self, phase: Literal["Succeeded", "Pending"], message: str) -> None:
        self.update(
            phase=phase,
            canary_revision=None,
            canary_model=None,
            current_step=None,
            step_started_at=None,
            paused_at=None,
            pause_reason=None,
            canary_unready_since=None,
            preview_ready_at=None,
            weights=ALL_ON_STABLE,
            message=message,
        )

    def abort_for_spec_change(self, outcome: Outcome, reason: str) -> None:
        canary = self.status.canary_revision or ""
        self.record(canary, self.status.canary_model, outcome, reason)
        self.rollback_now = True
        self.update(aborted_at=self.now)
        self.event("Warning", outcome, f"canary {canary}: {reason}")

    def roll_back(self, outcome: Outcome, reason: str, message: str) -> None:
        canary = self.status.canary_revision or ""
        self.record(canary, self.status.canary_model, outcome, message)
        self.rollback_now = True
        self.update(
            phase="RollingBack",
            weights=ALL_ON_STABLE,
            aborted_at=self.now,
            paused_at=None,
            pause_reason=None,
            message=f"rolling back {canary}: {message}",
        )
        self.condition("Progressing", "False", reason, message)
        self.clear_condition("Paused", reason)
        self.event("Warning", "RollingBack", f"canary {canary}: {message}")

    def rolling_back(self) -> None:
        if self.obs.achieved_weights[1] != 0:
            return
        canary = self.status.canary_revision
        progressing = self.status.condition("Progressing")
        why = progressing.message if progressing is not None else "rolled back"
        self.update(phase="RolledBack", message=f"rolled back {canary}: {why}")
        self.event("Warning", "RolledBack", f"canary {canary} has no traffic: {why}")

    def rolled_back(self) -> None:
        revision = self.obs.spec_revision
        if revision == self.status.stable_revision:
            self.end_canary("Succeeded", f"spec is back on stable revision {revision}")
            self.condition("Progressing", "False", "SpecReverted", self.status.message)
        elif revision != self.status.canary_revision or self.obs.commands.retry:
            if self.obs.commands.retry and revision == self.status.canary_revision:
                self.event("Normal", "Retry", f"retrying canary {revision} from step 1")
            self.start_canary()

    def promoting(self) -> None:
        achieved = self.obs.achieved_weights[1]
        if achieved != 100 and not self.exact_weights:
            self.update(
                message=f"promoting {self.status.canary_revision}: "
                f"waiting for the router to send it all traffic (now {achieved}%)"
            )
            return
        canary = self.status.canary_revision or ""
        self.record(canary, self.status.canary_model, "Promoted", "all steps completed")
        kept_for = self.previous_kept_for()
        kept = ""
        if kept_for is not None:
            # The previous revision stays up for a while: switching back is one write.
            until = self.now + timedelta(seconds=parse_duration(kept_for))
            self.update(
                previous_revision=self.status.stable_revision,
                previous_model=self.status.stable_model,
                previous_scale_down_at=until,
            )
            kept = f"; {self.status.stable_revision} kept warm for rollback until {until:%H:%M:%S}"
        self.update(stable_revision=canary, stable_model=self.status.canary_model)
        message = f"revision {canary} ({self.status.canary_model}) is stable{kept}"
        self.end_canary("Succeeded", message)
        self.condition("Progressing", "False", "RolloutComplete", message)
        self.event("Normal", "Promoted", message)

    def previous_kept_for(self) -> str | None:
        """How long a promotion keeps the previous revision warm: blue-green's scaleDownDelay,
        a canary's rollbackWindow; None: it goes at once."""
        if self.spec.strategy.blue_green is not None:
            return self.spec.strategy.blue_green.scale_down_delay
        window = self.spec.strategy.canary.rollback_window if self.spec.strategy.canary else None
        return window.duration if window is not None else None

    def canary_running(self) -> None:
        revision = self.obs.spec_revision
        if revision == self.status.stable_revision:
            self.abort_for_spec_change("Aborted", "spec reverted to stable")
            self.end_canary("Succeeded", f"spec reverted to stable revision {revision}")
            self.condition("Progressing", "False", "SpecReverted", self.status.message)
            self.clear_condition("Paused", "SpecReverted")
            return
        if revision != self.status.canary_revision:
            self.abort_for_spec_change("Superseded", f"superseded by revision {revision}")
            self.start_canary()
            return
        commands = self.obs.commands
        if commands.abort:
            self.roll_back("Aborted", "Aborted", "aborted by user")
            return
        self.observe_canary_readiness()
        if self.act_on_analysis():
            return
        if self.progress_deadline_exceeded():
            return
        if commands.promote_full:
            self.enter_promoting("promoted by user (all steps skipped)")
            return
        if commands.promote:
            self.complete_step(by_user=True)
            return
        if commands.pause:
            self.pause("UserPaused", "paused by user")
        if self.status.phase == "Paused":
            if commands.resume:
                if self.status.pause_reason == "PauseStep":
                    self.complete_step(by_user=True)
                else:
                    self.resume()
        else:
            self.run_step()
        unschedulable = self.obs.canary.unschedulable_message if self.obs.canary else None
        if unschedulable and self.status.phase in ("Progressing", "Paused"):
            # The most useful thing to tell the user while pods cannot start.
            self.update(message=f"canary pods cannot be scheduled: {unschedulable}")

    # -- canary helpers --------------------------------------------------------

    def observe_canary_readiness(self) -> None:
        canary = self.obs.canary
        if canary is not None and canary.fully_ready:
            self.update(canary_unready_since=None)
            self.clear_condition("Unschedulable", "Scheduled")
            return
        if self.status.canary_unready_since is None:
            self.update(canary_unready_since=self.now)
        if canary is not None and canary.unschedulable_message:
            self.condition("Unschedulable", "True", "Unschedulable", canary.unschedulable_message)
        else:
            self.clear_condition("Unschedulable", "Scheduled")

    def act_on_analysis(self) -> bool:
        """Take the analysis verdict's action; True when the rollout stops here."""
        verdict: AnalysisVerdict = self.obs.analysis
        if verdict.kind == "unavailable":
            self.condition("MetricsUnavailable", "True", "NoData", verdict.message)
        else:
            self.clear_condition("MetricsUnavailable", "DataAvailable")
        if verdict.kind == "breach" and verdict.check is not None:
            if verdict.action == "rollback":
                self.roll_back("RolledBack", "CheckBreached", verdict.message)
                return True
            self.pause("CheckBreached", verdict.message)
            return False
        if verdict.kind == "unavailable" and verdict.since is not None:
            policy = self.spec.analysis.when_metrics_unavailable
            waited = (self.now - verdict.since).total_seconds()
            if waited >= parse_duration(policy.after):
                message = f"metrics unavailable for {policy.after} or more: {verdict.message}"
                if policy.action == "rollback":
                    self.roll_back("RolledBack", "MetricsUnavailable", message)
                    return True
                self.pause("MetricsUnavailable", message)
        return False

    def progress_deadline_exceeded(self) -> bool:
        since = self.status.canary_unready_since
        if since is None:
            return False
        if (self.now - since).total_seconds() < parse_duration(self.spec.progress_deadline):
            return False
        canary = self.obs.canary
        ready = f"{canary.ready_replicas}/{canary.desired_replicas}" if canary else "0/0"
        detail = (
            f"; {canary.unschedulable_message}" if canary and canary.unschedulable_message else ""
        )
        self.roll_back(
            "RolledBack",
            "ProgressDeadlineExceeded",
            f"canary pods not ready within progressDeadline {self.spec.progress_deadline} "
            f"({ready} ready{detail})",
        )
        return True

    def pause(self, reason: str, message: str) -> None:
        if self.status.phase == "Paused":
            return
        self.update(phase="Paused", paused_at=self.now, pause_reason=reason, message=message)
        self.condition("Paused", "True", reason, message)
        self.event(
            "Normal" if reason in ("PauseStep", "UserPaused") else "Warning", "Paused", message
        )

    def resume(self) -> None:
        # Time spent paused does not count towards a timed step.
        started = self.status.step_started_at
        preview_ready = self.status.preview_ready_at
        paused = self.status.paused_at
        if paused is not None:
            if started is not None:
                started = started + (self.now - paused)
            if preview_ready is not None:
                preview_ready = preview_ready + (self.now - paused)
        self.update(
            phase="Progressing",
            paused_at=None,
            pause_reason=None,
            step_started_at=started,
            preview_ready_at=preview_ready,
        )
        self.clear_condition("Paused", "Resumed")
        self.event("Normal", "Resumed", "resumed by user")

    def run_step(self) -> None:
        strategy = self.strategy
        index = self.status.current_step or 0
        steps = strategy.steps
        if index >= len(steps):
            # The steps were shortened mid-rollout: all remaining ones are done.
            if self.gate_open:
                self.enter_promoting("all steps completed")
            return
        step = steps[index]
        label = _step_label(steps, index)
        if step.set_weight is not None:
            self.run_set_weight(step.set_weight, label)
        elif step.pause is not None and step.pause.duration is None:
            self.pause("PauseStep", f"{label}: waiting for promote")
        elif step.evaluation is not None:
            self.run_evaluation(index, label)
        elif step.experiment is not None:
            self.run_experiment(index, step.experiment, label)
        elif step.analysis is not None:
            self.run_analysis(parse_duration(step.analysis.duration), label)
        else:
            duration = step.pause.duration if step.pause is not None else None
            self.run_timed(parse_duration(duration or "0s"), label)

    def run_set_weight(self, weight: int, label: str) -> None:
        if not self.canary_serving:
            self.update(message=_waiting_for_pods(label))
            return
        current = self.status.weights.canary
        if weight != current:
            if weight > current > 0 and not self.gate_open:
                self.update(
                    message=f"{label}: holding at {current}% until analysis is healthy "
                    f"({self.obs.analysis.message})"
                )
                return
            self.update(
                weights=Weights(stable=100 - weight, canary=weight),
                message=f"{label}: canary weight {weight}%",
            )
            # A step started in this tick has said "setWeight N" in its StepStarted event.
            if not any(reason == "StepStarted" for _, reason, _ in self.events):
                self.event(
                    "Normal", "WeightSet", f"canary {self.status.canary_revision}: {weight}%"
                )
            if not self.exact_weights:
                return
            # The router sets exactly this weight in this tick's route write: the step is
            # done with it, in the same status write (one per step, not two).
        achieved = self.obs.achieved_weights[1]
        if achieved == weight or self.exact_weights:
            self.complete_step()
        else:
            self.update(message=f"{label}: waiting for the router ({achieved}% achieved)")

    def run_evaluation(self, index: int, label: str) -> None:
        """Quality gates: a pass completes the step, a failed gate rolls back, no verdict pauses.

        A result for another revision or step (a Job left from an earlier canary)
        is not this step's and is ignored.
        """
        if not self.canary_serving:
            self.update(message=_waiting_for_pods(label))
            return
        result = self.obs.evaluation
        if result is None or (result.revision, result.step) != (
            self.status.canary_revision,
            index,
        ):
            self.update(message=f"{label}: running")
            return
        self.update(gates=result.gates, gates_revision=result.revision, gates_step=index)
        if result.outcome == "passed":
            self.event("Normal", "GatesPassed", f"{label}: {result.message}")
            self.complete_step()
        elif result.outcome == "failed":
            failed = ", ".join(g.name for g in result.gates if not g.passed) or result.message
            self.roll_back("RolledBack", "GateFailed", f"quality gates failed: {failed}")
        else:
            self.pause("EvaluationError", f"{label}: {result.message}")

    def run_experiment(self, index: int, experiment: ExperimentStep, label: str) -> None:
        """The segment goes to the canary (the router reads the step from status) for the
        step's duration, counted from when the canary serves; then the groups' figures
        decide: Promote completes the step, Rollback rolls back, Pending holds the step and
        waits for the next measurement (no data is never a pass)."""
        if not self.canary_serving:
            self.update(message=_waiting_for_pods(label), step_started_at=None)
            return
        if self.status.step_started_at is None:
            self.update(step_started_at=self.now)
        started = self.status.step_started_at or self.now
        if (self.now - started).total_seconds() < parse_duration(experiment.duration):
            self.update(message=f"{label}: segment routed to the canary")
            return
        canary = self.status.canary_revision or ""
        figures = self.obs.experiment
        if figures is None or (figures.revision, figures.step) != (canary, index):
            self.update(message=f"{label}: time is up, measuring the groups")
            return
        gates = self.status.gates if self.status.gates_revision == canary else ()
        report = judge(
            self.spec, experiment, self.status.stable_revision or "", figures, gates, self.now
        )
        self.update(experiment=report)
        if report.decision == "Pending":
            self.update(message=f"{label}: time is up, no verdict yet ({report.reason})")
            return
        if report.decision == "Rollback":
            self.roll_back("RolledBack", "ExperimentFailed", f"experiment: {report.reason}")
            self.event("Warning", "ExperimentVerdict", summary(report))
            return
        self.complete_step_then_weight()
        # Last, so that the tick's one Event is named after the verdict (step_event.py).
        self.event("Normal", "ExperimentVerdict", summary(report))

    @property
    def exact_weights(self) -> bool:
        return Capability.EXACT_WEIGHTS in self.obs.router_capabilities

    @property
    def canary_serving(self) -> bool:
        """Whether the canary can take its traffic: a ready pod, or for blue-green (which
        switches every request at once) the whole preview."""
        canary = self.obs.canary
        if canary is None:
            return False
        return canary.fully_ready if self.blue_green else canary.ready_replicas > 0

    def run_analysis(self, seconds: float, label: str) -> None:
        """An analysis step's time counts from when the canary serves: a shadow (or a first
        analysis step) whose model is still loading is judged on no traffic at all."""
        if not self.canary_serving:
            self.update(message=_waiting_for_pods(label), step_started_at=None)
            return
        if self.status.step_started_at is None:
            self.update(step_started_at=self.now)
        self.run_timed(seconds, label)

    def run_timed(self, seconds: float, label: str) -> None:
        if waits_for_ready_preview(self.spec, self.status) and self.status.preview_ready_at is None:
            canary = self.obs.canary
            if canary is None or not canary.fully_ready:
                self.update(message=f"{label}: waiting for preview pods to be ready")
                return
            self.update(preview_ready_at=self.now)
        started = timed_step_started(self.spec, self.status) or self.now
        if (self.now - started).total_seconds() < seconds:
            self.update(message=label)
            return
        if not self.gate_open:
            self.update(
                message=f"{label}: time is up, waiting for analysis ({self.obs.analysis.message})"
            )
            return
        self.complete_step_then_weight()

    def complete_step_then_weight(self) -> None:
        """Complete a timed step; a weight step after it is set in the same status write (and
        tick): one write per step instead of two, and no tick interval between them."""
        self.complete_step()
        following = self.status.current_step
        steps = self.strategy.steps
        if (
            self.status.phase == "Progressing"
            and following is not None
            and following < len(steps)
            and steps[following].set_weight is not None
        ):
            self.run_step()

    def complete_step(self, by_user: bool = False) -> None:
        strategy = self.strategy
        index = (self.status.current_step or 0) + 1
        if index >= len(strategy.steps):
            if self.shadow is not None and self.shadow.then == "stop":
                verdict = "healthy" if self.gate_open else self.obs.analysis.message
                self.roll_back(
                    "Aborted",
                    "ShadowStopped",
                    f"shadow run of {self.shadow.duration} complete ({verdict}); "
                    "then: stop tears the candidate down",
                )
            elif by_user or self.gate_open:
                self.enter_promoting("promoted by user" if by_user else "all steps completed")
            else:
                self.update(
                    current_step=index,
                    message=f"all steps done, waiting for analysis ({self.obs.analysis.message})",
                )
            return
        step = strategy.steps[index]
        message = f"step {index + 1}/{len(strategy.steps)} {describe_step(step)}"
        self.update(
            phase="Progressing",
            current_step=index,
            step_started_at=self.now,
            paused_at=None,
            pause_reason=None,
            message=message,
        )
        self.condition("Progressing", "True", "StepStarted", message)
        self.clear_condition("Paused", "StepCompleted")
        self.event("Normal", "StepStarted", f"{message}{' (skipped by user)' if by_user else ''}")

    def enter_promoting(self, reason: str) -> None:
        strategy = self.strategy
        canary = self.status.canary_revision
        message = f"promoting {canary}: {reason}"
        self.update(
            phase="Promoting",
            current_step=len(strategy.steps),
            step_started_at=self.now,
            paused_at=None,
            pause_reason=None,
            weights=Weights(stable=0, canary=100),
            message=message,
        )
        self.condition("Progressing", "True", "Promoting", message)
        self.clear_condition("Paused", "Promoting")
        self.event("Normal", "Promoting", message)
        if self.canary_runs_full_size:
            # Nothing to wait for: the router puts all traffic on the canary exactly, and
            # its pods are all there and Ready. The route goes straight to it alone.
            self.promoting()

    @property
    def canary_runs_full_size(self) -> bool:
        """Whether the canary already runs all the replicas it will have as stable, Ready,
        behind a router that sets weights exactly: a promotion has nothing to wait for."""
        canary = self.obs.canary
        return (
            self.exact_weights
            and canary is not None
            and canary.revision == self.status.canary_revision
            and canary.fully_ready
            and canary.desired_replicas >= self.spec.runtime.replicas
        )

    def report_stable_availability(self) -> None:
        # The revision stable after this tick: a promotion makes the canary's pods the
        # stable ones, a rollback in the window the previous revision's.
        stable = next(
            (
                revision
                for revision in (self.obs.stable, self.obs.canary, self.obs.previous)
                if revision is not None and revision.revision == self.status.stable_revision
            ),
            None,
        )
        if stable is not None and stable.ready_replicas > 0:
            self.condition(
                "Available",
                "True",
                "StableReady",
                f"{stable.ready_replicas}/{stable.desired_replicas} stable pods ready",
            )
        else:
            self.condition("Available", "False", "NoStablePods", "no stable pod is ready")
