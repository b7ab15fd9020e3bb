"""What a sink is: it turns notifications into one HTTP request, and declares what it can do.

The sender (notify/sender.py) asks only a sink's declared capabilities, never
its name: a sink with BATCH gets every notification waiting for it in one
request (Alertmanager takes a list of alerts); the others get one request per
notification. A sink builds requests only (pure); sending, retries and
timeouts are the sender's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, Protocol

from modelrollout.engine.notifications import Notification
from modelrollout.notify.templates import render_text


class SinkCapability(Enum):
    # One request may carry several notifications, in order.
    BATCH = "batch"


SinkCapabilities = frozenset[SinkCapability]


@dataclass(frozen=True)
class HttpRequest:
    """A POST of `body` as JSON to `url`."""

    url: str
    body: Any
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Rendered:
    """A notification with its text (the sink's template rendered)."""

    notification: Notification
    text: str


class Sink(Protocol):
    capabilities: ClassVar[SinkCapabilities]

    @staticmethod
    def request(url: str, rendered: Sequence[Rendered]) -> HttpRequest: ...


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def variables(notification: Notification) -> dict[str, str]:
    """The values of a template's variables (notify/templates.py) for `notification`."""
    check = notification.check
    return {
        "kind": notification.kind,
        "severity": notification.severity,
        "namespace": notification.namespace,
        "rollout": notification.rollout,
        "phase": notification.phase,
        "message": notification.message,
        "reason": notification.reason or "",
        "revision": notification.revision or "",
        "stable": notification.stable_revision or "",
        "canary": notification.canary_revision or "",
        "model": notification.canary_model or notification.stable_model or "",
        "step": "" if notification.step is None else str(notification.step),
        "steps": str(notification.steps),
        "weight": str(notification.canary_weight),
        "check": "" if check is None else check.name,
        "value": "" if check is None else _number(check.value),
        "threshold": "" if check is None else check.threshold,
        "time": timestamp(notification),
    }


def timestamp(notification: Notification) -> str:
    return notification.time.strftime("%Y-%m-%dT%H:%M:%SZ")


def render(notification: Notification, template: str | None) -> Rendered:
    return Rendered(notification, render_text(template, variables(notification)))


JSON_HEADERS: Mapping[str, str] = {"Content-Type": "application/json"}
