"""Events posted the way client-go's correlator posts them: a repeat is a count, not a new Event."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from modelrollout.kube.events import EVENTS, EventRecorder
from tests.support.fake_kube import FakeKubeApi
from tests.unit.operator.builders import T0

pytestmark = pytest.mark.unit

NAMESPACE = "ml"


def rollout(name: str = "chat", uid: str = "uid-1") -> dict[str, Any]:
    return {
        "apiVersion": "modelrollout.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": uid},
    }


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def events(api: FakeKubeApi) -> list[tuple[str, str, int, str, str]]:
    """(reason, message, count, firstTimestamp, lastTimestamp) of every Event."""
    return sorted(
        (e["reason"], e["message"], e["count"], e["firstTimestamp"], e["lastTimestamp"])
        for e in api.list(EVENTS, NAMESPACE)
    )


def test_a_repeated_event_is_one_event_with_a_count_and_its_last_time() -> None:
    api, clock = FakeKubeApi(), Clock()
    recorder = EventRecorder(api, clock)
    recorder.post(rollout(), "Warning", "ScaledOutsideRollout", "resized to 7")
    clock.now += timedelta(seconds=30)
    api.writes.clear()
    recorder.post(rollout(), "Warning", "ScaledOutsideRollout", "resized to 7")
    recorder.post(rollout(), "Warning", "ScaledOutsideRollout", "resized to 7")
    assert [(w.verb, w.body) for w in api.writes] == [
        ("patch", {"count": 2, "lastTimestamp": "2026-01-01T12:00:30Z"}),
        ("patch", {"count": 3, "lastTimestamp": "2026-01-01T12:00:30Z"}),
    ]
    assert events(api) == [
        ("ScaledOutsideRollout", "resized to 7", 3, "2026-01-01T12:00:00Z", "2026-01-01T12:00:30Z")
    ]


def test_another_message_reason_type_or_object_is_another_event() -> None:
    api = FakeKubeApi()
    recorder = EventRecorder(api, Clock())
    recorder.post(rollout(), "Normal", "StepStarted", "step 2/4 pause 30s")
    recorder.post(rollout(), "Normal", "StepStarted", "step 3/4 setWeight 50")
    recorder.post(rollout(), "Normal", "Paused", "step 3/4 setWeight 50")
    recorder.post(rollout(), "Warning", "Paused", "step 3/4 setWeight 50")
    recorder.post(rollout("other", "uid-2"), "Warning", "Paused", "step 3/4 setWeight 50")
    assert [w.verb for w in api.writes] == ["create"] * 5
    assert all(count == 1 for _, _, count, _, _ in events(api))


def test_a_repeat_after_the_window_starts_a_new_event() -> None:
    api, clock = FakeKubeApi(), Clock()
    recorder = EventRecorder(api, clock, window_seconds=600)
    recorder.post(rollout(), "Warning", "Paused", "metrics unavailable")
    clock.now += timedelta(seconds=601)
    recorder.post(rollout(), "Warning", "Paused", "metrics unavailable")
    assert [count for _, _, count, _, _ in events(api)] == [1, 1]


def test_an_expired_event_is_posted_anew() -> None:
    """The API server drops Events after its --event-ttl: the patch answers 404."""
    api = FakeKubeApi()
    recorder = EventRecorder(api, Clock())
    recorder.post(rollout(), "Warning", "CheckBreached", "p99 above 2s")
    (expired,) = api.list(EVENTS, NAMESPACE)
    api.delete(EVENTS, NAMESPACE, expired["metadata"]["name"])
    recorder.post(rollout(), "Warning", "CheckBreached", "p99 above 2s")
    recorder.post(rollout(), "Warning", "CheckBreached", "p99 above 2s")
    assert [count for _, _, count, _, _ in events(api)] == [2]


def test_the_least_recent_series_is_forgotten_beyond_the_bound() -> None:
    api = FakeKubeApi()
    recorder = EventRecorder(api, Clock(), kept=2)
    for message in ("a", "b", "c", "a"):
        recorder.post(rollout(), "Normal", "StepStarted", message)
    assert sorted(message for _, message, _, _, _ in events(api)) == ["a", "a", "b", "c"]
