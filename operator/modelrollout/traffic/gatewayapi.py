"""Route by weight with a Gateway API HTTPRoute owned by the operator.

The route has one rule whose backendRefs are per-revision Services with
weights; it attaches to the user's Gateway through `parentRefs`. A backend is
added only once its Service has Ready endpoints, so a weight never points at
a revision that cannot answer. For a shadow, the rule gets a RequestMirror
filter (Gateway API's `percent`) copying requests to the canary's Service.
A revision's Service is deleted once the revision is neither stable, canary
nor kept warm for a rollback, and the route no longer names it.
With traffic.sessionAffinity, header-match rules keep each session on one
revision (traffic/session_affinity.py); during an experiment step, a rule before
them sends the segment's requests to the canary (traffic/segment.py).
With a shadow's comparison proxy (engine/comparison.py) stable's backendRef
names the proxy's Service instead, and there is no RequestMirror: the proxy
copies requests to the candidate itself.
For blue-green, `<name>-preview` routes requests carrying the header
`x-modelrollout-preview: true` on the same parents and hostnames to the new
color (a header match is more specific, so it wins over the main route).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from modelrollout.kube.api import ENDPOINT_SLICES, HTTPROUTES, KubeApi
from modelrollout.kube.labels import revision_object_name
from modelrollout.traffic.base import (
    AchievedWeights,
    Backends,
    Capability,
    RouterCapabilities,
    ensure_revision_service,
    retire_revision_services,
)
from modelrollout.traffic.segment import segment_rules
from modelrollout.traffic.session_affinity import affinity_rules, pin_filter

ROUTE_API_VERSION = "gateway.networking.k8s.io/v1"


def _backend_ref(backends: Backends, revision: str) -> dict[str, Any]:
    """The backendRef to a revision's Service; with session affinity its answers name it."""
    ref: dict[str, Any] = {
        "name": revision_object_name(backends.rollout.name, revision),
        "port": backends.port,
    }
    if backends.session_affinity is not None and backends.session_affinity.pin_revision:
        ref["filters"] = [pin_filter(revision)]
    return ref


def build_httproute(backends: Backends, canary_weight: int, canary_ready: bool) -> dict[str, Any]:
    """The route: the weighted rule first, then any session-affinity rules (more specific)."""
    rollout = backends.rollout
    refs = [
        {
            **_backend_ref(backends, backends.stable),
            "name": backends.stable_service,
            "weight": 100 - canary_weight if canary_ready else 100,
        }
    ]
    if backends.canary is not None and canary_ready:
        refs.append({**_backend_ref(backends, backends.canary), "weight": canary_weight})
    rule: dict[str, Any] = {"backendRefs": refs}
    if backends.canary is not None and backends.mirror_percent > 0 and backends.comparison is None:
        rule["filters"] = [
            {
                "type": "RequestMirror",
                "requestMirror": {
                    "backendRef": {
                        "name": revision_object_name(rollout.name, backends.canary),
                        "port": backends.port,
                    },
                    "percent": backends.mirror_percent,
                },
            }
        ]
    rules = [rule]
    if backends.segment is not None and backends.canary is not None and canary_ready:
        rules += segment_rules(
            backends.segment, backends.canary, lambda revision: _backend_ref(backends, revision)
        )
    if backends.session_affinity is not None and backends.canary is not None and canary_ready:
        rules += affinity_rules(
            backends.session_affinity,
            backends.stable,
            backends.canary,
            canary_weight,
            lambda revision: _backend_ref(backends, revision),
        )
    spec: dict[str, Any] = {
        "parentRefs": backends.settings.get("parentRefs", []),
        "rules": rules,
    }
    if backends.settings.get("hostnames"):
        spec["hostnames"] = backends.settings["hostnames"]
    return {
        "apiVersion": ROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {
            "name": rollout.name,
            "namespace": rollout.namespace,
            "labels": {"app.kubernetes.io/managed-by": "modelrollout"},
            "ownerReferences": [rollout.owner_reference()],
        },
        "spec": spec,
    }


PREVIEW_HEADER = "x-modelrollout-preview"


def build_preview_httproute(backends: Backends) -> dict[str, Any]:
    """The route to the new color: requests with the preview header, nothing else."""
    rollout = backends.rollout
    route = build_httproute(backends, 0, False)
    route["metadata"]["name"] = f"{rollout.name}-preview"
    route["spec"]["rules"] = [
        {
            "matches": [{"headers": [{"name": PREVIEW_HEADER, "value": "true"}]}],
            "backendRefs": [
                {**_backend_ref(backends, backends.canary or backends.stable), "weight": 100}
            ],
        }
    ]
    return route


def route_weights(route: dict[str, Any], backends: Backends) -> tuple[int, int]:
    """(stable, canary) weights as the route has them."""
    refs = route.get("spec", {}).get("rules", [{}])[0].get("backendRefs", [])
    by_name = {ref["name"]: int(ref.get("weight", 1)) for ref in refs}
    stable = by_name.get(backends.stable_service, 0)
    canary = (
        by_name.get(revision_object_name(backends.rollout.name, backends.canary), 0)
        if backends.canary
        else 0
    )
    total = stable + canary
    if total == 0:
        return 0, 0
    canary_share = round(100 * canary / total)
    return 100 - canary_share, canary_share


def _owned_rule(rule: dict[str, Any]) -> tuple[Any, ...]:
    """What the operator sets in a rule, nothing the API server defaults: its header
    matches, its backends' weights and the revision each names on its answers, its mirrors."""
    headers = [
        (header["name"], header.get("type", "Exact"), header["value"])
        for match in rule.get("matches") or []
        for header in match.get("headers") or []
    ]
    weights = [
        (
            ref["name"],
            int(ref.get("weight", 1)),
            [
                (header["name"], header["value"])
                for f in ref.get("filters") or []
                if f.get("type") == "ResponseHeaderModifier"
                for header in f["responseHeaderModifier"].get("set") or []
            ],
        )
        for ref in rule.get("backendRefs", [])
    ]
    mirrors = [
        (f["requestMirror"]["backendRef"]["name"], f["requestMirror"].get("percent"))
        for f in rule.get("filters") or []
        if f.get("type") == "RequestMirror"
    ]
    return headers, weights, mirrors


def _owned_routing(rules: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [_owned_rule(rule) for rule in rules]


def _named_services(rules: list[dict[str, Any]]) -> set[str]:
    """The Services the rules send or mirror requests to."""
    return {ref["name"] for rule in rules for ref in rule.get("backendRefs", [])} | {
        f["requestMirror"]["backendRef"]["name"]
        for rule in rules
        for f in rule.get("filters") or []
        if f.get("type") == "RequestMirror"
    }


def _parent_refs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """parentRefs with the API server's defaults filled in, so that ours compare equal.

    Without this every tick saw `group` and `kind` the server added as a
    difference and patched the route again.
    """
    return [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", **ref}
        for ref in spec.get("parentRefs") or []
    ]


def reconcile_route(
    api: KubeApi,
    backends: Backends,
    build: Callable[[Backends, int, bool], dict[str, Any]],
    weights: Callable[[dict[str, Any], Backends], tuple[int, int]],
) -> dict[str, Any] | None:
    """The rollout's HTTPRoute as it stands, or None where this call created it (canary at 0).

    Only its parentRefs are brought in line here: its weights are `set_weights`' to write.
    """
    rollout = backends.rollout
    current = api.get(HTTPROUTES, rollout.namespace, rollout.name)
    if current is None:
        api.create(HTTPROUTES, rollout.namespace, build(backends, 0, False))
        return None
    desired = build(backends, weights(current, backends)[1], True)
    if _parent_refs(current["spec"]) != _parent_refs(desired["spec"]):
        api.merge_patch(
            HTTPROUTES,
            rollout.namespace,
            rollout.name,
            {"spec": {"parentRefs": desired["spec"]["parentRefs"]}},
        )
    return current


def route_conditions(route: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    conditions: list[tuple[str, str, str]] = []
    for parent in route.get("status", {}).get("parents", []):
        for condition in parent.get("conditions", []):
            if condition.get("type") in ("Accepted", "ResolvedRefs"):
                conditions.append(
                    (
                        condition["type"],
                        condition.get("status", "Unknown"),
                        condition.get("message", ""),
                    )
                )
    return tuple(conditions)


class GatewayAPIRouter:
    capabilities: ClassVar[RouterCapabilities] = frozenset(
        {
            Capability.EXACT_WEIGHTS,
            Capability.REQUEST_MIRRORING,
            Capability.PREVIEW_ROUTE,
            Capability.REVISION_SERVICES,
            Capability.SESSION_AFFINITY,
            Capability.REQUEST_MATCHING,
            Capability.COMPARISON_PROXY,
        }
    )

    def __init__(self, api: KubeApi) -> None:
        self._api = api

    def _has_ready_endpoints(self, namespace: str, service: str) -> bool:
        slices = self._api.list(ENDPOINT_SLICES, namespace, f"kubernetes.io/service-name={service}")
        return any(
            endpoint.get("conditions", {}).get("ready")
            for endpoint_slice in slices
            for endpoint in endpoint_slice.get("endpoints") or []
        )

    def _ensure_services(self, backends: Backends) -> None:
        rollout = backends.rollout
        for revision in (backends.stable, backends.canary, backends.kept):
            if revision is None:
                continue
            ensure_revision_service(self._api, rollout, revision, backends.port)

    def _retire_services(self, backends: Backends, route: dict[str, Any]) -> None:
        """Delete the Services of revisions neither live nor named by the route.

        One Service per revision would otherwise pile up, one per rollout ever
        made; a revision that comes back (undo) gets its Service again.
        """
        rollout = backends.rollout
        keep = _named_services(route["spec"].get("rules", []))
        keep |= {
            revision_object_name(rollout.name, revision)
            for revision in (backends.stable, backends.canary, backends.kept)
            if revision is not None
        }
        retire_revision_services(self._api, rollout, keep)

    def _ensure_preview_route(self, backends: Backends) -> None:
        rollout = backends.rollout
        desired = build_preview_httproute(backends)
        name = desired["metadata"]["name"]
        current = self._api.get(HTTPROUTES, rollout.namespace, name)
        if current is None:
            self._api.create(HTTPROUTES, rollout.namespace, desired)
        elif _owned_routing(current["spec"].get("rules", [])) != _owned_routing(
            desired["spec"]["rules"]
        ) or _parent_refs(current["spec"]) != _parent_refs(desired["spec"]):
            self._api.merge_patch(HTTPROUTES, rollout.namespace, name, {"spec": desired["spec"]})

    def reconcile(self, backends: Backends) -> None:
        self._ensure_services(backends)
        if backends.blue_green:
            self._ensure_preview_route(backends)
        current = reconcile_route(self._api, backends, build_httproute, route_weights)
        if current is not None:
            self._retire_services(backends, current)

    def set_weights(self, backends: Backends, canary_weight: int) -> None:
        rollout = backends.rollout
        # A segment sends requests to the canary at weight 0 too: only once it can answer.
        canary_ready = backends.canary is not None and (
            (canary_weight == 0 and backends.segment is None)
            or self._has_ready_endpoints(
                rollout.namespace, revision_object_name(rollout.name, backends.canary)
            )
        )
        rules = build_httproute(backends, canary_weight, canary_ready)["spec"]["rules"]
        current = self._api.get(HTTPROUTES, rollout.namespace, rollout.name)
        if current is None:
            self.reconcile(backends)
        elif _owned_routing(current["spec"].get("rules", [])) == _owned_routing(rules):
            # The API server defaults fields inside rules: compare what we own only.
            return
        self._api.merge_patch(
            HTTPROUTES, rollout.namespace, rollout.name, {"spec": {"rules": rules}}
        )

    def get_weights(self, backends: Backends) -> AchievedWeights:
        route = self._api.get(HTTPROUTES, backends.rollout.namespace, backends.rollout.name)
        if route is None:
            return AchievedWeights(0, 0, (("Routed", "False", "HTTPRoute does not exist"),))
        stable, canary = route_weights(route, backends)
        return AchievedWeights(
            stable, canary, route_conditions(route), settled=canary == backends.canary_weight
        )
