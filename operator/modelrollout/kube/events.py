"""Kubernetes Events about a ModelRollout, posted directly (not through kopf).

The tick loop runs outside kopf's handler context, where kopf's event
poster is not available. `EventRecorder` posts them the way client-go's
EventCorrelator does: an Event that repeats one already posted (same
rollout, type, reason and message) within `window_seconds` of its last
occurrence adds to that Event's `count` and `lastTimestamp` in one patch
instead of creating another Event, so a condition that recurs at every
tick (a check flapping, a Deployment resized by someone else again and
again) is one Event with a count, as `kubectl describe` shows it. Neither
kopf nor the Python client has such a recorder; this is client-go's
correlation rule without its spam filter.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelrollout.kube.api import KubeApi, KubeApiError, Resource

EVENTS = Resource("", "v1", "events")
REPORTING_COMPONENT = "modelrollout"
# The API server refuses messages over 1 KiB in some versions; keep them short.
MAX_MESSAGE = 1000
# client-go's defaults: the correlator's cache size and its aggregation interval.
SERIES_KEPT = 4096
SERIES_WINDOW_SECONDS = 600.0


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> datetime:
    return datetime.now(UTC)


def build_event(
    body: dict[str, Any],
    event_type: str,
    reason: str,
    message: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    metadata = body["metadata"]
    stamp = _timestamp(now or _now())
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
        "message": message[:MAX_MESSAGE],
        "source": {"component": REPORTING_COMPONENT},
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": REPORTING_COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


@dataclass
class _Series:
    """An Event posted, and how often it has occurred so far."""

    name: str
    count: int
    last: datetime


# (namespace, object uid, type, reason, message): what makes two Events the same one.
_SeriesKey = tuple[str, str, str, str, str]


class EventRecorder:
    """Posts Events about an object, a repeat of a recent one as a count on it."""

    def __init__(
        self,
        api: KubeApi,
        clock: Callable[[], datetime] = _now,
        window_seconds: float = SERIES_WINDOW_SECONDS,
        kept: int = SERIES_KEPT,
    ) -> None:
        self._api = api
        self._clock = clock
        self._window_seconds = window_seconds
        self._kept = kept
        # Least recently posted first: the oldest series is forgotten when more are kept.
        self._series: OrderedDict[_SeriesKey, _Series] = OrderedDict()
        self._guard = threading.Lock()

    def post(self, body: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        """Raises KubeApiError when the API server refuses both the patch and the create."""
        metadata = body["metadata"]
        namespace = metadata["namespace"]
        key = (namespace, metadata["uid"], event_type, reason, message[:MAX_MESSAGE])
        now = self._clock()
        with self._guard:
            series = self._series.get(key)
        if series is not None and (now - series.last).total_seconds() <= self._window_seconds:
            try:
                self._api.merge_patch(
                    EVENTS,
                    namespace,
                    series.name,
                    {"count": series.count + 1, "lastTimestamp": _timestamp(now)},
                )
            except KubeApiError as error:
                if error.status != 404:
                    raise
                # Expired (the API server's event TTL) or deleted: a new series starts.
            else:
                self._remember(key, _Series(series.name, series.count + 1, now))
                return
        created = self._api.create(
            EVENTS, namespace, build_event(body, event_type, reason, message, now)
        )
        self._remember(key, _Series(created["metadata"]["name"], 1, now))

    def _remember(self, key: _SeriesKey, series: _Series) -> None:
        with self._guard:
            self._series[key] = series
            self._series.move_to_end(key)
            while len(self._series) > self._kept:
                self._series.popitem(last=False)
