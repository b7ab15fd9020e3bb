"""N ModelRollouts progressing at once on fake GPU nodes, with a real Prometheus answering.

On a cluster of its own (`bench-scale`, kwok GPU nodes with 8 GPUs each, an
API server audit log of the operator's requests), the real operator process
runs as a ServiceAccount of its own, so the audit log, not the operator,
counts its API calls. Each rollout (1 replica, 1 GPU, gatewayAPI router)
first becomes stable, then gets a new model at `--change-rate` per second:

    setWeight 20 -> pause P -> setWeight 50 -> pause P -> promote

with one check (`analysis.interval`) against Prometheus through a counting
proxy (the most queries in flight at once). Then every rollout sits settled
for an idle window.

Figures (watch events are timestamped when the bench receives them):
- reaction: spec change -> the operator's first status write for it
  (observedGeneration), and -> first step applied (canary weight 20 in the
  HTTPRoute, which needs the canary pod Ready first);
- step transition: a pause's end (stepStartedAt + P) -> the next step applied
  (weight 50), and the last pause's end -> promotion started;
- ticks per second, operator RSS (peak) and CPU (mean, in cores);
- API requests of the operator by verb and resource, per rollout and per
  step, during the progression and during the idle window.

    .venv/bin/python bench/scale.py --rollouts 100
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from modelrollout.engine.revision import revision_of
from modelrollout.kube.api import MODELROLLOUTS, KubeApi
from modelrollout.kube.labels import GROUP, PLURAL, VERSION
from modelrollout.models import parse_spec
from modelrollout_dev import cluster
from modelrollout_dev.identity import service_account_token, token_kubeconfig
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.processes import free_port
from modelrollout_dev.prometheus import CountingProxy, MetricsEndpoint

CLUSTER = "bench-scale"
NAMESPACE = "bench-scale"
OPERATOR_NAMESPACE = "modelrollout-system"
OPERATOR_ACCOUNT = "modelrollout-bench"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
GPUS_PER_NODE = 8
MUTATING = ("create", "update", "patch", "delete", "deletecollection")


def spec(model_uri: str, prometheus_url: str, pause: int, interval: str) -> dict[str, Any]:
    return {
        "model": {"name": "llm", "uri": model_uri},
        "runtime": {
            "engine": "torch",
            "image": "modelrollout/modelserve:dev",
            "replicas": 1,
            "resources": {"limits": {"nvidia.com/gpu": "1"}},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
        "traffic": {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
        "strategy": {
            "canary": {
                "steps": [
                    {"setWeight": 20},
                    {"pause": {"duration": f"{pause}s"}},
                    {"setWeight": 50},
                    {"pause": {"duration": f"{pause}s"}},
                ]
            }
        },
        "analysis": {
            "prometheus": {"address": prometheus_url, "timeout": "5s"},
            "interval": interval,
            "checks": [
                {
                    "name": "error-ratio",
                    "query": "max(bench_error_ratio)",
                    "breachWhen": "> 0.05",
                    "action": "rollback",
                }
            ],
        },
    }


def watch_forever(
    custom: client.CustomObjectsApi,
    group: str,
    version: str,
    plural: str,
    on_event: Callable[[dict[str, Any], float], None],
    lock: threading.Lock,
) -> None:
    """Hand each watched object of `plural` in the bench namespace to `on_event`, with the
    monotonic time of its receipt, under `lock`; never returns."""
    resource_version = ""
    while True:
        try:
            for event in watch.Watch().stream(
                custom.list_namespaced_custom_object,
                group,
                version,
                NAMESPACE,
                plural,
                resource_version=resource_version,
                timeout_seconds=300,
            ):
                received = time.monotonic()
                body = event["object"]
                resource_version = body["metadata"]["resourceVersion"]
                with lock:
                    on_event(body, received)
        except Exception:  # 410 or a dropped stream: start over from now
            resource_version = ""


class Recorder:
    """Times (monotonic, at receipt) of what the bench waits for, from two watches."""

    def __init__(self, api_client: client.ApiClient, canaries: dict[str, str]) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.canaries = canaries
        self.lock = threading.Lock()
        self.generation: dict[str, int] = {}
        self.acknowledged: dict[str, float] = {}
        self.weight: dict[tuple[str, int], float] = {}
        self.step_started: dict[tuple[str, int], float] = {}
        self.promoting: dict[str, float] = {}
        self.succeeded: dict[str, float] = {}
        self.phases: dict[str, str] = {}
        # Wall clock minus monotonic: turns status timestamps into monotonic times.
        self.offset = time.time() - time.monotonic()

    def start(self) -> None:
        for target in (self._rollouts, self._routes):
            threading.Thread(target=target, daemon=True).start()

    def _stream(self, group: str, version: str, plural: str, on_event: Any) -> None:
        watch_forever(self.custom, group, version, plural, on_event, self.lock)

    def _rollouts(self) -> None:
        def on_event(body: dict[str, Any], received: float) -> None:
            name = body["metadata"]["name"]
            status = body.get("status") or {}
            self.phases[name] = status.get("phase", "")
            canary = self.canaries.get(name)
            if canary is None:
                return
            generation = self.generation.get(name)
            if generation is not None and status.get("observedGeneration") == generation:
                self.acknowledged.setdefault(name, received)
            if status.get("canaryRevision") == canary and status.get("stepStartedAt"):
                started = datetime.fromisoformat(status["stepStartedAt"].replace("Z", "+00:00"))
                step = int(status.get("currentStep") or 0)
                self.step_started.setdefault((name, step), started.timestamp() - self.offset)
            if status.get("phase") == "Promoting" or (
                status.get("phase") == "Succeeded" and status.get("stableRevision") == canary
            ):
                self.promoting.setdefault(name, received)
            if status.get("phase") == "Succeeded" and status.get("stableRevision") == canary:
                self.succeeded.setdefault(name, received)

        self._stream(GROUP, VERSION, PLURAL, on_event)

    def _routes(self) -> None:
        def on_event(body: dict[str, Any], received: float) -> None:
            name = body["metadata"]["name"]
            canary = self.canaries.get(name)
            if canary is None:
                return
            for ref in body["spec"]["rules"][0].get("backendRefs", []):
                if ref["name"] == f"{name}-{canary}":
                    self.weight.setdefault((name, int(ref.get("weight", 0))), received)

        self._stream("gateway.networking.k8s.io", "v1", "httproutes", on_event)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProcessSampler:
    """Peak RSS and CPU time of one process, sampled every second."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = 0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_of(self.pid)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            rss = self.rss()
            if not rss:  # the process is gone
                return
            self.peak_rss = max(self.peak_rss, rss)

    def stop(self) -> None:
        self._stop.set()


def rss_of(pid: int) -> int:
    """A process's resident memory now, in bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def metrics_answer(metrics_port: int) -> bool:
    try:
        ticks(metrics_port)
    except OSError:
        return False
    return True


def ticks(metrics_port: int) -> float:
    """The operator's tick count (its histogram's _count) from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("modelrollout_tick_duration_seconds_count"):
                return float(line.split()[-1])
    return 0.0


def tick_time(metrics_port: int) -> float:
    """Mean tick duration so far, from the operator's histogram."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        values = {
            line.split()[0]: float(line.split()[-1])
            for line in reply.read().decode().splitlines()
            if line.startswith("modelrollout_tick_duration_seconds_")
        }
    count = values.get("modelrollout_tick_duration_seconds_count", 0.0)
    return values.get("modelrollout_tick_duration_seconds_sum", 0.0) / count if count else 0.0


def audit_counts(
    log: Path, since: float, until: float, user: str = OPERATOR_USER
) -> Counter[tuple[str, str]]:
    """`user`'s requests between two wall-clock times, by (verb, resource[/sub]).

    The API server rotates its audit log at 100 MB (lumberjack's default size),
    naming the old parts `audit-<time>.log`: at N = 3000 most of a run is in them.
    """
    counts: Counter[tuple[str, str]] = Counter()
    parts = [*sorted(log.parent.glob(f"{log.stem}-*{log.suffix}")), log]
    for part in parts:
        with part.open() as lines:
            for line in lines:
                event = json.loads(line)
                if event.get("user", {}).get("username") != user:
                    continue
                # A watch is logged when its response starts and again when it ends.
                stage = "ResponseStarted" if event["verb"] == "watch" else "ResponseComplete"
                if event["stage"] != stage:
                    continue
                received = datetime.fromisoformat(
                    event["requestReceivedTimestamp"].replace("Z", "+00:00")
                ).timestamp()
                if not since <= received < until:
                    continue
                ref = event.get("objectRef", {})
                resource = ref.get("resource", event.get("requestURI", ""))
                if ref.get("subresource"):
                    resource += "/" + ref["subresource"]
                counts[(event["verb"], resource)] += 1
    return counts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(label: str, values: list[float]) -> str:
    if not values:
        return f"{label}: no samples"
    return (
        f"{label}: n={len(values)} p50 {statistics.median(values) * 1000:.0f} ms, "
        f"p95 {percentile(values, 0.95) * 1000:.0f} ms, "
        f"p99 {percentile(values, 0.99) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"
    )


def print_audit(
    title: str, counts: Counter[tuple[str, str]], per: int, unit: str, flush: bool = False
) -> None:
    total = sum(counts.values())
    mutating = sum(n for (verb, _), n in counts.items() if verb in MUTATING)
    print(
        f"{title}: {total} requests, {mutating} mutating ({mutating / max(per, 1):.2f} per {unit})"
    )
    for (verb, resource), count in sorted(counts.items(), key=lambda item: -item[1]):
        print(f"  {verb:7s} {resource:32s} {count:7d}  {count / max(per, 1):7.2f} per {unit}")
    if flush:
        sys.stdout.flush()


def wait_for(done: Any, timeout: float, what: str, poll: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(poll)


def prepare_operator_identity(
    state: cluster.ClusterState, api_client: client.ApiClient, account: str = OPERATOR_ACCOUNT
) -> str:
    """A cluster-admin ServiceAccount `account` and a kubeconfig with its token."""
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=OPERATOR_NAMESPACE)))
    core.create_namespaced_service_account(
        OPERATOR_NAMESPACE,
        client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account)),
    )
    client.RbacAuthorizationV1Api(api_client).create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=account),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"
            ),
            subjects=[
                client.RbacV1Subject(
                    kind="ServiceAccount", name=account, namespace=OPERATOR_NAMESPACE
                )
            ],
        )
    )
    token = service_account_token(api_client, OPERATOR_NAMESPACE, account, 6 * 3600)
    return token_kubeconfig(state.kubeconfig, token, Path(state.directory) / "operator.kubeconfig")


def add_scenario_arguments(parser: argparse.ArgumentParser) -> None:
    """The scenario's knobs, the same for this bench and bench/peers.py."""
    parser.add_argument("--rollouts", type=int, default=100)
    parser.add_argument("--change-rate", type=float, default=25.0, help="spec changes per second")
    parser.add_argument("--pause", type=int, default=30, help="seconds of each pause step")
    parser.add_argument("--analysis-interval", default="10s")
    parser.add_argument("--tick", type=float, default=2.0, help="the operator's tick interval")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of the idle window")
    parser.add_argument("--deadline", type=float, default=900, help="seconds for the progression")
    parser.add_argument("--keep", action="store_true", help="leave the cluster up afterwards")


def run(args: argparse.Namespace, count: int) -> dict[str, float]:
    """One fresh cluster, N = `count`: prints the run's figures and returns the curve's."""
    # Stable and canary side by side: two GPUs per rollout at most, plus a spare node.
    gpu_nodes = math.ceil(2 * count / GPUS_PER_NODE) + 1
    cluster.down(CLUSTER)  # a fresh cluster each run, as big as this run needs
    state = cluster.up(
        CLUSTER, gpu_nodes=gpu_nodes, gpus_per_node=GPUS_PER_NODE, cpu_nodes=1,
        audit_users=(OPERATOR_USER,),
        # kwok pods run no server: nothing to scrape, as in the runs before 5dc8869.
        scrape_model_pods=False,
    )  # fmt: skip
    kubectl = [state.kubectl, "--kubeconfig", state.kubeconfig]
    crd = Path(__file__).resolve().parents[1] / "crds" / "modelrollouts.modelrollout.dev.yaml"
    subprocess.run(
        [*kubectl, "apply", "--server-side", "-f", str(crd)], check=True, capture_output=True
    )
    subprocess.run([*kubectl, "create", "ns", NAMESPACE], check=True, capture_output=True)
    api_client = config.new_client_from_config(config_file=state.kubeconfig)
    api = KubeApi(api_client)
    operator_kubeconfig = prepare_operator_identity(state, api_client)

    # `bench_error_ratio 0`: what every rollout's check reads (passing).
    exporter = MetricsEndpoint(lambda: "bench_error_ratio 0\n")
    state.prometheus.register_target("bench-scale", exporter.address, {})
    proxy = CountingProxy(state.prometheus_url)
    names = [f"m-{index:04d}" for index in range(count)]
    old = spec("file:///bench/v1", proxy.url, args.pause, args.analysis_interval)
    new = spec("file:///bench/v2", proxy.url, args.pause, args.analysis_interval)
    canary = revision_of(parse_spec(new))
    recorder = Recorder(api_client, dict.fromkeys(names, canary))
    recorder.start()

    metrics_port = free_port()
    operator = OperatorProcess(
        operator_kubeconfig, NAMESPACE, Path(tempfile.gettempdir()), args.tick, metrics_port
    )
    operator.start()
    sampler = ProcessSampler(operator.pid)
    try:
        # The operator's own memory before it holds any rollout: its metrics answering
        # means kopf, the cache's watches and the server are up.
        wait_for(lambda: metrics_answer(metrics_port), 120, "the operator's metrics")
        empty_rss = sampler.rss()
        started = time.monotonic()
        for name in names:
            api.create(
                MODELROLLOUTS,
                NAMESPACE,
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "ModelRollout",
                    "metadata": {"name": name, "namespace": NAMESPACE},
                    "spec": old,
                },
            )
        wait_for(
            lambda: sum(recorder.phases.get(n) == "Succeeded" for n in names) == count,
            60 + count,
            "every rollout stable",
        )
        print(f"{count} rollouts stable in {time.monotonic() - started:.0f}s", flush=True)
        time.sleep(5)

        wall_start, cpu_start, ticks_start = time.time(), sampler.cpu_seconds(), ticks(metrics_port)
        components = {
            **cluster.kwok_component_pids(CLUSTER),
            "prometheus": state.prometheus_pid,
        }
        components_start = {name: cpu_seconds(pid) for name, pid in components.items()}
        progress_start = time.monotonic()
        changed: dict[str, float] = {}
        for index, name in enumerate(names):
            target = progress_start + index / args.change_rate
            time.sleep(max(0.0, target - time.monotonic()))
            patched = api.merge_patch(MODELROLLOUTS, NAMESPACE, name, {"spec": new})
            with recorder.lock:
                recorder.generation[name] = int(patched["metadata"]["generation"])
            changed[name] = time.monotonic()
        try:
            wait_for(lambda: len(recorder.succeeded) == count, args.deadline, "promotions")
        except TimeoutError:
            print(f"deadline: {len(recorder.succeeded)} of {count} promoted", flush=True)
        progress_seconds = time.monotonic() - progress_start
        wall_end, cpu_end, ticks_end = time.time(), sampler.cpu_seconds(), ticks(metrics_port)
        components_cpu = {
            name: (cpu_seconds(pid) - components_start[name]) / (wall_end - wall_start)
            for name, pid in components.items()
        }
        components_rss = {name: rss_of(pid) for name, pid in components.items()}
        tick_seconds = tick_time(metrics_port)
        progress_counts = audit_counts(cluster.audit_log_path(CLUSTER), wall_start, wall_end)

        time.sleep(10)  # the old revisions' deletion settles
        idle_start, idle_ticks_start = time.time(), ticks(metrics_port)
        idle_rss_start = sampler.rss()
        time.sleep(args.idle)
        idle_end, idle_ticks_end = time.time(), ticks(metrics_port)
        idle_counts = audit_counts(cluster.audit_log_path(CLUSTER), idle_start, idle_end)
        peak_rss = max(sampler.peak_rss, idle_rss_start)
    finally:
        sampler.stop()
        operator.stop()
        state.prometheus.unregister_target("bench-scale")
        if not args.keep:
            cluster.down(CLUSTER)

    pause = float(args.pause)
    reaction = [recorder.acknowledged[n] - changed[n] for n in names if n in recorder.acknowledged]
    first_step = [
        recorder.weight[(n, 20)] - changed[n] for n in names if (n, 20) in recorder.weight
    ]
    to_fifty = [
        recorder.weight[(n, 50)] - (recorder.step_started[(n, 1)] + pause)
        for n in names
        if (n, 50) in recorder.weight and (n, 1) in recorder.step_started
    ]
    to_promotion = [
        recorder.promoting[n] - (recorder.step_started[(n, 3)] + pause)
        for n in names
        if n in recorder.promoting and (n, 3) in recorder.step_started
    ]
    steps = 4 * count  # each rollout: weight 20, pause, weight 50, pause (then promotion)
    print(
        f"N={count} rollouts, {gpu_nodes} GPU nodes x {GPUS_PER_NODE}, spec changes at "
        f"{args.change_rate:g}/s, pauses {args.pause}s, analysis every {args.analysis_interval}, "
        f"tick {args.tick:g}s"
    )
    print(summary("spec change -> first status write (observedGeneration)", reaction))
    print(
        summary("spec change -> first step applied (canary weight 20 in the HTTPRoute)", first_step)
    )
    print(summary("pause end -> next step applied (weight 50)", to_fifty))
    print(summary("last pause end -> promotion started", to_promotion))
    print(
        f"progression: {progress_seconds:.0f}s, {(ticks_end - ticks_start) / progress_seconds:.0f} "
        f"ticks/s, operator CPU {(cpu_end - cpu_start) / progress_seconds:.2f} cores, "
        f"peak RSS {peak_rss / 2**20:.0f} MiB"
    )
    print(f"mean tick {tick_seconds * 1000:.0f} ms (operator's histogram, whole run)")
    print(
        f"operator RSS: {empty_rss / 2**20:.0f} MiB holding no rollout, "
        f"{idle_rss_start / 2**20:.0f} MiB holding {count} settled, "
        f"{(idle_rss_start - empty_rss) / count / 1024:.0f} KiB per rollout"
    )
    print(
        "CPU of the rest, in cores: "
        + ", ".join(f"{name} {cores:.2f}" for name, cores in sorted(components_cpu.items()))
    )
    print(
        "RSS of the rest at the progression's end: "
        + ", ".join(f"{name} {rss / 2**20:.0f} MiB" for name, rss in sorted(components_rss.items()))
    )
    print(
        f"Prometheus queries: {proxy.requests}, at most {proxy.most_in_flight} in flight, "
        f"slowest {proxy.slowest * 1000:.0f} ms, {proxy.abandoned} abandoned by the operator"
    )
    print_audit("API requests during the progression", progress_counts, steps, "step")
    print(
        f"idle window {args.idle:g}s: {idle_ticks_end - idle_ticks_start:.0f} ticks "
        f"({(idle_ticks_end - idle_ticks_start) / args.idle:.1f}/s)"
    )
    print_audit("API requests in the idle window", idle_counts, count, "rollout", flush=True)
    control_plane = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler")
    mutating = sum(n for (verb, _), n in progress_counts.items() if verb in MUTATING)
    return {
        "rollouts": count,
        "promoted": len(recorder.succeeded),
        "reaction_p50": statistics.median(reaction) if reaction else math.nan,
        "reaction_p99": percentile(reaction, 0.99) if reaction else math.nan,
        "first_step_p99": percentile(first_step, 0.99) if first_step else math.nan,
        "promotion_p99": percentile(to_promotion, 0.99) if to_promotion else math.nan,
        "progression": progress_seconds,
        "operator_cpu": (cpu_end - cpu_start) / progress_seconds,
        "control_plane_cpu": sum(components_cpu.get(name, 0.0) for name in control_plane),
        "empty_rss": empty_rss,
        "settled_rss": idle_rss_start,
        "peak_rss": peak_rss,
        "apiserver_rss": components_rss.get("kube-apiserver", 0),
        "etcd_rss": components_rss.get("etcd", 0),
        "writes_per_step": mutating / steps,
    }


def print_curve(rows: list[dict[str, float]]) -> None:
    """The runs side by side, as docs/benchmarks.md keeps them."""
    columns: list[tuple[str, Callable[[dict[str, float]], str]]] = [
        ("promoted", lambda r: f"{r['promoted']:.0f} of {r['rollouts']:.0f}"),
        ("spec change -> first status write, p50 / p99 (s)",
         lambda r: f"{r['reaction_p50']:.2f} / {r['reaction_p99']:.2f}"),
        ("spec change -> first step applied, p99 (s)", lambda r: f"{r['first_step_p99']:.1f}"),
        ("last pause end -> promotion started, p99 (s)", lambda r: f"{r['promotion_p99']:.1f}"),
        ("progression (s)", lambda r: f"{r['progression']:.0f}"),
        ("operator CPU (cores)", lambda r: f"{r['operator_cpu']:.2f}"),
        ("apiserver + etcd + controller-manager + scheduler CPU (cores)",
         lambda r: f"{r['control_plane_cpu']:.2f}"),
        ("operator RSS holding none / settled / peak (MiB)",
         lambda r: f"{r['empty_rss'] / 2**20:.0f} / {r['settled_rss'] / 2**20:.0f} / "
         f"{r['peak_rss'] / 2**20:.0f}"),
        ("operator RSS per rollout (KiB)",
         lambda r: f"{(r['settled_rss'] - r['empty_rss']) / r['rollouts'] / 1024:.0f}"),
        ("kube-apiserver / etcd RSS (MiB)",
         lambda r: f"{r['apiserver_rss'] / 2**20:.0f} / {r['etcd_rss'] / 2**20:.0f}"),
        ("mutating API calls per step", lambda r: f"{r['writes_per_step']:.2f}"),
    ]  # fmt: skip
    print("\n| figure | " + " | ".join(f"N = {r['rollouts']:.0f}" for r in rows) + " |")
    print("| --- |" + " --- |" * len(rows))
    for title, cell in columns:
        print(f"| {title} | " + " | ".join(cell(r) for r in rows) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_scenario_arguments(parser)
    parser.add_argument(
        "--curve",
        default="",
        help="comma-separated N: one fresh cluster each, then a table of them (not --rollouts)",
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.curve.split(",") if n.strip()] or [args.rollouts]
    rows = []
    for count in counts:
        print(f"\n=== N = {count} ({time.strftime('%H:%M:%S')}, load {os.getloadavg()[0]:.1f})")
        rows.append(run(args, count))
    print_curve(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
