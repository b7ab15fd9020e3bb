"""Proof that the local cluster is real: a real scheduler, real validation, a real Prometheus.

Each test checks something a fake would get wrong: GPU pods land only on GPU
nodes and stay Pending when GPUs run out, the API server enforces the Gateway
API schema, and Prometheus scrapes what a test registers.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelrollout_dev.prometheus import PrometheusHandle
from tests.support.kube import wait_until

# kwok's fake GPU nodes and the pod harness: a kind cluster has neither.
pytestmark = [pytest.mark.cluster, pytest.mark.localharness]

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def deployment(
    name: str, gpus: int, replicas: int = 1, tolerate_gpu: bool = True
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "model", "image": "registry.invalid/model:1"}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [container],
                    "tolerations": [GPU_TOLERATION] if tolerate_gpu else [],
                },
            },
        },
    }


def pods_of(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"app={app}").items)


def is_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_nodes_advertise_gpus_and_taints(kube_api_client: client.ApiClient) -> None:
    nodes = client.CoreV1Api(kube_api_client).list_node().items
    gpu_nodes = [n for n in nodes if n.metadata.labels.get("nvidia.com/gpu.present") == "true"]
    assert len(gpu_nodes) >= 2
    for node in gpu_nodes:
        assert int(node.status.allocatable["nvidia.com/gpu"]) >= 1
        assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in node.spec.taints)
    assert any("nvidia.com/gpu" not in (n.status.allocatable or {}) for n in nodes), "no CPU node"


def test_gpu_deployment_is_scheduled_onto_a_gpu_node_and_ready(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_api_client), client.CoreV1Api(kube_api_client)
    apps.create_namespaced_deployment(namespace, deployment("llm", gpus=1, replicas=2))

    def two_ready_pods() -> list[client.V1Pod] | None:
        pods = pods_of(core, namespace, "llm")
        return pods if len(pods) == 2 and all(is_ready(p) for p in pods) else None

    pods = wait_until(two_ready_pods, 60, "2 Ready GPU pods")
    nodes = {n.metadata.name: n for n in core.list_node().items}
    for pod in pods:
        node = nodes[pod.spec.node_name]
        assert node.metadata.labels.get("nvidia.com/gpu.present") == "true", pod.spec.node_name
    wait_until(
        lambda: apps.read_namespaced_deployment("llm", namespace).status.ready_replicas == 2,
        60,
        "the Deployment to report 2 ready replicas",
    )


def test_pod_without_gpu_toleration_never_lands_on_a_gpu_node(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_api_client), client.CoreV1Api(kube_api_client)
    apps.create_namespaced_deployment(
        namespace, deployment("web", gpus=0, replicas=3, tolerate_gpu=False)
    )

    def three_scheduled_pods() -> list[client.V1Pod] | None:
        pods = pods_of(core, namespace, "web")
        return pods if len(pods) == 3 and all(p.spec.node_name for p in pods) else None

    pods = wait_until(three_scheduled_pods, 60, "3 scheduled CPU pods")
    assert {pod.spec.node_name for pod in pods} <= {
        n.metadata.name
        for n in core.list_node().items
        if "nvidia.com/gpu" not in (n.status.allocatable or {})
    }


def test_more_gpus_than_any_node_has_stays_pending_unschedulable(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_api_client), client.CoreV1Api(kube_api_client)
    most = max(
        int((n.status.allocatable or {}).get("nvidia.com/gpu", "0")) for n in core.list_node().items
    )
    apps.create_namespaced_deployment(namespace, deployment("huge", gpus=most + 1))

    def unschedulable_condition() -> client.V1PodCondition | None:
        for pod in pods_of(core, namespace, "huge"):
            for condition in pod.status.conditions or []:
                if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                    return condition
        return None

    condition = wait_until(unschedulable_condition, 60, "PodScheduled=False/Unschedulable")
    assert condition.status == "False"
    assert "Insufficient nvidia.com/gpu" in condition.message
    (pod,) = pods_of(core, namespace, "huge")
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None


def httproute(name: str, weights: tuple[int, int]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "parentRefs": [{"name": "inference-gw"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "chat-stable", "port": 8000, "weight": weights[0]},
                        {"name": "chat-canary", "port": 8000, "weight": weights[1]},
                    ]
                }
            ],
        },
    }


def test_httproute_with_weights_is_accepted_and_a_negative_weight_refused(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(kube_api_client)
    group, version, plural = "gateway.networking.k8s.io", "v1", "httproutes"
    custom.create_namespaced_custom_object(
        group, version, namespace, plural, httproute("chat", (95, 5))
    )
    stored = custom.get_namespaced_custom_object(group, version, namespace, plural, "chat")
    assert [b["weight"] for b in stored["spec"]["rules"][0]["backendRefs"]] == [95, 5]

    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(
            group, version, namespace, plural, httproute("bad", (100, -1))
        )
    assert refused.value.status == 422
    assert "weight" in str(refused.value.body)
    assert "greater than or equal to 0" in str(refused.value.body)


def test_prometheus_scrapes_a_registered_target_with_its_labels(
    prometheus: PrometheusHandle, metrics_server: tuple[str, str]
) -> None:
    address, marker = metrics_server
    target = f"smoke-{uuid.uuid4().hex[:8]}"
    prometheus.register_target(
        target, address, {"namespace": "smoke", "rollout": "chat", "revision": target}
    )
    try:
        result = wait_until(
            lambda: prometheus.query(f'smoke_marker{{revision="{target}"}}'),
            30,
            "Prometheus to scrape the registered target",
        )
        (series,) = result
        assert series["metric"]["rollout"] == "chat"
        assert series["metric"]["namespace"] == "smoke"
        assert float(series["value"][1]) == float(marker)
        up = prometheus.query(f'up{{revision="{target}"}}')
        assert [float(s["value"][1]) for s in up] == [1.0]
    finally:
        prometheus.unregister_target(target)
