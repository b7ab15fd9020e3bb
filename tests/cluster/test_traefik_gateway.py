"""Traefik, a real Gateway API implementation, programs itself from the cluster's objects.

Traefik watches the API server like a Gateway controller in a cluster: it
accepts its Gateway, and takes the routes the gatewayAPI router writes (a
weighted canary split, a blue-green preview by header) with their status
written by Traefik's own controller, as a user reads them with kubectl.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from kubernetes import client

from modelrollout.kube.api import HTTPROUTES, MODELROLLOUTS, SERVICES, KubeApi
from modelrollout.kube.workloads import RolloutRef, build_revision_service
from modelrollout.traffic.base import Backends
from modelrollout.traffic.gatewayapi import (
    PREVIEW_HEADER,
    GatewayAPIRouter,
    build_httproute,
    build_preview_httproute,
)
from modelrollout_dev.traefik import CONTROLLER_NAME, GATEWAY_GROUP, GATEWAY_VERSION, Traefik
from tests.support.kube import wait_until
from tests.support.rollouts import rollout_manifest
from tests.support.status_watch import ObjectWatch

# Traefik runs on this host and reaches the local pod network: not kind's.
pytestmark = [pytest.mark.cluster, pytest.mark.localharness]

CANARY_WEIGHT = 30


def watch(api_client: client.ApiClient, namespace: str, plural: str) -> ObjectWatch:
    return ObjectWatch(
        client.CustomObjectsApi(api_client).list_namespaced_custom_object,
        GATEWAY_GROUP,
        GATEWAY_VERSION,
        namespace,
        plural,
    )


def conditions(status_owner: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status_owner.get("conditions") or []}


def traefik_parent_conditions(route: dict[str, Any]) -> dict[str, str]:
    """The route's conditions as Traefik's controller wrote them for its parent Gateway."""
    for parent in (route.get("status") or {}).get("parents") or []:
        if parent.get("controllerName") == CONTROLLER_NAME:
            return conditions(parent)
    return {}


def canary_backends(api_client: client.ApiClient, namespace: str, gateway: str) -> Backends:
    """A canary at 30% of a rollout that owns the routes, as the operator would route it."""
    owner = KubeApi(api_client).create(
        MODELROLLOUTS,
        namespace,
        rollout_manifest("chat", "file:///m", [{"setWeight": CANARY_WEIGHT}], router="gatewayAPI"),
    )
    rollout = RolloutRef(namespace, "chat", owner["metadata"]["uid"])
    return Backends(
        rollout,
        stable="aaa111",
        canary="bbb222",
        port=8000,
        replicas=1,
        settings={"parentRefs": [{"name": gateway}]},
        canary_weight=CANARY_WEIGHT,
        blue_green=True,
    )


def test_traefik_accepts_its_gateway_and_the_routes_the_router_writes(
    kube_api_client: client.ApiClient, namespace: str, traefik: Traefik
) -> None:
    with watch(kube_api_client, namespace, "gateways") as gateways:
        gateway = gateways.wait_for(
            lambda: (
                (g := gateways.current.get(traefik.gateway_name))
                and conditions(g.get("status") or {}).get("Programmed") == "True"
                and g
            ),
            timeout=60,
            what="Traefik to program its Gateway",
        )
    assert conditions(gateway["status"]) == {"Accepted": "True", "Programmed": "True"}
    assert [a["value"] for a in gateway["status"]["addresses"]] == [traefik.host]
    (listener,) = gateway["status"]["listeners"]
    assert conditions(listener)["Programmed"] == "True"
    # A listener with no route answers 404 (Traefik's "no router matched").
    assert httpx.get(traefik.url, timeout=5).status_code == 404

    api = KubeApi(kube_api_client)
    backends = canary_backends(kube_api_client, namespace, traefik.gateway_name)
    assert backends.canary is not None
    for revision in (backends.stable, backends.canary):
        api.create(SERVICES, namespace, build_revision_service(backends.rollout, revision, 8000))
    with watch(kube_api_client, namespace, "httproutes") as routes:
        # The router's own builders: the weighted split and the preview route by header.
        api.create(HTTPROUTES, namespace, build_httproute(backends, CANARY_WEIGHT, True))
        api.create(HTTPROUTES, namespace, build_preview_httproute(backends))
        for name in ("chat", "chat-preview"):
            found = routes.wait_for(
                lambda name=name: traefik_parent_conditions(routes.current.get(name) or {}),  # type: ignore[misc]
                timeout=60,
                what=f"Traefik's status on HTTPRoute {name}",
            )
            assert found == {"Accepted": "True", "ResolvedRefs": "True"}, found

    # What the operator reads back from the route: Traefik's conditions, all True.
    achieved = GatewayAPIRouter(api).get_weights(backends)
    assert (achieved.stable, achieved.canary) == (100 - CANARY_WEIGHT, CANARY_WEIGHT)
    assert {(kind, status) for kind, status, _ in achieved.conditions} == {
        ("Accepted", "True"),
        ("ResolvedRefs", "True"),
    }

    # Traefik built from them a weighted service and a router matching the preview header.
    def weighted_split() -> list[int] | None:
        services = httpx.get(f"{traefik.api_url}/api/http/services", timeout=5).json()
        for service in services:
            weighted = (service.get("weighted") or {}).get("services") or []
            if len(weighted) == 2:
                return sorted(int(s["weight"]) for s in weighted)
        return None

    assert wait_until(weighted_split, 60, "Traefik's weighted service") == [
        CANARY_WEIGHT,
        100 - CANARY_WEIGHT,
    ]
    routers = httpx.get(f"{traefik.api_url}/api/http/routers", timeout=5).json()
    assert any(PREVIEW_HEADER in router.get("rule", "").lower() for router in routers), routers
    # The listener now matches the route; its revisions have no pod yet, so: 503, not 404.
    assert (
        wait_until(
            lambda: (code := httpx.get(traefik.url, timeout=5).status_code) != 404 and code,
            60,
            "the listener to serve the route",
        )
        == 503
    )
