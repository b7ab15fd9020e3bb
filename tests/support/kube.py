"""Helpers for tests that talk to a real kube-apiserver."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelrollout.kube.api import KubeApi, Resource

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "crds"


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def apply_crd(api_client: client.ApiClient, manifest: dict[str, Any], timeout: float = 60) -> None:
    """Create or replace a CRD and wait until the API server serves it."""
    api = client.ApiextensionsV1Api(api_client)
    name = manifest["metadata"]["name"]
    try:
        current = api.read_custom_resource_definition(name)
    except ApiException as error:
        if error.status != 404:
            raise
        api.create_custom_resource_definition(manifest)
    else:
        manifest = {
            **manifest,
            "metadata": {
                **manifest["metadata"],
                "resourceVersion": current.metadata.resource_version,
            },
        }
        api.replace_custom_resource_definition(name, manifest)

    def established() -> bool:
        conditions = api.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_until(established, timeout, f"CRD {name} to be Established")


def project_crds() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted(CRD_DIR.glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def create_namespace(api_client: client.ApiClient, name: str, timeout: float = 30) -> None:
    """Create a namespace and wait until pods can be created in it."""
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Pods are refused until the namespace's default ServiceAccount exists.
    wait_until(
        lambda: core.list_namespaced_service_account(name).items,
        timeout,
        f"the default ServiceAccount in {name}",
    )


class RecordingKubeApi(KubeApi):
    """The real API, recording each write as "<verb> <plural>/<name>" (a patch with its body)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        super().__init__(api_client)
        self.writes: list[str] = []

    def writes_to(self, *resources: Resource) -> list[str]:
        plurals = {f" {resource.plural}/" for resource in resources}
        return [write for write in self.writes if any(p in write for p in plurals)]

    def create(self, resource: Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(f"create {resource.plural}/{body['metadata']['name']}")
        return super().create(resource, namespace, body)

    def merge_patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        self.writes.append(f"patch {resource.plural}/{name} {patch}")
        return super().merge_patch(resource, namespace, name, patch, subresource)

    def replace(
        self, resource: Resource, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.writes.append(f"replace {resource.plural}/{name}")
        return super().replace(resource, namespace, name, body)

    def delete(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        propagation: str | None = None,
        grace_period_seconds: int | None = None,
        uid: str | None = None,
    ) -> None:
        self.writes.append(f"delete {resource.plural}/{name}")
        super().delete(resource, namespace, name, propagation, grace_period_seconds, uid)
