"""Alertmanager's webhook against the real operator process: a push rolls a canary back at once.

The rollout's analysis polls a real Prometheus every 60 s, where the alert
never fires: only the push can roll it back within the test's bound. Requests
the receiver must refuse (no token, a wrong token, a payload too large, a
malformed one) and alerts it must ignore (another revision's) are sent first;
the status watch shows that none of them moved the rollout. With two replicas
on a Lease, the standby's receiver refuses with 503 and the leader's accepts.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelrollout.kube.api import LEASES, KubeApi
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.prometheus import PrometheusHandle
from tests.conftest import ClusterUnderTest
from tests.e2e.conftest import TEST_TICK_INTERVAL
from tests.e2e.test_canary_operator import revision, start_stable
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest, with_model
from tests.support.status_watch import StatusWatch

pytestmark = pytest.mark.e2e

TOKEN = "e2e-" + uuid.uuid4().hex


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/alerts"

    def post(self, body: bytes, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def listening(self) -> bool:
        try:
            self.post(b"{}", token=None)
        except OSError:
            return False
        return True


def operator_with_receiver(
    cluster_under_test: ClusterUnderTest,
    namespace: str,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
) -> tuple[OperatorProcess, Receiver]:
    token_file = log_dir / "alert-receiver-token"
    log_dir.mkdir(parents=True, exist_ok=True)
    token_file.write_text(TOKEN)
    port = _free_port()
    process = OperatorProcess(
        cluster_under_test.kubeconfig,
        namespace,
        log_dir,
        tick_interval=TEST_TICK_INTERVAL,
        extra_env={
            "MODELROLLOUT_ALERT_RECEIVER_PORT": str(port),
            "MODELROLLOUT_ALERT_RECEIVER_TOKEN_FILE": str(token_file),
            **(extra_env or {}),
        },
    )
    return process, Receiver(port)


@pytest.fixture
def receiver(
    cluster_under_test: ClusterUnderTest, namespace: str, tmp_path: Path
) -> Iterator[Receiver]:
    process, receiver = operator_with_receiver(cluster_under_test, namespace, tmp_path)
    process.start()
    try:
        wait_until(receiver.listening, 60, "the operator's alert receiver to listen")
        yield receiver
    finally:
        process.stop()


def rollback_on_alert(prometheus_url: str, alertname: str) -> dict[str, Any]:
    """An analysis that rolls the canary back on `alertname` for its revision, polled only
    once a minute: a firing alert would be seen a minute after the canary's first look."""
    return {
        "prometheus": {"address": prometheus_url, "timeout": "2s"},
        "interval": "60s",
        "alerts": [
            {
                "alertname": alertname,
                "matchLabels": {"namespace": "{{namespace}}", "revision": "{{canary.revision}}"},
                "action": "rollback",
            }
        ],
    }


def webhook(alertname: str, labels: dict[str, str], fingerprint: str) -> bytes:
    alert = {
        "status": "firing",
        "labels": {"alertname": alertname, **labels},
        "annotations": {},
        "startsAt": "2026-12-06T02:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": fingerprint,
    }
    return json.dumps(
        {
            "version": "4",
            "status": "firing",
            "receiver": "modelrollout",
            "groupLabels": {"alertname": alertname},
            "alerts": [alert],
        }
    ).encode()


def test_a_pushed_alert_rolls_the_canary_back_before_any_poll_and_bad_pushes_change_nothing(
    rollouts: Rollouts,
    receiver: Receiver,
    prometheus: PrometheusHandle,
    kube_api_client: client.ApiClient,
    namespace: str,
) -> None:
    alertname = f"ModelHighErrorRate{uuid.uuid4().hex[:6]}"
    analysis = rollback_on_alert(prometheus.url, alertname)
    steps = [{"setWeight": 50}, {"analysis": {"duration": "10m"}}]
    v1 = rollout_manifest("chat", "file:///models/v1", steps, analysis=analysis)
    start_stable(rollouts, v1)
    v2 = with_model(v1, "file:///models/v2")
    canary = revision(v2)
    canary_labels = {"namespace": namespace, "revision": canary}

    with StatusWatch(kube_api_client, namespace) as watch:
        rollouts.patch_spec("chat", {"model": v2["spec"]["model"]})
        watch.wait_for(
            lambda: any(
                c["name"] == f"alert:{alertname}" and c.get("state") == "Passing"
                for c in (watch.statuses["chat"] or [{}])[-1].get("checks", [])
            ),
            60,
            "the canary's first poll of its alert (not firing)",
        )
        assert watch.seen["chat"][-1] == ("Progressing", 1, 50)

        refused = [
            receiver.post(webhook(alertname, canary_labels, "a1"), token=None),
            receiver.post(webhook(alertname, canary_labels, "a2"), token="wrong"),
            receiver.post(b"[" * (2 << 20)),
            receiver.post(b'{"version": "4", "alerts": [{"status": "firing"}]}'),
            receiver.post(b"{not json"),
        ]
        assert [status for status, _ in refused] == [401, 401, 413, 400, 400]
        other = receiver.post(webhook(alertname, {**canary_labels, "revision": "0" * 10}, "a3"))
        assert other == (200, {"matched": [], "replayed": 0, "ignored": 1})

        pushed_at = time.monotonic()
        accepted = receiver.post(webhook(alertname, canary_labels, "a4"))
        assert accepted == (200, {"matched": [f"{namespace}/chat"], "replayed": 0, "ignored": 0})
        watch.wait_for_phase("chat", "RolledBack", 60)

    states, seen_at = watch.seen["chat"], watch.seen_at["chat"]
    first_rollback = next(i for i, state in enumerate(states) if state[0] == "RollingBack")
    # The refused and ignored pushes moved nothing: the canary was still at its analysis
    # step, at 50%, when the accepted push came, and the rollback followed it.
    assert states[first_rollback - 1] == ("Progressing", 1, 50), watch.timeline("chat", pushed_at)
    assert seen_at[first_rollback] > pushed_at
    # Well before the next poll (60 s after the first).
    assert seen_at[first_rollback] - pushed_at < 15, watch.timeline("chat", pushed_at)
    status = rollouts.status("chat")
    assert status["weights"]["canary"] == 0
    assert alertname in status["history"][0]["reason"]
    # Prometheus never fired it: the poll could not have.
    assert not prometheus.query(f'ALERTS{{alertname="{alertname}"}}')
    print(f"push -> RollingBack seen: {seen_at[first_rollback] - pushed_at:.2f}s")

    # Alertmanager sends the group again: acknowledged, not acted on again.
    assert receiver.post(webhook(alertname, canary_labels, "a4")) == (
        200,
        {"matched": [], "replayed": 1, "ignored": 0},
    )


def test_only_the_leader_takes_pushes_a_standby_answers_503(
    cluster_under_test: ClusterUnderTest,
    kube_api_client: client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    api = KubeApi(kube_api_client)

    def holder() -> str | None:
        lease = api.get(LEASES, namespace, "modelrollout-operator")
        return None if lease is None else lease["spec"].get("holderIdentity")

    def replica(name: str) -> tuple[OperatorProcess, Receiver]:
        election = {
            "MODELROLLOUT_LEADER_ELECTION": "on",
            "POD_NAMESPACE": namespace,
            "POD_NAME": name,
        }
        return operator_with_receiver(cluster_under_test, namespace, tmp_path / name, election)

    (leader, to_leader), (standby, to_standby) = replica("replica-a"), replica("replica-b")
    leader.start()
    try:
        wait_until(lambda: holder() == "replica-a", 30, "replica-a to lead")
        standby.start()
        try:
            wait_until(to_standby.listening, 60, "replica-b's alert receiver to listen")
            push = webhook("ModelHighErrorRate", {"namespace": namespace}, "b1")
            status, answer = to_standby.post(push)
            assert status == 503 and "standby" in answer["error"]
            assert holder() == "replica-a"
            assert to_leader.post(push) == (200, {"matched": [], "replayed": 0, "ignored": 1})
        finally:
            standby.stop()
    finally:
        leader.stop()
