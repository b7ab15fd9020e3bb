"""Chaos, bounded in time: the operator SIGKILLed at random points while 30 rollouts progress.

Every status change of every rollout is recorded from a watch (the API
server's own sequence of versions, not a poll that could miss one), and the
invariants are checked per rollout: no step skipped or repeated, no canary
weight above what the steps reached so far, each promoted exactly once.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from typing import Any

import pytest
from kubernetes import client, watch

from modelrollout.devcluster.operator_process import OperatorProcess
from modelrollout.kube.labels import GROUP, PLURAL, VERSION
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest

pytestmark = pytest.mark.e2e

ROLLOUTS = 30
STEPS = [
    {"setWeight": 20},
    {"pause": {"duration": "2s"}},
    {"setWeight": 50},
    {"pause": {"duration": "2s"}},
    {"setWeight": 80},
    {"pause": {"duration": "2s"}},
]
# The highest weight a rollout may show while at step i: what steps 0..i set.
ALLOWED_WEIGHT = [
    max([0, *(s["setWeight"] for s in STEPS[: index + 1] if "setWeight" in s)])
    for index in range(len(STEPS))
]

State = tuple[str, int | None, int]


class StatusWatch:
    """Every (phase, step, canary weight) each rollout went through, in order."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._namespace = namespace
        self.seen: dict[str, list[State]] = defaultdict(list)
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        resource_version = ""
        while True:
            try:
                for event in self._watch.stream(
                    self._custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self._namespace,
                    PLURAL,
                    resource_version=resource_version,
                    timeout_seconds=60,
                ):
                    body: dict[str, Any] = event["object"]
                    resource_version = body["metadata"]["resourceVersion"]
                    self._record(body)
            except Exception:  # the watch ends when stopped, or on an API hiccup: go on
                if self._stopped:
                    return
                # After an outage the old resourceVersion may be gone (410): list afresh.
                resource_version = ""
                time.sleep(0.2)
            if self._stopped:
                return

    _stopped = False

    def _record(self, body: dict[str, Any]) -> None:
        status = body.get("status") or {}
        state = (
            status.get("phase", ""),
            status.get("currentStep"),
            int((status.get("weights") or {}).get("canary", 0)),
        )
        history = self.seen[body["metadata"]["name"]]
        if not history or history[-1] != state:
            history.append(state)

    def __enter__(self) -> StatusWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped = True
        self._watch.stop()
        self._thread.join(timeout=70)


def steps_walked(states: list[State]) -> list[int]:
    walked: list[int] = []
    for phase, step, _ in states:
        if phase in ("Progressing", "Paused") and step is not None and step not in walked[-1:]:
            walked.append(step)
    return walked


def test_30_rollouts_survive_random_sigkills_without_skipping_repeating_or_overshooting(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    kube_api_client: client.ApiClient,
    namespace: str,
) -> None:
    names = [f"chat-{index:02d}" for index in range(ROLLOUTS)]
    for name in names:
        rollouts.create(rollout_manifest(name, "file:///models/v1", STEPS, replicas=1, gpus=0))
    wait_until(
        lambda: all(rollouts.current_phase(name) == "Succeeded" for name in names),
        120,
        "every first revision stable",
    )
    rng = random.Random(30)
    kills = 0
    with StatusWatch(kube_api_client, namespace) as recorded:
        for name in names:
            rollouts.patch_spec(name, {"model": {"name": name, "uri": "file:///models/v2"}})
        deadline = time.monotonic() + 300
        while not all(rollouts.current_phase(name) == "Succeeded" for name in names):
            assert time.monotonic() < deadline, {n: recorded.seen[n][-3:] for n in names}
            time.sleep(rng.uniform(0.3, 2.5))
            if kills < 8:
                operator_process.kill()
                kills += 1
                time.sleep(rng.uniform(0.2, 1.5))
                operator_process.start()
        time.sleep(1)

    print(f"chaos: {kills} SIGKILLs over {ROLLOUTS} rollouts")
    assert kills >= 5
    for name in names:
        states = recorded.seen[name]
        assert steps_walked(states) == list(range(len(STEPS))), (name, states)
        for phase, step, weight in states:
            if phase in ("Progressing", "Paused") and step is not None:
                assert weight <= ALLOWED_WEIGHT[step], (name, states)
        status = rollouts.status(name)
        promotions = [entry for entry in status["history"] if entry["outcome"] == "Promoted"]
        assert len(promotions) == 2, (name, status["history"])  # first revision, then v2
        started = [e.message for e in rollouts.events(name) if e.reason == "StepStarted"]
        assert len(started) == len(set(started)), (name, started)
