"""GPU capacity planning on node and pod fixtures shaped as the API returns them."""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout.engine.capacity import (
    assess,
    gpus_by_node,
    node_eligible,
    node_gpus,
    peak_pods,
    shift_stable_replicas,
)
from modelrollout.engine.workloads import plan_revisions
from modelrollout.models import parse_spec
from modelrollout.models.spec import MAX_REPLICAS, Toleration
from tests.unit.operator.builders import example_spec

pytestmark = pytest.mark.unit

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def node(
    name: str,
    gpus: int,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    ready: bool = True,
    unschedulable: bool = False,
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "32"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pod(name: str, node_name: str | None, gpus: int, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeName": node_name,
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
        },
        "status": {"phase": phase},
    }


def spec(replicas: int, gpus: int, capacity: str = "surge", **runtime: Any) -> Any:
    raw = example_spec()
    raw["runtime"].update(
        replicas=replicas,
        resources={"limits": {"nvidia.com/gpu": gpus}},
        tolerations=[GPU_TOLERATION],
        capacity=capacity,
        **runtime,
    )
    raw["strategy"]["canary"]["steps"] = [{"setWeight": 25}, {"setWeight": 50}, {"setWeight": 75}]
    return parse_spec(raw)


def test_a_node_must_be_ready_schedulable_selected_and_every_hard_taint_tolerated() -> None:
    tolerate = [Toleration.model_validate(GPU_TOLERATION)]
    gpu_node = node("gpu", 4, {"pool": "a100"}, [GPU_TAINT])
    assert node_eligible(gpu_node, {"pool": "a100"}, tolerate)
    assert not node_eligible(gpu_node, {"pool": "h100"}, tolerate)
    assert not node_eligible(gpu_node, {}, [])
    soft = node("soft", 4, taints=[{**GPU_TAINT, "effect": "PreferNoSchedule"}])
    assert node_eligible(soft, {}, [])
    assert not node_eligible(node("down", 4, ready=False), {}, [])
    assert not node_eligible(node("cordoned", 4, unschedulable=True), {}, [])
    exact = [Toleration.model_validate({"key": "nvidia.com/gpu", "value": "present"})]
    assert node_eligible(gpu_node, {}, exact)
    wrong_value = [Toleration.model_validate({"key": "nvidia.com/gpu", "value": "absent"})]
    assert not node_eligible(gpu_node, {}, wrong_value)


def test_free_gpus_count_every_unfinished_pod_bound_to_the_node() -> None:
    nodes = [node("a", 4, taints=[GPU_TAINT]), node("b", 4, taints=[GPU_TAINT])]
    pods = [
        pod("stable-1", "a", 2),
        pod("other", "a", 1),
        pod("done", "b", 4, phase="Succeeded"),
        pod("pending", None, 4, phase="Pending"),
    ]
    result = node_gpus(spec(2, 2), nodes, gpus_by_node(pods), gpus_by_node(pods[:1]))
    assert [(n.name, n.free, n.stable) for n in result] == [("a", 1, 2), ("b", 4, 0)]


def test_surge_places_pods_per_node_not_by_the_cluster_total() -> None:
    # Two nodes with 1 free GPU each hold no 2-GPU pod, though 2 GPUs are free.
    nodes = [node("a", 4, taints=[GPU_TAINT]), node("b", 4, taints=[GPU_TAINT])]
    pods = [pod("x", "a", 3), pod("y", "b", 3)]
    shortfall = assess(spec(1, 2), node_gpus(spec(1, 2), nodes, gpus_by_node(pods), {}))
    assert shortfall is not None
    assert (shortfall.needed_pods, shortfall.placeable_pods) == (1, 0)
    assert shortfall.message == (
        "capacity surge: the new revision needs room for 1 pods x 2 nvidia.com/gpu beside "
        "stable; 2 eligible nodes have 2 free, enough for 0 pods (free GPUs, lower "
        "runtime.replicas, or set runtime.capacity: shift)"
    )


def test_a_full_cluster_refuses_surge_and_accepts_shift() -> None:
    # 2 nodes x 4 GPUs, all held by stable's 4 pods of 2 GPUs.
    nodes = [node("a", 4, taints=[GPU_TAINT]), node("b", 4, taints=[GPU_TAINT])]
    stable = [pod(f"s{i}", "ab"[i // 2], 2) for i in range(4)]
    held = gpus_by_node(stable)  # every pod here is stable's
    surge = spec(4, 2)
    assert assess(surge, node_gpus(surge, nodes, held, held)) is not None
    shift = spec(4, 2, "shift", minStableReplicas=1)
    assert peak_pods(shift) == 4
    assert assess(shift, node_gpus(shift, nodes, held, held)) is None
    # A floor of 3 stable replicas leaves no room for a second canary pod.
    strict = spec(4, 2, "shift", minStableReplicas=3)
    shortfall = assess(strict, node_gpus(strict, nodes, held, held))
    assert shortfall is not None and "minStableReplicas 3" in shortfall.message


def test_a_rollout_without_gpus_always_fits() -> None:
    cpu_only = parse_spec(
        {**example_spec(), "runtime": {**example_spec()["runtime"], "resources": {}}}
    )
    assert assess(cpu_only, []) is None


def test_shift_scales_stable_down_by_the_canarys_pods_to_the_floor() -> None:
    assert [shift_stable_replicas(4, canary, 1) for canary in range(5)] == [4, 3, 2, 1, 1]
    plan = plan_revisions(
        replicas=4,
        stable="s",
        canary="c",
        stable_weight=50,
        canary_weight=50,
        canary_serving=True,
        keep_aborted_canary=False,
        shift_min_stable=1,
    )
    assert [(p.revision, p.replicas) for p in plan] == [("s", 2), ("c", 2)]
    # Rolled back: stable gets every replica back.
    back = plan_revisions(
        replicas=4,
        stable="s",
        canary="c",
        stable_weight=100,
        canary_weight=0,
        canary_serving=False,
        keep_aborted_canary=False,
        shift_min_stable=1,
    )
    assert [(p.revision, p.replicas) for p in back] == [("s", 4)]


def test_capacity_is_planned_at_the_replica_bound() -> None:
    """runtime.replicas at its CRD bound (1000): surge needs a second 1000 pods of room."""
    nodes = [node(f"n{i}", 8, taints=[GPU_TAINT]) for i in range(500)]
    stable = [pod(f"s{i}", f"n{i // 4}", 2) for i in range(MAX_REPLICAS)]  # 250 nodes full
    held = gpus_by_node(stable)  # every pod here is stable's
    surge = spec(MAX_REPLICAS, 2)
    assert assess(surge, node_gpus(surge, nodes, held, held)) is None
    one_node_short = node_gpus(surge, nodes[:-1], held, held)
    shortfall = assess(surge, one_node_short)
    assert shortfall is not None
    assert (shortfall.needed_pods, shortfall.placeable_pods) == (1000, 996)
    shift = spec(MAX_REPLICAS, 2, "shift", minStableReplicas=900)
    assert peak_pods(shift) == 750 + 900  # at 75%: 750 canary pods beside stable's floor
    assert assess(shift, node_gpus(shift, nodes[:250], held, held)) is not None
