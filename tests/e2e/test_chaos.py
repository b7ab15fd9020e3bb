"""Chaos, bounded in time: the operator SIGKILLed at random points while 30 rollouts progress.

Every status change of every rollout is recorded from a watch (the API
server's own sequence of versions, not a poll that could miss one), and the
invariants are checked per rollout: no step skipped or repeated, no canary
weight above what the steps reached so far, each promoted exactly once.
"""

from __future__ import annotations

import random
import time

import pytest
from kubernetes import client

from modelrollout_dev.operator_process import OperatorProcess
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest
from tests.support.status_watch import StatusWatch, overshoots, steps_walked

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
        for name in names:
            recorded.wait_for_phase(name, "Succeeded", 30)

    print(f"chaos: {kills} SIGKILLs over {ROLLOUTS} rollouts")
    assert kills >= 5
    for name in names:
        states = recorded.seen[name]
        assert steps_walked(states) == list(range(len(STEPS))), (name, states)
        assert not overshoots(states, STEPS), (name, states)
        status = rollouts.status(name)
        promotions = [entry for entry in status["history"] if entry["outcome"] == "Promoted"]
        assert len(promotions) == 2, (name, status["history"])  # first revision, then v2
        # A repeat of an Event is a count on it (kube/events.py): each occurrence is one start.
        started = [
            e.message
            for e in rollouts.events(name)
            if e.reason == "StepStarted"
            for _ in range(e.count or 1)
        ]
        assert len(started) == len(set(started)), (name, started)
