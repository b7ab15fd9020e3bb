"""Two operator replicas on one Lease: one drives, the other takes over when it dies."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client

from modelrollout.kube.api import LEASES, KubeApi
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.processes import free_port
from tests.conftest import ClusterUnderTest
from tests.e2e.conftest import TEST_TICK_INTERVAL
from tests.e2e.test_canary_operator import scrape, start_stable, step_sequence
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, StatusRecorder, rollout_manifest

pytestmark = pytest.mark.e2e

LEASE_SECONDS = 4
RETRY_SECONDS = 0.5


def _replica(
    cluster_under_test: ClusterUnderTest, namespace: str, tmp_path: Path, name: str
) -> OperatorProcess:
    return OperatorProcess(
        cluster_under_test.kubeconfig,
        namespace,
        tmp_path / name,
        tick_interval=TEST_TICK_INTERVAL,
        metrics_port=free_port(),
        liveness_port=free_port(),
        extra_env={
            "MODELROLLOUT_LEADER_ELECTION": "on",
            "POD_NAMESPACE": namespace,
            "POD_NAME": name,
            "MODELROLLOUT_LEASE_DURATION": str(LEASE_SECONDS),
            "MODELROLLOUT_LEASE_RENEW_DEADLINE": "3",
            "MODELROLLOUT_LEASE_RETRY_PERIOD": str(RETRY_SECONDS),
        },
    )


def _healthy(process: OperatorProcess) -> bool:
    url = f"http://127.0.0.1:{process.liveness_port}/healthz"
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status) == 200


def _metric(process: OperatorProcess, name: str) -> float | None:
    """The sample's value; None while the process is still starting."""
    assert process.metrics_port is not None
    try:
        return scrape(process.metrics_port).get((name, frozenset()), 0.0)
    except OSError:
        return None


def test_the_standby_takes_over_within_the_lease_and_never_drives_while_the_leader_lives(
    cluster_under_test: ClusterUnderTest,
    kube_api_client: client.ApiClient,
    namespace: str,
    rollouts: Rollouts,
    tmp_path: Path,
) -> None:
    api = KubeApi(kube_api_client)

    def holder() -> str | None:
        lease = api.get(LEASES, namespace, "modelrollout-operator")
        return None if lease is None else lease["spec"].get("holderIdentity")

    first = _replica(cluster_under_test, namespace, tmp_path, "replica-a")
    second = _replica(cluster_under_test, namespace, tmp_path, "replica-b")
    first.start()
    try:
        wait_until(lambda: holder() == "replica-a", 30, "replica-a to lead")
        second.start()
        wait_until(lambda: _metric(second, "modelrollout_leader") == 0.0, 30, "replica-b up")
        # The standby is alive and well: kopf's liveness endpoint (the chart's
        # probes) must not get it restarted for not leading.
        assert _healthy(first) and _healthy(second)

        steps = [
            {"setWeight": 25},
            {"pause": {"duration": "3s"}},
            {"setWeight": 50},
            {"pause": {"duration": "3s"}},
            {"setWeight": 75},
            {"pause": {"duration": "3s"}},
        ]
        start_stable(rollouts, rollout_manifest("chat", "file:///models/v1", steps))
        recorder = StatusRecorder(rollouts, "chat")
        with recorder.recording():
            rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": "file:///models/v2"}})
            wait_until(
                lambda: (rollouts.status("chat").get("currentStep") or 0) >= 1,
                30,
                "the canary's second step",
            )
            # While the leader lives the standby has ticked nothing at all.
            assert _metric(second, "modelrollout_tick_duration_seconds_count") == 0.0
            assert (_metric(first, "modelrollout_tick_duration_seconds_count") or 0.0) > 0.0

            first.kill()
            killed_at = time.monotonic()
            wait_until(lambda: holder() == "replica-b", 30, "replica-b to take over")
            takeover_seconds = time.monotonic() - killed_at
            status = rollouts.wait_phase("chat", {"Succeeded"}, 90)
    finally:
        first.stop()
        second.stop()

    print(f"standby took over {takeover_seconds:.1f} s after the leader was killed")
    # Expiry is counted from when the standby last saw the record move, so at
    # most one lease duration plus a retry period or two after the kill.
    assert takeover_seconds <= LEASE_SECONDS + 3 * RETRY_SECONDS + 1, takeover_seconds
    assert status["history"][0]["outcome"] == "Promoted"
    assert step_sequence(recorder.seen) == list(range(len(steps))), recorder.seen
    canary_weights = [w for phase, _, w in recorder.seen if phase in ("Progressing", "Paused")]
    assert canary_weights and max(canary_weights) <= 75, recorder.seen
    # A repeat of an Event is a count on it (kube/events.py): each occurrence is one start.
    step_events = [
        e.message
        for e in rollouts.events("chat")
        if e.reason == "StepStarted"
        for _ in range(e.count or 1)
    ]
    assert len(step_events) == len(set(step_events)), f"a step was started twice: {step_events}"
