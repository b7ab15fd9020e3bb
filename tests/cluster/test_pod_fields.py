"""The pod fields platform teams require, through the real API server: the CRD stores them, and
the Deployment the operator builds from the stored spec is accepted (server-side dry run, so
every admission plugin and the Deployment's validation run); a bad affinity the CRD lets through
(it is free-form there) is refused at the Deployment, which the operator reports naming
spec.runtime.affinity."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelrollout.engine.children import refused_deployment
from modelrollout.engine.podspec import build_pod_metadata, build_pod_spec
from modelrollout.engine.revision import revision_of
from modelrollout.kube.workloads import RolloutRef, build_deployment
from modelrollout.models import parse_spec
from tests.cluster.test_crd_validation import create, refusal
from tests.unit.operator.builders import example_spec
from tests.unit.operator.test_pod_fields import PLATFORM_FIELDS

pytestmark = pytest.mark.cluster


@pytest.fixture
def platform_classes(kube_api_client: client.ApiClient) -> Iterator[tuple[str, str]]:
    """A PriorityClass and a RuntimeClass: admission refuses a pod naming one that is missing."""
    suffix = uuid.uuid4().hex[:6]
    priority, runtime = f"inference-{suffix}", f"nvidia-{suffix}"
    scheduling = client.SchedulingV1Api(kube_api_client)
    node = client.NodeV1Api(kube_api_client)
    scheduling.create_priority_class(
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": priority},
            "value": 1000,
        }
    )
    node.create_runtime_class(
        {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": runtime},
            "handler": "nvidia",
        }
    )
    try:
        yield priority, runtime
    finally:
        scheduling.delete_priority_class(priority)
        node.delete_runtime_class(runtime)


def dry_run_deployment(
    api_client: client.ApiClient, namespace: str, stored: dict[str, Any]
) -> dict[str, Any]:
    """The Deployment the operator builds from a stored rollout, created with dryRun=All."""
    spec = parse_spec(stored["spec"])
    deployment = build_deployment(
        RolloutRef(namespace, stored["metadata"]["name"], stored["metadata"]["uid"]),
        revision_of(spec),
        "stable",
        1,
        build_pod_spec(spec),
        600,
        build_pod_metadata(spec),
    )
    created: dict[str, Any] = client.ApiClient.sanitize_for_serialization(
        api_client,
        client.AppsV1Api(api_client).create_namespaced_deployment(
            namespace, deployment, dry_run="All", field_validation="Strict"
        ),
    )
    return created


def test_the_api_server_accepts_the_deployment_built_with_every_pod_field(
    kube_api_client: client.ApiClient, namespace: str, platform_classes: tuple[str, str]
) -> None:
    priority, runtime = platform_classes
    body = example_spec()
    body["runtime"].update(
        copy.deepcopy(PLATFORM_FIELDS), priorityClassName=priority, runtimeClassName=runtime
    )
    stored = create(kube_api_client, namespace, body)
    assert stored["spec"]["runtime"]["affinity"] == PLATFORM_FIELDS["affinity"]

    created = dry_run_deployment(kube_api_client, namespace, stored)
    pod = created["spec"]["template"]["spec"]
    assert pod["affinity"] == PLATFORM_FIELDS["affinity"]
    assert pod["priorityClassName"] == priority
    assert pod["runtimeClassName"] == runtime
    assert pod["serviceAccountName"] == "llm-server"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["securityContext"] == {"runAsUser": 1000, "fsGroup": 1000}
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert {"cache", "nfs", "dshm", "model"} <= {v["name"] for v in pod["volumes"]}
    container = pod["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"/cache", "/nfs", "/dev/shm"} <= {m["mountPath"] for m in container["volumeMounts"]}
    labels = created["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "ml"
    assert labels["modelrollout.dev/rollout"] == stored["metadata"]["name"]
    annotations = created["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true"}


def test_the_crd_refuses_the_operators_label_keys_naming_the_field(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    body = example_spec()
    body["runtime"]["podLabels"] = {"modelrollout.dev/role": "stable"}
    message = refusal(kube_api_client, namespace, body)
    assert "runtime.podLabels" in message
    assert "operator's" in message


def test_a_bad_affinity_is_refused_at_the_deployment_and_named(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    body = example_spec()
    affinity = copy.deepcopy(PLATFORM_FIELDS["affinity"])
    term = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    term["nodeSelectorTerms"][0]["matchExpressions"][0]["operator"] = "Near"
    body["runtime"]["affinity"] = affinity
    stored = create(kube_api_client, namespace, body)  # free-form in the CRD: stored

    with pytest.raises(ApiException) as raised:
        dry_run_deployment(kube_api_client, namespace, stored)
    assert raised.value.status == 422, raised.value.body
    error = refused_deployment(json.loads(raised.value.body)["message"])
    assert error.field_path == "spec.runtime.affinity"
    assert "Near" in error.message
