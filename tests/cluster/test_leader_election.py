"""Two electors on one real Lease: exactly one leads; the other takes over after expiry."""

from __future__ import annotations

import pytest
from kubernetes import client

from modelrollout.kube.api import LEASES, KubeApi
from modelrollout.leader import LeaseElector, LeaseTiming

pytestmark = pytest.mark.cluster


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_leader_then_take_over_after_the_lease_expires(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    api = KubeApi(kube_api_client)
    clock = _Clock()
    timing = LeaseTiming(lease_duration=15, renew_deadline=10, retry_period=2)
    first = LeaseElector(api, namespace, "operator", "replica-a", timing, monotonic=clock)
    second = LeaseElector(api, namespace, "operator", "replica-b", timing, monotonic=clock)

    assert first.try_acquire_or_renew() is True
    assert second.try_acquire_or_renew() is False
    assert (first.is_leader, second.is_leader) == (True, False)

    # The leader renews; the follower sees the record move and keeps waiting.
    clock.now += 12
    assert first.try_acquire_or_renew() is True
    assert second.try_acquire_or_renew() is False

    # The leader stops renewing (killed): it steps down after renewDeadline,
    # before the follower may take over after leaseDuration.
    clock.now += 10.5
    assert first.is_leader is False
    assert second.try_acquire_or_renew() is False
    clock.now += 15.5
    assert second.try_acquire_or_renew() is True
    lease = api.get(LEASES, namespace, "operator")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "replica-b"
    assert lease["spec"]["leaseTransitions"] == 1

    # The old leader comes back: it must follow, not fight.
    assert first.try_acquire_or_renew() is False


def test_release_hands_over_at_once(kube_api_client: client.ApiClient, namespace: str) -> None:
    api = KubeApi(kube_api_client)
    clock = _Clock()
    first = LeaseElector(api, namespace, "operator", "replica-a", monotonic=clock)
    second = LeaseElector(api, namespace, "operator", "replica-b", monotonic=clock)
    assert first.try_acquire_or_renew() is True
    assert second.try_acquire_or_renew() is False
    first.release()
    assert first.is_leader is False
    assert second.try_acquire_or_renew() is True
