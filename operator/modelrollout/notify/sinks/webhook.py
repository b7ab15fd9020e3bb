"""The generic webhook: one JSON document per notification, schema `modelrollout.dev/v1`.

The schema is documented in docs/notifications.md; a field is only ever
added to v1, never renamed, retyped or removed (that would be v2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from modelrollout.notify.sinks.base import (
    JSON_HEADERS,
    HttpRequest,
    Rendered,
    SinkCapabilities,
    timestamp,
)

SCHEMA_VERSION = "modelrollout.dev/v1"


def payload(rendered: Rendered) -> dict[str, Any]:
    notification = rendered.notification
    check = notification.check
    return {
        "schemaVersion": SCHEMA_VERSION,
        "id": notification.id,
        "kind": notification.kind,
        "severity": notification.severity,
        "time": timestamp(notification),
        "rollout": {
            "namespace": notification.namespace,
            "name": notification.rollout,
            "uid": notification.uid,
        },
        "phase": notification.phase,
        "reason": notification.reason,
        "message": notification.message,
        "text": rendered.text,
        "revisions": {
            "stable": notification.stable_revision,
            "canary": notification.canary_revision,
        },
        "models": {"stable": notification.stable_model, "canary": notification.canary_model},
        "step": {
            "index": notification.step,
            "count": notification.steps,
            "canaryWeight": notification.canary_weight,
        },
        "check": None
        if check is None
        else {
            "name": check.name,
            "state": check.state,
            "value": check.value,
            "threshold": check.threshold,
            "message": check.message,
        },
    }


class WebhookSink:
    capabilities: ClassVar[SinkCapabilities] = frozenset()

    @staticmethod
    def request(url: str, rendered: Sequence[Rendered]) -> HttpRequest:
        (one,) = rendered
        return HttpRequest(url, payload(one), JSON_HEADERS)
