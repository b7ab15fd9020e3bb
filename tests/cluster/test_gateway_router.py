"""The gatewayAPI router on the real API server: once converged, a tick writes nothing."""

from __future__ import annotations

import pytest
from kubernetes import client

from modelrollout.kube.api import (
    ENDPOINT_SLICES,
    HTTPROUTES,
    MODELROLLOUTS,
    SERVICES,
    KubeApi,
)
from modelrollout.kube.cache import SERVICE_NAME_LABEL
from modelrollout.kube.workloads import RolloutRef
from modelrollout.traffic.base import Backends
from modelrollout.traffic.gatewayapi import GatewayAPIRouter
from modelrollout.traffic.session_affinity import SessionAffinitySettings
from tests.support.kube import RecordingKubeApi
from tests.support.rollouts import rollout_manifest

pytestmark = pytest.mark.cluster


GATEWAY = {"parentRefs": [{"name": "inference-gw"}]}


def owner_rollout(api_client: client.ApiClient, namespace: str) -> RolloutRef:
    """A real ModelRollout to own the router's objects (no operator runs here)."""
    owner = KubeApi(api_client).create(
        MODELROLLOUTS, namespace, rollout_manifest("chat", "file:///m", [{"setWeight": 50}])
    )
    return RolloutRef(namespace, "chat", owner["metadata"]["uid"])


def test_a_converged_route_is_not_patched_again(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    rollout = owner_rollout(kube_api_client, namespace)
    api = RecordingKubeApi(kube_api_client)
    router = GatewayAPIRouter(api)
    backends = Backends(
        rollout=rollout,
        stable="aaa111",
        canary=None,
        port=8000,
        replicas=1,
        settings=GATEWAY,
        blue_green=True,
    )
    router.reconcile(backends)
    router.set_weights(backends, 0)
    route = api.get(HTTPROUTES, namespace, "chat")
    # The API server fills in the parentRef's group and kind.
    assert route is not None and route["spec"]["parentRefs"][0]["kind"] == "Gateway"
    assert api.writes, "the first round creates the Service and routes"

    api.writes.clear()
    for _ in range(3):
        router.reconcile(backends)
        router.set_weights(backends, 0)
    assert api.writes == [], "\n".join(api.writes)


def test_a_retired_revisions_service_goes_once_the_route_no_longer_names_it(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    rollout = owner_rollout(kube_api_client, namespace)
    api = KubeApi(kube_api_client)
    router = GatewayAPIRouter(api)
    canary = Backends(rollout, "old111", "new222", 8000, 1, GATEWAY, canary_weight=0)
    router.reconcile(canary)
    router.set_weights(canary, 0)
    assert {"chat-old111", "chat-new222"} <= {
        s["metadata"]["name"] for s in api.list(SERVICES, namespace)
    }

    promoted = Backends(rollout, "new222", None, 8000, 1, GATEWAY)
    router.reconcile(promoted)  # the route still names old111: its Service stays
    assert api.get(SERVICES, namespace, "chat-old111") is not None
    router.set_weights(promoted, 0)
    router.reconcile(promoted)
    assert api.get(SERVICES, namespace, "chat-old111") is None
    assert api.get(SERVICES, namespace, "chat-new222") is not None


def test_session_affinity_rules_as_the_api_server_stores_them_are_not_patched_again(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    """The API server defaults fields in the header matches and backendRefs (a match's
    path, a header's type, a ref's group and kind); a converged route compares equal."""
    rollout = owner_rollout(kube_api_client, namespace)
    api = RecordingKubeApi(kube_api_client)
    router = GatewayAPIRouter(api)
    backends = Backends(
        rollout, "old111", "new222", 8000, 2, GATEWAY, canary_weight=50,
        session_affinity=SessionAffinitySettings("x-session-id", 256),
    )  # fmt: skip
    router.reconcile(backends)
    # The canary's Service has a ready endpoint, as its EndpointSlice controller would say.
    api.create(ENDPOINT_SLICES, namespace, {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "chat-new222-x", "labels": {SERVICE_NAME_LABEL: "chat-new222"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.9"], "conditions": {"ready": True}}],
        "ports": [{"port": 8000}],
    })  # fmt: skip
    router.set_weights(backends, 50)
    route = api.get(HTTPROUTES, namespace, "chat")
    assert route is not None and len(route["spec"]["rules"]) == 5
    stored = route["spec"]["rules"][3]
    assert stored["matches"][0]["path"] == {"type": "PathPrefix", "value": "/"}
    assert stored["matches"][0]["headers"][0]["type"] == "RegularExpression"

    api.writes.clear()
    for _ in range(3):
        router.reconcile(backends)
        router.set_weights(backends, 50)
    assert api.writes == [], "\n".join(api.writes)
    router.set_weights(backends, 0)
    assert len(api.writes) == 1
    route = api.get(HTTPROUTES, namespace, "chat")
    assert route is not None and len(route["spec"]["rules"]) == 1
