"""One watch per resource kind, shared by every open page.

Two threads (ModelRollouts, and Events about ModelRollouts) each list once
and then watch, relisting only when the API server says the version is too
old. What they see is applied on the asyncio loop (the only thread that
touches the state, so no locks), where each change is turned into a view
once and handed to the pages that show it: the list page gets the changed
row, a rollout's page its whole view.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from urllib3.exceptions import HTTPError

from modelrollout.kube.api import MODELROLLOUTS, KubeApi, KubeApiError, Resource
from modelrollout.kube.events import EVENTS
from modelrollout.kubectl.dashboard.views import (
    WeightPoint,
    detail,
    involved_key,
    key_of,
    list_row,
    weight_point,
)

WATCH_TIMEOUT_SECONDS = 300
MAX_WEIGHT_POINTS = 1000
QUEUE_SIZE = 256
BACKOFF_MAX_SECONDS = 30.0


@dataclass(frozen=True)
class Kind:
    name: str
    resource: Resource
    field_selector: str | None = None


ROLLOUTS = Kind("modelrollouts", MODELROLLOUTS)
ROLLOUT_EVENTS = Kind("events", EVENTS, "involvedObject.kind=ModelRollout")
KINDS = (ROLLOUTS, ROLLOUT_EVENTS)


@dataclass(frozen=True)
class Message:
    event: str
    data: dict[str, Any]


@dataclass(eq=False)
class Subscription:
    """One open page: the list (`key` None, optionally one namespace) or one rollout."""

    key: str | None
    namespace: str = ""
    queue: asyncio.Queue[Message | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))

    def wants_row(self, key: str) -> bool:
        return self.key is None and (not self.namespace or key.startswith(f"{self.namespace}/"))


@dataclass
class KindStats:
    lists: int = 0
    watches: int = 0
    open_watches: int = 0
    last_error: str | None = None


class Hub:
    def __init__(self, api: KubeApi, namespace: str, now: Callable[[], datetime] | None = None):
        self._api = api
        self.namespace = namespace
        self._now = now or (lambda: datetime.now(UTC))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stats_lock = threading.Lock()
        self.stats = {kind.name: KindStats() for kind in KINDS}
        self.synced = {kind.name: False for kind in KINDS}
        self.rollouts: dict[str, dict[str, Any]] = {}
        # Events by the rollout they are about, then by the Event's own namespace/name.
        self.events: dict[str, dict[str, dict[str, Any]]] = {}
        self.weights: dict[str, list[WeightPoint]] = {}
        self.subscriptions: set[Subscription] = set()

    # -- lifecycle (the loop's thread) -------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for kind in KINDS:
            thread = threading.Thread(
                target=self._run, args=(kind,), name=f"dashboard-watch-{kind.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopped.set()
        for subscription in list(self.subscriptions):
            self._offer(subscription, None)

    # -- what pages read (the loop's thread) -------------------------------------------

    def events_of(self, key: str) -> list[dict[str, Any]]:
        return list(self.events.get(key, {}).values())

    def rows(self, namespace: str = "") -> list[dict[str, Any]]:
        return [
            list_row(body, self.events_of(key))
            for key, body in sorted(self.rollouts.items())
            if not namespace or key.startswith(f"{namespace}/")
        ]

    def detail(self, key: str) -> dict[str, Any] | None:
        body = self.rollouts.get(key)
        if body is None:
            return None
        return detail(body, self.events_of(key), self.weights.get(key, []), self._now())

    def subscribe(self, key: str | None, namespace: str = "") -> Subscription:
        subscription = Subscription(key, namespace)
        self.subscriptions.add(subscription)
        self._offer(subscription, self._snapshot(subscription))
        self._offer(subscription, self._errors())
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    def stats_view(self) -> dict[str, Any]:
        with self._stats_lock:
            kinds = {name: vars(stats).copy() for name, stats in self.stats.items()}
        return {
            "namespace": self.namespace or None,
            "kinds": kinds,
            "synced": dict(self.synced),
            "pages": len(self.subscriptions),
            "rollouts": len(self.rollouts),
        }

    def _errors(self) -> Message:
        """What the API server last refused or failed per kind (RBAC, reachability); {} if none."""
        with self._stats_lock:
            errors = {name: stats.last_error for name, stats in self.stats.items()}
        return Message("errors", {name: error for name, error in errors.items() if error})

    def _errors_changed(self) -> None:
        message = self._errors()
        for subscription in list(self.subscriptions):
            self._offer(subscription, message)

    def _snapshot(self, subscription: Subscription) -> Message:
        if subscription.key is None:
            return Message("rows", {"rows": self.rows(subscription.namespace)})
        view = self.detail(subscription.key)
        if view is None:
            return Message(
                "missing", {"key": subscription.key, "synced": self.synced["modelrollouts"]}
            )
        return Message("detail", view)

    def _offer(self, subscription: Subscription, message: Message | None) -> None:
        try:
            subscription.queue.put_nowait(message)
        except asyncio.QueueFull:
            # A page that does not read is dropped; its EventSource reconnects to a fresh snapshot.
            self.subscriptions.discard(subscription)

    def _changed(self, key: str) -> None:
        """Hand the changed rollout's row and view to the pages that show it, each made once."""
        row: Message | None = None
        view: Message | None = None
        for subscription in list(self.subscriptions):
            if subscription.wants_row(key):
                if row is None:
                    body = self.rollouts.get(key)
                    row = (
                        Message("row", list_row(body, self.events_of(key)))
                        if body is not None
                        else Message("removed", {"key": key})
                    )
                self._offer(subscription, row)
            elif subscription.key == key:
                if view is None:
                    view = self._snapshot(subscription)
                self._offer(subscription, view)

    def _refresh_all(self) -> None:
        for subscription in list(self.subscriptions):
            self._offer(subscription, self._snapshot(subscription))

    # -- applying what the watches saw (the loop's thread) ------------------------------

    def _record_weights(self, key: str, body: dict[str, Any]) -> None:
        point = weight_point(body, self._now())
        points = self.weights.setdefault(key, [])
        last = points[-1] if points else None
        if last is None or (last.stable, last.canary, last.mirror, last.step) != (
            point.stable,
            point.canary,
            point.mirror,
            point.step,
        ):
            points.append(point)
            del points[:-MAX_WEIGHT_POINTS]

    def _reset(self, kind: Kind, items: list[dict[str, Any]]) -> None:
        if kind is ROLLOUTS:
            self.rollouts = {key_of(body): body for body in items}
            for key, body in self.rollouts.items():
                self._record_weights(key, body)
            for gone in set(self.weights) - set(self.rollouts):
                del self.weights[gone]
        else:
            self.events = {}
            for event in items:
                self.events.setdefault(involved_key(event), {})[key_of(event)] = event
        self.synced[kind.name] = True
        self._refresh_all()

    def _apply(self, kind: Kind, change: str, body: dict[str, Any]) -> None:
        if kind is ROLLOUTS:
            key = key_of(body)
            if change == "DELETED":
                self.rollouts.pop(key, None)
                self.weights.pop(key, None)
            else:
                self.rollouts[key] = body
                self._record_weights(key, body)
        else:
            key = involved_key(body)
            about = self.events.setdefault(key, {})
            if change == "DELETED":
                about.pop(key_of(body), None)
            else:
                about[key_of(body)] = body
        self._changed(key)

    # -- the watch threads ---------------------------------------------------------------

    def _post(self, function: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._stopped.is_set():
            self._loop.call_soon_threadsafe(function, *args)

    def _run(self, kind: Kind) -> None:
        stats = self.stats[kind.name]
        backoff = 1.0
        while not self._stopped.is_set():
            try:
                with self._stats_lock:
                    stats.lists += 1
                items, version = self._api.list_with_version(
                    kind.resource, self.namespace, field_selector=kind.field_selector
                )
                self._post(self._reset, kind, items)
                self._set_error(stats, None)
                while not self._stopped.is_set() and version:
                    version = self._watch(kind, stats, version)
                    backoff = 1.0
            except KubeApiError as error:
                self._set_error(stats, error.message)
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
            except (HTTPError, OSError, ValueError) as error:
                self._set_error(stats, f"cannot reach the API server: {error}")
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    def _set_error(self, stats: KindStats, error: str | None) -> None:
        with self._stats_lock:
            changed, stats.last_error = stats.last_error != error, error
        if changed:
            self._post(self._errors_changed)

    def _watch(self, kind: Kind, stats: KindStats, version: str) -> str:
        """Watch from `version` until the server ends the stream; "" when a relist is due."""
        with self._stats_lock:
            stats.watches += 1
            stats.open_watches += 1
        try:
            for event in self._api.watch(
                kind.resource,
                self.namespace,
                "",
                version,
                WATCH_TIMEOUT_SECONDS,
                field_selector=kind.field_selector,
            ):
                if self._stopped.is_set():
                    return ""
                change, body = event.get("type"), event.get("object") or {}
                if change == "ERROR":
                    if body.get("code") == 410:
                        return ""
                    raise KubeApiError(
                        int(body.get("code") or 0),
                        str(body.get("reason")),
                        str(body.get("message")),
                    )
                version = str((body.get("metadata") or {}).get("resourceVersion") or version)
                if change != "BOOKMARK":
                    self._post(self._apply, kind, str(change), body)
            return version
        finally:
            with self._stats_lock:
                stats.open_watches -= 1
