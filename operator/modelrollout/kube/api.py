"""A small, typed door to the Kubernetes API: plain dicts in and out, one call per method.

Responses are parsed as JSON instead of the client's generated models: the
engine works on dicts, and deserializing models costs more CPU than the rest
of a tick at a thousand rollouts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from modelrollout.kube.labels import GROUP, PLURAL, VERSION

REQUEST_TIMEOUT_SECONDS = 10.0
FIELD_MANAGER = "modelrollout"


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def cluster_path(self) -> str:
        """Every object of a cluster-scoped resource, or of a namespaced one in all namespaces."""
        return f"{self.prefix}/{self.plural}"

    def collection_path(self, namespace: str) -> str:
        """The objects in `namespace`; "" means every namespace (or a cluster-scoped resource)."""
        return self.path(namespace)

    def path_in(self, namespace: str) -> str:
        return f"{self.prefix}/namespaces/{namespace}/{self.plural}"

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        """An object's path; namespace "" for a cluster-scoped resource."""
        path = self.path_in(namespace) if namespace else self.cluster_path()
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


DEPLOYMENTS = Resource("apps", "v1", "deployments")
SERVICES = Resource("", "v1", "services")
PODS = Resource("", "v1", "pods")
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices")
HTTPROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes")
INFERENCE_POOLS = Resource("inference.networking.k8s.io", "v1", "inferencepools")
MODELROLLOUTS = Resource(GROUP, VERSION, PLURAL)
LEASES = Resource("coordination.k8s.io", "v1", "leases")
NODES = Resource("", "v1", "nodes")
JOBS = Resource("batch", "v1", "jobs")
POD_DISRUPTION_BUDGETS = Resource("policy", "v1", "poddisruptionbudgets")
# Read by name only, where a rollout's spec names one (metric provider credentials).
SECRETS = Resource("", "v1", "secrets")
CONFIGMAPS = Resource("", "v1", "configmaps")


class KubeApiError(RuntimeError):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def _error(exception: ApiException) -> KubeApiError:
    message = exception.reason or ""
    try:
        body = json.loads(exception.body or "{}")
        message = body.get("message", message)
    except (ValueError, TypeError):
        pass
    return KubeApiError(int(exception.status or 0), str(exception.reason), str(message))


class KubeApi:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._client = api_client

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        try:
            response = self._client.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as exception:
            raise _error(exception) from exception
        data = response.data
        parsed: dict[str, Any] = json.loads(data) if data else {}
        return parsed

    def serves(self, resource: Resource) -> bool:
        """Whether the API server serves `resource` (discovery: every user may read it)."""
        try:
            listing = self._call("GET", resource.prefix)
        except KubeApiError as error:
            if error.status == 404:
                return False
            raise
        return any(item.get("name") == resource.plural for item in listing.get("resources", []))

    def list_cluster(
        self, resource: Resource, field_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Every object in every namespace. Read-only: a cache may hand out its own objects."""
        query = [("fieldSelector", field_selector)] if field_selector else []
        items: list[dict[str, Any]] = self._call("GET", resource.cluster_path(), query=query)[
            "items"
        ]
        return items

    def list_with_version(
        self,
        resource: Resource,
        namespace: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], str]:
        """The items and the list's resourceVersion, from which a watch continues.

        `namespace` "" lists every namespace (or a cluster-scoped resource).
        """
        query = [("labelSelector", label_selector)] if label_selector else []
        if field_selector:
            query.append(("fieldSelector", field_selector))
        listing = self._call("GET", resource.collection_path(namespace), query=query)
        items: list[dict[str, Any]] = listing["items"]
        return items, str(listing.get("metadata", {}).get("resourceVersion", ""))

    def tally(self, resource: Resource) -> dict[str, int] | None:
        """A cache's running per-key totals over every object of `resource` (see
        kube/cache.py); None here, where nothing is cached: the caller counts a list."""
        return None

    def list_read_only(
        self, resource: Resource, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """`list` for a caller that changes nothing it gets: a cache may hand out its own."""
        return self.list(resource, namespace, label_selector)

    def list(
        self, resource: Resource, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return self.list_with_version(resource, namespace, label_selector)[0]

    def watch(
        self,
        resource: Resource,
        namespace: str,
        label_selector: str,
        resource_version: str,
        timeout_seconds: int,
        field_selector: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Watch events (`type`, `object`) after `resource_version`, with bookmarks.

        The server ends the stream after `timeout_seconds`; the read timeout is a
        little longer, so a silently dead connection ends it too.
        """
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            *([("labelSelector", label_selector)] if label_selector else []),
            *([("fieldSelector", field_selector)] if field_selector else []),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        try:
            response = self._client.call_api(
                resource.collection_path(namespace),
                "GET",
                query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=(REQUEST_TIMEOUT_SECONDS, timeout_seconds + 30),
            )
        except ApiException as exception:
            raise _error(exception) from exception
        try:
            pending = b""
            for chunk in response.stream(amt=None, decode_content=False):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release_conn()

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", resource.path(namespace, name))
        except KubeApiError as error:
            if error.status == 404:
                return None
            raise

    def get_owned(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """`get` of an object the operator writes (it carries the managed-by label): a cache
        answers it, its absence included, without asking the API server."""
        return self.get(resource, namespace, name)

    def create(self, resource: Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", resource.path(namespace), body=body)

    def merge_patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return self._call(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=patch,
            content_type="application/merge-patch+json",
        )

    def replace(
        self, resource: Resource, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """PUT: with `metadata.resourceVersion` in the body, fails with 409 if the object moved."""
        return self._call("PUT", resource.path(namespace, name), body=body)

    def delete(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        propagation: str | None = None,
        grace_period_seconds: int | None = None,
        uid: str | None = None,
    ) -> None:
        """`propagation` (Background, Foreground, Orphan): what happens to dependents.

        A Job's pods are orphaned by default; Background deletes them too.
        `grace_period_seconds` overrides the object's own; with `uid`, only that
        incarnation of the object is deleted (a recreated one of the same name stays).
        """
        query = [("propagationPolicy", propagation)] if propagation else []
        options: dict[str, Any] = {}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        body = {"apiVersion": "v1", "kind": "DeleteOptions", **options} if options else None
        try:
            self._call("DELETE", resource.path(namespace, name), body=body, query=query)
        except KubeApiError as error:
            if error.status != 404:
                raise


def label_pod(api: KubeApi, namespace: str, name: str, labels: dict[str, str | None]) -> None:
    """Merge `labels` into a pod's (None removes one). A pod deleted since it was listed
    (the list comes from the watch cache, which hears of a deletion a moment later) has
    nothing left to label: that is not a failure of the tick."""
    try:
        api.merge_patch(PODS, namespace, name, {"metadata": {"labels": labels}})
    except KubeApiError as error:
        if error.status != 404:
            raise


def is_ready(obj: Mapping[str, Any]) -> bool:
    """Whether a pod's or a node's condition Ready is True."""
    return any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in obj.get("status", {}).get("conditions") or []
    )
