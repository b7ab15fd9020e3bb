"""The real node's pure parts: its sandbox image, its CNI, kubelet and kube-proxy settings."""

from __future__ import annotations

import gzip
import hashlib
import io
import ipaddress
import json
import tarfile
from pathlib import Path

import pytest

from modelrollout_dev.cluster import SERVICE_CIDR
from modelrollout_dev.nodes import GPU_TAINT
from modelrollout_dev.podnetwork import PodNetwork
from modelrollout_dev.realnode import (
    CLUSTER_DNS_IP,
    PAUSE_IMAGE,
    cni_config,
    containerd_config,
    corefile,
    dns_service,
    kube_proxy_config,
    kubelet_config,
    oci_archive,
)

pytestmark = pytest.mark.unit


def _members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as opened:
        return {
            member.name: opened.extractfile(member).read()  # type: ignore[union-attr]
            for member in opened.getmembers()
        }


def _blob(members: dict[str, bytes], digest: str) -> bytes:
    data = members[f"blobs/sha256/{digest.removeprefix('sha256:')}"]
    assert f"sha256:{hashlib.sha256(data).hexdigest()}" == digest, "blob named by its digest"
    return data


def test_the_sandbox_archive_is_an_oci_image_whose_entrypoint_is_the_binary(
    tmp_path: Path,
) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really")
    binary.chmod(0o755)
    members = _members(oci_archive(binary, "/pause", PAUSE_IMAGE))

    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (entry,) = json.loads(members["index.json"])["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == PAUSE_IMAGE
    manifest = json.loads(_blob(members, entry["digest"]))
    config = json.loads(_blob(members, manifest["config"]["digest"]))
    assert config["config"]["Entrypoint"] == ["/pause"]
    (layer,) = manifest["layers"]
    layer_tar = gzip.decompress(_blob(members, layer["digest"]))
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"]
    with tarfile.open(fileobj=io.BytesIO(layer_tar)) as files:
        (pause,) = files.getmembers()
        assert (pause.name, pause.mode & 0o111, pause.uid) == ("pause", 0o111, 0)
        assert files.extractfile(pause).read() == b"\x7fELF not really"  # type: ignore[union-attr]


def test_the_archive_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"same")
    assert oci_archive(binary, "/pause", PAUSE_IMAGE) == oci_archive(binary, "/pause", PAUSE_IMAGE)


def test_pods_get_the_nodes_24_with_a_default_route_through_the_bridge(tmp_path: Path) -> None:
    subnet = PodNetwork("modelrollout-x", "10.241.0.0/16").real_node_subnet
    (bridge,) = cni_config(subnet, tmp_path)["plugins"]
    assert bridge["type"] == "bridge"
    assert (bridge["isGateway"], bridge["isDefaultGateway"], bridge["ipMasq"]) == (
        True,
        True,
        False,
    )
    ((range_,),) = bridge["ipam"]["ranges"]
    assert range_ == {"subnet": "10.241.255.0/24", "gateway": "10.241.255.1"}


def test_no_harness_node_takes_the_real_nodes_24() -> None:
    network = PodNetwork("modelrollout-x", "10.241.0.0/16")
    taken = {network.node_subnet(f"harness-{index}") for index in range(2000)}
    assert network.real_node_subnet not in taken
    assert all(s.subnet_of(ipaddress.IPv4Network(network.cidr)) for s in taken)


def test_the_kubelet_listens_on_loopback_and_registers_tainted_like_the_gpu_nodes(
    tmp_path: Path,
) -> None:
    config = kubelet_config(tmp_path, tmp_path / "containerd.sock", 10350, 10348)
    assert config["address"] == config["healthzBindAddress"] == "127.0.0.1"
    assert config["readOnlyPort"] == 0
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["registerWithTaints"] == [GPU_TAINT]
    assert config["containerRuntimeEndpoint"] == f"unix://{tmp_path}/containerd.sock"
    assert config["clusterDNS"] == [CLUSTER_DNS_IP] and config["clusterDomain"] == "cluster.local"


def test_the_cluster_dns_is_the_kube_dns_service_in_the_static_band_of_the_service_cidr() -> None:
    service, endpoints = dns_service("10.241.255.1")
    # The lower band of a /16 (256 addresses) is handed out only when a Service asks for it.
    assert (
        ipaddress.ip_address(CLUSTER_DNS_IP)
        in list(ipaddress.IPv4Network(SERVICE_CIDR).hosts())[:255]
    )
    assert service["spec"]["clusterIP"] == CLUSTER_DNS_IP
    assert "selector" not in service["spec"], "its endpoint is CoreDNS, not a pod"
    assert {(p["name"], p["protocol"]) for p in service["spec"]["ports"]} == {
        ("dns", "UDP"),
        ("dns-tcp", "TCP"),
    }
    assert endpoints["metadata"]["labels"] == {"kubernetes.io/service-name": "kube-dns"}
    assert endpoints["endpoints"][0]["addresses"] == ["10.241.255.1"]
    assert {p["name"] for p in endpoints["ports"]} == {"dns", "dns-tcp"}


def test_coredns_serves_the_cluster_domain_from_the_api_and_forwards_nothing(
    tmp_path: Path,
) -> None:
    config = corefile(tmp_path / "kubeconfig")
    assert f"kubeconfig {tmp_path}/kubeconfig" in config
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa" in config
    assert "forward" not in config


def test_containerd_tolerates_a_root_without_cap_sys_resource(tmp_path: Path) -> None:
    config = containerd_config(tmp_path, tmp_path / "cni")
    assert "restrict_oom_score_adj = true" in config
    assert f'sandbox_image = "{PAUSE_IMAGE}"' in config
    assert f'address = "{tmp_path}/containerd.sock"' in config


def test_kube_proxy_masquerades_service_traffic_and_leaves_conntrack_sizes_alone(
    tmp_path: Path,
) -> None:
    config = kube_proxy_config(tmp_path / "kubeconfig", "10.241.0.0/16", 10249)
    assert config["iptables"]["masqueradeAll"] is True
    assert config["conntrack"]["maxPerCore"] == 0
    assert config["clusterCIDR"] == "10.241.0.0/16"
    assert config["metricsBindAddress"] == "127.0.0.1:10249"
