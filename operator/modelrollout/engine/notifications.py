"""What a tick tells its notification sinks: derived from the tick's decision, pure.

The same data as the tick's one Event (step_event.py): the checks whose
state changed, then the strategy's Events, in the order they happened. Each
Event that is a rollout event users subscribe to becomes a `Notification`;
the rest (a weight set, a check passing) are Events only. A check that has
had no data for `spec.notifications.analysisUnavailableAfter` gives one
AnalysisUnavailable per stretch without data: the tick whose evaluation
crosses the threshold (its previous evaluation, kept in status, had not).
Sending is I/O, done by the operator (notify/sender.py), never here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from modelrollout.engine.strategies.bluegreen import steps_strategy
from modelrollout.kube.workloads import RolloutRef
from modelrollout.models import CheckStatus, ModelRolloutSpec, ModelRolloutStatus, parse_duration
from modelrollout.models.notifications import NotificationEvent
from modelrollout.models.spec import Notifications

Severity = Literal["info", "warning", "critical"]

# The strategy's Event reasons that are notifications, and what they are.
_DECIDED: Mapping[str, NotificationEvent] = {
    "CanaryStarted": "Started",
    "StepStarted": "StepAdvanced",
    "Paused": "Paused",
    "RollingBack": "RolledBack",
    "Aborted": "RolledBack",
    "Promoted": "Promoted",
}

_SEVERITY: Mapping[NotificationEvent, Severity] = {
    "Started": "info",
    "StepAdvanced": "info",
    "Paused": "warning",
    "Breach": "warning",
    "RolledBack": "critical",
    "Promoted": "info",
    "AnalysisUnavailable": "warning",
}

DEFAULT_NOTIFICATIONS = Notifications()


@dataclass(frozen=True)
class CheckReading:
    """The check a breach, a rollback or an unavailable analysis is about."""

    name: str
    state: str
    value: float | None
    threshold: str
    message: str


@dataclass(frozen=True)
class Notification:
    """One rollout event, as every sink renders it (schema: docs/notifications.md)."""

    kind: NotificationEvent
    severity: Severity
    namespace: str
    rollout: str
    uid: str
    time: datetime
    phase: str
    message: str
    reason: str | None
    stable_revision: str | None
    canary_revision: str | None
    stable_model: str | None
    canary_model: str | None
    step: int | None
    steps: int
    canary_weight: int
    check: CheckReading | None

    @property
    def revision(self) -> str | None:
        """The revision the event is about: the canary's, else the stable one (promoted)."""
        return self.canary_revision or self.stable_revision

    @property
    def id(self) -> str:
        """Stable across retries: receivers may drop a repeat by it."""
        digest = hashlib.sha256(self.message.encode()).hexdigest()[:12]
        return f"{self.uid}/{self.time.isoformat()}/{self.kind}/{digest}"


def _reading(check: CheckStatus) -> CheckReading:
    return CheckReading(check.name, check.state, check.value, check.threshold, check.message)


def _crossed_unavailable(before: CheckStatus | None, after: CheckStatus, threshold: float) -> bool:
    since = after.unavailable_since
    if after.state != "Unavailable" or since is None or after.last_evaluated is None:
        return False
    if (after.last_evaluated - since).total_seconds() < threshold:
        return False
    if before is None or before.unavailable_since != since or before.last_evaluated is None:
        return True
    return (before.last_evaluated - since).total_seconds() < threshold


def derive_notifications(
    rollout: RolloutRef,
    spec: ModelRolloutSpec,
    before: ModelRolloutStatus,
    after: ModelRolloutStatus,
    checks: Sequence[CheckStatus],
    decided: Sequence[tuple[str, str, str]],
    now: datetime,
) -> list[Notification]:
    """The tick's notifications, in the order of its Events.

    `before`: the status the tick started from (with the readings kept in
    memory); `checks`: this tick's readings; `decided`: the strategy's
    Events; `after`: the status it writes.
    """
    if not any(reason in _DECIDED for _, reason, _ in decided) and not any(
        check.state in ("Breached", "Unavailable") for check in checks
    ):
        return []
    steps = len(steps_strategy(spec).steps)
    settings = spec.notifications or DEFAULT_NOTIFICATIONS

    def notification(
        kind: NotificationEvent,
        message: str,
        reason: str | None,
        check: CheckReading | None,
        steps_later: int = 0,
    ) -> Notification:
        return Notification(
            kind=kind,
            severity=_SEVERITY[kind],
            namespace=rollout.namespace,
            rollout=rollout.name,
            uid=rollout.uid,
            time=now,
            phase=after.phase,
            message=message,
            reason=reason,
            stable_revision=after.stable_revision,
            canary_revision=after.canary_revision,
            stable_model=after.stable_model,
            canary_model=after.canary_model,
            step=None if after.current_step is None else after.current_step + 1 - steps_later,
            steps=steps,
            canary_weight=after.weights.canary,
            check=check,
        )

    previous = {check.name: check for check in before.checks}
    found: list[Notification] = []
    for check in checks:
        old = previous.get(check.name)
        if check.state == "Breached" and (old is None or old.state != "Breached"):
            value = f"{check.value:g}" if check.value is not None else check.message
            found.append(
                notification(
                    "Breach",
                    f"check {check.name} breached ({value}; breachWhen {check.threshold})",
                    "CheckBreached",
                    _reading(check),
                )
            )
    threshold = parse_duration(settings.analysis_unavailable_after)
    for check in checks:
        if _crossed_unavailable(previous.get(check.name), check, threshold):
            found.append(
                notification(
                    "AnalysisUnavailable",
                    f"check {check.name} has had no data for "
                    f"{settings.analysis_unavailable_after} or more: {check.message}",
                    "MetricsUnavailable",
                    _reading(check),
                )
            )
    # A tick may take several steps: each StepStarted is one step on from the one before.
    step_starts = [reason == "StepStarted" for _, reason, _ in decided]
    for index, (_, event_reason, message) in enumerate(decided):
        kind = _DECIDED.get(event_reason)
        if kind is None:
            continue
        later = sum(step_starts[index + 1 :]) if kind in ("Started", "StepAdvanced") else 0
        why = _why(kind, event_reason, after)
        found.append(notification(kind, message, why, _about(why, after), later))
    return found


def _why(kind: NotificationEvent, event_reason: str, after: ModelRolloutStatus) -> str | None:
    if kind == "Paused":
        return after.pause_reason
    if kind == "RolledBack":
        progressing = after.condition("Progressing")
        if event_reason == "RollingBack" and progressing is not None:
            return progressing.reason
        return event_reason
    return None


# The check state a pause or rollback for this reason is about.
_CHECK_STATE_OF_REASON = {"CheckBreached": "Breached", "MetricsUnavailable": "Unavailable"}


def _about(why: str | None, after: ModelRolloutStatus) -> CheckReading | None:
    """The check behind a pause or rollback for a breach or for missing data."""
    state = _CHECK_STATE_OF_REASON.get(why or "")
    for check in after.checks:
        if check.state == state:
            return _reading(check)
    return None
