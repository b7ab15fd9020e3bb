"""modelrollout, Flagger and Argo Rollouts through the same scenario, one after another.

Each system gets a fresh local cluster of bench/scale.py's shape (kwok GPU
nodes with 8 GPUs, ceil(2N/8)+1 of them, one CPU node) with an API server
audit log of its controller's own ServiceAccount, and runs out of cluster
with that account's token (cluster-admin bound), at its default client-side
request limits. The scenario is the same for all three:

    N rollouts of 1 replica and 1 GPU become stable; then spec changes at
    --change-rate per second start: setWeight 20, pause P, setWeight 50,
    pause P, promote; then a 30 s idle window. One passing check reads
    `max(bench_error_ratio)` from the same Prometheus, through a counting
    proxy.

How each peer expresses it (../shared/peers.md, where these were first run):
- Flagger v1.36.1 (`-mesh-provider gatewayapi:v1`): a Deployment and a
  Canary each, `analysis: {interval: P, threshold: 2, stepWeights: [20, 50]}`
  and one metric from a MetricTemplate. Its pause is its interval. A new
  revision is a pod-template annotation changed on the Deployment.
- Argo Rollouts v1.10.1 (`--namespaced`): a Rollout each with a
  replica-based canary (no traffic router), steps setWeight 20, pause P,
  setWeight 50, pause P, and background analysis from an AnalysisTemplate
  (interval --analysis-interval). A revision is a pod-template annotation.
- modelrollout: bench/scale.py's ModelRollout (gatewayAPI router) and its
  check every --analysis-interval; a revision is a new `spec.model.uri`.

Figures, per system (watch events timestamped on receipt by this process):
- spec change -> first step applied: the HTTPRoute's canary weight at 20
  (modelrollout, Flagger), or Argo's step index past setWeight 20;
- pause end -> next step applied (weight 50 / Argo's index past it), where a
  pause starts at the status's own step start (modelrollout, Argo) or when
  weight 20 was applied (Flagger, whose pause is its interval);
- last pause end -> promotion started;
- whole progression, the controller's API calls (audit log) per rollout,
  writes, reads and CPU in the idle window, its peak RSS, its mean CPU over
  the progression and its CPU time per completed rollout (the same work at
  each system's own pace), and the Prometheus queries it made.

    .venv/bin/python bench/peers.py --rollouts 100
"""

from __future__ import annotations

import argparse
import math
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config

import scale
from modelrollout.engine.revision import revision_of
from modelrollout.kube.labels import GROUP, PLURAL, VERSION
from modelrollout.models import parse_spec
from modelrollout_dev import cluster, toolchain
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.processes import free_port
from modelrollout_dev.prometheus import CountingProxy, MetricsEndpoint

NAMESPACE = scale.NAMESPACE
QUERY = "max(bench_error_ratio)"
GATEWAY = "gw"


@dataclass
class Timeline:
    """Monotonic times, per rollout name, of what the figures are made of."""

    changed: dict[str, float] = field(default_factory=dict)
    first_step: dict[str, float] = field(default_factory=dict)
    first_pause: dict[str, float] = field(default_factory=dict)
    second_step: dict[str, float] = field(default_factory=dict)
    last_pause: dict[str, float] = field(default_factory=dict)
    promoting: dict[str, float] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)
    stable: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Wall clock minus monotonic: turns status timestamps into monotonic times.
    offset: float = field(default_factory=lambda: time.time() - time.monotonic())

    def moment(self, timestamp: str) -> float:
        wall = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
        return wall - self.offset

    def note(self, series: dict[str, float], name: str, at: float) -> None:
        """The first time only, and only once the bench has changed that rollout."""
        if name in self.changed:
            series.setdefault(name, at)


def stream(
    api_client: client.ApiClient,
    group: str,
    version: str,
    plural: str,
    on_event: Callable[[dict[str, Any], float], None],
    lock: threading.Lock,
) -> None:
    """Watch `plural` in the bench namespace from a daemon thread, for good."""
    custom = client.CustomObjectsApi(api_client)
    threading.Thread(
        target=scale.watch_forever,
        args=(custom, group, version, plural, on_event, lock),
        daemon=True,
    ).start()


def create_object(api_client: client.ApiClient, plural: str, manifest: dict[str, Any]) -> None:
    """Create a custom object in the bench namespace; group and version from its apiVersion."""
    group, version = manifest["apiVersion"].split("/")
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        group, version, NAMESPACE, plural, manifest
    )


def pod_template(app: str, revision: str) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": {"app": app},
            "annotations": {"bench.modelrollout.dev/revision": revision},
        },
        "spec": {
            "containers": [
                {
                    "name": "model",
                    "image": "modelrollout/modelserve:dev",
                    "ports": [{"containerPort": 8000}],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
    }


def revision_patch(revision: str) -> dict[str, Any]:
    annotations = {"bench.modelrollout.dev/revision": revision}
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


class ChildProcess:
    """A peer's controller binary, logging to a file."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, command: list[str], log_path: Path, env: dict[str, str]) -> int:
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,
            )  # fmt: skip
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class System:
    """One progressive-delivery controller under the scenario."""

    name: str
    account: str

    def __init__(self, args: argparse.Namespace, timeline: Timeline) -> None:
        self.args = args
        self.timeline = timeline
        self.process = ChildProcess()

    def install(self, kubectl: list[str], api_client: client.ApiClient, prometheus: str) -> None:
        raise NotImplementedError

    def start(self, kubeconfig: str, prometheus: str, log_dir: Path) -> int:
        """Start the controller; its pid."""
        raise NotImplementedError

    def stop(self) -> None:
        self.process.stop()

    def create(self, api_client: client.ApiClient, name: str) -> None:
        raise NotImplementedError

    def change(self, api_client: client.ApiClient, name: str) -> None:
        raise NotImplementedError

    def watch(self, api_client: client.ApiClient) -> None:
        raise NotImplementedError


def apply_files(kubectl: list[str], files: list[Path]) -> None:
    """Apply CRDs and wait until the API server serves them."""
    for path in files:
        subprocess.run(
            [*kubectl, "apply", "--server-side", "-f", str(path)], check=True, capture_output=True
        )
    subprocess.run(
        [*kubectl, "wait", "--for", "condition=Established", "--timeout", "60s", "crd", "--all"],
        check=True,
        capture_output=True,
    )


class ModelRollout(System):
    name = "modelrollout"
    account = "modelrollout-bench"
    operator: OperatorProcess | None = None

    def install(self, kubectl: list[str], api_client: client.ApiClient, prometheus: str) -> None:
        crd = Path(__file__).resolve().parents[1] / "crds" / "modelrollouts.modelrollout.dev.yaml"
        apply_files(kubectl, [crd])
        args = self.args
        self.old = scale.spec("file:///bench/v1", prometheus, args.pause, args.analysis_interval)
        self.new = scale.spec("file:///bench/v2", prometheus, args.pause, args.analysis_interval)
        self.canary = revision_of(parse_spec(self.new))

    def start(self, kubeconfig: str, prometheus: str, log_dir: Path) -> int:
        self.operator = OperatorProcess(kubeconfig, NAMESPACE, log_dir, self.args.tick, free_port())
        self.operator.start()
        return self.operator.pid

    def stop(self) -> None:
        if self.operator is not None:
            self.operator.stop()

    def create(self, api_client: client.ApiClient, name: str) -> None:
        manifest = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelRollout",
            "metadata": {"name": name},
            "spec": self.old,
        }
        create_object(api_client, PLURAL, manifest)

    def change(self, api_client: client.ApiClient, name: str) -> None:
        client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, name, {"spec": self.new}
        )

    def watch(self, api_client: client.ApiClient) -> None:
        t = self.timeline

        def rollout(body: dict[str, Any], received: float) -> None:
            name = body["metadata"]["name"]
            status = body.get("status") or {}
            ours = status.get("canaryRevision") == self.canary
            if status.get("phase") == "Succeeded" and not ours:
                t.stable.add(name)
            if ours and status.get("stepStartedAt"):
                step = int(status.get("currentStep") or 0)
                started = t.moment(status["stepStartedAt"])
                t.note({1: t.first_pause, 3: t.last_pause}.get(step, {}), name, started)
            promoted = (
                status.get("phase") == "Succeeded" and status.get("stableRevision") == self.canary
            )
            if status.get("phase") == "Promoting" or promoted:
                t.note(t.promoting, name, received)
            if promoted:
                t.note(t.done, name, received)

        def route(body: dict[str, Any], received: float) -> None:
            name = body["metadata"]["name"]
            for rule in body["spec"].get("rules", []):
                for ref in rule.get("backendRefs", []):
                    if ref["name"] == f"{name}-{self.canary}":
                        weight = int(ref.get("weight", 0))
                        t.note(
                            {20: t.first_step, 50: t.second_step}.get(weight, {}), name, received
                        )

        stream(api_client, GROUP, VERSION, PLURAL, rollout, t.lock)
        stream(api_client, "gateway.networking.k8s.io", "v1", "httproutes", route, t.lock)


class Flagger(System):
    name = "Flagger"
    account = "flagger-bench"

    def install(self, kubectl: list[str], api_client: client.ApiClient, prometheus: str) -> None:
        self.binary = toolchain.ensure_flagger()
        apply_files(kubectl, [toolchain.flagger_crd_file()])
        template = {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "MetricTemplate",
            "metadata": {"name": "error-ratio"},
            "spec": {"provider": {"type": "prometheus", "address": prometheus}, "query": QUERY},
        }
        create_object(api_client, "metrictemplates", template)

    def start(self, kubeconfig: str, prometheus: str, log_dir: Path) -> int:
        command = [
            str(self.binary), "-kubeconfig", kubeconfig, "-mesh-provider", "gatewayapi:v1",
            "-metrics-server", prometheus, "-namespace", NAMESPACE, "-log-level", "info",
            "-port", str(free_port()),
        ]  # fmt: skip
        env = {"PATH": "/usr/bin:/bin", "POD_NAMESPACE": scale.OPERATOR_NAMESPACE}
        return self.process.start(command, log_dir / "flagger.log", env)

    def create(self, api_client: client.ApiClient, name: str) -> None:
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": pod_template(name, "v1"),
            },
        }
        client.AppsV1Api(api_client).create_namespaced_deployment(NAMESPACE, deployment)
        canary = {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": name},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "progressDeadlineSeconds": 600,
                "service": {
                    "port": 8000,
                    "gatewayRefs": [{"name": GATEWAY, "namespace": NAMESPACE}],
                },
                "analysis": {
                    "interval": f"{self.args.pause}s",
                    "threshold": 2,
                    "stepWeights": [20, 50],
                    "metrics": [
                        {
                            "name": "error-ratio",
                            "templateRef": {"name": "error-ratio"},
                            "thresholdRange": {"max": 0.05},
                            "interval": "1m",
                        }
                    ],
                },
            },
        }
        create_object(api_client, "canaries", canary)

    def change(self, api_client: client.ApiClient, name: str) -> None:
        client.AppsV1Api(api_client).patch_namespaced_deployment(
            name, NAMESPACE, revision_patch("v2")
        )

    def watch(self, api_client: client.ApiClient) -> None:
        t = self.timeline

        def canary(body: dict[str, Any], received: float) -> None:
            name = body["metadata"]["name"]
            phase = (body.get("status") or {}).get("phase")
            if phase == "Initialized":
                t.stable.add(name)
            if phase == "Promoting":
                t.note(t.promoting, name, received)
            if phase == "Succeeded":
                t.note(t.promoting, name, received)
                t.note(t.done, name, received)

        def route(body: dict[str, Any], received: float) -> None:
            name = body["metadata"]["name"]
            for rule in body["spec"].get("rules", []):
                for ref in rule.get("backendRefs", []):
                    if ref["name"] != f"{name}-canary":
                        continue
                    weight = int(ref.get("weight", 0))
                    # Flagger's pause is its interval: from the weight's write to the next tick.
                    if weight == 20:
                        t.note(t.first_step, name, received)
                        t.note(t.first_pause, name, received)
                    if weight == 50:
                        t.note(t.second_step, name, received)
                        t.note(t.last_pause, name, received)

        stream(api_client, "flagger.app", "v1beta1", "canaries", canary, t.lock)
        stream(api_client, "gateway.networking.k8s.io", "v1", "httproutes", route, t.lock)


class ArgoRollouts(System):
    name = "Argo Rollouts"
    account = "argo-rollouts-bench"

    def install(self, kubectl: list[str], api_client: client.ApiClient, prometheus: str) -> None:
        self.binary = toolchain.ensure_argo_rollouts()
        apply_files(kubectl, toolchain.argo_rollouts_crd_files())
        template = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "error-ratio"},
            "spec": {
                "metrics": [
                    {
                        "name": "error-ratio",
                        "interval": self.args.analysis_interval,
                        "successCondition": "result[0] < 0.05",
                        "provider": {"prometheus": {"address": prometheus, "query": QUERY}},
                    }
                ]
            },
        }
        create_object(api_client, "analysistemplates", template)

    def start(self, kubeconfig: str, prometheus: str, log_dir: Path) -> int:
        command = [
            str(self.binary), "--kubeconfig", kubeconfig, "--namespaced", "--namespace", NAMESPACE,
            "--leader-elect=false", "--metricsport", str(free_port()),
            "--healthzPort", str(free_port()), "--loglevel", "info",
        ]  # fmt: skip
        env = {"PATH": "/usr/bin:/bin", "POD_NAMESPACE": scale.OPERATOR_NAMESPACE}
        return self.process.start(command, log_dir / "argo-rollouts.log", env)

    def create(self, api_client: client.ApiClient, name: str) -> None:
        pause = {"pause": {"duration": f"{self.args.pause}s"}}
        rollout = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": pod_template(name, "v1"),
                "strategy": {
                    "canary": {
                        "steps": [{"setWeight": 20}, pause, {"setWeight": 50}, pause],
                        "analysis": {"templates": [{"templateName": "error-ratio"}]},
                    }
                },
            },
        }
        create_object(api_client, "rollouts", rollout)

    def change(self, api_client: client.ApiClient, name: str) -> None:
        client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            "argoproj.io", "v1alpha1", NAMESPACE, "rollouts", name, revision_patch("v2")
        )

    def watch(self, api_client: client.ApiClient) -> None:
        t = self.timeline

        def rollout(body: dict[str, Any], received: float) -> None:
            name = body["metadata"]["name"]
            status = body.get("status") or {}
            settled = status.get("stableRS") and status.get("stableRS") == status.get(
                "currentPodHash"
            )
            if status.get("phase") == "Healthy" and settled:
                t.stable.add(name)
            if name not in t.changed or status.get("observedGeneration") is None:
                return
            # A status of the new revision: its pod hash differs from the stable one's.
            if not settled or name in t.first_step:
                index = int(status.get("currentStepIndex") or 0)
                if index >= 1:
                    t.note(t.first_step, name, received)
                if index >= 3:
                    t.note(t.second_step, name, received)
                if index >= 4:
                    t.note(t.promoting, name, received)
                for condition in status.get("pauseConditions") or []:
                    started = t.moment(condition["startTime"])
                    t.note({1: t.first_pause, 3: t.last_pause}.get(index, {}), name, started)
            if settled and status.get("phase") == "Healthy" and name in t.first_step:
                t.note(t.promoting, name, received)
                t.note(t.done, name, received)

        stream(api_client, "argoproj.io", "v1alpha1", "rollouts", rollout, t.lock)


SYSTEMS: dict[str, type[System]] = {
    "modelrollout": ModelRollout,
    "flagger": Flagger,
    "argo": ArgoRollouts,
}


@dataclass
class Figures:
    first_step_p99: float | None
    next_step_p99: float | None
    promotion_p99: float | None
    progression: float
    completed: int
    mutating_per_rollout: float
    requests_per_rollout: float
    idle_writes: int
    idle_reads: int
    peak_rss_mib: float
    cpu_cores: float
    cpu_seconds: float
    idle_cpu_cores: float
    prometheus_queries: int


def p99(values: list[float]) -> float | None:
    return scale.percentile(values, 0.99) if values else None


def run(system_class: type[System], args: argparse.Namespace) -> Figures:
    count = args.rollouts
    timeline = Timeline()
    system = system_class(args, timeline)
    user = f"system:serviceaccount:{scale.OPERATOR_NAMESPACE}:{system.account}"
    gpu_nodes = math.ceil(2 * count / scale.GPUS_PER_NODE) + 1
    cluster.down(scale.CLUSTER)
    state = cluster.up(
        scale.CLUSTER, gpu_nodes=gpu_nodes, gpus_per_node=scale.GPUS_PER_NODE, cpu_nodes=1,
        audit_users=(user,),
        # kwok pods run no server: nothing to scrape, as in the runs before 5dc8869.
        scrape_model_pods=False,
    )  # fmt: skip
    kubectl = [state.kubectl, "--kubeconfig", state.kubeconfig]
    subprocess.run([*kubectl, "create", "ns", NAMESPACE], check=True, capture_output=True)
    api_client = config.new_client_from_config(config_file=state.kubeconfig)
    kubeconfig = scale.prepare_operator_identity(state, api_client, system.account)
    exporter = MetricsEndpoint(lambda: "bench_error_ratio 0\n")
    state.prometheus.register_target("bench-peers", exporter.address, {})
    proxy = CountingProxy(state.prometheus_url)
    names = [f"m-{index:04d}" for index in range(count)]
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench-peers-{system_class.__name__.lower()}-"))
    print(f"[{system.name}] logs in {log_dir}", flush=True)
    try:
        system.install(kubectl, api_client, proxy.url)
        system.watch(api_client)
        pid = system.start(kubeconfig, proxy.url, log_dir)
        sampler = scale.ProcessSampler(pid)
        started = time.monotonic()
        for name in names:
            system.create(api_client, name)
        scale.wait_for(
            lambda: len(timeline.stable) >= count, 120 + 2 * count, f"{system.name}: all stable"
        )
        print(f"[{system.name}] {count} stable in {time.monotonic() - started:.0f}s", flush=True)
        time.sleep(5)

        wall_start, cpu_start = time.time(), sampler.cpu_seconds()
        queries_start = proxy.requests
        progress_start = time.monotonic()
        for index, name in enumerate(names):
            time.sleep(max(0.0, progress_start + index / args.change_rate - time.monotonic()))
            with timeline.lock:
                timeline.changed[name] = time.monotonic()
            system.change(api_client, name)
        try:
            scale.wait_for(lambda: len(timeline.done) == count, args.deadline, "promotions")
        except TimeoutError:
            print(f"[{system.name}] deadline: {len(timeline.done)} of {count} done", flush=True)
        finished = max(timeline.done.values(), default=time.monotonic())
        progression = finished - progress_start
        wall_end, cpu_end = time.time(), sampler.cpu_seconds()
        queries = proxy.requests - queries_start
        counts = scale.audit_counts(
            cluster.audit_log_path(scale.CLUSTER), wall_start, wall_end, user
        )
        time.sleep(10)
        idle_start, idle_cpu_start = time.time(), sampler.cpu_seconds()
        time.sleep(args.idle)
        idle_end, idle_cpu_end = time.time(), sampler.cpu_seconds()
        idle = scale.audit_counts(cluster.audit_log_path(scale.CLUSTER), idle_start, idle_end, user)
        peak_rss = max(sampler.peak_rss, sampler.rss())
        sampler.stop()
    finally:
        system.stop()
        state.prometheus.unregister_target("bench-peers")
        if not args.keep:
            cluster.down(scale.CLUSTER)

    t = timeline
    pause = float(args.pause)
    first_step = [t.first_step[n] - t.changed[n] for n in t.first_step]
    next_step = [
        t.second_step[n] - (t.first_pause[n] + pause) for n in t.second_step if n in t.first_pause
    ]
    promotion = [
        t.promoting[n] - (t.last_pause[n] + pause) for n in t.promoting if n in t.last_pause
    ]
    mutating = sum(n for (verb, _), n in counts.items() if verb in scale.MUTATING)
    idle_writes = sum(n for (verb, _), n in idle.items() if verb in scale.MUTATING)
    scale.print_audit(
        f"[{system.name}] API requests during the progression", counts, count, "rollout"
    )
    for label, values in (
        ("spec change -> first step applied", first_step),
        ("pause end -> next step applied", next_step),
        ("last pause end -> promotion started", promotion),
    ):
        print(f"[{system.name}] {scale.summary(label, values)}", flush=True)
    return Figures(
        first_step_p99=p99(first_step),
        next_step_p99=p99(next_step),
        promotion_p99=p99(promotion),
        progression=progression,
        completed=len(t.done),
        mutating_per_rollout=mutating / count,
        requests_per_rollout=sum(counts.values()) / count,
        idle_writes=idle_writes,
        idle_reads=sum(idle.values()) - idle_writes,
        peak_rss_mib=peak_rss / 2**20,
        cpu_cores=(cpu_end - cpu_start) / (wall_end - wall_start),
        cpu_seconds=cpu_end - cpu_start,
        idle_cpu_cores=(idle_cpu_end - idle_cpu_start) / (idle_end - idle_start),
        prometheus_queries=queries,
    )


ROWS: list[tuple[str, Callable[[Figures], float | None], str]] = [
    ("spec change -> first step applied, p99", lambda f: f.first_step_p99, "{:.2f} s"),
    ("pause end -> next step, p99", lambda f: f.next_step_p99, "{:.2f} s"),
    ("last pause end -> promotion started, p99", lambda f: f.promotion_p99, "{:.2f} s"),
    ("whole progression", lambda f: f.progression, "{:.0f} s"),
    ("mutating API calls per rollout", lambda f: f.mutating_per_rollout, "{:.1f}"),
    ("all API requests per rollout", lambda f: f.requests_per_rollout, "{:.1f}"),
    ("writes in the idle window", lambda f: f.idle_writes, "{:.0f}"),
    ("reads in the idle window", lambda f: f.idle_reads, "{:.0f}"),
    ("controller peak RSS", lambda f: f.peak_rss_mib, "{:.0f} MiB"),
    ("controller CPU, cores (mean over the progression)", lambda f: f.cpu_cores, "{:.3f}"),
    # The same work at each system's own pace: a slower progression spreads its CPU thinner.
    (
        "controller CPU per rollout (CPU time over the progression / N)",
        lambda f: 1000 * f.cpu_seconds / f.completed if f.completed else None,
        "{:.0f} ms",
    ),
    ("controller CPU in the idle window, cores", lambda f: f.idle_cpu_cores, "{:.4f}"),
    ("Prometheus queries", lambda f: f.prometheus_queries, "{:.0f}"),
]


def table(results: dict[str, Figures]) -> str:
    """A Markdown table, each peer's figure with its ratio to modelrollout's (peer / ours)."""
    names = list(results)
    ours = results.get("modelrollout")
    lines = [
        "| figure | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for label, value_of, form in ROWS:
        cells = []
        for name in names:
            value = value_of(results[name])
            if value is None:
                cells.append("n/a")
                continue
            cell = form.format(value)
            base = value_of(ours) if ours is not None and name != "modelrollout" else None
            if base:
                cell += f" ({value / base:.2f}x)"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    done = ", ".join(f"{name} {results[name].completed}" for name in names)
    lines.append(f"\nrollouts completed: {done}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scale.add_scenario_arguments(parser)
    parser.add_argument(
        "--systems", default="modelrollout,flagger,argo",
        help=f"comma-separated, run in this order; of {', '.join(SYSTEMS)}",
    )  # fmt: skip
    args = parser.parse_args()
    chosen = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SYSTEMS]
    if unknown:
        parser.error(f"--systems: unknown {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    results: dict[str, Figures] = {}
    for name in chosen:
        system_class = SYSTEMS[name]
        results[system_class.name] = run(system_class, args)
    print(
        f"\nN={args.rollouts}, spec changes at {args.change_rate:g}/s, pauses {args.pause}s, "
        f"analysis every {args.analysis_interval}, one system after another:\n"
    )
    print(table(results))
    loads = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average at the end: {' '.join(loads)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
