"""How soon a rollout needs its next tick, from its body alone (pure).

A rollout in a canary (Progressing or Paused) is ticked when its next timer
is due: the end of a timed step (pause or analysis with a duration), its
checks' next evaluation, the end of the progress deadline of an unready
canary, blue-green's scale-down of the previous color; and at least every
`slow` seconds for the timers not listed here. A change to the rollout or to
its children (pods Ready, a route edited) wakes it anyway. Ticking every
progressing rollout every interval instead cost a core of CPU at a thousand
rollouts, for ticks with nothing to do. A settled rollout (Succeeded,
nothing left to scale down, spec handled) is ticked every resync period;
other phases (Pending, Promoting, RollingBack...) every interval.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from modelrollout.models.durations import DurationError, parse_duration

# Sooner than this is not worth a tick of its own: the next one comes anyway.
MIN_PERIOD_SECONDS = 0.05


def _moment(text: Any) -> float | None:
    """A status timestamp as seconds since the epoch (None if absent or malformed)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _seconds(text: Any) -> float | None:
    try:
        return parse_duration(text) if isinstance(text, str) else None
    except DurationError:
        return None


def _timed_step_seconds(body: dict[str, Any]) -> float | None:
    status = body.get("status") or {}
    step = status.get("currentStep")
    steps = ((body.get("spec") or {}).get("strategy") or {}).get("canary", {}).get("steps") or []
    if not isinstance(step, int) or not 0 <= step < len(steps):
        return None
    current = steps[step] or {}
    return _seconds((current.get("pause") or current.get("analysis") or {}).get("duration"))


def _canary_timers(body: dict[str, Any]) -> list[float]:
    """Moments (epoch seconds) at which a canary's tick may have something to do."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    timers: list[float] = []
    step_seconds, started = _timed_step_seconds(body), _moment(status.get("stepStartedAt"))
    if status.get("phase") == "Progressing" and step_seconds is not None and started is not None:
        timers.append(started + step_seconds)
    analysis = spec.get("analysis") or {}
    every = _seconds(analysis.get("interval") or "15s")
    evaluated = [_moment(check.get("lastEvaluated")) for check in status.get("checks") or []]
    if every is not None and evaluated:
        known = [moment for moment in evaluated if moment is not None]
        if known:
            timers.append(min(known) + every)
    unready, deadline = (
        _moment(status.get("canaryUnreadySince")),
        _seconds(spec.get("progressDeadline") or "20m"),
    )
    if unready is not None and deadline is not None:
        timers.append(unready + deadline)
    scale_down = _moment(status.get("previousScaleDownAt"))
    if scale_down is not None:
        timers.append(scale_down)
    return timers


def tick_period(
    body: dict[str, Any], now: datetime, interval: float, resync: float, slow: float
) -> float:
    """Seconds until the rollout's next tick after one that just ended."""
    status = body.get("status") or {}
    if (
        status.get("phase") == "Succeeded"
        and not status.get("previousRevision")
        and (body.get("metadata") or {}).get("generation") == status.get("observedGeneration")
    ):
        return resync
    if status.get("phase") not in ("Progressing", "Paused"):
        return interval
    # A timer already past was seen by the tick that just ran, which chose to wait.
    now_seconds = now.timestamp()
    upcoming = [moment for moment in _canary_timers(body) if moment > now_seconds]
    due = min([now_seconds + max(interval, slow), *upcoming])
    return max(MIN_PERIOD_SECONDS, due - now_seconds)


def progress_marker(body: dict[str, Any]) -> tuple[Any, ...]:
    """What changes when a rollout moves (phase, step, weights): then it is ticked again now."""
    status = body.get("status") or {}
    return (status.get("phase"), status.get("currentStep"), str(status.get("weights")))
