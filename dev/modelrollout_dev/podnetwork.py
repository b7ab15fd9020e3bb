"""The local cluster's pod network: pod addresses that exist only in a network namespace.

The API server refuses loopback endpoint addresses, so the pods the harness
runs need addresses of a network of their own. `dev cluster up` creates one
network namespace per cluster (`ip netns`) and gives the cluster a private
pod CIDR, a /16 out of 10.240.0.0/12; each harness node takes a /24 of it.
Every pod the harness runs gets its IP on that namespace's loopback, and its
server listens there on its own container port: EndpointSlices, Services and
routes then name real listeners.

No pod address is configured on a host interface. The host reaches the
namespace through a veth pair with link-local addresses and one route to the
cluster's pod CIDR through it: the stand-in gateway, Prometheus and the
probes, which run on the host, connect to pod addresses that way.

Setting this up takes root (CAP_NET_ADMIN, and CAP_SYS_ADMIN for `ip netns`).
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import zlib
from dataclasses import dataclass

# Room for 16 clusters at once on one machine, a /16 of pods each.
POD_SUPERNET = ipaddress.IPv4Network("10.240.0.0/12")
POD_CIDR_SLOTS = list(POD_SUPERNET.subnets(new_prefix=16))
# The veth pair's own /30 per slot: link-local, so nothing on a real network is shadowed.
LINK_SUBNETS = list(ipaddress.IPv4Network("169.254.240.0/24").subnets(new_prefix=30))
NETNS_ENV = "MODELROLLOUT_POD_NETNS"
CIDR_ENV = "MODELROLLOUT_POD_CIDR"


class PodNetworkError(RuntimeError):
    """The pod network could not be set up, or has no address left."""


def _ip(args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as error:
        message = "the `ip` command is missing (Debian: apt-get install iproute2)"
        raise PodNetworkError(message) from error
    if check and result.returncode != 0:
        raise PodNetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _taken(result: subprocess.CompletedProcess[str]) -> bool:
    """The route or address is there already (the kernel words the two differently)."""
    return result.returncode != 0 and (
        "File exists" in result.stderr or "already assigned" in result.stderr
    )


def netns_name(cluster: str) -> str:
    return f"modelrollout-{cluster}"


def on_host_interface(address: str) -> bool:
    """Whether `address` is configured on an interface of the host's own network namespace."""
    return f" {address}/" in _ip(["-o", "addr"]).stdout


def _veth_names(cluster: str) -> tuple[str, str]:
    """The host end and the namespace end: interface names are at most 15 characters."""
    tag = f"mr{zlib.crc32(cluster.encode()):08x}"
    return f"{tag}h", f"{tag}n"


@dataclass(frozen=True)
class PodNetwork:
    """A cluster's network namespace and pod CIDR."""

    netns: str
    cidr: str

    def node_subnet(self, node: str) -> ipaddress.IPv4Network:
        """The /24 of the cluster's CIDR whose addresses the node's pods take.

        Never the last /24: that is the real node's bridge (`real_node_subnet`).
        """
        subnets = list(ipaddress.IPv4Network(self.cidr).subnets(new_prefix=24))[:-1]
        return subnets[zlib.crc32(node.encode()) % len(subnets)]

    @property
    def real_node_subnet(self) -> ipaddress.IPv4Network:
        """The /24 of the real node's CNI bridge (realnode.py)."""
        return list(ipaddress.IPv4Network(self.cidr).subnets(new_prefix=24))[-1]

    def claim_address(self, node: str, pod_uid: str) -> str:
        """A free address of the node's subnet, now on the namespace's loopback.

        The namespace itself keeps the record: adding an address that is there
        fails, so two harnesses sharing a cluster never hand out the same one.
        """
        hosts = list(self.node_subnet(node).hosts())
        first = zlib.crc32(pod_uid.encode()) % len(hosts)
        for offset in range(len(hosts)):
            address = str(hosts[(first + offset) % len(hosts)])
            result = _ip(["-n", self.netns, "addr", "add", f"{address}/32", "dev", "lo"], False)
            if result.returncode == 0:
                return address
            if not _taken(result):
                raise PodNetworkError(f"pod address {address}: {result.stderr.strip()}")
        raise PodNetworkError(f"no pod address left in {self.node_subnet(node)} for {node}")

    def release_address(self, address: str) -> None:
        _ip(["-n", self.netns, "addr", "del", f"{address}/32", "dev", "lo"], check=False)

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside the namespace (`ip netns exec` execs it: the pid stays argv's)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def env(self) -> dict[str, str]:
        return {NETNS_ENV: self.netns, CIDR_ENV: self.cidr}

    @classmethod
    def from_env(cls) -> PodNetwork | None:
        netns, cidr = os.environ.get(NETNS_ENV), os.environ.get(CIDR_ENV)
        return cls(netns, cidr) if netns and cidr else None


def create(cluster: str) -> PodNetwork:
    """The cluster's namespace, its veth pair, and the host's route to a free pod CIDR."""
    netns = netns_name(cluster)
    host_end, netns_end = _veth_names(cluster)
    delete(cluster)
    result = _ip(["netns", "add", netns], check=False)
    if result.returncode != 0:
        raise PodNetworkError(
            f"ip netns add {netns}: {result.stderr.strip()} (the local cluster's pod network "
            "needs root: CAP_NET_ADMIN and CAP_SYS_ADMIN)"
        )
    try:
        _ip(["-n", netns, "link", "set", "lo", "up"])
        _ip(["link", "add", host_end, "type", "veth", "peer", "name", netns_end, "netns", netns])
        _ip(["link", "set", host_end, "up"])
        _ip(["-n", netns, "link", "set", netns_end, "up"])
        for cidr, link in zip(POD_CIDR_SLOTS, LINK_SUBNETS, strict=False):
            # The route to the CIDR is the slot's lock: the kernel refuses a second one.
            claimed = _ip(["route", "add", str(cidr), "dev", host_end], check=False)
            if _taken(claimed):
                continue
            if claimed.returncode != 0:
                raise PodNetworkError(f"ip route add {cidr}: {claimed.stderr.strip()}")
            host_ip, netns_ip = (str(address) for address in link.hosts())
            _ip(["addr", "add", f"{host_ip}/30", "dev", host_end])
            _ip(["-n", netns, "addr", "add", f"{netns_ip}/30", "dev", netns_end])
            _ip(["route", "replace", str(cidr), "via", netns_ip, "dev", host_end])
            return PodNetwork(netns, str(cidr))
        raise PodNetworkError(f"every pod CIDR of {POD_SUPERNET} is taken")
    except PodNetworkError:
        delete(cluster)
        raise


def delete(cluster: str) -> None:
    """Remove the namespace and the veth pair (the host's route goes with its end)."""
    host_end, _ = _veth_names(cluster)
    _ip(["link", "del", host_end], check=False)
    _ip(["netns", "del", netns_name(cluster)], check=False)
