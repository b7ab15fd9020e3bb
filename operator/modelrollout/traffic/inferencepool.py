"""Route by weight to one InferencePool per revision (Gateway API Inference Extension).

The extension's pattern for a model version rollout: each revision's pods form
an InferencePool (`inference.networking.k8s.io/v1`: its selector the revision's
labels, its targetPorts the serving port, the user's endpointPickerRef), and an
HTTPRoute owned by the operator weights its backendRefs between the stable and
the canary pool. An inference gateway sends each request to a pool by weight,
then asks that pool's endpoint picker which of its pods serves it.

The route is the gatewayAPI router's (parentRefs, hostnames, one rule; a
revision's backend is added once it has a Ready pod) with pools where that one
has Services. A revision's pool is deleted once the revision is neither stable
nor canary and the route no longer names it. Gateways report on the route
(Accepted, ResolvedRefs) and on each pool (`status.parents`: Accepted,
ResolvedRefs); both go into the TrafficRouted condition.
"""

from __future__ import annotations

from typing import Any, ClassVar

from modelrollout.kube.api import HTTPROUTES, INFERENCE_POOLS, PODS, KubeApi, is_ready
from modelrollout.kube.labels import (
    REVISION_LABEL,
    label_selector,
    revision_object_name,
    selector_labels,
)
from modelrollout.kube.workloads import _metadata
from modelrollout.traffic.base import AchievedWeights, Backends, Capability, RouterCapabilities
from modelrollout.traffic.gatewayapi import build_httproute, reconcile_route, route_conditions

POOL_GROUP = "inference.networking.k8s.io"
POOL_API_VERSION = f"{POOL_GROUP}/v1"
POOL_KIND = "InferencePool"
# What the API server fills in on an endpointPickerRef (the InferencePool CRD's defaults),
# so that a written ref and the stored one compare equal.
PICKER_DEFAULTS = {"group": "", "kind": "Service", "failureMode": "FailClose"}


def build_inference_pool(backends: Backends, revision: str) -> dict[str, Any]:
    """The InferencePool of one revision, named like its Deployment: `<rollout>-<revision>`."""
    rollout = backends.rollout
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(rollout.name, revision)},
        "targetPorts": [{"number": backends.port}],
    }
    picker = backends.settings.get("endpointPickerRef")
    if picker:
        spec["endpointPickerRef"] = picker
    return {
        "apiVersion": POOL_API_VERSION,
        "kind": POOL_KIND,
        "metadata": _metadata(
            rollout,
            revision_object_name(rollout.name, revision),
            selector_labels(rollout.name, revision),
        ),
        "spec": spec,
    }


def build_pool_httproute(
    backends: Backends, canary_weight: int, canary_ready: bool
) -> dict[str, Any]:
    """The gatewayAPI router's route, its backendRefs the revisions' pools (no port: a
    pool's targetPorts say where its pods listen)."""
    route = build_httproute(backends, canary_weight, canary_ready)
    for rule in route["spec"]["rules"]:
        rule["backendRefs"] = [
            {"group": POOL_GROUP, "kind": POOL_KIND, "name": ref["name"], "weight": ref["weight"]}
            for ref in rule["backendRefs"]
        ]
    return route


def backend_refs(route_spec: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    """(group, kind, name, weight) of the route's backends: what the operator sets, nothing
    defaulted; a Service's ref (from the gatewayAPI router) differs from a pool's."""
    rules = route_spec.get("rules") or [{}]
    return [
        (ref.get("group", ""), ref.get("kind", "Service"), ref["name"], int(ref.get("weight", 1)))
        for ref in rules[0].get("backendRefs") or []
    ]


def pool_weights(route: dict[str, Any], backends: Backends) -> tuple[int, int]:
    """(stable, canary) weights as the route gives them to the revisions' pools."""
    by_name = {
        name: weight
        for group, kind, name, weight in backend_refs(route.get("spec", {}))
        if (group, kind) == (POOL_GROUP, POOL_KIND)
    }
    rollout = backends.rollout.name
    stable = by_name.get(revision_object_name(rollout, backends.stable), 0)
    canary = (
        by_name.get(revision_object_name(rollout, backends.canary), 0) if backends.canary else 0
    )
    if stable + canary == 0:
        return 0, 0
    canary_share = round(100 * canary / (stable + canary))
    return 100 - canary_share, canary_share


def pool_settings(spec: dict[str, Any]) -> tuple[Any, ...]:
    """What the operator sets in a pool's spec, with the API server's defaults filled in."""
    picker = spec.get("endpointPickerRef")
    return (
        (spec.get("selector") or {}).get("matchLabels"),
        [port.get("number") for port in spec.get("targetPorts") or []],
        {**PICKER_DEFAULTS, **picker} if picker else None,
    )


def pool_conditions(pool: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """Accepted and ResolvedRefs as each gateway reports them on the pool."""
    name = pool["metadata"]["name"]
    return tuple(
        (
            condition["type"],
            condition.get("status", "Unknown"),
            f"InferencePool {name}: {condition.get('message') or condition.get('reason', '')}",
        )
        for parent in pool.get("status", {}).get("parents") or []
        for condition in parent.get("conditions") or []
        if condition.get("type") in ("Accepted", "ResolvedRefs")
    )


class InferencePoolRouter:
    capabilities: ClassVar[RouterCapabilities] = frozenset({Capability.EXACT_WEIGHTS})

    def __init__(self, api: KubeApi) -> None:
        self._api = api

    def _has_ready_pod(self, backends: Backends, revision: str) -> bool:
        rollout = backends.rollout
        return any(
            is_ready(pod) and not pod["metadata"].get("deletionTimestamp")
            for pod in self._api.list(
                PODS, rollout.namespace, label_selector(selector_labels(rollout.name, revision))
            )
        )

    def _ensure_pool(self, backends: Backends, revision: str) -> None:
        namespace = backends.rollout.namespace
        desired = build_inference_pool(backends, revision)
        name = desired["metadata"]["name"]
        current = self._api.get(INFERENCE_POOLS, namespace, name)
        if current is None:
            self._api.create(INFERENCE_POOLS, namespace, desired)
        elif pool_settings(current["spec"]) != pool_settings(desired["spec"]):
            # A replace, not a merge patch: a field taken out of endpointPickerRef must go
            # (a merge patch would keep it); resourceVersion makes it fail if the pool moved.
            self._api.replace(
                INFERENCE_POOLS, namespace, name, {**current, "spec": desired["spec"]}
            )

    def _retire_pools(self, backends: Backends, route: dict[str, Any]) -> None:
        """Delete the pools of revisions neither live nor named by the route."""
        rollout = backends.rollout
        keep = {name for _, _, name, _ in backend_refs(route["spec"])} | {
            revision_object_name(rollout.name, revision)
            for revision in (backends.stable, backends.canary)
            if revision is not None
        }
        for pool in self._api.list(
            INFERENCE_POOLS, rollout.namespace, label_selector(selector_labels(rollout.name))
        ):
            name = pool["metadata"]["name"]
            revision = (pool["metadata"].get("labels") or {}).get(REVISION_LABEL)
            if (
                revision is not None
                and name == revision_object_name(rollout.name, revision)
                and name not in keep
                and not pool["metadata"].get("deletionTimestamp")
            ):
                self._api.delete(INFERENCE_POOLS, rollout.namespace, name)

    def reconcile(self, backends: Backends) -> None:
        for revision in (backends.stable, backends.canary):
            if revision is not None:
                self._ensure_pool(backends, revision)
        current = reconcile_route(self._api, backends, build_pool_httproute, pool_weights)
        if current is not None:
            self._retire_pools(backends, current)

    def set_weights(self, backends: Backends, canary_weight: int) -> None:
        rollout = backends.rollout
        canary_ready = backends.canary is not None and (
            canary_weight == 0 or self._has_ready_pod(backends, backends.canary)
        )
        desired = build_pool_httproute(backends, canary_weight, canary_ready)
        current = self._api.get(HTTPROUTES, rollout.namespace, rollout.name)
        if current is None:
            self.reconcile(backends)
        elif backend_refs(current["spec"]) == backend_refs(desired["spec"]):
            # The API server defaults fields inside rules: compare what we own only.
            return
        self._api.merge_patch(
            HTTPROUTES,
            rollout.namespace,
            rollout.name,
            {"spec": {"rules": desired["spec"]["rules"]}},
        )

    def get_weights(self, backends: Backends) -> AchievedWeights:
        rollout = backends.rollout
        route = self._api.get(HTTPROUTES, rollout.namespace, rollout.name)
        if route is None:
            return AchievedWeights(0, 0, (("Routed", "False", "HTTPRoute does not exist"),))
        stable, canary = pool_weights(route, backends)
        conditions = route_conditions(route)
        for revision in (backends.stable, backends.canary):
            pool = (
                self._api.get(
                    INFERENCE_POOLS, rollout.namespace, revision_object_name(rollout.name, revision)
                )
                if revision is not None
                else None
            )
            if pool is not None:
                conditions += pool_conditions(pool)
        return AchievedWeights(stable, canary, conditions, settled=canary == backends.canary_weight)
