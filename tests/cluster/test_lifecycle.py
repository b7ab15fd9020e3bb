"""`modelrollout dev cluster up/down` on a second, separate cluster."""

from __future__ import annotations

import os
import subprocess

import pytest

from modelrollout_dev import cluster
from modelrollout_dev.processes import pid_alive
from tests.conftest import ClusterUnderTest

pytestmark = pytest.mark.cluster


def host_routes() -> str:
    return subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout


def netns_exists(netns: str) -> bool:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return any(line.split()[0] == netns for line in listed.stdout.splitlines() if line.strip())


def test_up_reuses_a_running_cluster_and_down_leaves_no_process_or_file_behind(
    cluster_under_test: ClusterUnderTest,
) -> None:
    name = f"lifecycle-{os.getpid()}"
    state = cluster.up(name, gpu_nodes=1, gpus_per_node=2, cpu_nodes=0)
    try:
        components = cluster.kwok_component_pids(name)
        assert set(components) >= {"etcd", "kube-apiserver", "kube-scheduler"}
        pids = [*components.values(), state.prometheus_pid]
        assert all(pid_alive(pid) for pid in pids)
        # Its own pod network, apart from the test session's cluster's.
        network = state.pod_network
        assert netns_exists(network.netns)
        assert f"{network.cidr} via " in host_routes()
        if cluster_under_test.pod_network is not None:
            assert network.cidr != cluster_under_test.pod_network.cidr
        # A second `up` finds it running and starts nothing new.
        again = cluster.up(name)
        assert again == state
        assert cluster.kwok_component_pids(name) == components
    finally:
        cluster.down(name)
    assert not any(pid_alive(pid) for pid in pids)
    assert not netns_exists(network.netns)
    assert network.cidr not in host_routes()
    assert not cluster.cluster_dir(name).exists()
    assert cluster.load_state(name) is None
