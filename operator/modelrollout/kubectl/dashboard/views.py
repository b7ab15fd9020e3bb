"""What the dashboard's pages show: pure functions of the watched objects and the time.

Each takes the dicts the API server sent (a ModelRollout, its Events) and
returns JSON-ready dicts for the browser; the server computes each once per
change and hands the same dict to every open page.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modelrollout.analysis.assessment import pending_checks
from modelrollout.engine.strategies.bluegreen import timed_step_started
from modelrollout.engine.strategies.canary import describe_step
from modelrollout.kubectl.render import (
    NO_RECORD,
    Rollout,
    card_text,
    event_time,
    recent_events,
    record_fields,
    record_gates,
    refusal,
    step_progress,
    timestamp,
)
from modelrollout.models.durations import parse_duration
from modelrollout.models.status import HistoryEntry

# The commands the pages offer, in the plugin's words (cli.send_command), and undo.
COMMANDS = ("promote", "promote-full", "pause", "resume", "abort", "retry", "rollback")
EVENTS_SHOWN = 50


@dataclass(frozen=True)
class WeightPoint:
    """The weights as the dashboard saw them change."""

    at: datetime
    stable: int
    canary: int
    mirror: int
    step: int | None


def key_of(body: dict[str, Any]) -> str:
    metadata = body["metadata"]
    return f"{metadata.get('namespace', '')}/{metadata['name']}"


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else timestamp(moment)


def event_view(event: dict[str, Any]) -> dict[str, Any]:
    first = event.get("firstTimestamp")
    return {
        "at": _time(event_time(event)),
        "first": first if isinstance(first, str) else None,
        "count": event.get("count") if isinstance(event.get("count"), int) else 1,
        "type": str(event.get("type", "")),
        "reason": str(event.get("reason", "")),
        "message": str(event.get("message", "")),
    }


def involved_key(event: dict[str, Any]) -> str:
    """The `namespace/name` of the object an Event is about."""
    involved = event.get("involvedObject") or {}
    namespace = involved.get("namespace") or (event.get("metadata") or {}).get("namespace", "")
    return f"{namespace}/{involved.get('name', '')}"


def list_row(body: dict[str, Any], events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One line of the all-rollouts page."""
    rollout = Rollout.of(body)
    status = rollout.status
    last = recent_events(events, 1)
    return {
        "key": key_of(body),
        "namespace": rollout.namespace,
        "name": rollout.name,
        "phase": status.phase,
        "message": status.message,
        "strategy": rollout.strategy,
        "step": step_progress(rollout),
        "weights": status.weights.model_dump(),
        "stable": status.stable_revision,
        "canary": status.canary_revision,
        "created": body["metadata"].get("creationTimestamp"),
        "lastEvent": event_view(last[0]) if last else None,
    }


def _steps(rollout: Rollout) -> list[dict[str, Any]]:
    status = rollout.status
    current = status.current_step
    active = status.canary_revision is not None and current is not None
    started = (
        status.step_started_at if rollout.spec is None else timed_step_started(rollout.spec, status)
    )
    steps = []
    for index, step in enumerate(rollout.steps):
        state = "pending"
        if active and current is not None:
            if index < current:
                state = "done"
            elif index == current:
                stopped = status.phase in ("RollingBack", "RolledBack")
                state = "stopped" if stopped else "current"
        duration = step.pause.duration if step.pause is not None else None
        if step.analysis is not None:
            duration = step.analysis.duration
        if step.experiment is not None:
            duration = step.experiment.duration
        timed = state == "current" and duration is not None and status.phase != "Paused"
        steps.append(
            {
                "index": index,
                "text": describe_step(step),
                "state": state,
                "durationSeconds": parse_duration(duration) if duration is not None else None,
                "startedAt": _time(started) if timed else None,
            }
        )
    return steps


def _checks(rollout: Rollout) -> list[dict[str, Any]]:
    status = rollout.status
    spec_checks = {c.name: c for c in rollout.spec.analysis.checks} if rollout.spec else {}
    expected = pending_checks(rollout.spec.analysis) if rollout.spec is not None else ()
    by_name = {check.name: check for check in status.checks}
    declared = {c.name for c in expected}
    checks = [by_name.get(c.name, c) for c in expected]
    checks += [c for c in status.checks if c.name not in declared]
    views = []
    for check in checks:
        declared_check = spec_checks.get(check.name)
        views.append(
            {
                "name": check.name,
                "value": check.value,
                "threshold": check.threshold
                or (declared_check.breach_when if declared_check else ""),
                "for": declared_check.for_ if declared_check else None,
                "state": check.state,
                "message": check.message,
                "breachingSince": _time(check.breaching_since),
                # Only a spec check with a query has a series to plot (alerts have none).
                "plottable": declared_check is not None,
            }
        )
    return views


def history_view(entry: HistoryEntry) -> dict[str, Any]:
    """One revision of status.history, with its model record as `history --details` shows it."""
    record = entry.record
    return {
        "revision": entry.revision,
        "model": entry.model,
        "outcome": entry.outcome,
        "at": timestamp(entry.at),
        "reason": entry.reason,
        "undoable": bool(entry.spec),
        "record": None if record is None else [list(pair) for pair in record_fields(record)],
        "gates": [] if record is None else record_gates(record),
        "noRecord": NO_RECORD if record is None else None,
    }


def rollback_window(rollout: Rollout) -> dict[str, Any] | None:
    """The previous revision kept warm after a promotion, while `rollback` can go back to it."""
    status = rollout.status
    if status.previous_revision is None or status.previous_scale_down_at is None:
        return None
    return {
        "revision": status.previous_revision,
        "model": status.previous_model,
        "until": timestamp(status.previous_scale_down_at),
    }


def detail(
    body: dict[str, Any],
    events: Iterable[dict[str, Any]],
    weights: Sequence[WeightPoint],
    now: datetime,
) -> dict[str, Any]:
    """Everything the one-rollout page shows."""
    rollout = Rollout.of(body)
    status = rollout.status
    return {
        **list_row(body, events),
        "generation": rollout.generation,
        "seenByOperator": rollout.seen_by_operator,
        "pauseReason": status.pause_reason,
        "stableModel": status.stable_model,
        "canaryModel": status.canary_model,
        "steps": _steps(rollout),
        "weightHistory": [
            {
                "at": timestamp(point.at),
                "stable": point.stable,
                "canary": point.canary,
                "mirror": point.mirror,
                "step": point.step,
            }
            for point in weights
        ],
        "checks": _checks(rollout),
        "gates": {
            "revision": status.gates_revision,
            "step": status.gates_step,
            "results": [gate.model_dump(by_alias=True) for gate in status.gates],
        },
        # The last A/B experiment, as `kubectl modelrollout get` shows it (render.py).
        "experiment": (
            None
            if status.experiment is None
            else status.experiment.model_dump(mode="json", by_alias=True)
        ),
        "conditions": [c.model_dump(mode="json", by_alias=True) for c in status.conditions],
        "events": [event_view(e) for e in reversed(recent_events(events, EVENTS_SHOWN))],
        "history": [
            history_view(entry)
            for entry in sorted(status.history, key=lambda e: e.at, reverse=True)
        ],
        "card": (
            card_text(rollout.spec.model.card)
            if rollout.spec is not None and rollout.spec.model.card is not None
            else None
        ),
        "rollbackWindow": rollback_window(rollout),
        "commands": {command: refusal(rollout, command, now) for command in COMMANDS},
    }


def weight_point(body: dict[str, Any], now: datetime) -> WeightPoint:
    status = Rollout.of(body).status
    weights = status.weights
    return WeightPoint(now, weights.stable, weights.canary, weights.mirror, status.current_step)
