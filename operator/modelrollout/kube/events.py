"""Kubernetes Events about a ModelRollout, posted directly (not through kopf).

The tick loop runs outside kopf's handler context, where kopf's event
poster is not available; one POST per Event is all kopf would do anyway.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from modelrollout.kube.api import Resource

EVENTS = Resource("", "v1", "events")
REPORTING_COMPONENT = "modelrollout"


def build_event(body: dict[str, Any], event_type: str, reason: str, message: str) -> dict[str, Any]:
    metadata = body["metadata"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{metadata['name']}.{uuid.uuid4().hex[:12]}",
            "namespace": metadata["namespace"],
        },
        "involvedObject": {
            "apiVersion": body.get("apiVersion", ""),
            "kind": body.get("kind", ""),
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
        },
        "type": event_type,
        "reason": reason,
        # The API server refuses messages over 1 KiB in some versions; keep them short.
        "message": message[:1000],
        "source": {"component": REPORTING_COMPONENT},
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": REPORTING_COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
