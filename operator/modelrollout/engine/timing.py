"""How soon a rollout needs its next tick, from its body alone (pure).

A progressing rollout is ticked every interval, or sooner when its current
timed step (a pause or analysis with a duration) ends before that, so the
next step starts on time rather than up to an interval late. A settled one
(Succeeded, nothing left to scale down, spec handled) only every resync
period: a change to it or to its children wakes it anyway.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from modelrollout.models.durations import DurationError, parse_duration

# Sooner than this is not worth a tick of its own: the next one comes anyway.
MIN_PERIOD_SECONDS = 0.05


def _timed_step_seconds(body: dict[str, Any]) -> float | None:
    status = body.get("status") or {}
    step = status.get("currentStep")
    steps = ((body.get("spec") or {}).get("strategy") or {}).get("canary", {}).get("steps") or []
    if not isinstance(step, int) or not 0 <= step < len(steps):
        return None
    current = steps[step] or {}
    duration = (current.get("pause") or current.get("analysis") or {}).get("duration")
    try:
        return parse_duration(duration) if isinstance(duration, str) else None
    except DurationError:
        return None


def tick_period(body: dict[str, Any], now: datetime, interval: float, resync: float) -> float:
    """Seconds until the rollout's next tick after one that just ended."""
    status = body.get("status") or {}
    if (
        status.get("phase") == "Succeeded"
        and not status.get("previousRevision")
        and (body.get("metadata") or {}).get("generation") == status.get("observedGeneration")
    ):
        return resync
    seconds = _timed_step_seconds(body)
    started = status.get("stepStartedAt")
    if status.get("phase") != "Progressing" or seconds is None or not isinstance(started, str):
        return interval
    try:
        ends = datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp() + seconds
    except ValueError:
        return interval
    return min(interval, max(MIN_PERIOD_SECONDS, ends - now.timestamp()))


def progress_marker(body: dict[str, Any]) -> tuple[Any, ...]:
    """What changes when a rollout moves (phase, step, weights): then it is ticked again now."""
    status = body.get("status") or {}
    return (status.get("phase"), status.get("currentStep"), str(status.get("weights")))
