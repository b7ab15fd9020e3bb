"""Router inferencePool on the real API server: a canary the operator's Reconciler drives.

The InferencePool CRD is the Gateway API Inference Extension's own
(`sigs.k8s.io/gateway-api-inference-extension` v1.6.2, which `dev cluster up`
installs beside the Gateway API CRDs), so the API server validates and
defaults every pool and route as a real cluster does, and kwok makes the
revisions' pods Ready.

No request goes through the pools here. Routing to an InferencePool needs an
inference gateway, one that asks the pool's endpoint picker (EPP) which pod
serves each request over Envoy's ext_proc protocol; the gateway this cluster
builds (Traefik v3.7) has no InferencePool backend, and no endpoint picker
runs here. So this test checks what such a gateway reads, against the real API
server: at each step the InferencePools (selector, target port, picker) and
the HTTPRoute's weighted backendRefs to them, then the cleanup after a
promotion and after a rollback. The issue allows exactly this where no
endpoint picker can run.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from modelrollout.engine.reconciler import Reconciler
from modelrollout.kube.api import HTTPROUTES, INFERENCE_POOLS, MODELROLLOUTS
from modelrollout.kube.labels import GROUP, REVISION_LABEL, ROLLOUT_LABEL
from tests.support.kube import RecordingKubeApi, wait_until
from tests.support.rollouts import Rollouts, rollout_manifest

pytestmark = pytest.mark.cluster

NAME = "chat"
STEPS = [
    {"setWeight": 25},
    {"pause": {"duration": "1m"}},
    {"setWeight": 75},
    {"pause": {"duration": "1m"}},
]
PICKER = {"name": "chat-epp", "port": {"number": 9002}}
POOL_GROUP = "inference.networking.k8s.io"


class Operator:
    """The operator's Reconciler on one rollout, ticked by the test on a clock it moves."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.api = RecordingKubeApi(api_client)
        self.namespace = namespace
        self.offset = timedelta()
        self.reconciler = Reconciler(self.api, clock=lambda: datetime.now(UTC) + self.offset)

    def tick(self) -> None:
        body = self.api.get(MODELROLLOUTS, self.namespace, NAME)
        assert body is not None
        self.reconciler.tick(body, lambda event_type, reason, message: None)

    def tick_until(self, what: str, reached: Any, timeout: float = 60) -> Any:
        """Tick (one per probe) until `reached()` returns something; its last value."""

        def probe() -> Any:
            self.tick()
            return reached()

        return wait_until(probe, timeout, what)

    def pass_pause(self, step: int) -> None:
        """Once the rollout is in pause step `step`, move the clock past its minute."""
        self.tick_until(f"pause step {step}", lambda: self.status().get("currentStep") == step)
        self.offset += timedelta(minutes=2)

    def status(self) -> dict[str, Any]:
        body = self.api.get(MODELROLLOUTS, self.namespace, NAME)
        assert body is not None
        status: dict[str, Any] = body.get("status") or {}
        return status

    def pools(self) -> dict[str, dict[str, Any]]:
        return {
            pool["metadata"]["name"]: pool
            for pool in self.api.list(INFERENCE_POOLS, self.namespace)
        }

    def route_backends(self) -> list[tuple[str, str, str, int]]:
        route = self.api.get(HTTPROUTES, self.namespace, NAME)
        if route is None:
            return []
        return [
            (ref.get("group", ""), ref.get("kind", "Service"), ref["name"], ref.get("weight", 1))
            for ref in route["spec"]["rules"][0]["backendRefs"]
        ]

    def routes_to(self, weights: list[tuple[str, int]]) -> bool:
        return self.route_backends() == [
            (POOL_GROUP, "InferencePool", f"{NAME}-{revision}", weight)
            for revision, weight in weights
        ]


def inference_pool_rollout() -> dict[str, Any]:
    manifest = rollout_manifest(NAME, "file:///models/v1", STEPS, router="inferencePool")
    manifest["spec"]["traffic"]["inferencePool"] = {
        "parentRefs": [{"name": "inference-gw"}],
        "endpointPickerRef": PICKER,
    }
    return manifest


def assert_pool_of(pool: dict[str, Any], revision: str, owner_uid: str) -> None:
    assert pool["spec"]["selector"] == {
        "matchLabels": {ROLLOUT_LABEL: NAME, REVISION_LABEL: revision}
    }
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    # The API server's defaults are filled in; the operator wrote only PICKER.
    assert pool["spec"]["endpointPickerRef"] == {
        **PICKER,
        "group": "",
        "kind": "Service",
        "failureMode": "FailClose",
    }
    (owner,) = pool["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ModelRollout", owner_uid, True)


def start_canary(operator: Operator, rollouts: Rollouts, uri: str) -> tuple[str, str]:
    """Change the model; tick until the canary takes 25%; (stable, canary) revisions."""
    rollouts.patch_spec(NAME, {"model": {"name": NAME, "uri": uri}})
    status = operator.tick_until(
        "a canary revision",
        lambda: (s := operator.status()).get("canaryRevision") and s,
    )
    stable, canary = status["stableRevision"], status["canaryRevision"]
    operator.tick_until(
        "the route to send 25% to the canary's pool",
        lambda: operator.routes_to([(stable, 75), (canary, 25)]),
    )
    return stable, canary


def test_a_canary_weights_the_revisions_pools_and_leaves_only_the_live_ones(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    rollouts = Rollouts(kube_api_client, namespace)
    owner_uid = rollouts.create(inference_pool_rollout())["metadata"]["uid"]
    operator = Operator(kube_api_client, namespace)

    status = operator.tick_until(
        "the first revision to be stable",
        lambda: (s := operator.status()).get("phase") == "Succeeded" and s,
    )
    v1 = status["stableRevision"]
    assert operator.routes_to([(v1, 100)])
    assert set(operator.pools()) == {f"{NAME}-{v1}"}
    assert_pool_of(operator.pools()[f"{NAME}-{v1}"], v1, owner_uid)
    route = operator.api.get(HTTPROUTES, namespace, NAME)
    assert route is not None and route["metadata"]["ownerReferences"][0]["uid"] == owner_uid
    assert route["spec"]["parentRefs"][0]["name"] == "inference-gw"

    # Step 0: 25% to the canary's pool, both pools as the gateway reads them.
    stable, v2 = start_canary(operator, rollouts, "file:///models/v2")
    assert stable == v1
    pools = operator.pools()
    assert set(pools) == {f"{NAME}-{v1}", f"{NAME}-{v2}"}
    assert_pool_of(pools[f"{NAME}-{v2}"], v2, owner_uid)
    # No gateway reports on the route or the pools here: traffic is not known to be routed.
    routed = next(c for c in operator.status()["conditions"] if c["type"] == "TrafficRouted")
    assert (routed["status"], routed["reason"]) == ("Unknown", "NoGatewayReport")

    # Converged: a tick writes nothing to the pools or the route (the server's defaults
    # on a stored pool are not a difference).
    operator.api.writes.clear()
    for _ in range(3):
        operator.tick()
    assert operator.api.writes_to(INFERENCE_POOLS, HTTPROUTES) == []

    # Step 2 after the pause: 75%.
    operator.pass_pause(1)
    operator.tick_until(
        "the route to send 75% to the canary's pool",
        lambda: operator.routes_to([(v1, 25), (v2, 75)]),
    )

    # Promotion: all traffic on v2, then v1's pool goes.
    operator.pass_pause(3)
    operator.tick_until(
        "v2 to be promoted",
        lambda: (
            (s := operator.status()).get("phase") == "Succeeded" and s.get("stableRevision") == v2
        ),
    )
    operator.tick_until("the route to send all to v2", lambda: operator.routes_to([(v2, 100)]))
    operator.tick_until("only v2's pool", lambda: set(operator.pools()) == {f"{NAME}-{v2}"})
    assert f"delete inferencepools/{NAME}-{v1}" in operator.api.writes_to(INFERENCE_POOLS)

    # A rollback (abort) of the next canary: all traffic back on v2. The rolled-back
    # canary's pool stays at weight 0 while the rollout names it (for a retry), and goes
    # once the spec moves on: here reverted to v2, as GitOps would.
    stable, v3 = start_canary(operator, rollouts, "file:///models/v3")
    assert stable == v2
    assert set(operator.pools()) == {f"{NAME}-{v2}", f"{NAME}-{v3}"}
    rollouts.annotate(NAME, {f"{GROUP}/abort": uuid.uuid4().hex})
    operator.tick_until(
        "the canary to be rolled back", lambda: operator.status().get("phase") == "RolledBack"
    )
    assert operator.status()["stableRevision"] == v2
    operator.tick_until(
        "the route to send all to v2", lambda: operator.routes_to([(v2, 100), (v3, 0)])
    )
    rollouts.patch_spec(NAME, {"model": {"name": NAME, "uri": "file:///models/v2"}})
    operator.tick_until(
        "the rollout to end on v2",
        lambda: (
            (s := operator.status()).get("phase") == "Succeeded" and s.get("canaryRevision") is None
        ),
    )
    operator.tick_until("the route to name v2 only", lambda: operator.routes_to([(v2, 100)]))
    operator.tick_until("only v2's pool", lambda: set(operator.pools()) == {f"{NAME}-{v2}"})
