"""Alertmanager's API (POST /api/v2/alerts): a rollback pages through the team's routing.

Each notification is an alert `ModelRolloutEvent` with label `event` (the
kind: RolledBack...) and labels namespace, rollout, revision, severity, so
routes can match them as they match any alert. (Not `ModelRolloutRolledBack`:
that is the chart's Prometheus rule on the operator's rollback counter.) No
endsAt: Alertmanager resolves it after its resolve_timeout, as it does for
any alert its sender stops sending.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from modelrollout.notify.sinks.base import (
    JSON_HEADERS,
    HttpRequest,
    Rendered,
    SinkCapabilities,
    SinkCapability,
    timestamp,
)

PATH = "/api/v2/alerts"
ALERTNAME = "ModelRolloutEvent"


def alert(rendered: Rendered) -> dict[str, Any]:
    notification = rendered.notification
    labels = {
        "alertname": ALERTNAME,
        "event": notification.kind,
        "namespace": notification.namespace,
        "rollout": notification.rollout,
        "severity": notification.severity,
    }
    if notification.revision is not None:
        labels["revision"] = notification.revision
    if notification.check is not None:
        labels["check"] = notification.check.name
    return {
        "labels": labels,
        "annotations": {"summary": rendered.text, "description": notification.message},
        "startsAt": timestamp(notification),
    }


class AlertmanagerSink:
    capabilities: ClassVar[SinkCapabilities] = frozenset({SinkCapability.BATCH})

    @staticmethod
    def request(url: str, rendered: Sequence[Rendered]) -> HttpRequest:
        base = url.rstrip("/")
        target = base if base.endswith(PATH) else base + PATH
        return HttpRequest(target, [alert(one) for one in rendered], JSON_HEADERS)
