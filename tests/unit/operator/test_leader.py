"""Lease decisions: who may lead, judged by the local clock only."""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout.leader import LeaseTiming, decide

pytestmark = pytest.mark.unit


def _lease(holder: str, duration: int = 15) -> dict[str, Any]:
    return {"spec": {"holderIdentity": holder, "leaseDurationSeconds": duration}}


def test_no_lease_is_created() -> None:
    assert decide(None, "a", None, now=100.0) == "create"


def test_the_holder_renews_its_own_lease() -> None:
    assert decide(_lease("a"), "a", observed_since=0.0, now=1000.0) == "renew"


def test_another_holder_is_followed_until_its_record_has_not_moved_for_the_duration() -> None:
    assert decide(_lease("b"), "a", observed_since=100.0, now=110.0) == "follow"
    assert decide(_lease("b"), "a", observed_since=100.0, now=115.0) == "follow"
    assert decide(_lease("b"), "a", observed_since=100.0, now=115.5) == "take-over"


def test_a_released_lease_is_taken_over_at_once() -> None:
    assert decide(_lease(""), "a", observed_since=100.0, now=100.0) == "take-over"


def test_timing_must_step_down_before_anyone_may_take_over() -> None:
    LeaseTiming(lease_duration=15, renew_deadline=10, retry_period=2)
    with pytest.raises(ValueError, match="renewDeadline < leaseDuration"):
        LeaseTiming(lease_duration=10, renew_deadline=10, retry_period=2)
