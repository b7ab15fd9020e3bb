"""Route by replica count: one Service selects the pods of every revision.

Works on any cluster, without a gateway. A Service spreads requests evenly
over Ready pods, so the canary's share is its share of Ready replicas; a
weight is approximated by scaling the canary (rounded up, as Argo Rollouts'
basic canary does), and the achieved split is reported as it really is
(condition TrafficRouted); exact weights need the gatewayAPI router.

The Service selects only pods labelled `modelrollout.dev/serving=true`, which
the operator sets in place (a template change would restart the pods) on the
pods of each revision whose weight is above 0, and removes at 0: a canary
warming up before its first setWeight, or one rolled back, takes no requests,
and a promoted one takes them all, once all its pods are Ready (until then
stable's pods keep their label, and the plan keeps them running). Pods are
labelled before the Service's selector asks for the label, so a rollout from
an older release never loses its endpoints.

During a shadow with a comparison proxy (engine/comparison.py) the Service
selects the proxy's pods alone: it answers from stable and copies a share of
requests to the candidate, which this router sizes for that share.

Blue-green instead selects one revision at a time: the Service's selector
names the active color, a switch is one patch of that selector (no pod
restarts, no moment with no endpoints), and `<name>-preview` selects the
new color so it can be tested before promotion.
"""

from __future__ import annotations

from typing import Any, ClassVar

from modelrollout.kube.api import DEPLOYMENTS, PODS, SERVICES, KubeApi, is_ready, label_pod
from modelrollout.kube.labels import (
    REVISION_LABEL,
    SERVING_LABEL,
    label_selector,
    proxy_selector,
    revision_object_name,
    selector_labels,
)
from modelrollout.kube.workloads import RolloutRef, build_service
from modelrollout.traffic.base import (
    AchievedWeights,
    Backends,
    Capability,
    RouterCapabilities,
    canary_replicas,
)


def _ready_replicas(deployment: dict[str, Any] | None) -> int:
    if deployment is None:
        return 0
    return int(deployment.get("status", {}).get("readyReplicas") or 0)


def _desired_replicas(deployment: dict[str, Any] | None) -> int:
    return 0 if deployment is None else int(deployment["spec"].get("replicas") or 0)


def _selected_revision(service: dict[str, Any] | None) -> str | None:
    if service is None:
        return None
    revision: str | None = (service["spec"].get("selector") or {}).get(REVISION_LABEL)
    return revision


class ServiceRouter:
    capabilities: ClassVar[RouterCapabilities] = frozenset(
        {Capability.PREVIEW_ROUTE, Capability.COMPARISON_PROXY}
    )

    def __init__(self, api: KubeApi) -> None:
        self._api = api

    def _ensure_service(
        self, rollout: RolloutRef, name: str, selector: dict[str, str], port: int
    ) -> None:
        current = self._api.get(SERVICES, rollout.namespace, name)
        if current is None:
            self._api.create(
                SERVICES, rollout.namespace, build_service(rollout, name, selector, port)
            )
        elif (current["spec"].get("selector") or {}) != selector:
            # A merge patch merges maps: a key the new selector drops is removed by null.
            dropped = {key: None for key in current["spec"].get("selector") or {}}
            self._api.merge_patch(
                SERVICES,
                rollout.namespace,
                name,
                {"spec": {"selector": {**dropped, **selector}}},
            )

    def _label_serving(self, backends: Backends, canary_weight: int) -> None:
        """`serving=true` on the pods of each revision with a weight, removed from the others.

        Stable keeps its label at canary weight 100 until the canary has all its pods
        Ready: the canary then takes everything with the capacity stable had.
        """
        rollout = backends.rollout
        pods = [
            pod
            for pod in self._api.list(
                PODS, rollout.namespace, label_selector(selector_labels(rollout.name))
            )
            if not pod["metadata"].get("deletionTimestamp")
        ]
        canary_ready = sum(
            1
            for pod in pods
            if pod["metadata"]["labels"].get(REVISION_LABEL) == backends.canary and is_ready(pod)
        )
        canary_complete = canary_ready >= canary_replicas(backends.replicas, canary_weight)
        serving = {
            backends.stable: canary_weight < 100 or backends.canary is None or not canary_complete
        }
        if backends.canary is not None:
            serving[backends.canary] = canary_weight > 0
        changes: list[tuple[str, bool]] = []
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            wanted = serving.get(labels.get(REVISION_LABEL, ""))
            if wanted is None:
                continue
            if (labels.get(SERVING_LABEL) == "true") != wanted:
                changes.append((pod["metadata"]["name"], wanted))
        # Make before break: every pod that joins the Service is labelled before any leaves,
        # so whoever reads the pods between two patches (the endpoints controller) never
        # finds the Service empty when traffic moves from one revision to the other at once.
        for name, wanted in sorted(changes, key=lambda change: not change[1]):
            label_pod(
                self._api, rollout.namespace, name, {SERVING_LABEL: "true" if wanted else None}
            )

    def _serving_ready_pods(self, backends: Backends) -> dict[str, int]:
        rollout = backends.rollout
        counts: dict[str, int] = {}
        for pod in self._api.list(
            PODS,
            rollout.namespace,
            label_selector({**selector_labels(rollout.name), SERVING_LABEL: "true"}),
        ):
            if is_ready(pod) and not pod["metadata"].get("deletionTimestamp"):
                revision = pod["metadata"]["labels"].get(REVISION_LABEL, "")
                counts[revision] = counts.get(revision, 0) + 1
        return counts

    def reconcile(self, backends: Backends) -> None:
        rollout = backends.rollout
        if not backends.blue_green:
            self._label_serving(backends, backends.canary_weight)
            self._ensure_service(
                rollout,
                rollout.name,
                # A shadow's comparison proxy answers from stable: the Service selects it alone.
                proxy_selector(rollout.name)
                if backends.front is not None
                else {**selector_labels(rollout.name), SERVING_LABEL: "true"},
                backends.port,
            )
            return
        current = self._api.get(SERVICES, rollout.namespace, rollout.name)
        active = _selected_revision(current)
        # None is no color, also while there is no canary: a selector without a revision
        # would send a preview's pods traffic the moment they are Ready.
        if active is None or active not in (backends.stable, backends.canary):
            active = backends.stable
        self._ensure_service(
            rollout, rollout.name, selector_labels(rollout.name, active), backends.port
        )
        self._ensure_service(
            rollout,
            f"{rollout.name}-preview",
            selector_labels(rollout.name, backends.canary or backends.stable),
            backends.port,
        )

    def set_weights(self, backends: Backends, canary_weight: int) -> None:
        if backends.canary is None:
            return
        if backends.blue_green:
            active = backends.canary if canary_weight >= 100 else backends.stable
            self._ensure_service(
                backends.rollout,
                backends.rollout.name,
                selector_labels(backends.rollout.name, active),
                backends.port,
            )
            return
        rollout = backends.rollout
        self._label_serving(backends, canary_weight)
        name = revision_object_name(rollout.name, backends.canary)
        # A shadow's candidate gets no weight, only the comparison proxy's sampled copies.
        share = max(canary_weight, backends.mirror_percent if backends.comparison else 0)
        replicas = 0 if share == 0 else canary_replicas(backends.replicas, share)
        current = self._api.get(DEPLOYMENTS, rollout.namespace, name)
        if current is not None and int(current["spec"].get("replicas") or 0) != replicas:
            self._api.merge_patch(
                DEPLOYMENTS, rollout.namespace, name, {"spec": {"replicas": replicas}}
            )

    def get_weights(self, backends: Backends) -> AchievedWeights:
        rollout = backends.rollout
        if backends.blue_green:
            service = self._api.get(SERVICES, rollout.namespace, rollout.name)
            active = _selected_revision(service)
            if active is None:
                return AchievedWeights(0, 0, (("Routed", "False", "no Service selects a color"),))
            canary = 100 if active == backends.canary else 0
            routed = (("Routed", "True", f"Service {rollout.name} selects revision {active}"),)
            return AchievedWeights(100 - canary, canary, routed, settled=True)
        deployments = {
            d["metadata"]["name"]: d
            for d in self._api.list(
                DEPLOYMENTS, rollout.namespace, label_selector(selector_labels(rollout.name))
            )
        }
        stable_deployment = deployments.get(revision_object_name(rollout.name, backends.stable))
        canary_deployment = (
            deployments.get(revision_object_name(rollout.name, backends.canary))
            if backends.canary
            else None
        )
        # What the Service selects: Ready pods labelled serving, by revision.
        serving = self._serving_ready_pods(backends)
        stable, canary = serving.get(backends.stable, 0), serving.get(backends.canary or "", 0)
        if stable + canary == 0:
            return AchievedWeights(0, 0, (("Routed", "False", "no Ready replicas"),))
        canary_weight = round(100 * canary / (stable + canary))
        settled = (
            canary_deployment is not None
            and 0 < backends.canary_weight < 100
            and _desired_replicas(canary_deployment)
            == canary_replicas(backends.replicas, backends.canary_weight)
            == canary
            == _ready_replicas(canary_deployment)
            and stable == _desired_replicas(stable_deployment)
        )
        routed = (
            ("Routed", "True", f"Service {rollout.name} selects {stable + canary} Ready pods"),
        )
        return AchievedWeights(100 - canary_weight, canary_weight, routed, settled=settled)
