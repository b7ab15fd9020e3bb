"""The watch-fed cache against the real API server: what a tick reads is what the cluster has."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from modelrollout.engine.capacity import gpu_tally, gpus_by_node
from modelrollout.kube.api import ENDPOINT_SLICES, NODES, PODS, SERVICES, KubeApi
from modelrollout.kube.cache import CachedKubeApi
from modelrollout.kube.labels import ROLLOUT_LABEL
from modelrollout.kube.workloads import RolloutRef, build_service
from tests.support.kube import wait_until

pytestmark = pytest.mark.cluster

ROLLOUT = RolloutRef("", "chat", "00000000-0000-0000-0000-000000000001")


@pytest.fixture
def cached(kube_api_client: client.ApiClient) -> Iterator[tuple[CachedKubeApi, list[Any]]]:
    woken: list[tuple[str, str]] = []
    api = CachedKubeApi(kube_api_client, on_change=lambda ns, name: woken.append((ns, name)))
    yield api, woken
    api.stop()


def service(namespace: str, name: str) -> dict[str, Any]:
    body = build_service(
        RolloutRef(namespace, ROLLOUT.name, ROLLOUT.uid), name, {ROLLOUT_LABEL: "chat"}, 8000
    )
    body["metadata"].pop("ownerReferences")  # no such ModelRollout: GC would delete it
    return body


def test_reads_come_from_the_watch_and_follow_other_writers(
    kube_api_client: client.ApiClient, namespace: str, cached: tuple[CachedKubeApi, list[Any]]
) -> None:
    api, woken = cached
    direct = KubeApi(kube_api_client)
    informer = api.informer(SERVICES, namespace)
    assert informer is not None and informer.synced.wait(30)

    created = api.create(SERVICES, namespace, service(namespace, "chat-a"))
    # Written through: readable at once, before any watch event.
    assert api.get(SERVICES, namespace, "chat-a") == {
        **created,
        "metadata": {k: v for k, v in created["metadata"].items() if k != "managedFields"},
    }

    # Another writer changes it: the watch brings the change and wakes the owner.
    held = api.list_read_only(SERVICES, namespace, f"{ROLLOUT_LABEL}=chat")
    woken.clear()
    direct.merge_patch(SERVICES, namespace, "chat-a", {"metadata": {"annotations": {"x": "1"}}})
    wait_until(
        lambda: (
            (api.get(SERVICES, namespace, "chat-a") or {})["metadata"]
            .get("annotations", {})
            .get("x")
            == "1"
        ),
        timeout=30,
        what="the watch to deliver the change",
    )
    assert (namespace, "chat") in woken
    # A read-only read is the cached object itself: replaced by the change, not changed.
    assert "x" not in (held[0]["metadata"].get("annotations") or {})
    assert api.list_read_only(SERVICES, namespace, f"{ROLLOUT_LABEL}=chat") == api.list(
        SERVICES, namespace, f"{ROLLOUT_LABEL}=chat"
    )
    assert [
        s["metadata"]["name"] for s in api.list(SERVICES, namespace, f"{ROLLOUT_LABEL}=chat")
    ] == ["chat-a"]

    # Deleted by someone else: gone from reads (a miss asks the API, which says 404).
    direct.delete(SERVICES, namespace, "chat-a")
    wait_until(lambda: api.list(SERVICES, namespace) == [], timeout=30, what="the deletion")
    assert api.get(SERVICES, namespace, "chat-a") is None


def test_objects_without_our_label_are_still_read_from_the_api(
    kube_api_client: client.ApiClient, namespace: str, cached: tuple[CachedKubeApi, list[Any]]
) -> None:
    api, _ = cached
    informer = api.informer(SERVICES, namespace)
    assert informer is not None and informer.synced.wait(30)
    foreign = service(namespace, "user-owned")
    foreign["metadata"]["labels"] = {"team": "platform"}
    KubeApi(kube_api_client).create(SERVICES, namespace, foreign)
    assert informer.get("user-owned") is None
    found = api.get(SERVICES, namespace, "user-owned")
    assert found is not None and found["metadata"]["labels"] == {"team": "platform"}


def test_endpoint_slices_carry_the_service_labels_the_cache_selects_on(
    kube_api_client: client.ApiClient, namespace: str, cached: tuple[CachedKubeApi, list[Any]]
) -> None:
    api, _ = cached
    informer = api.informer(ENDPOINT_SLICES, namespace)
    assert informer is not None and informer.synced.wait(30)
    api.create(SERVICES, namespace, service(namespace, "chat-b"))
    wait_until(
        lambda: informer.matching({"kubernetes.io/service-name": "chat-b"}) != [],
        timeout=60,
        what="the Service's EndpointSlice in the cache",
    )
    assert api.list(ENDPOINT_SLICES, namespace, "kubernetes.io/service-name=chat-b") != []


def test_the_gpus_held_per_node_follow_a_pod_bound_and_deleted(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    """Capacity planning's figure, kept by the pod watch, equals a recount of the pods."""
    api = CachedKubeApi(kube_api_client, tallies={PODS: gpu_tally})
    try:
        direct = KubeApi(kube_api_client)
        node = next(
            item["metadata"]["name"]
            for item in direct.list_cluster(NODES)
            if int((item["status"].get("allocatable") or {}).get("nvidia.com/gpu", 0)) > 0
        )
        informer = api.informer(PODS, namespace)
        assert informer is not None and informer.synced.wait(30)
        before = (api.tally(PODS) or {}).get(node, 0)
        direct.create(
            PODS,
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "holds-a-gpu"},
                "spec": {
                    "nodeName": node,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [
                        {
                            "name": "server",
                            "image": "modelrollout/modelserve:dev",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                },
            },
        )
        wait_until(lambda: (api.tally(PODS) or {}).get(node, 0) == before + 1, 30, "GPU counted")
        assert api.tally(PODS) == gpus_by_node(direct.list_cluster(PODS))
        direct.delete(PODS, namespace, "holds-a-gpu", grace_period_seconds=0)
        wait_until(lambda: (api.tally(PODS) or {}).get(node, 0) == before, 30, "GPU released")
    finally:
        api.stop()
