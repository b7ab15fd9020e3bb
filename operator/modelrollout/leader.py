"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it.

With two or more operator replicas (the Helm chart's HA mode), every replica
watches rollouts, so a standby has a warm cache, but only the holder of the
Lease ticks them. kopf's own peering cannot be used for this: it pauses kopf's
watch streams, not the operator's own tick loop.

Expiry is judged by the local clock from when this replica last saw the
record change, never by comparing the holder's `renewTime` with our clock, so
clock skew between nodes cannot make two replicas lead at once. A leader
stops acting once it has failed to renew for `renew_deadline`, which is
shorter than `lease_duration`: it steps down before anyone may take over.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from modelrollout.kube.api import LEASES, KubeApi, KubeApiError

logger = logging.getLogger("modelrollout.leader")

LeaseAction = Literal["create", "renew", "take-over", "follow"]


@dataclass(frozen=True)
class LeaseTiming:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retryPeriod < renewDeadline < leaseDuration, got "
                f"{self.retry_period} < {self.renew_deadline} < {self.lease_duration}"
            )


def decide(
    lease: dict[str, Any] | None,
    identity: str,
    observed_since: float | None,
    now: float,
) -> LeaseAction:
    """What to do with the Lease; `observed_since` is when its current record was first seen."""
    if lease is None:
        return "create"
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    if holder == identity:
        return "renew"
    if not holder:
        return "take-over"
    duration = float(spec.get("leaseDurationSeconds") or 0)
    if observed_since is not None and now - observed_since > duration:
        return "take-over"
    return "follow"


def _micro_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming = LeaseTiming(),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing
        self._monotonic = monotonic
        self._observed_record: tuple[str, str, str] | None = None
        self._observed_since: float | None = None
        self._leading_until = 0.0
        # A round runs in a worker thread that cancelling its task does not stop: rounds
        # and the release take turns, and no round runs after the release.
        self._turn = threading.Lock()
        self._released = False
        self.on_change: Callable[[bool], None] = lambda leading: None

    @property
    def is_leader(self) -> bool:
        return self._monotonic() < self._leading_until

    def _spec(self, acquire_time: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.timing.lease_duration),
            "acquireTime": acquire_time,
            "renewTime": _micro_time(datetime.now(UTC)),
            "leaseTransitions": transitions,
        }

    def try_acquire_or_renew(self) -> bool:
        """One round; returns whether this replica holds the Lease now."""
        with self._turn:
            if self._released:
                return False
            return self._round()

    def _round(self) -> bool:
        started = self._monotonic()
        lease = self._api.get(LEASES, self.namespace, self.name)
        if lease is not None:
            spec = lease.get("spec") or {}
            record = (
                str(spec.get("holderIdentity") or ""),
                str(spec.get("renewTime") or ""),
                str(spec.get("leaseTransitions") or 0),
            )
            if record != self._observed_record:
                self._observed_record = record
                self._observed_since = started
        action = decide(lease, self.identity, self._observed_since, started)
        if action == "follow":
            return False
        now = _micro_time(datetime.now(UTC))
        try:
            if action == "create":
                self._api.create(
                    LEASES,
                    self.namespace,
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": self._spec(now, 0),
                    },
                )
            else:
                assert lease is not None
                spec = lease.get("spec") or {}
                transitions = int(spec.get("leaseTransitions") or 0)
                if action == "take-over":
                    body = {**lease, "spec": self._spec(now, transitions + 1)}
                else:
                    body = {
                        **lease,
                        "spec": self._spec(spec.get("acquireTime") or now, transitions),
                    }
                # The resourceVersion in the body makes this a compare-and-swap: of two
                # replicas taking over at once, one gets 409 Conflict.
                self._api.replace(LEASES, self.namespace, self.name, body)
        except KubeApiError as error:
            logger.info("lease %s/%s not acquired: %s", self.namespace, self.name, error)
            return False
        self._leading_until = started + self.timing.renew_deadline
        return True

    def release(self) -> None:
        """On a clean shutdown, hand the Lease over at once instead of after it expires."""
        self._released = True
        # A round stuck on an unanswering API server must not hold up the shutdown.
        if not self._turn.acquire(timeout=self.timing.retry_period):
            logger.warning("lease %s/%s not released: a round is stuck", self.namespace, self.name)
            return
        try:
            self._release()
        finally:
            self._turn.release()

    def _release(self) -> None:
        if not self.is_leader:
            return
        self._leading_until = 0.0
        lease = self._api.get(LEASES, self.namespace, self.name)
        spec = (lease or {}).get("spec") or {}
        if lease is None or spec.get("holderIdentity") != self.identity:
            return
        released = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1}
        try:
            self._api.replace(LEASES, self.namespace, self.name, {**lease, "spec": released})
        except KubeApiError as error:
            logger.warning("could not release lease %s/%s: %s", self.namespace, self.name, error)

    async def run(self) -> None:
        """Acquire, then renew every retry period, forever; report leadership changes."""
        leading = False
        while True:
            try:
                await asyncio.to_thread(self.try_acquire_or_renew)
            except KubeApiError as error:
                logger.warning("leader election round failed: %s", error)
            if self.is_leader != leading:
                leading = self.is_leader
                logger.info(
                    "%s leadership of %s/%s as %s",
                    "acquired" if leading else "lost",
                    self.namespace,
                    self.name,
                    self.identity,
                )
                self.on_change(leading)
            await asyncio.sleep(self.timing.retry_period)
