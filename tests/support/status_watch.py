"""Every status a namespace's rollouts went through, from a watch, and the invariants on it.

A watch gives the API server's own sequence of versions, which a poll could
miss. The chaos tests record with it and check per rollout: no step skipped
or repeated, no canary weight above what the steps reached so far.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

from kubernetes import client, watch

from modelrollout.kube.labels import GROUP, PLURAL, VERSION

# (phase, currentStep, canary weight)
State = tuple[str, int | None, int]


class StatusWatch:
    """Every (phase, step, canary weight) each rollout went through, in order.

    It survives API outages: a broken stream is resumed from the last version
    seen, so nothing is missed. Only when the API server no longer has that
    version (410 Gone, e.g. after a restart of the API server, whose watch
    cache starts afresh) does it list again, from the current state;
    `relists` counts those, as a state written between the outage and the
    list could be missing from `seen`.
    """

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._namespace = namespace
        self.seen: dict[str, list[State]] = defaultdict(list)
        # When each state in `seen` was recorded (time.monotonic()), for reports.
        self.seen_at: dict[str, list[float]] = defaultdict(list)
        # Every version of each rollout's status, whatever changed in it.
        self.statuses: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.relists = 0
        self.stream_errors = 0
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stopped = False

    def _run(self) -> None:
        resource_version = ""
        while not self._stopped:
            try:
                for event in self._watch.stream(
                    self._custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self._namespace,
                    PLURAL,
                    resource_version=resource_version,
                    # Short streams, resumed from the last version: `__exit__` waits for
                    # the one in flight to end.
                    timeout_seconds=5,
                ):
                    body: dict[str, Any] = event["object"]
                    resource_version = body["metadata"]["resourceVersion"]
                    self._record(body)
            except client.ApiException as error:
                if self._stopped:
                    return
                self.stream_errors += 1
                if error.status == 410:  # that version is gone: list afresh
                    resource_version = ""
                    self.relists += 1
                time.sleep(0.2)
            except Exception:  # the watch ends when stopped, or the API server is away: go on
                if self._stopped:
                    return
                self.stream_errors += 1
                time.sleep(0.2)

    def _record(self, body: dict[str, Any]) -> None:
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

    def timeline(self, name: str, since: float) -> str:
        """The states of one rollout with the seconds since `since` each was seen at."""
        return ", ".join(
            f"{state} +{at - since:.1f}s"
            for state, at in zip(self.seen[name], self.seen_at[name], strict=True)
        )

    def __enter__(self) -> StatusWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped = True
        self._watch.stop()
        self._thread.join(timeout=15)


def steps_walked(states: list[State]) -> list[int]:
    """The canary steps in the order the rollout was at them, each run of one step once."""
    walked: list[int] = []
    for phase, step, _ in states:
        if phase in ("Progressing", "Paused") and step is not None and step not in walked[-1:]:
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
