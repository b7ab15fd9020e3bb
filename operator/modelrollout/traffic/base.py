"""The TrafficRouter interface: how a rollout's traffic is split between revisions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelrollout.kube.workloads import RolloutRef


@dataclass(frozen=True)
class Backends:
    """The revisions a rollout routes to right now."""

    rollout: RolloutRef
    stable: str
    canary: str | None
    port: int
    replicas: int
    gateway: dict[str, Any] = field(default_factory=dict)
    # The canary weight the rollout asks for now.
    canary_weight: int = 0


@dataclass(frozen=True)
class AchievedWeights:
    """What really happens, as far as the API can tell; may differ from what was asked."""

    stable: int
    canary: int
    conditions: tuple[tuple[str, str, str], ...] = ()  # (type, status, message)
    # The router has realised the asked weight as closely as it can; with
    # replica counts that may differ from the weight itself (1 of 3 is 33%, not 25%).
    settled: bool = False


def canary_replicas(total_replicas: int, canary_weight: int) -> int:
    """Replicas a canary needs for its weight: rounded up, and at least one to warm up."""
    return max(1, math.ceil(total_replicas * canary_weight / 100))


class TrafficRouter(Protocol):
    def reconcile(self, backends: Backends) -> None:
        """Create or repair the routing objects, keeping the weights they have."""

    def set_weights(self, backends: Backends, canary_weight: int) -> None:
        """Move traffic: one write to the API."""

    def get_weights(self, backends: Backends) -> AchievedWeights: ...

    def finalize(self, rollout: RolloutRef) -> None:
        """Remove what the router created outside owner references."""
