"""How soon a rollout needs its next tick: pure.

A rollout in a canary (Progressing or Paused) is ticked when its next timer
is due (engine/strategies/timers.py: the end of a timed step of any
strategy, its checks' next evaluation, the progress deadline, a scale-down
delay...), and at least every `slow` seconds. A change to the rollout or to
its children (pods Ready, a route edited) wakes it anyway. Ticking every
progressing rollout every interval instead cost a core of CPU at a thousand
rollouts, for ticks with nothing to do. A settled rollout (Succeeded,
nothing left to scale down, spec handled) is ticked every resync period;
other phases (Pending, Promoting, RollingBack...) every interval, or at
their next timer if sooner.

The timers come from the status the last tick decided, when known
(Reconciler.last_decision), not from the body the scheduler holds: that
body may predate the tick's own status write, and a timer that passed
while the tick ran (it began just before a pause's end) is still due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from modelrollout.engine.strategies.timers import next_timer
from modelrollout.models import InvalidSpecError, ModelRolloutSpec, ModelRolloutStatus, parse_spec

# Sooner than this is not worth a tick of its own: the next one comes anyway.
MIN_PERIOD_SECONDS = 0.05


@dataclass(frozen=True)
class LastDecision:
    """A rollout's status as its last tick decided it (written or not), and when."""

    status: ModelRolloutStatus
    at: datetime
    # The first timer after `at` (engine/strategies/timers.py); None: none.
    next_timer: datetime | None


def _spec(body: dict[str, Any]) -> ModelRolloutSpec | None:
    try:
        return parse_spec(body.get("spec") or {})
    except InvalidSpecError:
        return None


def _status(body: dict[str, Any]) -> ModelRolloutStatus:
    try:
        return ModelRolloutStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return ModelRolloutStatus()


def tick_period(
    body: dict[str, Any],
    now: datetime,
    interval: float,
    resync: float,
    slow: float,
    decided: LastDecision | None = None,
) -> float:
    """Seconds until the rollout's next tick after one that just ended.

    `decided`: what the last tick decided; None when this process has not
    decided the rollout (then the body's status and `now` stand in: a timer
    already past was seen by the tick that just ran, which chose to wait).
    """
    if decided is None:
        status = _status(body)
        spec = _spec(body)
        timer = next_timer(spec, status, now) if spec is not None else None
    else:
        status, timer = decided.status, decided.next_timer
    generation = (body.get("metadata") or {}).get("generation")
    if (
        status.phase == "Succeeded"
        and status.previous_revision is None
        and generation == status.observed_generation
    ):
        return resync
    longest = max(interval, slow) if status.phase in ("Progressing", "Paused") else interval
    due = longest if timer is None else min(longest, (timer - now).total_seconds())
    return max(MIN_PERIOD_SECONDS, due)


def progress_marker(body: dict[str, Any]) -> tuple[Any, ...]:
    """What changes when a rollout moves (phase, step, weights): then it is ticked again now."""
    status = body.get("status") or {}
    return (status.get("phase"), status.get("currentStep"), str(status.get("weights")))
