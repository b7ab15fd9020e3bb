"""The notification sender against a real HTTP receiver on 127.0.0.1.

The sender runs on its own event loop in a thread, as in the operator; the
test hands it notifications from its own thread, as a tick does, and waits
on what the receiver records. Backoff and budget are short: the behaviour
is asserted (what arrives, in which order, what is dropped and counted),
not wall-clock time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from modelrollout.engine.notifications import Notification
from modelrollout.kube.workloads import RolloutRef
from modelrollout.metrics import OperatorMetrics
from modelrollout.models.spec import Notifications
from modelrollout.notify.config import ConfigProblem, Target
from modelrollout.notify.policy import RetryPolicy
from modelrollout.notify.sender import Notifier
from tests.support.kube import wait_until
from tests.support.notify_receiver import NotificationReceiver, notification_receiver
from tests.unit.operator.test_notifications import notification

pytestmark = pytest.mark.unit

ROLLOUT = RolloutRef("ml", "chat", "u-1")
FAST = RetryPolicy(
    initial_backoff_seconds=0.05, max_backoff_seconds=0.2, budget_seconds=30, timeout_seconds=5
)


class Running:
    """A Notifier whose sender runs on a loop of its own, in a thread."""

    def __init__(
        self,
        targets: list[Target],
        policy: RetryPolicy = FAST,
        capacity: int = 100,
        problems: list[ConfigProblem] | None = None,
    ) -> None:
        self.metrics = OperatorMetrics()
        self.warnings: list[str] = []
        self._loop = asyncio.new_event_loop()
        self.notifier = Notifier(
            lambda namespace, configured: (targets, problems or []),
            lambda rollout, message: self.warnings.append(message),
            self.metrics,
            policy,
            capacity,
            self._loop,
        )
        self._task: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Running:
        self._thread.start()
        self._task = asyncio.run_coroutine_threadsafe(self.notifier.run(), self._loop)
        return self

    def __exit__(self, *_: object) -> None:
        task = self._task
        assert task is not None

        async def stop() -> None:
            task.cancel()
            await asyncio.gather(asyncio.wrap_future(task), return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def submit(self, *found: Notification, rollout: RolloutRef = ROLLOUT) -> float:
        """Hand notifications over as a tick does; how long that took."""
        started = time.monotonic()
        self.notifier.submit(rollout, Notifications(), list(found))
        return time.monotonic() - started

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or {})
        return value or 0.0


def target(receiver: NotificationReceiver, name: str = "hook", **changes: Any) -> Target:
    fields: dict[str, Any] = {
        "field_path": "spec.notifications.sinks[0]",
        "name": name,
        "sink_type": "webhook",
        "url": f"{receiver.url}/{name}",
        "events": frozenset(),
        "template": None,
    }
    fields.update(changes)
    return Target(**fields)


KINDS = ("Started", "StepAdvanced", "Paused", "Breach", "RolledBack", "Promoted")


def each_kind() -> list[Notification]:
    return [notification(kind=kind, message=f"{kind} happened") for kind in KINDS]


@pytest.fixture
def receiver() -> Iterator[NotificationReceiver]:
    with notification_receiver() as running:
        yield running


def test_every_notification_arrives_once_in_order(receiver: NotificationReceiver) -> None:
    with Running([target(receiver)]) as running:
        for one in each_kind():
            running.submit(one)
        arrived = receiver.wait_for(len(KINDS), 10)
        assert [r.body["kind"] for r in arrived] == list(KINDS)
        wait_until(
            lambda: running.sample("modelrollout_notification_delivery_seconds_count",
                                   {"sink": "webhook"}) == len(KINDS),
            5, "every delivery observed",
        )  # fmt: skip
    assert len(receiver.received) == len(KINDS)
    assert running.warnings == []


def test_a_sinks_filter_and_template_apply(receiver: NotificationReceiver) -> None:
    slack = target(receiver, "chat", sink_type="slack", events=frozenset({"RolledBack"}),
                   template="$rollout: $kind")  # fmt: skip
    with Running([slack, target(receiver, "all")]) as running:
        for one in each_kind():
            running.submit(one)
        arrived = receiver.wait_for(len(KINDS) + 1, 10)
    chat = [r.body for r in arrived if r.path == "/chat"]
    assert chat == [
        {"text": "chat: RolledBack", "attachments": chat[0]["attachments"]},
    ]


def test_a_receiver_down_for_a_while_gets_everything_after_it_recovers(
    receiver: NotificationReceiver,
) -> None:
    receiver.failures_left = 5
    with Running([target(receiver)]) as running:
        for one in each_kind():
            running.submit(one)
        arrived = receiver.wait_for(len(KINDS), 20)
    assert receiver.failed == 5
    # The first waited out the outage; none overtook it.
    assert [r.body["kind"] for r in arrived] == list(KINDS)
    assert running.sample("modelrollout_notifications_dropped_total",
                          {"reason": "retries_exhausted"}) == 0  # fmt: skip


def test_a_receiver_down_past_the_retry_budget_loses_them_counted_and_told(
    receiver: NotificationReceiver,
) -> None:
    receiver.failures_left = 1000
    policy = replace(FAST, budget_seconds=0.3)
    with Running([target(receiver)], policy=policy) as running:
        running.submit(notification(kind="Started"), notification(kind="Promoted"))
        wait_until(
            lambda: running.sample("modelrollout_notifications_dropped_total",
                                   {"reason": "retries_exhausted"}) == 2,
            10, "both dropped",
        )  # fmt: skip
        wait_until(lambda: len(running.warnings) == 2, 5, "two warnings")
    assert "gave up after" in running.warnings[0] and "HTTP 500" in running.warnings[0]
    assert running.warnings[0].startswith("spec.notifications.sinks[0] (hook): ")
    assert receiver.url not in " ".join(running.warnings)


def test_a_refusing_sink_is_not_retried(receiver: NotificationReceiver) -> None:
    receiver.refused_paths.add("/refusing")
    with Running([target(receiver, "refusing"), target(receiver, "fine")]) as running:
        running.submit(notification(kind="Started"), notification(kind="Promoted"))
        assert [r.body["kind"] for r in receiver.wait_for(2, 10)] == ["Started", "Promoted"]
        wait_until(lambda: len(running.warnings) == 2, 5, "two warnings")
    # One attempt each: a 4xx will not be different the next time.
    assert receiver.failed == 2
    assert running.sample("modelrollout_notifications_dropped_total", {"reason": "rejected"}) == 2
    assert "refused the notification (HTTP 400)" in running.warnings[0]


def test_a_sink_that_never_answers_delays_neither_the_tick_nor_the_other_sinks(
    receiver: NotificationReceiver,
) -> None:
    with notification_receiver() as hanging:
        hanging.hang = True
        policy = replace(FAST, timeout_seconds=0.5, budget_seconds=1)
        with Running([target(hanging, "dead"), target(receiver, "alive")], policy) as running:
            handed = [running.submit(one) for one in each_kind()]
            arrived = receiver.wait_for(len(KINDS), 10)
            assert [r.body["kind"] for r in arrived] == list(KINDS)
            # A tick hands notifications over and goes on: no wait on any sink.
            assert max(handed) < 0.05
            wait_until(
                lambda: running.sample("modelrollout_notifications_dropped_total",
                                       {"reason": "retries_exhausted"}) >= 1,
                20, "the hanging sink's first notification given up",
            )  # fmt: skip
            assert "no answer" in running.warnings[0]


def test_what_a_tick_hands_over_before_the_sender_starts_is_sent_once_it_does(
    receiver: NotificationReceiver,
) -> None:
    running = Running([target(receiver)])
    running.submit(notification(kind="Started"))
    with running:
        assert [r.body["kind"] for r in receiver.wait_for(1, 10)] == ["Started"]


def test_a_full_queue_drops_and_counts_instead_of_waiting() -> None:
    with notification_receiver() as hanging:
        hanging.hang = True
        policy = replace(FAST, timeout_seconds=30)
        with Running([target(hanging)], policy, capacity=3) as running:
            handed = running.submit(*[notification(kind="StepAdvanced")] * 10)
            assert handed < 0.05
            assert running.sample("modelrollout_notifications_dropped_total",
                                  {"reason": "queue_full"}) == 7  # fmt: skip
            assert running.sample("modelrollout_notifications_queued") == 3


def test_a_sink_that_cannot_be_configured_is_told_and_the_others_still_get_theirs(
    receiver: NotificationReceiver,
) -> None:
    problem = ConfigProblem("spec.notifications.sinks[1].urlSecretRef", "Secret ml/x not found")
    with Running([target(receiver)], problems=[problem]) as running:
        running.submit(notification())
        receiver.wait_for(1, 10)
        wait_until(lambda: running.warnings, 5, "a warning")
    assert running.warnings == [
        "spec.notifications.sinks[1].urlSecretRef: Secret ml/x not found: notifications dropped"
    ]
    assert running.sample("modelrollout_notifications_dropped_total", {"reason": "config"}) == 1


def test_alertmanager_gets_what_waited_in_one_request(receiver: NotificationReceiver) -> None:
    receiver.failures_left = 1
    alertmanager = target(receiver, "pager", sink_type="alertmanager")
    with Running([alertmanager]) as running:
        # One tick's two notifications wait together, through the failed attempt too.
        running.submit(notification(kind="Breach"), notification(kind="RolledBack"))
        (first,) = receiver.wait_for(1, 10)
        running.submit(notification(kind="Promoted"))
        second = receiver.wait_for(2, 10)[1]
    assert receiver.failed == 1
    assert first.path == "/pager/api/v2/alerts"
    assert [alert["labels"]["event"] for alert in first.body] == ["Breach", "RolledBack"]
    assert [alert["labels"]["event"] for alert in second.body] == ["Promoted"]
