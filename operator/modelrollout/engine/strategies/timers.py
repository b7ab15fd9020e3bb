"""When a rollout's next tick has something to do on time alone: pure.

The moments at which decide() (or a rule applying its status, desired.py)
acts because time passed, whatever the strategy, for every strategy runs on
the canary engine's steps (bluegreen.py, shadow.py):

- the end of the current timed step while Progressing: a canary's pause,
  analysis or experiment duration (and an experiment's next measurement while
  its groups have too few requests), blue-green's `autoPromotionAfter` (its first pause, from
  the moment the preview became ready: a preview's readiness wakes the rollout) and
  post-promotion analysis, a shadow's `duration`;
- the checks' next evaluation while analysis runs, and the moment metrics
  have been missing for `whenMetricsUnavailable.after`;
- the progress deadline of a canary not yet ready;
- blue-green's `scaleDownDelay` (the previous color goes), the end of a
  canary's `rollbackWindow` (the previous stable goes) and a canary's
  `abortScaleDownDelay` (the aborted canary's pods go).

What needs no timer: an evaluation step ends when its Job finishes or hits
its deadline (a Job change wakes the rollout), a setWeight step when the
router reports the weight, a user command when it arrives.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from modelrollout.analysis.assessment import verdict_of
from modelrollout.analysis.runner import analysis_active
from modelrollout.engine.strategies.bluegreen import steps_strategy, timed_step_started
from modelrollout.engine.strategies.desired import aborted_canary_kept_until
from modelrollout.models.durations import parse_duration
from modelrollout.models.experiment import running_experiment
from modelrollout.models.spec import ModelRolloutSpec
from modelrollout.models.status import ACTIVE_CANARY_PHASES, ModelRolloutStatus


def _after(moment: datetime | None, duration: str | None) -> datetime | None:
    if moment is None or duration is None:
        return None
    return moment + timedelta(seconds=parse_duration(duration))


def step_ends_at(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> datetime | None:
    """When the current timed step's time is up (None: not Progressing, or not timed)."""
    steps = steps_strategy(spec).steps
    index = status.current_step
    if status.phase != "Progressing" or index is None or not 0 <= index < len(steps):
        return None
    step = steps[index]
    duration = step.pause.duration if step.pause is not None else None
    if step.analysis is not None:
        duration = step.analysis.duration
    if step.experiment is not None:
        duration = step.experiment.duration
    return _after(timed_step_started(spec, status), duration)


def experiment_remeasured_at(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> datetime | None:
    """When an experiment without a verdict yet (too few requests) is measured again."""
    running = running_experiment(spec, status)
    report = status.experiment
    if (
        running is None
        or report is None
        or report.decision != "Pending"
        or (report.revision, report.step) != (status.canary_revision, running[0])
    ):
        return None
    return _after(report.measured_at, spec.analysis.interval)


def timers(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> list[datetime]:
    """Every moment (past ones included) at which a tick may act on time alone."""
    moments = [step_ends_at(spec, status), experiment_remeasured_at(spec, status)]
    if analysis_active(spec, status):
        interval = spec.analysis.interval
        # analysis_due waits `interval` after the latest evaluation; each check's
        # own reading is listed too, so one evaluated apart is not missed.
        moments += [_after(check.last_evaluated, interval) for check in status.checks]
        verdict = verdict_of(spec.analysis, status.checks)
        if verdict.kind == "unavailable":
            moments.append(_after(verdict.since, spec.analysis.when_metrics_unavailable.after))
    if status.phase in ACTIVE_CANARY_PHASES and status.canary_revision is not None:
        moments.append(_after(status.canary_unready_since, spec.progress_deadline))
    moments += [status.previous_scale_down_at, aborted_canary_kept_until(spec, status)]
    return [moment for moment in moments if moment is not None]


def next_timer(
    spec: ModelRolloutSpec, status: ModelRolloutStatus, after: datetime
) -> datetime | None:
    """The first timer later than `after`, the moment `status` was decided.

    A timer at or before `after` was seen by that decision, which chose to
    wait (analysis not healthy yet, say): it is no reason to tick again. One
    after it is, even when it has passed by the time this is asked: a tick
    that began just before a pause's end and ended just after it must not
    leave the pause's end unticked until the next resync.
    """
    upcoming = [moment for moment in timers(spec, status) if moment > after]
    return min(upcoming, default=None)
