"""Two electors on one real Lease: exactly one leads; the other takes over after expiry."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes import client

from modelrollout.kube.api import LEASES, KubeApi, Resource
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


class RenewalRacingRelease(KubeApi):
    """Holds a renewal between its read and write until the release reads the Lease (0.5 s max).

    That is the order of a shutdown whose renewal thread is still in flight (cancelling
    the task does not stop the thread): without turns, the release writes a stale
    version and gets 409, and the Lease stays held until it expires.
    """

    def __init__(self, api_client: client.ApiClient) -> None:
        super().__init__(api_client)
        self.renewal_read = threading.Event()
        self.release_read = threading.Event()
        self.renewing = False

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        found = super().get(resource, namespace, name)
        if self.renewing and threading.current_thread() is threading.main_thread():
            self.release_read.set()
        elif self.renewing:
            self.renewal_read.set()
        return found

    def replace(
        self, resource: Resource, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        if self.renewing and threading.current_thread() is not threading.main_thread():
            self.release_read.wait(timeout=0.5)
        return super().replace(resource, namespace, name, body)


def test_release_while_a_renewal_is_in_flight_still_hands_over(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    api = RenewalRacingRelease(kube_api_client)
    leader = LeaseElector(api, namespace, "operator", "replica-a")
    assert leader.try_acquire_or_renew() is True

    api.renewing = True
    renewal = threading.Thread(target=leader.try_acquire_or_renew)
    renewal.start()
    assert api.renewal_read.wait(timeout=10)
    leader.release()
    renewal.join(timeout=10)

    lease = KubeApi(kube_api_client).get(LEASES, namespace, "operator")
    assert lease is not None and lease["spec"]["holderIdentity"] == "", lease["spec"]
    # Nor does a round after the release take the Lease back.
    assert leader.try_acquire_or_renew() is False
    follower = LeaseElector(KubeApi(kube_api_client), namespace, "operator", "replica-b")
    assert follower.try_acquire_or_renew() is True
