"""`modelrollout dev cluster up|down|status|env|build` and `modelrollout dev prometheus`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from modelrollout_dev import cluster, realnode, toolchain


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = subparsers.add_parser("dev", help="local development tools")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True)
    cluster_parser = dev_commands.add_parser(
        "cluster", help="a local Kubernetes control plane with fake GPU nodes and Prometheus"
    )
    actions = cluster_parser.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="build (once) and start the cluster")
    up.add_argument("--gpu-nodes", type=int, default=2)
    up.add_argument("--gpus-per-node", type=int, default=4)
    up.add_argument("--cpu-nodes", type=int, default=1)
    up.add_argument(
        "--audit-user",
        action="append",
        default=[],
        help="log this user's API requests to the audit log (repeatable)",
    )
    up.add_argument(
        "--real-node",
        action="store_true",
        help="add a real node (a kubelet on containerd, in the cluster's network namespace)",
    )
    up.add_argument(
        "--load-image",
        action="append",
        default=[],
        metavar="IMAGE",
        help="with --real-node: copy this local podman image into the node (repeatable)",
    )
    load = actions.add_parser(
        "load-image", help="copy local podman images into the cluster's real node"
    )
    load.add_argument("images", nargs="+", metavar="IMAGE")
    for action in ("down", "status", "env"):
        actions.add_parser(action)
    actions.add_parser("build", help="build and cache the binaries without starting anything")
    for parser in actions.choices.values():
        parser.add_argument("--name", default=cluster.DEFAULT_NAME, help="cluster name")
    cluster_parser.set_defaults(handler=run)
    prometheus_parser = dev_commands.add_parser(
        "prometheus",
        help="only the tests' Prometheus, for a cluster such as kind; "
        "prints the environment the tests read",
    )
    prometheus_parser.add_argument("directory", type=Path, help="where its config and data go")
    prometheus_parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="also discover the rollouts' serving pods through this cluster's API server "
        "(the chart's scrape job), where this machine can reach pod IPs",
    )
    prometheus_parser.set_defaults(handler=run_prometheus)


def run_prometheus(args: argparse.Namespace) -> int:
    pid, handle = cluster.start_prometheus(args.directory, args.kubeconfig)
    for key, value in {
        "MODELROLLOUT_PROMETHEUS_URL": handle.url,
        "MODELROLLOUT_PROMETHEUS_SD_DIR": str(handle.sd_dir),
        "MODELROLLOUT_PROMETHEUS_RULES_DIR": str(handle.rules_dir),
    }.items():
        print(f"export {key}={shlex.quote(value)}")
    print(f"prometheus_pid={pid}")
    return 0


def _print_env(state: cluster.ClusterState) -> None:
    for key, value in state.env().items():
        print(f"export {key}={shlex.quote(value)}")


def _load_images(state: cluster.ClusterState, images: list[str]) -> None:
    if not images:
        return
    node = realnode.load_state(Path(state.directory))
    if node is None or not realnode.is_running(node):
        raise SystemExit(f"cluster {state.name!r} has no real node: `dev cluster up --real-node`")
    for image in images:
        seconds = realnode.load_image(node, image)
        print(f"loaded {image} into {realnode.NODE_NAME} in {seconds:.0f}s")


def run(args: argparse.Namespace) -> int:
    if args.action == "build":
        binaries = toolchain.ensure_binaries()
        for name, path in binaries.all().items():
            print(f"{name}: {path}")
        return 0
    if args.action == "up":
        if args.load_image and not args.real_node:
            print("--load-image needs --real-node", file=sys.stderr)
            return 2
        started = cluster.up(
            args.name,
            args.gpu_nodes,
            args.gpus_per_node,
            args.cpu_nodes,
            tuple(args.audit_user),
            real_node=args.real_node,
        )
        _load_images(started, args.load_image)
        print(
            cluster.kubectl(
                started,
                [
                    "get",
                    "nodes",
                    "-o",
                    "custom-columns="
                    "NAME:.metadata.name,GPUS:.status.allocatable.nvidia\\.com/gpu,"
                    "TAINTS:.spec.taints[*].key",
                ],
            )
        )
        print(f"Prometheus: {started.prometheus_url}")
        print("Use it with:")
        print(f'  eval "$(modelrollout dev cluster env --name {args.name})"')
        print("  kubectl get nodes")
        return 0
    if args.action == "down":
        cluster.down(args.name)
        return 0
    state = cluster.load_state(args.name)
    if state is None:
        print(f"cluster {args.name!r} is not up", file=sys.stderr)
        return 1
    if args.action == "env":
        _print_env(state)
        return 0
    if args.action == "load-image":
        _load_images(state, args.images)
        return 0
    running = cluster.is_running(state)
    print(f"cluster {args.name!r}: {'running' if running else 'NOT running (stale)'}")
    for component, pid in sorted(cluster.kwok_component_pids(args.name).items()):
        print(f"  {component}: pid {pid}")
    print(f"  prometheus: pid {state.prometheus_pid} at {state.prometheus_url}")
    node = realnode.load_state(Path(state.directory))
    if node is not None:
        node_running = realnode.is_running(node)
        running = running and node_running
        print(f"  {realnode.NODE_NAME}: {'running' if node_running else 'NOT running'}")
        for component, pid in node.pids.items():
            print(f"    {component}: pid {pid}")
    print(f"  kubeconfig: {state.kubeconfig}")
    return 0 if running else 1
