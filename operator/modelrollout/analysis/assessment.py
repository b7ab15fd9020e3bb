"""Pure assessment: this tick's samples + the previous check states -> new states + a verdict.

`for:` means what it means in a Prometheus alerting rule: a check is
Breached once its condition has held at EVERY evaluation for that long.
`breachingSince` is the first evaluation of the current unbroken run of
breaching samples; a sample that is not breaching resets it, and so does an
unavailable one (Prometheus drops a pending alert whose expression returns
nothing). An unavailable sample is not healthy either: no data is never
success.

Alerts (`alert:<alertname>`) are breached as soon as a matching ALERTS
series fires: Prometheus has already applied the rule's own `for`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from modelrollout.models.durations import parse_duration
from modelrollout.models.spec import Action, Analysis, Threshold
from modelrollout.models.status import CheckStatus

ALERT_PREFIX = "alert:"
ALERT_THRESHOLD = "firing"


def alert_check_name(alertname: str) -> str:
    return f"{ALERT_PREFIX}{alertname}"


@dataclass(frozen=True)
class Sample:
    """One evaluation's outcome for one check: a value, or why there is none."""

    value: float | None
    error: str | None = None

    @classmethod
    def unavailable(cls, why: str) -> Sample:
        return cls(None, why)


@dataclass(frozen=True)
class AnalysisVerdict:
    """What the analysis says about the canary right now.

    healthy: every check passed its last evaluation (or there are none).
    pending: some check has no evaluation yet, or breaches but not yet for its `for`.
    breach: `check` is breached with `value`; the strategy takes `action`.
    unavailable: some check has had no data since `since`.
    """

    kind: Literal["healthy", "pending", "breach", "unavailable"]
    message: str = ""
    check: str | None = None
    action: Action | None = None
    value: float | None = None
    since: datetime | None = None

    @classmethod
    def healthy(cls) -> AnalysisVerdict:
        return cls("healthy")

    @classmethod
    def pending(cls, message: str) -> AnalysisVerdict:
        return cls("pending", message)

    @classmethod
    def breach(
        cls, check: str, action: Action, value: float | None, message: str
    ) -> AnalysisVerdict:
        return cls("breach", message, check=check, action=action, value=value)

    @classmethod
    def unavailable(cls, since: datetime, message: str) -> AnalysisVerdict:
        return cls("unavailable", message, since=since)


def pending_checks(analysis: Analysis) -> tuple[CheckStatus, ...]:
    """One not-yet-evaluated entry per check and alert, in spec order."""
    entries = [CheckStatus(name=c.name, threshold=c.breach_when) for c in analysis.checks]
    entries += [
        CheckStatus(name=alert_check_name(a.alertname), threshold=ALERT_THRESHOLD)
        for a in analysis.alerts
    ]
    return tuple(entries)


def assess(
    analysis: Analysis,
    previous: Sequence[CheckStatus],
    samples: Mapping[str, Sample],
    now: datetime,
) -> tuple[tuple[CheckStatus, ...], AnalysisVerdict]:
    """New check states from this evaluation's samples (keyed by check name) and the verdict."""
    before = {c.name: c for c in previous}
    updated: list[CheckStatus] = []
    for check in analysis.checks:
        updated.append(
            _assess_check(
                check.name,
                Threshold.parse(check.breach_when),
                parse_duration(check.for_),
                check.breach_when,
                before.get(check.name),
                samples.get(check.name, Sample.unavailable("not evaluated")),
                now,
            )
        )
    for alert in analysis.alerts:
        name = alert_check_name(alert.alertname)
        updated.append(
            _assess_check(
                name,
                Threshold(">", 0),
                0.0,
                ALERT_THRESHOLD,
                before.get(name),
                samples.get(name, Sample.unavailable("not evaluated")),
                now,
            )
        )
    checks = tuple(updated)
    return checks, verdict_of(analysis, checks)


def _assess_check(
    name: str,
    threshold: Threshold,
    hold_seconds: float,
    threshold_text: str,
    previous: CheckStatus | None,
    sample: Sample,
    now: datetime,
) -> CheckStatus:
    if sample.value is None or math.isnan(sample.value):
        return CheckStatus(
            name=name,
            threshold=threshold_text,
            state="Unavailable",
            unavailable_since=(
                previous.unavailable_since
                if previous is not None and previous.unavailable_since is not None
                else now
            ),
            last_evaluated=now,
            message=sample.error or "no data",
        )
    value = sample.value
    # Status is JSON: an infinite value is reported in the message, not the number.
    shown = value if math.isfinite(value) else None
    message = "" if shown is not None else f"value {'+' if value > 0 else '-'}Inf"
    if not threshold.breached_by(value):
        return CheckStatus(
            name=name,
            value=shown,
            threshold=threshold_text,
            state="Passing",
            last_evaluated=now,
            message=message,
        )
    since = (
        previous.breaching_since
        if previous is not None
        and previous.state in ("Breaching", "Breached")
        and previous.breaching_since is not None
        else now
    )
    held = (now - since).total_seconds()
    return CheckStatus(
        name=name,
        value=shown,
        threshold=threshold_text,
        state="Breached" if held >= hold_seconds else "Breaching",
        breaching_since=since,
        last_evaluated=now,
        message=message,
    )


def verdict_of(analysis: Analysis, checks: Sequence[CheckStatus]) -> AnalysisVerdict:
    """Breach (rollback first) > unavailable > pending > healthy, over the spec's checks."""
    by_name = {c.name: c for c in checks}
    entries: list[tuple[CheckStatus, Action]] = [
        (by_name.get(c.name) or CheckStatus(name=c.name), c.action) for c in analysis.checks
    ]
    entries += [
        (by_name.get(name) or CheckStatus(name=name), a.action)
        for a in analysis.alerts
        for name in [alert_check_name(a.alertname)]
    ]
    breached = [(c, action) for c, action in entries if c.state == "Breached"]
    if breached:
        check, action = min(breached, key=lambda pair: pair[1] != "rollback")
        return AnalysisVerdict.breach(check.name, action, check.value, _breach_message(check))
    unavailable = [
        (since, c)
        for c, _ in entries
        if c.state == "Unavailable"
        for since in [c.unavailable_since or c.last_evaluated]
        if since is not None
    ]
    if unavailable:
        since, first = min(unavailable, key=lambda pair: pair[0])
        return AnalysisVerdict.unavailable(
            since, f"no data for check {first.name}: {first.message}"
        )
    waiting = [c for c, _ in entries if c.state in ("Pending", "Breaching", "Unavailable")]
    if waiting:
        names = ", ".join(c.name for c in waiting)
        return AnalysisVerdict.pending(f"waiting for checks: {names}")
    return AnalysisVerdict.healthy()


def _breach_message(check: CheckStatus) -> str:
    if check.name.startswith(ALERT_PREFIX):
        return f"alert {check.name.removeprefix(ALERT_PREFIX)} is firing"
    value = f"{check.value:g}" if check.value is not None else check.message or "no value"
    return f"check {check.name} breached: value {value}, breachWhen {check.threshold!r}"


def check_events(
    previous: Sequence[CheckStatus], current: Sequence[CheckStatus]
) -> list[tuple[str, str, str]]:
    """Events for checks whose state changed: (type, reason, message)."""
    before = {c.name: c.state for c in previous}
    events: list[tuple[str, str, str]] = []
    for check in current:
        if before.get(check.name, "Pending") == check.state:
            continue
        value = f"{check.value:g}" if check.value is not None else check.message
        text = f"check {check.name} is {check.state} ({value}; breachWhen {check.threshold})"
        warning = check.state in ("Breaching", "Breached", "Unavailable")
        events.append(("Warning" if warning else "Normal", f"Check{check.state}", text))
    return events
