"""`modelrollout dev cluster up/down` on a second, separate cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelrollout_dev import cluster

pytestmark = pytest.mark.cluster


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split(") ")[-1].startswith("Z"))


def test_up_reuses_a_running_cluster_and_down_leaves_no_process_or_file_behind(
    cluster_under_test: object,
) -> None:
    name = f"lifecycle-{os.getpid()}"
    state = cluster.up(name, gpu_nodes=1, gpus_per_node=2, cpu_nodes=0)
    try:
        components = cluster.kwok_component_pids(name)
        assert set(components) >= {"etcd", "kube-apiserver", "kube-scheduler"}
        pids = [*components.values(), state.prometheus_pid]
        assert all(alive(pid) for pid in pids)
        # A second `up` finds it running and starts nothing new.
        again = cluster.up(name)
        assert again == state
        assert cluster.kwok_component_pids(name) == components
    finally:
        cluster.down(name)
    assert not any(alive(pid) for pid in pids)
    assert not cluster.cluster_dir(name).exists()
    assert cluster.load_state(name) is None
