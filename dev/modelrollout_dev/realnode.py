"""One real node beside the kwok nodes: a kubelet running real containers.

kind's worth to an e2e suite is a real kubelet running the project's images;
kind needs Docker and a registry, neither of which is here. This node is built
from the same pieces: the kubelet and kube-proxy from the `k8s.io/kubernetes`
module (toolchain.py), Debian's containerd and runc, and Debian's CNI plugins.

The network stays inside the cluster's own network namespace (podnetwork.py):
containerd runs there (entered with `nsenter --net`, which unlike `ip netns
exec` keeps the host's cgroup mounts), so the CNI bridge and every pod's veth
are made there, on the last /24 of the cluster's pod CIDR. The kubelet runs on
the host, where it reaches the API server on loopback and the pods through the
host's route to the pod CIDR: its probes are real HTTP requests to pod IPs.
kube-proxy runs in the namespace, where pod traffic to Service IPs is routed,
and `netns_forward` carries the `kubernetes` Service's endpoint there to the
API server on the host's loopback. CoreDNS, built from its module, runs in the
namespace too and is the node's cluster DNS behind the `kube-dns` Service, so pods
find Services by name (an evaluation Job asks for `chat-<revision>`). No address
goes on a host interface.

The node advertises `nvidia.com/gpu` as an extended resource through its
status (what the Kubernetes docs describe for resources without a device
plugin) and carries the kwok GPU nodes' taint, so GPU-requesting serving pods
land on it and run for real. Without the annotation kwok looks for, kwok
leaves it and its pods alone (cluster.py runs kwok with an annotation selector).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from modelrollout.kube.api import PODS, KubeApi
from modelrollout.kube.labels import REVISION_LABEL, ROLE_LABEL
from modelrollout_dev import toolchain
from modelrollout_dev.nodes import GPU_PRESENT_LABEL, GPU_RESOURCE, GPU_TAINT
from modelrollout_dev.podnetwork import PodNetwork
from modelrollout_dev.podprocesses import Endpoint
from modelrollout_dev.processes import free_port, pid_alive, stop_pid

NODE_NAME = "real-node-0"
REAL_NODE_LABEL = "modelrollout.dev/real-node"
NODE_GPUS = 4
# What `make images` builds (podman names them so): the serving image, with tiny models
# in /models/v1..v3, and the operator's.
SERVING_IMAGE = "localhost/modelrollout/modelserve:e2e"
OPERATOR_IMAGE = "localhost/modelrollout/operator:dev"
# `make images-vllm`: vLLM's CPU build, with tiny models in /models/vllm-v1..v2.
VLLM_IMAGE = "localhost/modelrollout/vllm-cpu:e2e"


def serving_image_model(index: int, shape: str = "") -> str:
    """The URI of the serving image's `index`th tiny model (from 0); shape "vllm": of those
    in the shape vLLM's CPU build serves, which the vLLM image holds too."""
    return f"file:///models/{shape}{'-' if shape else ''}v{index + 1}"


PAUSE_VERSION = "3.10"
PAUSE_IMAGE = f"localhost/modelrollout/pause:{PAUSE_VERSION}"
CONTAINERD_NAMESPACE = "k8s.io"
CNI_PLUGIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
# containerd's CRI names each pod's network namespace so, under the host's /var/run/netns.
CNI_NETNS_PREFIX = "/var/run/netns/cni-"
OCI_MEDIA_TYPE = "application/vnd.oci.image"
# The cluster DNS Service, at the address kubeadm and kind give it (the lower band of the
# Service CIDR that the API server hands out only when asked), and the cluster domain.
CLUSTER_DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
# CoreDNS's `ready` plugin, on the namespace's loopback: 200 once the kubernetes plugin synced.
COREDNS_READY_PORT = 8181


# What a pod needs to land on the node: its label, and the GPU taint every GPU node has.
PLACEMENT: dict[str, Any] = {
    "nodeSelector": {REAL_NODE_LABEL: "true"},
    "tolerations": [{"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
}


class NodePods:
    """A namespace's serving pods on the real node, shown as the harness shows its own.

    What benches and tests ask the harness (`PodProcesses`) they ask this for
    the real node: the runtime fields that place a rollout's pods there, and
    each pod's revision and health, which here is the kubelet's Ready from the
    pod's own readiness probe, as the API server has it.
    """

    def __init__(self, api: KubeApi, namespace: str, image: str) -> None:
        self._api = api
        self._namespace = namespace
        self.image = image

    def placement(self) -> dict[str, Any]:
        return {"image": self.image, **PLACEMENT}

    def endpoints(self) -> dict[str, Endpoint]:
        """Every serving pod by name: healthy while Ready and not terminating."""
        found: dict[str, Endpoint] = {}
        for pod in self._api.list(PODS, self._namespace, REVISION_LABEL):
            status = pod.get("status") or {}
            if pod["spec"].get("nodeName") != NODE_NAME or not status.get("podIP"):
                continue
            labels = pod["metadata"].get("labels") or {}
            port = pod["spec"]["containers"][0].get("ports", [{}])[0].get("containerPort", 0)
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in status.get("conditions") or []
            )
            found[pod["metadata"]["name"]] = Endpoint(
                pod=pod["metadata"]["name"],
                address=f"{status['podIP']}:{port}",
                revision=labels.get(REVISION_LABEL, ""),
                role=labels.get(ROLE_LABEL, ""),
                labels=dict(labels),
                healthy=ready and not pod["metadata"].get("deletionTimestamp"),
                pod_labels=dict(labels),
            )
        return found

    def start(self) -> NodePods:
        return self

    def stop(self) -> None:
        """Nothing to stop: the kubelet runs the pods."""


class RealNodeError(RuntimeError):
    """The real node could not start, or an image could not be loaded into it."""


@dataclass(frozen=True)
class RealNodeState:
    """What `start` started, persisted beside the cluster's own state."""

    directory: str
    containerd_socket: str
    containerd_pid: int
    kubelet_pid: int
    kube_proxy_pid: int
    forwarder_pid: int
    coredns_pid: int

    @property
    def pids(self) -> dict[str, int]:
        """Stop order: the kubelet first, so it starts nothing new."""
        return {
            "kubelet": self.kubelet_pid,
            "kube-proxy": self.kube_proxy_pid,
            "coredns": self.coredns_pid,
            "apiserver forwarder": self.forwarder_pid,
            "containerd": self.containerd_pid,
        }


def _log(message: str) -> None:
    print(f"[real-node] {message}", file=sys.stderr, flush=True)


def missing_requirements() -> list[str]:
    """What this machine lacks to run the node (Debian package names), empty if nothing."""
    missing = [
        package
        for command, package in (
            ("containerd", "containerd"),
            ("ctr", "containerd"),
            ("runc", "runc"),
            ("nsenter", "util-linux"),
            ("iptables", "iptables"),
            ("gcc", "gcc"),
        )
        if shutil.which(command) is None
    ]
    if not any(Path(directory, "bridge").is_file() for directory in CNI_PLUGIN_DIRS):
        missing.append("containernetworking-plugins")
    return sorted(set(missing))


def _cni_plugin_dir() -> str:
    return next(d for d in CNI_PLUGIN_DIRS if Path(d, "bridge").is_file())


# --- the sandbox ("pause") image: no registry serves it here, so it is built ---


def _pause_dir() -> Path:
    return toolchain.cache_root() / "bin" / f"pause-{PAUSE_VERSION}"


def _blob(layout: dict[str, bytes], data: bytes, media_type: str) -> dict[str, Any]:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    layout[f"blobs/sha256/{digest.removeprefix('sha256:')}"] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def oci_archive(binary: Path, path_in_image: str, reference: str) -> bytes:
    """An OCI image archive of one static binary as its entrypoint: what `ctr import` reads."""
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w") as archive:
        info = archive.gettarinfo(str(binary), arcname=path_in_image.lstrip("/"))
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        with binary.open("rb") as handle:
            archive.addfile(info, handle)
    layer = layer_tar.getvalue()
    layout: dict[str, bytes] = {}
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [path_in_image], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": f"{OCI_MEDIA_TYPE}.manifest.v1+json",
        "config": _blob(layout, json.dumps(config).encode(), f"{OCI_MEDIA_TYPE}.config.v1+json"),
        "layers": [
            _blob(layout, gzip.compress(layer, mtime=0), f"{OCI_MEDIA_TYPE}.layer.v1.tar+gzip")
        ],
    }
    manifest_descriptor = _blob(
        layout, json.dumps(manifest).encode(), f"{OCI_MEDIA_TYPE}.manifest.v1+json"
    )
    manifest_descriptor["annotations"] = {"org.opencontainers.image.ref.name": reference}
    index = {"schemaVersion": 2, "manifests": [manifest_descriptor]}
    layout["index.json"] = json.dumps(index).encode()
    layout["oci-layout"] = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in layout.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def ensure_pause_archive() -> Path:
    """Kubernetes' own pause.c, built static and packed as an image archive, cached."""
    directory = _pause_dir()
    archive = directory / "pause.oci.tar"
    if archive.is_file():
        return archive
    source = toolchain.module_dir("k8s.io/kubernetes", toolchain.KUBERNETES_VERSION)
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    binary = staging / "pause"
    subprocess.run(
        [
            "gcc",
            "-Os",
            "-static",
            f'-DVERSION="{PAUSE_VERSION}"',
            "-o",
            str(binary),
            str(source / "build" / "pause" / "linux" / "pause.c"),
        ],
        check=True,
    )
    (staging / "pause.oci.tar").write_bytes(oci_archive(binary, "/pause", PAUSE_IMAGE))
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    return archive


# --- configuration files ---


def containerd_config(directory: Path, cni_conf_dir: Path) -> str:
    # restrict_oom_score_adj: without CAP_SYS_RESOURCE (a container's root here) runc
    # cannot lower a process's oom_score_adj and fails every sandbox.
    return f"""version = 2
root = "{directory}/root"
state = "{directory}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.opt",
]
[grpc]
  address = "{directory}/containerd.sock"
[ttrpc]
  address = "{directory}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{_cni_plugin_dir()}"
    conf_dir = "{cni_conf_dir}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"""


def cni_config(subnet: ipaddress.IPv4Network, ipam_dir: Path) -> dict[str, Any]:
    gateway = str(next(subnet.hosts()))
    return {
        "cniVersion": "0.4.0",
        "name": "modelrollout",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "mrbr0",
                "isGateway": True,
                "isDefaultGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(subnet), "gateway": gateway}]],
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }


def kubelet_config(
    directory: Path, socket_path: Path, port: int, healthz_port: int
) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # Loopback only: nothing here is for other machines.
        "address": "127.0.0.1",
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        # What a container's root on a cgroup v1 host allows: no systemd, no QoS cgroups.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "containerRuntimeEndpoint": f"unix://{socket_path}",
        "podLogsDir": str(directory / "pod-logs"),
        # A shared development disk: evict or collect images only when it is really full.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True}},
        "authorization": {"mode": "Webhook"},
        "registerWithTaints": [GPU_TAINT],
        "serializeImagePulls": False,
        "resolvConf": "/etc/resolv.conf",
        "clusterDNS": [CLUSTER_DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
    }


def corefile(kubeconfig: Path) -> str:
    """Cluster DNS only: Services and pods of the cluster domain; nothing is forwarded
    upstream (no other network here), so other names fail fast with SERVFAIL."""
    return f"""\
.:53 {{
    errors
    ready 127.0.0.1:{COREDNS_READY_PORT}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""


def dns_service(endpoint_ip: str) -> list[dict[str, Any]]:
    """kube-system/kube-dns at CLUSTER_DNS_IP, and its endpoint: CoreDNS in the namespace."""
    ports = [("dns", "UDP"), ("dns-tcp", "TCP")]
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "spec": {
                "clusterIP": CLUSTER_DNS_IP,
                "ports": [
                    {"name": name, "protocol": protocol, "port": 53, "targetPort": 53}
                    for name, protocol in ports
                ],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-real-node",
                "namespace": "kube-system",
                "labels": {"kubernetes.io/service-name": "kube-dns"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [endpoint_ip], "conditions": {"ready": True}}],
            "ports": [{"name": name, "protocol": protocol, "port": 53} for name, protocol in ports],
        },
    ]


def kube_proxy_config(kubeconfig: Path, cluster_cidr: str, metrics_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": cluster_cidr,
        "mode": "iptables",
        # A pod that reaches a Service whose endpoint shares its bridge must get the
        # answer back through the namespace, where the translation is undone.
        "iptables": {"masqueradeAll": True},
        # The host's conntrack table is not this namespace's to resize.
        "conntrack": {"maxPerCore": 0, "min": 0},
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "healthzBindAddress": "",
    }


# --- processes ---


def _spawn(argv: list[str], log: Path) -> int:
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return process.pid


def _wait(condition: Any, timeout: float, what: str, pid: int, log: Path) -> None:
    """Until `condition()`; fails at once, with the log's tail, if the process behind it died."""
    deadline = time.monotonic() + timeout
    while not condition():
        if not pid_alive(pid):
            raise RealNodeError(f"{what}: the process exited; its log ends:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RealNodeError(f"{what}: not within {timeout:.0f}s; log ends:\n{_tail(log)}")
        time.sleep(0.2)


def _tail(log: Path, lines: int = 20) -> str:
    if not log.is_file():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def ctr(socket_path: str | Path, args: list[str], stdin: Any = None) -> str:
    result = subprocess.run(
        ["ctr", "--address", str(socket_path), "--namespace", CONTAINERD_NAMESPACE, *args],
        stdin=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RealNodeError(f"ctr {' '.join(args)}: {result.stderr.strip()[-2000:]}")
    return result.stdout


def _kubectl(kubectl: str, kubeconfig: str, args: list[str], stdin: str | None = None) -> str:
    result = subprocess.run(
        [kubectl, "--kubeconfig", kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RealNodeError(f"kubectl {' '.join(args)}: {result.stderr.strip()[-2000:]}")
    return result.stdout


def _apiserver_endpoint(kubectl: str, kubeconfig: str) -> tuple[str, int]:
    """The `kubernetes` Service's endpoint, which kube-proxy sends in-cluster clients to."""
    found = json.loads(
        _kubectl(
            kubectl,
            kubeconfig,
            [
                "get",
                "endpointslices",
                "-n",
                "default",
                "-l",
                "kubernetes.io/service-name=kubernetes",
                "-o",
                "json",
            ],
        )
    )
    for endpoint_slice in found["items"]:
        for endpoint in endpoint_slice.get("endpoints") or []:
            return endpoint["addresses"][0], int(endpoint_slice["ports"][0]["port"])
    raise RealNodeError("the `kubernetes` Service has no endpoint")


def _state_file(cluster_directory: Path) -> Path:
    return cluster_directory / "real-node.json"


def load_state(cluster_directory: Path) -> RealNodeState | None:
    path = _state_file(cluster_directory)
    return RealNodeState(**json.loads(path.read_text())) if path.is_file() else None


def is_running(state: RealNodeState) -> bool:
    return all(pid_alive(pid) for pid in state.pids.values())


def start(
    cluster_directory: Path, kubeconfig: str, kubectl: str, pod_network: PodNetwork
) -> RealNodeState:
    """Start containerd, the kubelet, kube-proxy and the API server forwarder; wait for Ready."""
    missing = missing_requirements()
    if missing:
        raise RealNodeError(
            "the real node needs these Debian packages: "
            + " ".join(missing)
            + f" (apt-get install {' '.join(missing)})"
        )
    started = time.monotonic()
    binaries = toolchain.ensure_node_binaries()
    coredns = toolchain.ensure_coredns()
    pause = ensure_pause_archive()
    directory = cluster_directory / "real-node"
    containerd_dir = directory / "containerd"
    cni_dir = directory / "cni"
    for path in (containerd_dir, cni_dir, directory / "logs"):
        path.mkdir(parents=True, exist_ok=True)
    logs = directory / "logs"
    subnet = pod_network.real_node_subnet
    socket_path = containerd_dir / "containerd.sock"
    netns_path = f"/run/netns/{pod_network.netns}"
    pids: dict[str, int] = {}

    def record() -> RealNodeState:
        state = RealNodeState(
            directory=str(directory),
            containerd_socket=str(socket_path),
            containerd_pid=pids.get("containerd", 0),
            kubelet_pid=pids.get("kubelet", 0),
            kube_proxy_pid=pids.get("kube-proxy", 0),
            forwarder_pid=pids.get("forwarder", 0),
            coredns_pid=pids.get("coredns", 0),
        )
        # Written at each start, so `stop` finds whatever did start if a later step fails.
        _state_file(cluster_directory).write_text(json.dumps(asdict(state), indent=2))
        return state

    try:
        (containerd_dir / "config.toml").write_text(containerd_config(containerd_dir, cni_dir))
        (cni_dir / "10-modelrollout.conflist").write_text(
            json.dumps(cni_config(subnet, directory / "cni-ipam"), indent=2)
        )
        pids["containerd"] = _spawn(
            [
                "nsenter",
                f"--net={netns_path}",
                "containerd",
                "--config",
                str(containerd_dir / "config.toml"),
            ],
            logs / "containerd.log",
        )
        record()

        def containerd_serves() -> bool:
            try:
                ctr(socket_path, ["version"])
            except RealNodeError:
                return False
            return True

        _wait(containerd_serves, 60, "containerd", pids["containerd"], logs / "containerd.log")
        with pause.open("rb") as archive:
            ctr(socket_path, ["images", "import", "-"], stdin=archive)

        kubelet_dir = directory / "kubelet"
        kubelet_dir.mkdir(exist_ok=True)
        (kubelet_dir / "config.yaml").write_text(
            yaml.safe_dump(kubelet_config(directory, socket_path, free_port(), free_port()))
        )
        labels = f"{GPU_PRESENT_LABEL}=true,{REAL_NODE_LABEL}=true"
        pids["kubelet"] = _spawn(
            [
                str(binaries["kubelet"]),
                "--config",
                str(kubelet_dir / "config.yaml"),
                "--kubeconfig",
                kubeconfig,
                "--root-dir",
                str(kubelet_dir / "root"),
                "--hostname-override",
                NODE_NAME,
                "--node-labels",
                labels,
            ],
            logs / "kubelet.log",
        )
        record()

        def node_ready() -> bool:
            try:
                ready = _kubectl(
                    kubectl,
                    kubeconfig,
                    [
                        "get",
                        "node",
                        NODE_NAME,
                        "-o",
                        'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
                    ],
                )
            except RealNodeError:
                return False
            return ready == "True"

        _wait(node_ready, 120, "the node's Ready condition", pids["kubelet"], logs / "kubelet.log")
        # Extended resources without a device plugin: the node's status says what it has.
        _kubectl(
            kubectl,
            kubeconfig,
            [
                "patch",
                "node",
                NODE_NAME,
                "--subresource=status",
                "--type=json",
                "-p",
                json.dumps(
                    [
                        {
                            "op": "add",
                            "path": f"/status/capacity/{GPU_RESOURCE.replace('/', '~1')}",
                            "value": str(NODE_GPUS),
                        }
                    ]
                ),
            ],
        )

        endpoint_ip, endpoint_port = _apiserver_endpoint(kubectl, kubeconfig)
        apiserver_port = int(_kubeconfig_server(kubeconfig).rsplit(":", 1)[1])
        subprocess.run(
            ["ip", "-n", pod_network.netns, "addr", "replace", f"{endpoint_ip}/32", "dev", "lo"],
            check=True,
            capture_output=True,
        )
        pids["forwarder"] = _spawn(
            [
                sys.executable,
                "-m",
                "modelrollout_dev.netns_forward",
                pod_network.netns,
                f"{endpoint_ip}:{endpoint_port}",
                f"127.0.0.1:{apiserver_port}",
            ],
            logs / "apiserver-forwarder.log",
        )
        record()
        proxy_kubeconfig = directory / "kube-proxy.kubeconfig"
        proxy_kubeconfig.write_text(
            Path(kubeconfig)
            .read_text()
            .replace(_kubeconfig_server(kubeconfig), f"https://{endpoint_ip}:{endpoint_port}")
        )
        (directory / "kube-proxy.yaml").write_text(
            yaml.safe_dump(kube_proxy_config(proxy_kubeconfig, pod_network.cidr, free_port()))
        )
        pids["kube-proxy"] = _spawn(
            [
                "nsenter",
                f"--net={netns_path}",
                str(binaries["kube-proxy"]),
                "--config",
                str(directory / "kube-proxy.yaml"),
            ],
            logs / "kube-proxy.log",
        )
        record()

        def services_programmed() -> bool:
            rules = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    pod_network.netns,
                    "iptables",
                    "-t",
                    "nat",
                    "-S",
                    "KUBE-SERVICES",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            return all(
                f'"{service} cluster IP"' in rules.stdout
                for service in ("default/kubernetes:https", "kube-system/kube-dns:dns")
            )

        # CoreDNS answers on the bridge's gateway address (it listens on all of the
        # namespace's), which is the kube-dns Service's endpoint.
        (directory / "Corefile").write_text(corefile(proxy_kubeconfig))
        pids["coredns"] = _spawn(
            [
                "nsenter",
                f"--net={netns_path}",
                str(coredns),
                "-conf",
                str(directory / "Corefile"),
            ],
            logs / "coredns.log",
        )
        state = record()
        _wait(
            lambda: _in_namespace_get(netns_path, f"http://127.0.0.1:{COREDNS_READY_PORT}/ready"),
            60,
            "CoreDNS synced with the API server",
            pids["coredns"],
            logs / "coredns.log",
        )
        _kubectl(
            kubectl,
            kubeconfig,
            ["apply", "-f", "-"],
            stdin=yaml.safe_dump_all(dns_service(str(next(subnet.hosts())))),
        )
        _wait(
            services_programmed,
            60,
            "kube-proxy's rules",
            pids["kube-proxy"],
            logs / "kube-proxy.log",
        )
    except (RealNodeError, subprocess.CalledProcessError, OSError) as error:
        stop(cluster_directory, kubeconfig, kubectl)
        raise RealNodeError(f"the real node did not start: {error}") from error
    _log(f"{NODE_NAME} Ready in {time.monotonic() - started:.1f}s (pods on {subnet})")
    return state


def _in_namespace_get(netns_path: str, url: str) -> bool:
    """Whether `url` answers 200 from inside the cluster's network namespace."""
    probe = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=2)"
    result = subprocess.run(
        ["nsenter", f"--net={netns_path}", sys.executable, "-c", probe],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def _kubeconfig_server(kubeconfig: str) -> str:
    config = yaml.safe_load(Path(kubeconfig).read_text())
    server: str = config["clusters"][0]["cluster"]["server"]
    return server


def load_image(state: RealNodeState, image: str) -> float:
    """Copy a local podman/buildah image into the node's containerd; returns the seconds taken.

    `podman save` writes an OCI directory (the image's name in its index); its
    blobs are hard-linked into containerd's content store (same filesystem), so
    a 7 GB image is not stored twice more: `ctr import` of the directory finds
    each blob present and only records it.
    """
    started = time.monotonic()
    directory = Path(state.directory)
    staging = directory / "image-staging"
    shutil.rmtree(staging, ignore_errors=True)
    saved = subprocess.run(
        ["podman", "save", "--format", "oci-dir", "-o", str(staging), image],
        capture_output=True,
        text=True,
        check=False,
    )
    if saved.returncode != 0:
        raise RealNodeError(f"podman save {image}: {saved.stderr.strip()[-2000:]}")
    try:
        store = directory / "containerd" / "root" / "io.containerd.content.v1.content"
        (store / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        for blob in (staging / "blobs" / "sha256").iterdir():
            target = store / "blobs" / "sha256" / blob.name
            if not target.exists():
                os.link(blob, target)
        with subprocess.Popen(
            ["tar", "-C", str(staging), "-cf", "-", "."], stdout=subprocess.PIPE
        ) as tar:
            ctr(
                state.containerd_socket,
                ["images", "import", "-"],
                stdin=tar.stdout,
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return time.monotonic() - started


def ensure_image(state: RealNodeState, image: str) -> None:
    """`image` in the node, loaded from podman only where the node lacks it."""
    if image not in ctr(state.containerd_socket, ["images", "ls", "-q"]).split():
        _log(f"loading {image}")
        load_image(state, image)


def _drain(kubeconfig: str, kubectl: str, timeout: float) -> None:
    """Delete the node's pods and wait for the kubelet to tear them down (CNI included)."""
    with contextlib.suppress(RealNodeError):
        _kubectl(
            kubectl,
            kubeconfig,
            [
                "delete",
                "pods",
                "--all-namespaces",
                "--field-selector",
                f"spec.nodeName={NODE_NAME}",
                "--grace-period=1",
                f"--timeout={int(timeout)}s",
            ],
        )


def _force_remove_containers(state: RealNodeState) -> None:
    """What the kubelet left: kill the tasks, remove the containers and their network namespaces."""
    with contextlib.suppress(RealNodeError):
        for container in ctr(state.containerd_socket, ["containers", "ls", "-q"]).split():
            with contextlib.suppress(RealNodeError):
                info = json.loads(ctr(state.containerd_socket, ["containers", "info", container]))
                for namespace in info.get("Spec", {}).get("linux", {}).get("namespaces", []):
                    path = namespace.get("path", "")
                    if namespace.get("type") == "network" and path.startswith(CNI_NETNS_PREFIX):
                        subprocess.run(["umount", path], capture_output=True, check=False)
                        Path(path).unlink(missing_ok=True)
            with contextlib.suppress(RealNodeError):
                ctr(state.containerd_socket, ["tasks", "kill", "-s", "SIGKILL", container])
            with contextlib.suppress(RealNodeError):
                ctr(state.containerd_socket, ["tasks", "delete", "-f", container])
            with contextlib.suppress(RealNodeError):
                ctr(state.containerd_socket, ["containers", "delete", container])


def _unmount_under(directory: Path) -> None:
    """The kubelet's volumes and containerd's rootfs and shm mounts, deepest first."""
    mounts = [
        line.split()[1].encode().decode("unicode_escape")
        for line in Path("/proc/mounts").read_text().splitlines()
    ]
    under = [mount for mount in mounts if mount.startswith(f"{directory}/")]
    for mount in sorted(under, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


def stop(cluster_directory: Path, kubeconfig: str, kubectl: str) -> None:
    """Stop the node (pods first, through the kubelet), its processes by pid, and its mounts."""
    state = load_state(cluster_directory)
    if state is None:
        return
    if pid_alive(state.kubelet_pid) and Path(kubeconfig).is_file():
        _drain(kubeconfig, kubectl, 30)
    stop_pid(state.kubelet_pid)
    if pid_alive(state.containerd_pid):
        _force_remove_containers(state)
    for name, pid in state.pids.items():
        if name != "kubelet":
            stop_pid(pid)
    # containerd's shims outlive it by design; these are this node's (its socket).
    shims = subprocess.run(
        ["pgrep", "-f", f"containerd-shim-runc-v2 .*-address {state.containerd_socket}"],
        capture_output=True,
        text=True,
        check=False,
    )
    for shim in shims.stdout.split():
        stop_pid(int(shim), 5)
    _unmount_under(Path(state.directory))
    shutil.rmtree(state.directory, ignore_errors=True)
    _state_file(cluster_directory).unlink(missing_ok=True)
