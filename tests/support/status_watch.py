"""Every version of a namespace's objects, from a watch, and the invariants on rollouts' statuses.

A watch gives the API server's own sequence of versions, which a poll could
miss. The chaos tests record rollouts with it and check per rollout: no step
skipped or repeated, no canary weight above what the steps reached so far.
Tests wait on it too: `wait_for` looks again each time a version arrives,
never on a timer.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client, watch

from modelrollout.kube.labels import GROUP, PLURAL, VERSION

T = TypeVar("T")

# (phase, currentStep, canary weight)
State = tuple[str, int | None, int]
# (ADDED | MODIFIED | DELETED, the object as the API server sent it)
Event = tuple[str, dict[str, Any]]


class Recording:
    """Something recorded as it arrives, that a test can wait on.

    A recorder appends under `_changed` and notifies it; `wait_for` looks again
    each time, never on a timer.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()

    def wait_for(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        """Wait until `probe` returns something truthy, asking again as each record arrives.

        `probe` runs with the recording held still: it reads what was recorded
        and makes no API call.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = probe()
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
                self._changed.wait(left)


class ObjectWatch(Recording):
    """Every version of one kind of object in one namespace, in the API server's order.

    It lists first, so `events` starts from the state at `__enter__` (each
    object then ADDED), and watches from that list's version on. It survives
    API outages: a broken stream is resumed from the last version seen, so
    nothing is missed. Only when the API server no longer has that version
    (410 Gone, e.g. after a restart of the API server, whose watch cache
    starts afresh) does it list again, from the current state; `relists`
    counts those, as a version written between the outage and the list could
    be missing from `events`.
    """

    def __init__(self, list_objects: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self._list = list_objects
        self._args = args
        self._kwargs = kwargs
        self.events: list[Event] = []
        # The objects as they are now, by name.
        self.current: dict[str, dict[str, Any]] = {}
        self.relists = 0
        self.stream_errors = 0
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stopped = False
        self._start_version = ""

    def _list_all(self) -> str:
        """Record what is there now; returns the version to watch from."""
        response = self._list(*self._args, **self._kwargs, _preload_content=False)
        listed = json.loads(response.data)
        names = set()
        for body in listed["items"]:
            names.add(body["metadata"]["name"])
            self._add("ADDED", body)
        for name in set(self.current) - names:
            self._add("DELETED", self.current[name])
        return str(listed["metadata"]["resourceVersion"])

    def _run(self) -> None:
        resource_version = self._start_version
        while not self._stopped:
            try:
                if not resource_version:
                    resource_version = self._list_all()
                    self.relists += 1
                for event in self._watch.stream(
                    self._list,
                    *self._args,
                    **self._kwargs,
                    resource_version=resource_version,
                    # Short streams, resumed from the last version: `__exit__` waits for
                    # the one in flight to end.
                    timeout_seconds=5,
                ):
                    # As sent (the client's `deserialize=False` would break its own
                    # handling of a 410 ERROR event, which reads `raw_object`).
                    body: dict[str, Any] = event["raw_object"]
                    resource_version = body["metadata"]["resourceVersion"]
                    self._add(event["type"], body)
            except client.ApiException as error:
                if self._stopped:
                    return
                self.stream_errors += 1
                if error.status == 410:  # that version is gone: list afresh
                    resource_version = ""
                time.sleep(0.2)
            except Exception:  # the watch ends when stopped, or the API server is away: go on
                if self._stopped:
                    return
                self.stream_errors += 1
                time.sleep(0.2)

    def _add(self, kind: str, body: dict[str, Any]) -> None:
        with self._changed:
            self.events.append((kind, body))
            name = body["metadata"]["name"]
            if kind == "DELETED":
                self.current.pop(name, None)
            else:
                self.current[name] = body
            self._record(kind, body)
            self._changed.notify_all()

    def _record(self, kind: str, body: dict[str, Any]) -> None:
        """What a subclass keeps of each version, beside `events`."""

    def versions(self, name: str, since: int = 0) -> list[dict[str, Any]]:
        """Every version of one object, from event `since` on (an index into `events`)."""
        return [
            body
            for kind, body in self.events[since:]
            if kind != "DELETED" and body["metadata"]["name"] == name
        ]

    def __enter__(self) -> ObjectWatch:
        self._start_version = self._list_all()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the watch to end; `__exit__` waits for the stream in flight to end."""
        self._stopped = True
        self._watch.stop()

    def __exit__(self, *_: object) -> None:
        self.stop()
        self._thread.join(timeout=15)


class StatusWatch(ObjectWatch):
    """Every (phase, step, canary weight) each rollout in a namespace went through, in order."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        super().__init__(
            client.CustomObjectsApi(api_client).list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
        )
        self.seen: dict[str, list[State]] = defaultdict(list)
        # When each state in `seen` was recorded (time.monotonic()), for reports.
        self.seen_at: dict[str, list[float]] = defaultdict(list)
        # Every version of each rollout's status, whatever changed in it.
        self.statuses: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def _record(self, kind: str, body: dict[str, Any]) -> None:
        if kind == "DELETED":
            return
        status = body.get("status") or {}
        state = (
            status.get("phase", ""),
            status.get("currentStep"),
            int((status.get("weights") or {}).get("canary", 0)),
        )
        name = body["metadata"]["name"]
        if not self.statuses[name] or self.statuses[name][-1] != status:
            self.statuses[name].append(status)
        history = self.seen[name]
        if not history or history[-1] != state:
            history.append(state)
            self.seen_at[name].append(time.monotonic())

    def wait_for_phase(self, name: str, phase: str, timeout: float) -> None:
        """Wait until the last state seen of `name` is in `phase`: the watch has caught up."""
        self.wait_for(
            lambda: self.seen[name][-1:] and self.seen[name][-1][0] == phase,
            timeout,
            f"the status watch to see {name} {phase}",
        )

    def timeline(self, name: str, since: float) -> str:
        """The states of one rollout with the seconds since `since` each was seen at."""
        return ", ".join(
            f"{state} +{at - since:.1f}s"
            for state, at in zip(self.seen[name], self.seen_at[name], strict=True)
        )

    def __enter__(self) -> StatusWatch:
        super().__enter__()
        return self


def steps_walked(states: list[State], steps: list[dict[str, Any]] | None = None) -> list[int]:
    """The canary steps in the order the rollout was at them, each run of one step once.

    With `steps`: a weight step done in the status write that sets its weight (a
    router with exact weights) never shows as the current step; the write shows
    the step after it (or promotion) at that weight, which counts as walking it.
    """
    walked: list[int] = []
    for phase, step, weight in states:
        walking = phase in ("Progressing", "Paused") and step is not None
        if steps is not None and walked and (walking or phase in ("Promoting", "Succeeded")):
            reached = step if walking and step is not None else len(steps)
            skipped = range(walked[-1] + 1, reached)
            set_weights = [steps[i].get("setWeight") for i in skipped]
            if (
                set_weights
                and None not in set_weights
                and (not walking or weight == set_weights[-1])
            ):
                walked.extend(skipped)
        if walking and step is not None and step not in walked[-1:]:
            walked.append(step)
    return walked


def allowed_weights(steps: list[dict[str, Any]]) -> list[int]:
    """The highest canary weight a rollout may show while at step i: what steps 0..i set."""
    return [
        max([0, *(s["setWeight"] for s in steps[: index + 1] if "setWeight" in s)])
        for index in range(len(steps))
    ]


def overshoots(states: list[State], steps: list[dict[str, Any]]) -> list[State]:
    """States of a progressing canary whose weight is above what its steps reached."""
    allowed = allowed_weights(steps)
    return [
        (phase, step, weight)
        for phase, step, weight in states
        if phase in ("Progressing", "Paused")
        and step is not None
        and weight > allowed[min(step, len(steps) - 1)]
    ]
