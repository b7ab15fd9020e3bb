"""Fake kwok nodes: GPU nodes tainted the way the NVIDIA GPU operator taints them."""

from __future__ import annotations

from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
# Nodes whose pods the harness runs (podprocesses.py); kwok's pod stages skip pods bound to them.
HARNESS_NODE_PREFIX = "harness-"


def fake_node(name: str, gpus: int, cpu: str = "32", memory: str = "256Gi") -> dict[str, Any]:
    """A Node that kwok keeps Ready; `gpus > 0` makes it a tainted GPU node."""
    resources = {"cpu": cpu, "memory": memory, "pods": "110"}
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    spec: dict[str, Any] = {}
    if gpus > 0:
        resources[GPU_RESOURCE] = str(gpus)
        labels[GPU_PRESENT_LABEL] = "true"
        spec["taints"] = [GPU_TAINT]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            # kwok only manages nodes it is told are fake.
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": labels,
        },
        "spec": spec,
        "status": {"allocatable": dict(resources), "capacity": dict(resources)},
    }


def cluster_nodes(gpu_nodes: int, gpus_per_node: int, cpu_nodes: int) -> list[dict[str, Any]]:
    if gpu_nodes < 0 or cpu_nodes < 0 or gpus_per_node < 1:
        raise ValueError("node counts must be >= 0 and gpus per node >= 1")
    gpu = [fake_node(f"gpu-node-{index}", gpus_per_node) for index in range(gpu_nodes)]
    cpu = [fake_node(f"cpu-node-{index}", 0) for index in range(cpu_nodes)]
    return gpu + cpu
