"""The TrafficRouter interface: how a rollout's traffic is split between revisions."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from modelrollout.kube.api import SERVICES, KubeApi, KubeApiError
from modelrollout.kube.labels import (
    REVISION_LABEL,
    label_selector,
    revision_object_name,
    selector_labels,
)
from modelrollout.kube.workloads import RolloutRef, build_revision_service
from modelrollout.traffic.segment import SegmentSettings
from modelrollout.traffic.session_affinity import SessionAffinitySettings


class Capability(enum.Enum):
    """What a router may be able to do; the engine and spec validation ask these, never names.

    The values are how error messages name them.
    """

    # A weight is in effect once written, whatever the replica counts. Without
    # it a weight is approximated by the canary's share of Ready pods: the engine
    # waits for the router to report it achieved, and moves traffic off a
    # revision by scaling it down (a pod kept without traffic is impossible).
    EXACT_WEIGHTS = "exact weights"
    # Copies a share of requests to the canary, answers dropped (strategy.shadow).
    REQUEST_MIRRORING = "request mirroring"
    # Reaches the new color before the switch (strategy.blueGreen's preview).
    PREVIEW_ROUTE = "a preview route"
    # Routes to per-revision Services, which it keeps and retires itself; without
    # it, those an evaluation step needs are the evaluation's to delete.
    REVISION_SERVICES = "per-revision Services"
    # Keeps a conversation on one revision by its session header (traffic.sessionAffinity).
    SESSION_AFFINITY = "session affinity"
    # Sends requests matching headers or a cookie to the canary beside the weight (an
    # experiment step's segment).
    REQUEST_MATCHING = "request matching"
    # Sends stable's share to the shadow comparison proxy (Backends.front) and mirrors nothing
    # while there is one (Backends.comparison): strategy.shadow.comparison.
    COMPARISON_PROXY = "a comparison proxy in front of stable"


RouterCapabilities = frozenset[Capability]


@dataclass(frozen=True)
class Backends:
    """The revisions a rollout routes to right now."""

    rollout: RolloutRef
    stable: str
    canary: str | None
    port: int
    replicas: int
    # The router's own section of the spec, traffic.<router name>, as written (camelCase).
    settings: dict[str, Any] = field(default_factory=dict)
    # The canary weight the rollout asks for now.
    canary_weight: int = 0
    # Blue-green: one color serves at a time; weights are only ever 0 or 100.
    blue_green: bool = False
    # Shadow: percent of requests copied to the canary, whose answers nobody sees.
    mirror_percent: int = 0
    # A revision kept warm without traffic after a promotion (status.previousRevision): a
    # router with per-revision Services keeps its Service, so moving traffic back is one write.
    kept: str | None = None
    # traffic.sessionAffinity: keep each session on one revision (a router with the capability).
    session_affinity: SessionAffinitySettings | None = None
    # An experiment step's segment: these requests go to the canary whatever the weight.
    segment: SegmentSettings | None = None
    # strategy.shadow.comparison: the comparison proxy (engine/comparison.py) copies requests
    # to the canary itself, so the router mirrors nothing. Its Service's name; its pods carry
    # kube.labels.proxy_selector(rollout). It takes stable's share once ready.
    comparison: str | None = None
    comparison_ready: bool = False

    @property
    def front(self) -> str | None:
        """The comparison proxy taking stable's share now, if any."""
        return self.comparison if self.comparison_ready else None

    @property
    def stable_service(self) -> str:
        """The Service stable's share goes to: the comparison proxy's while it takes it."""
        return self.front or revision_object_name(self.rollout.name, self.stable)


@dataclass(frozen=True)
class AchievedWeights:
    """What really happens, as far as the API can tell; may differ from what was asked."""

    stable: int
    canary: int
    conditions: tuple[tuple[str, str, str], ...] = ()  # (type, status, message)
    # The router has realised the asked weight as closely as it can; with
    # replica counts that may differ from the weight itself (1 of 3 is 33%, not 25%).
    settled: bool = False


def ensure_revision_service(api: KubeApi, rollout: RolloutRef, revision: str, port: int) -> None:
    """Create the Service of one revision (`<rollout>-<revision>`) unless it exists.

    Asked of the cache alone (a GET for every new revision otherwise): a Service
    of that name without the operator's label is found by the create's conflict.
    """
    name = revision_object_name(rollout.name, revision)
    if api.get_owned(SERVICES, rollout.namespace, name) is not None:
        return
    try:
        api.create(SERVICES, rollout.namespace, build_revision_service(rollout, revision, port))
    except KubeApiError as error:
        if error.status != 409:
            raise


def retire_revision_services(api: KubeApi, rollout: RolloutRef, keep: set[str]) -> None:
    """Delete the rollout's per-revision Services (`<rollout>-<revision>`) not named in `keep`."""
    for service in api.list(
        SERVICES, rollout.namespace, label_selector(selector_labels(rollout.name))
    ):
        name = service["metadata"]["name"]
        revision = (service["metadata"].get("labels") or {}).get(REVISION_LABEL)
        if (
            revision is not None
            and name == revision_object_name(rollout.name, revision)
            and name not in keep
        ):
            api.delete(SERVICES, rollout.namespace, name)


def canary_replicas(total_replicas: int, canary_weight: int) -> int:
    """Replicas a canary needs for its weight: rounded up, and at least one to warm up."""
    return max(1, math.ceil(total_replicas * canary_weight / 100))


class TrafficRouter(Protocol):
    capabilities: ClassVar[RouterCapabilities]

    def __init__(self, api: KubeApi) -> None: ...

    def reconcile(self, backends: Backends) -> None:
        """Create or repair the routing objects, keeping the weights they have."""

    def set_weights(self, backends: Backends, canary_weight: int) -> None:
        """Move traffic: one write to the API."""

    def get_weights(self, backends: Backends) -> AchievedWeights: ...


def routed_condition(
    achieved: AchievedWeights,
) -> tuple[Literal["True", "False", "Unknown"], str, str]:
    """(status, reason, message) of the TrafficRouted condition from what the router reports.

    A gateway reports Accepted and ResolvedRefs on the route; until one does
    (or with the service router, which has no such report) it is Unknown.
    """
    failing = [(kind, message) for kind, status, message in achieved.conditions if status != "True"]
    if failing:
        kind, message = failing[0]
        return "False", f"Not{kind}", message or f"{kind} is not True"
    if achieved.conditions:
        reports = "; ".join(
            message or f"{kind} is True" for kind, _, message in achieved.conditions
        )
        return "True", "Routed", reports
    return "Unknown", "NoGatewayReport", "no gateway has reported on the route yet"
