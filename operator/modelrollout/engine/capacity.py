"""GPU capacity planning: can the cluster place a new revision beside the stable one? Pure.

The scheduler would tell us too, but only after the canary's pods exist and
sit Pending, holding a partial set of GPUs that another workload may need.
Counting first lets a `surge` rollout refuse cleanly (condition
InsufficientGPUCapacity, with the numbers, and no pods) and a `shift`
rollout plan its stable scale-down.

Placement is counted per node: a pod needing 2 GPUs does not fit on two nodes
with 1 free each. A node is eligible when it is Ready and schedulable, has
every `nodeSelector` label, and every NoSchedule/NoExecute taint on it is
tolerated. GPUs in use are the requests of every pod bound to the node that
has not finished (terminating pods still hold theirs).

Only what can be judged from nodes and pods is counted: `runtime.affinity`,
`topologySpreadConstraints`, `priorityClassName` (preemption) and
`runtimeClassName` are not modelled. A revision they keep off nodes counted
here as free sits Pending, and the scheduler's reason is reported (condition
Unschedulable) instead of InsufficientGPUCapacity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelrollout.kube.api import is_ready
from modelrollout.models.spec import ModelRolloutSpec, Toleration
from modelrollout.traffic.base import canary_replicas

GPU_RESOURCE = "nvidia.com/gpu"


def _count(quantity: Any) -> int:
    # Extended resources are whole numbers; anything else is not a GPU count.
    try:
        return int(str(quantity))
    except ValueError:
        return 0


def gpus_per_pod(spec: ModelRolloutSpec) -> int:
    resources = spec.runtime.resources
    # For extended resources Kubernetes takes the limit as the request when none is given.
    return _count(resources.requests.get(GPU_RESOURCE, resources.limits.get(GPU_RESOURCE, 0)))


def pod_gpus(pod: Mapping[str, Any]) -> int:
    total = 0
    for container in pod.get("spec", {}).get("containers", []):
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        total += _count(requests.get(GPU_RESOURCE, limits.get(GPU_RESOURCE, 0)))
    return total


def _tolerates(tolerations: Sequence[Toleration], taint: Mapping[str, Any]) -> bool:
    for toleration in tolerations:
        if toleration.effect is not None and toleration.effect != taint.get("effect"):
            continue
        if toleration.operator == "Exists":
            if toleration.key is None or toleration.key == taint.get("key"):
                return True
        elif toleration.key == taint.get("key") and (toleration.value or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def node_eligible(
    node: Mapping[str, Any], node_selector: Mapping[str, str], tolerations: Sequence[Toleration]
) -> bool:
    if node.get("spec", {}).get("unschedulable"):
        return False
    if not is_ready(node):
        return False
    labels = node.get("metadata", {}).get("labels") or {}
    if any(labels.get(key) != value for key, value in node_selector.items()):
        return False
    return all(
        _tolerates(tolerations, taint)
        for taint in node.get("spec", {}).get("taints") or []
        if taint.get("effect") in ("NoSchedule", "NoExecute")
    )


@dataclass(frozen=True)
class NodeGpus:
    name: str
    free: int
    # Held by this rollout's stable pods: what `shift` may take back.
    stable: int


def gpu_tally(pod: Mapping[str, Any]) -> tuple[str, int] | None:
    """The node a pod holds GPUs on and how many: None for a pod not bound or already finished."""
    node_name = pod.get("spec", {}).get("nodeName")
    if not node_name or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
        return None
    return node_name, pod_gpus(pod)


def gpus_by_node(pods: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """GPUs held per node by `pods` (what the pod cache's tally keeps current)."""
    held: dict[str, int] = {}
    for pod in pods:
        tally = gpu_tally(pod)
        if tally is not None:
            held[tally[0]] = held.get(tally[0], 0) + tally[1]
    return held


def node_gpus(
    spec: ModelRolloutSpec,
    nodes: Iterable[Mapping[str, Any]],
    used: Mapping[str, int],
    stable: Mapping[str, int],
) -> list[NodeGpus]:
    """Free GPUs per eligible node, given the GPUs held per node by every pod (`used`) and
    by this rollout's stable pods (`stable`)."""
    result = []
    for node in nodes:
        if not node_eligible(node, spec.runtime.node_selector, spec.runtime.tolerations):
            continue
        name = node["metadata"]["name"]
        allocatable = _count((node.get("status", {}).get("allocatable") or {}).get(GPU_RESOURCE))
        if allocatable == 0:  # a CPU node the pod could land on offers no GPU
            continue
        result.append(NodeGpus(name, max(0, allocatable - used.get(name, 0)), stable.get(name, 0)))
    return result


def shift_stable_replicas(replicas: int, canary_pods: int, min_stable: int) -> int:
    """Stable's replicas under `capacity: shift`: it gives way to the canary, down to a floor."""
    return max(min(min_stable, replicas), replicas - canary_pods)


def peak_pods(spec: ModelRolloutSpec) -> int:
    """Pods that must fit at once in what `assess` counts as available.

    surge: the whole new revision beside all of stable (at the last step
    before promotion the canary may have every replica). shift: stable and
    canary together at their largest, stable shrinking by the canary's pods
    down to minStableReplicas at each weight.
    """
    replicas = spec.runtime.replicas
    strategy = spec.strategy.canary
    # Blue-green runs both colors at full size whatever `capacity` says.
    if spec.runtime.capacity == "surge" or strategy is None:
        return replicas
    weights = [step.set_weight for step in strategy.steps if step.set_weight is not None]
    floor = min_stable_replicas(spec)
    return max(_shift_total(replicas, weight, floor) for weight in [0, *weights, 100])


def _shift_total(replicas: int, weight: int, floor: int) -> int:
    canary = canary_replicas(replicas, weight)
    # At 100% stable has no traffic and no replicas (plan_revisions).
    stable = 0 if weight >= 100 else shift_stable_replicas(replicas, canary, floor)
    return canary + stable


def min_stable_replicas(spec: ModelRolloutSpec) -> int:
    # Default: stable never drops to nothing while it still has traffic.
    value = spec.runtime.min_stable_replicas
    return 1 if value is None else value


@dataclass(frozen=True)
class CapacityShortfall:
    """Why a new revision cannot be placed now; the message carries the numbers."""

    needed_pods: int
    placeable_pods: int
    message: str


def assess(spec: ModelRolloutSpec, nodes_gpus: Sequence[NodeGpus]) -> CapacityShortfall | None:
    """None when the new revision fits; else the shortfall."""
    per_pod = gpus_per_pod(spec)
    if per_pod == 0:
        return None
    shift = spec.runtime.capacity == "shift" and spec.strategy.canary is not None
    needed = peak_pods(spec)
    # shift places stable and canary together on what is free plus what stable holds.
    placeable = sum((node.free + (node.stable if shift else 0)) // per_pod for node in nodes_gpus)
    if placeable >= needed:
        return None
    free = sum(node.free for node in nodes_gpus)
    if shift:
        held = sum(node.stable for node in nodes_gpus)
        message = (
            f"capacity shift: stable and canary together need room for {needed} pods x "
            f"{per_pod} {GPU_RESOURCE} at once (minStableReplicas "
            f"{min_stable_replicas(spec)}); {len(nodes_gpus)} eligible nodes have {free} free "
            f"and stable holds {held}, enough for {placeable} pods"
        )
    else:
        message = (
            f"capacity surge: the new revision needs room for {needed} pods x {per_pod} "
            f"{GPU_RESOURCE} beside stable; {len(nodes_gpus)} eligible nodes have {free} free, "
            f"enough for {placeable} pods (free GPUs, lower runtime.replicas, or set "
            "runtime.capacity: shift)"
        )
    return CapacityShortfall(needed, placeable, message)
