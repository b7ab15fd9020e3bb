"""Bring a local Kubernetes control plane with fake GPU nodes and a Prometheus up and down.

kube-apiserver, kube-controller-manager, kube-scheduler and etcd are real
binaries (built from Go modules by `toolchain`), run by `kwokctl --runtime
binary` on loopback; kwok fakes the nodes and the kubelet's pod status. Pods
run no containers: where a test needs traffic, a harness starts real
processes in their place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from modelrollout.kube.labels import EVALUATION_LABEL, LOAD_LABEL
from modelrollout_dev import podnetwork, realnode, toolchain
from modelrollout_dev.nodes import HARNESS_NODE_PREFIX, cluster_nodes
from modelrollout_dev.podnetwork import PodNetwork
from modelrollout_dev.processes import free_port, pid_alive, stop_pid
from modelrollout_dev.prometheus import (
    PrometheusHandle,
    prometheus_binary,
    prometheus_config,
)

DEFAULT_NAME = "modelrollout"

# Bind everything to loopback: nothing here is for other machines.
_KWOKCTL_CONFIG = {
    "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
    "kind": "KwokctlConfiguration",
    "options": {
        "bindAddress": "127.0.0.1",
        # In-cluster clients on the real node reach the API server at the `kubernetes`
        # Service's address.
        "kubeApiserverCertSANs": ["10.96.0.1"],
    },
    # kwok fakes only the nodes it is told are fake: a real node's kubelet runs its own
    # pods. (Given as `--extra-args`, kwokctl v0.7.0 indexes its patches wrongly.)
    "componentsPatches": [
        {
            "name": "kwok-controller",
            "extraArgs": [
                {"key": "manage-all-nodes", "value": "false"},
                {
                    "key": "manage-nodes-with-annotation-selector",
                    "value": "kwok.x-k8s.io/node=fake",
                },
            ],
        }
    ],
}


# kwok's own default ("fast") stages, as kwokctl would use them: giving any stage
# replaces all of its defaults. kwok marks a pod owned by a Job Succeeded (exit 0,
# no termination message) at once; a quality-gate Job's pod must instead be run by
# the harness (podprocesses.py), which writes its real result.
_KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)


# Pods bound to a harness node are the harness's (podprocesses.py): it runs them, reports
# their readiness from their own probes and removes them when they have drained.
_NOT_ON_A_HARNESS_NODE = {
    "key": f'(.spec.nodeName // "") | startswith("{HARNESS_NODE_PREFIX}")',
    "operator": "NotIn",
    "values": ["true"],
}


def kwok_stages() -> list[dict[str, object]]:
    """kwok's default stages, with pod-complete leaving evaluation and analysis-load pods
    alone (the harness runs them) and no pod stage touching the pods of a harness node."""
    root = toolchain.module_dir("sigs.k8s.io/kwok", toolchain.KWOK_VERSION) / "kustomize" / "stage"
    stages: list[dict[str, object]] = []
    for relative in _KWOK_STAGES:
        stage = yaml.safe_load((root / relative).read_text())
        expressions = stage["spec"]["selector"]["matchExpressions"]
        if stage["metadata"]["name"] == "pod-complete":
            expressions += [
                {"key": f'.metadata.labels["{label}"]', "operator": "DoesNotExist"}
                for label in (EVALUATION_LABEL, LOAD_LABEL)
            ]
        if stage["spec"]["resourceRef"]["kind"] == "Pod":
            expressions.append(dict(_NOT_ON_A_HARNESS_NODE))
        stages.append(stage)
    return stages


class ClusterError(RuntimeError):
    """The local cluster could not be brought up, or is not there."""


def state_root() -> Path:
    explicit = os.environ.get("MODELROLLOUT_STATE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "modelrollout"


@dataclass(frozen=True)
class ClusterState:
    """What `up` started, persisted so `down`/`status`/`env` find it again."""

    name: str
    directory: str
    kubeconfig: str
    kubectl: str
    prometheus_url: str
    prometheus_pid: int
    prometheus_sd_dir: str
    prometheus_rules_dir: str
    # Empty in the state of a cluster made before the pod network: `up` makes it anew.
    pod_netns: str = ""
    pod_cidr: str = ""

    @property
    def pod_network(self) -> PodNetwork:
        return PodNetwork(self.pod_netns, self.pod_cidr)

    @property
    def prometheus(self) -> PrometheusHandle:
        return PrometheusHandle(
            self.prometheus_url, Path(self.prometheus_sd_dir), Path(self.prometheus_rules_dir)
        )

    def env(self) -> dict[str, str]:
        """The variables tests, the demo and the operator read to find this cluster."""
        return {
            "KUBECONFIG": self.kubeconfig,
            "MODELROLLOUT_KUBECONFIG": self.kubeconfig,
            "MODELROLLOUT_PROMETHEUS_URL": self.prometheus_url,
            "MODELROLLOUT_PROMETHEUS_SD_DIR": self.prometheus_sd_dir,
            "MODELROLLOUT_PROMETHEUS_RULES_DIR": self.prometheus_rules_dir,
            **self.pod_network.env(),
            "PATH": f"{Path(self.kubectl).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }


def cluster_dir(name: str) -> Path:
    return state_root() / "clusters" / name


@contextlib.contextmanager
def _creation_lock() -> Iterator[None]:
    """One cluster created at a time on this machine, until its components listen.

    kwokctl picks its components' ports by trying them from 32767 down: two
    clusters created at once (two test workers starting) picked the same ports,
    and one's API server and etcd failed to bind.
    """
    root = state_root() / "clusters"
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".create.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _state_file(name: str) -> Path:
    return cluster_dir(name) / "state.json"


def load_state(name: str = DEFAULT_NAME) -> ClusterState | None:
    path = _state_file(name)
    if not path.is_file():
        return None
    return ClusterState(**json.loads(path.read_text()))


def state_for_kubeconfig(kubeconfig: str) -> ClusterState | None:
    """The local cluster whose kubeconfig this is, if `up` made it."""
    for path in sorted((state_root() / "clusters").glob("*/state.json")):
        state = ClusterState(**json.loads(path.read_text()))
        if Path(state.kubeconfig).resolve() == Path(kubeconfig).resolve():
            return state
    return None


def _log(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


def _kwokctl_env(name: str) -> dict[str, str]:
    return {**os.environ, "KWOK_WORKDIR": str(cluster_dir(name) / "kwok")}


def _kwokctl(name: str, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    binaries = toolchain.expected_binaries()
    proc = subprocess.run(
        [str(binaries.kwokctl), "--name", name, *args],
        env=_kwokctl_env(name),
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise ClusterError(f"kwokctl {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc


def kubectl(state: ClusterState, args: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(
        [state.kubectl, "--kubeconfig", state.kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


def _api_responds(state: ClusterState) -> bool:
    try:
        kubectl(state, ["get", "--raw", "/readyz"])
    except ClusterError:
        return False
    return True


SERVICE_CIDR = "10.96.0.0/16"


def kwok_component_pids(name: str) -> dict[str, int]:
    """Pids of the control-plane processes kwokctl started for this cluster."""
    pids_dir = cluster_dir(name) / "kwok" / "clusters" / name / "pids"
    if not pids_dir.is_dir():
        return {}
    return {
        path.stem: int(path.read_text().strip())
        for path in pids_dir.glob("*.pid")
        if path.read_text().strip().isdigit()
    }


def is_running(state: ClusterState) -> bool:
    components = kwok_component_pids(state.name)
    return (
        bool(components)
        and bool(state.pod_netns)
        and Path("/run/netns", state.pod_netns).exists()
        and all(pid_alive(pid) for pid in components.values())
        and pid_alive(state.prometheus_pid)
        and state.prometheus.is_ready()
        and _api_responds(state)
    )


def start_prometheus(
    directory: Path, kubeconfig: Path | None = None
) -> tuple[int, PrometheusHandle]:
    """Prometheus scraping file-registered targets, and `kubeconfig`'s serving pods."""
    prom_dir = directory / "prometheus"
    sd_dir, rules_dir, data_dir = prom_dir / "sd", prom_dir / "rules", prom_dir / "data"
    for path in (sd_dir, rules_dir, data_dir):
        path.mkdir(parents=True, exist_ok=True)
    config_file = prom_dir / "prometheus.yml"
    config_file.write_text(prometheus_config(sd_dir, rules_dir, kubeconfig))
    port = free_port()
    log = (prom_dir / "prometheus.log").open("ab")
    process = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    handle = PrometheusHandle(f"http://127.0.0.1:{port}", sd_dir, rules_dir)
    try:
        handle.wait_ready()
    except Exception:
        process.kill()
        raise
    return process.pid, handle


def _install_manifests(state: ClusterState, documents: list[dict[str, object]]) -> None:
    kubectl(
        state,
        ["apply", "--server-side", "--force-conflicts", "-f", "-"],
        stdin=yaml.safe_dump_all(documents),
    )


def _install_gateway_api(state: ClusterState) -> None:
    files = [*toolchain.gateway_api_crd_files(), *toolchain.inference_extension_crd_files()]
    args = ["apply", "--server-side", "--force-conflicts"]
    for path in files:
        args += ["-f", str(path)]
    kubectl(state, args)
    # File gateway.networking.k8s.io_httproutes.yaml holds CRD httproutes.gateway.networking.k8s.io.
    names = [".".join(reversed(path.stem.split("_", 1))) for path in files]
    kubectl(
        state,
        ["wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names)],
    )


def _wait_for_nodes_ready(state: ClusterState, timeout: float = 60.0) -> None:
    kubectl(state, ["wait", "--for=condition=Ready", f"--timeout={int(timeout)}s", "node", "--all"])


def _wait_for_default_service_account(state: ClusterState, timeout: float = 60.0) -> None:
    # Pods cannot be created in a namespace before its default ServiceAccount exists.
    deadline = time.monotonic() + timeout
    while True:
        try:
            kubectl(state, ["get", "serviceaccount", "default", "-n", "default"])
            return
        except ClusterError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def audit_policy(users: tuple[str, ...]) -> dict[str, object]:
    """Log every request of `users` (verb, resource, response code; no bodies), nothing else."""
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [{"level": "Metadata", "users": list(users)}, {"level": "None"}],
    }


def audit_log_path(name: str) -> Path:
    """The API server's audit log, where `up(audit_users=...)` asked for one."""
    return cluster_dir(name) / "kwok" / "clusters" / name / "logs" / "audit.log"


def up(
    name: str = DEFAULT_NAME,
    gpu_nodes: int = 2,
    gpus_per_node: int = 4,
    cpu_nodes: int = 1,
    audit_users: tuple[str, ...] = (),
    real_node: bool = False,
    scrape_model_pods: bool = True,
) -> ClusterState:
    """Start the cluster (building binaries on first use); reuse it when already running.

    With `real_node`, one real node (realnode.py: a kubelet on containerd) joins
    the kwok nodes; `start_real_node` adds it to a running cluster.

    With `audit_users`, the API server writes an audit log of those users'
    requests (`audit_log_path`): how benchmarks count an operator's API calls
    without trusting its own counting.

    Without `scrape_model_pods`, Prometheus does not discover serving pods: for
    benchmarks whose thousands of kwok pods run no server, where scraping each
    every second would load the machine they measure.
    """
    existing = load_state(name)
    if existing is not None:
        if is_running(existing):
            _log(f"cluster {name!r} is already running")
            return existing
        _log(f"cluster {name!r} has stale state: cleaning it up first")
        down(name)

    started = time.monotonic()
    binaries = toolchain.ensure_binaries()
    _log(f"binaries ready in {time.monotonic() - started:.1f}s")
    directory = cluster_dir(name)
    directory.mkdir(parents=True, exist_ok=True)
    kwok_config = directory / "kwokctl.yaml"
    kwok_config.write_text(yaml.safe_dump_all([_KWOKCTL_CONFIG, *kwok_stages()]))
    kubeconfig = directory / "kubeconfig"
    audit_args: list[str] = []
    if audit_users:
        policy = directory / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(audit_policy(audit_users)))
        audit_args = ["--kube-audit-policy", str(policy)]
    with _creation_lock():
        _kwokctl(
            name,
            [
                "-c",
                str(kwok_config),
                "create",
                "cluster",
                "--runtime",
                "binary",
                "--kube-apiserver-binary",
                str(binaries.kube_apiserver),
                "--kube-controller-manager-binary",
                str(binaries.kube_controller_manager),
                "--kube-scheduler-binary",
                str(binaries.kube_scheduler),
                "--etcd-binary",
                str(binaries.etcd),
                "--kwok-controller-binary",
                str(binaries.kwok),
                "--kubeconfig",
                str(kubeconfig),
                # A /16 for Services: kwok's default leaves room for about 250, and a
                # rollout with the gatewayAPI router has one per revision.
                "--extra-args",
                f"kube-apiserver=service-cluster-ip-range={SERVICE_CIDR}",
                "--extra-args",
                f"kube-controller-manager=service-cluster-ip-range={SERVICE_CIDR}",
                # The controllers' default client limit (20 requests/s) made Deployments,
                # ReplicaSets and EndpointSlices of a hundred rollouts lag tens of seconds.
                "--extra-args",
                "kube-controller-manager=kube-api-qps=300",
                "--extra-args",
                "kube-controller-manager=kube-api-burst=600",
                *audit_args,
                "--wait",
                "2m",
            ],
        )
    _log(f"control plane up in {time.monotonic() - started:.1f}s")
    try:
        pod_network = podnetwork.create(name)
    except podnetwork.PodNetworkError as error:
        down(name)
        raise ClusterError(str(error)) from error
    _log(f"pod network {pod_network.cidr} in network namespace {pod_network.netns}")
    prometheus_pid, prometheus = start_prometheus(
        directory, kubeconfig if scrape_model_pods else None
    )
    state = ClusterState(
        name=name,
        directory=str(directory),
        kubeconfig=str(kubeconfig),
        kubectl=str(binaries.kubectl),
        prometheus_url=prometheus.url,
        prometheus_pid=prometheus_pid,
        prometheus_sd_dir=str(prometheus.sd_dir),
        prometheus_rules_dir=str(prometheus.rules_dir),
        pod_netns=pod_network.netns,
        pod_cidr=pod_network.cidr,
    )
    _state_file(name).write_text(json.dumps(asdict(state), indent=2))
    _install_manifests(state, list(cluster_nodes(gpu_nodes, gpus_per_node, cpu_nodes)))
    _install_gateway_api(state)
    # kwok marks its nodes Ready one by one: hundreds of them take minutes on 2 cores.
    _wait_for_nodes_ready(state, 60.0 + 0.2 * (gpu_nodes + cpu_nodes))
    _wait_for_default_service_account(state)
    if real_node:
        start_real_node(state)
    _log(f"cluster {name!r} ready in {time.monotonic() - started:.1f}s")
    return state


def start_real_node(state: ClusterState) -> realnode.RealNodeState:
    """The real node of a running cluster: started if it is not running already."""
    directory = Path(state.directory)
    running = realnode.load_state(directory)
    if running is not None and realnode.is_running(running):
        return running
    realnode.stop(directory, state.kubeconfig, state.kubectl)
    try:
        return realnode.start(directory, state.kubeconfig, state.kubectl, state.pod_network)
    except realnode.RealNodeError as error:
        raise ClusterError(str(error)) from error


def down(name: str = DEFAULT_NAME) -> None:
    """Stop every process `up` started (by pid) and remove the cluster's files."""
    state = load_state(name)
    if state is not None:
        realnode.stop(cluster_dir(name), state.kubeconfig, state.kubectl)
        stop_pid(state.prometheus_pid)
    components = kwok_component_pids(name)
    if (cluster_dir(name) / "kwok").is_dir() and toolchain.expected_binaries().kwokctl.is_file():
        _kwokctl(name, ["delete", "cluster"], check=False)
    # kwokctl stops its components by pid; make sure none outlived it.
    for pid in components.values():
        stop_pid(pid)
    podnetwork.delete(name)
    shutil.rmtree(cluster_dir(name), ignore_errors=True)
    _log(f"cluster {name!r} is down")
