"""CPU per tick: the real Reconciler, N rollouts walking a canary, no cluster.

The in-memory API server of the unit tests (tests/support/fake_kube.py) stands
in for Kubernetes behind the operator's own watch-fed cache (kube/cache.py, as
in the operator: a tick reads children from memory), a table answers PromQL, a
variable is the clock, and a small stand-in for the Deployment controller makes
every child Ready between rounds. The cache is fed synchronously (what a watch
would deliver, handed over between rounds), so no watch thread runs. Each round
ticks every rollout once; only the Reconciler's ticks are timed
(time.process_time), the stand-ins are not.

    PYTHONPATH=operator:serving:dev:. .venv/bin/python bench/tick_cpu.py --rollouts 100

Prints CPU per tick (the operator's, and apart the in-memory API server's,
which stands in for what kube-apiserver spends), ticks per second, and the 15
functions with the most cumulative time under cProfile (a second, profiled pass
of the same walk; the operator's own functions only).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from tests.support.fake_kube import FakeKubeApi
from tests.unit.operator.builders import (
    HEALTHY_ANSWERS,
    T0,
    FakeProvider,
    with_model_uri,
)
from tests.unit.operator.test_reconciler_ticks import canary_spec

from modelrollout.engine.reconciler import Reconciler
from modelrollout.kube.api import DEPLOYMENTS, MODELROLLOUTS, Resource
from modelrollout.kube.cache import (
    CACHED_RESOURCES,
    CLUSTER_CACHED_RESOURCES,
    MANAGED_SELECTOR,
    CachedKubeApi,
    Informer,
)
from modelrollout.kube.events import EVENTS, build_event
from modelrollout.kube.labels import GROUP, KIND, VERSION

_T = TypeVar("_T")

NAMESPACE = "ml"
NEW_MODEL = "pvc://models/llama-3.2-3b/v2"
SECONDS_BETWEEN_ROUNDS = 15.0


class TimedFakeKubeApi(FakeKubeApi):
    """The in-memory API server, keeping the CPU it spends: the API server's share, not ours.

    Its writes scan every object (garbage collection) and copy deeply: left in,
    they would be most of a tick at N = 100 and grow with N squared.
    """

    def __init__(self) -> None:
        super().__init__()
        self.server_seconds = 0.0

    def _timed(self, call: Callable[[], _T]) -> _T:
        started = time.process_time()
        try:
            return call()
        finally:
            self.server_seconds += time.process_time() - started

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        return self._timed(lambda: FakeKubeApi.get(self, resource, namespace, name))

    def list(
        self, resource: Resource, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return self._timed(lambda: FakeKubeApi.list(self, resource, namespace, label_selector))

    def create(self, resource: Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._timed(lambda: FakeKubeApi.create(self, resource, namespace, body))

    def merge_patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return self._timed(
            lambda: FakeKubeApi.merge_patch(self, resource, namespace, name, patch, subresource)
        )

    def replace(
        self, resource: Resource, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return self._timed(lambda: FakeKubeApi.replace(self, resource, namespace, name, body))

    def delete(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        propagation: str | None = None,
        grace_period_seconds: int | None = None,
        uid: str | None = None,
    ) -> None:
        self._timed(
            lambda: FakeKubeApi.delete(
                self, resource, namespace, name, propagation, grace_period_seconds, uid
            )
        )


class CachedFakeKubeApi(CachedKubeApi, TimedFakeKubeApi):
    """The operator's cached API on the in-memory server; informers filled by a list, no thread."""

    def __init__(self) -> None:
        TimedFakeKubeApi.__init__(self)
        self._on_change = lambda namespace, name: None
        self._informers: dict[tuple[Resource, str], Informer] = {}
        self._informers_guard = threading.Lock()

    def informer(self, resource: Resource, namespace: str) -> Informer | None:
        if resource in CLUSTER_CACHED_RESOURCES:
            namespace, selector = "", ""
        elif resource in CACHED_RESOURCES:
            selector = MANAGED_SELECTOR
        else:
            return None
        key = (resource, namespace)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(self, resource, namespace, self._notify, selector)
            informer.replace_all(FakeKubeApi.list(self, resource, namespace, selector or None))
            informer.synced.set()
            self._informers[key] = informer
        return informer


class Walk:
    """N rollouts on one in-memory API server, one Reconciler ticking them all."""

    def __init__(self, rollouts: int) -> None:
        self.api = CachedFakeKubeApi()
        self.now = T0
        provider = FakeProvider(dict(HEALTHY_ANSWERS))
        self.reconciler = Reconciler(
            self.api, clock=lambda: self.now, provider_factory=lambda spec: provider
        )
        self.names = [f"chat-{i}" for i in range(rollouts)]
        self.cpu_seconds = 0.0  # in ticks, the in-memory API server's share included
        self.server_seconds = 0.0  # that share
        self.ticks = 0
        spec = canary_spec()
        for name in self.names:
            self.api.create(
                MODELROLLOUTS,
                NAMESPACE,
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "metadata": {"name": name},
                    "spec": spec,
                },
            )

    def round(self, profile: cProfile.Profile | None = None) -> None:
        """Every rollout ticked once, then the controllers settle and the clock moves on."""
        for name in self.names:
            body = self.api.get(MODELROLLOUTS, NAMESPACE, name)
            assert body is not None
            self._tick(body, profile)
        self._settle()
        self.now += timedelta(seconds=SECONDS_BETWEEN_ROUNDS)

    def _tick(self, body: dict[str, Any], profile: cProfile.Profile | None) -> None:
        api = self.api

        def post_event(event_type: str, reason: str, message: str) -> None:
            api.create(EVENTS, NAMESPACE, build_event(body, event_type, reason, message))

        tick: Callable[[], None] = lambda: self.reconciler.tick(body, post_event)  # noqa: E731
        server_before = self.api.server_seconds
        started = time.process_time()
        if profile is None:
            tick()
        else:
            profile.runcall(tick)
        self.cpu_seconds += time.process_time() - started
        self.server_seconds += self.api.server_seconds - server_before
        self.ticks += 1

    def _settle(self) -> None:
        """The Deployment controller's part: every pod Ready."""
        for deployment in self.api.list(DEPLOYMENTS, NAMESPACE):
            replicas = deployment["spec"]["replicas"]
            ready = {"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas}
            if deployment.get("status") != ready:
                patched = self.api.merge_patch(
                    DEPLOYMENTS,
                    NAMESPACE,
                    deployment["metadata"]["name"],
                    {"status": ready},
                    subresource="status",
                )
                # What the Deployments watch would deliver.
                informer = self.api.informer(DEPLOYMENTS, NAMESPACE)
                assert informer is not None
                informer.upsert(patched)

    def roll_out_new_model(self) -> None:
        for name in self.names:
            body = self.api.get(MODELROLLOUTS, NAMESPACE, name)
            assert body is not None
            spec = with_model_uri(body["spec"], NEW_MODEL)
            self.api.merge_patch(MODELROLLOUTS, NAMESPACE, name, {"spec": spec})

    def phases(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name in self.names:
            body = self.api.get(MODELROLLOUTS, NAMESPACE, name)
            assert body is not None
            phase = (body.get("status") or {}).get("phase", "")
            counts[phase] = counts.get(phase, 0) + 1
        return counts


def walk(rollouts: int, rounds: int, profile: cProfile.Profile | None = None) -> Walk:
    """The first revision stable, then the whole canary of a second one."""
    the_walk = Walk(rollouts)
    for _ in range(3):
        the_walk.round(profile)
    the_walk.roll_out_new_model()
    for _ in range(rounds):
        the_walk.round(profile)
    return the_walk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=100, help="N rollouts (default 100)")
    parser.add_argument(
        "--rounds", type=int, default=30, help="rounds after the new model is applied"
    )
    parser.add_argument("--top", type=int, default=15, help="functions in the profile")
    args = parser.parse_args()

    timed = walk(args.rollouts, args.rounds)
    print(f"rollouts: {args.rollouts}, ticks: {timed.ticks}, phases at the end: {timed.phases()}")
    operator_seconds = timed.cpu_seconds - timed.server_seconds
    print(f"CPU per tick, operator: {1000 * operator_seconds / timed.ticks:.3f} ms")
    print(f"CPU per tick, in-memory API server: {1000 * timed.server_seconds / timed.ticks:.3f} ms")
    print(f"ticks per second (one core, operator): {timed.ticks / operator_seconds:.0f}")

    profile = cProfile.Profile()
    walk(args.rollouts, args.rounds, profile)
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    # The operator's own functions; the in-memory API server's and this bench's left out.
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(r"/modelrollout/", args.top)
    print(out.getvalue())


if __name__ == "__main__":
    main()
