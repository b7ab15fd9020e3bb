"""Notifications from the real operator process to a real HTTP receiver in the test process.

A canary that promotes and one that rolls back: every event is delivered
once, in order, and says what the rollout's Events say. The receiver of the
rollback answers 500 at first: the notifications arrive after it recovers,
within the retry budget (set short here through the operator's settings). A
sink whose Secret is missing is a Warning Event naming the field, and the
rollout goes on as if it had none.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.prometheus import PrometheusHandle
from tests.conftest import ClusterUnderTest
from tests.e2e.conftest import TEST_TICK_INTERVAL
from tests.e2e.test_canary_operator import STEPS, rollback_on_positive, start_stable
from tests.support.kube import wait_until
from tests.support.notify_receiver import NotificationReceiver, notification_receiver
from tests.support.rollouts import Rollouts, rollout_manifest

pytestmark = pytest.mark.e2e

# Short backoff and budget: a test asserts behaviour, not a minute of waiting.
FAST_RETRIES = {
    "MODELROLLOUT_NOTIFICATION_BACKOFF": "0.2",
    "MODELROLLOUT_NOTIFICATION_MAX_BACKOFF": "1",
    "MODELROLLOUT_NOTIFICATION_RETRY_BUDGET": "60",
    "MODELROLLOUT_NOTIFICATION_TIMEOUT": "5",
}


@pytest.fixture
def receiver() -> Iterator[NotificationReceiver]:
    with notification_receiver() as running:
        yield running


@pytest.fixture
def operator(
    cluster_under_test: ClusterUnderTest, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        cluster_under_test.kubeconfig,
        namespace,
        tmp_path,
        tick_interval=TEST_TICK_INTERVAL,
        extra_env=FAST_RETRIES,
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def url_secret(rollouts: Rollouts, url: str) -> None:
    rollouts.core.create_namespaced_secret(
        rollouts.namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="rollout-notifications"),
            string_data={"webhook": url},
        ),
    )


def with_notifications(manifest: dict[str, Any], *sinks: dict[str, Any]) -> dict[str, Any]:
    manifest["spec"]["notifications"] = {"sinks": list(sinks)}
    return manifest


WEBHOOK = {
    "name": "audit",
    "type": "webhook",
    "urlSecretRef": {"name": "rollout-notifications", "key": "webhook"},
}


def kinds(receiver: NotificationReceiver) -> list[str]:
    return [r.body["kind"] for r in receiver.received]


def event_messages(rollouts: Rollouts, name: str) -> list[str]:
    return [event.message for event in rollouts.events(name)]


def test_a_promoted_canary_tells_each_event_once_in_order(
    rollouts: Rollouts, operator: OperatorProcess, receiver: NotificationReceiver
) -> None:
    url_secret(rollouts, f"{receiver.url}/audit")
    missing = {**WEBHOOK, "name": "lost", "urlSecretRef": {"name": "nowhere", "key": "url"}}
    v1 = with_notifications(rollout_manifest("chat", "file:///models/v1", STEPS), WEBHOOK, missing)
    start_stable(rollouts, v1)
    rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": "file:///models/v2"}})
    status = rollouts.wait_phase("chat", {"Succeeded"}, 90)

    arrived = receiver.wait_for(5, 30)
    assert [r.body["kind"] for r in arrived] == [
        "Started",
        "StepAdvanced",
        "StepAdvanced",
        "StepAdvanced",
        "Promoted",
    ]
    assert [r.body["step"]["index"] for r in arrived[:4]] == [1, 2, 3, 4]
    assert arrived[-1].body["revisions"]["stable"] == status["stableRevision"]
    assert {r.path for r in arrived} == {"/audit"}
    assert len({r.body["id"] for r in arrived}) == 5
    # What each says is what the rollout's Events say.
    messages = event_messages(rollouts, "chat")
    for received in arrived:
        assert any(received.body["message"] in message for message in messages), received.body
    # The sink without its Secret: a Warning naming the field; the rollout was not held.
    failed = wait_until(
        lambda: [e for e in rollouts.events("chat") if e.reason == "NotificationFailed"],
        30,
        "a NotificationFailed Event",
    )
    assert failed[0].type == "Warning"
    assert failed[0].message.startswith("spec.notifications.sinks[1].urlSecretRef: Secret "), (
        failed[0].message
    )
    assert receiver.url not in failed[0].message
    # Nothing more comes for a rollout at rest: each event was told once.
    assert kinds(receiver) == [r.body["kind"] for r in arrived]


def test_a_rollback_reaches_a_sink_that_failed_at_first_with_the_check_and_value(
    rollouts: Rollouts,
    operator: OperatorProcess,
    receiver: NotificationReceiver,
    prometheus: PrometheusHandle,
) -> None:
    url_secret(rollouts, f"{receiver.url}/audit")
    analysis = rollback_on_positive(prometheus.url, "always-one", "vector(1)")
    steps = [{"setWeight": 50}, {"analysis": {"duration": "30s"}}]
    v1 = with_notifications(
        rollout_manifest("chat", "file:///models/v1", steps, analysis=analysis), WEBHOOK
    )
    start_stable(rollouts, v1)
    receiver.failures_left = 3
    rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": "file:///models/v2"}})
    rollouts.wait_phase("chat", {"RolledBack"}, 60)

    arrived = wait_until(
        lambda: receiver.received if "RolledBack" in kinds(receiver) else None,
        60,
        "the rollback's notification",
    )
    assert receiver.failed == 3
    told = [r.body["kind"] for r in arrived]
    # Whether the weight step ended before the breach depends on when the check first ran.
    assert told in (
        ["Started", "Breach", "RolledBack"],
        ["Started", "StepAdvanced", "Breach", "RolledBack"],
    ), told
    rolled_back = arrived[-1].body
    assert rolled_back["severity"] == "critical"
    assert rolled_back["reason"] == "CheckBreached"
    assert rolled_back["check"]["name"] == "always-one"
    assert rolled_back["check"]["value"] == 1
    assert "always-one" in rolled_back["message"]
