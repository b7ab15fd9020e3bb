"""Failed client requests while a ModelRollout's pods leave service, per engine.

On the local cluster with the real operator, each serving pod runs as a real
local process on the harness node (`PodProcesses`: modelserve for engine
torch, vLLM's CPU build for engine vllm, each running the command line the
operator wrote, Ready from its own probes, terminated as a kubelet does:
out of rotation, preStop, SIGTERM, SIGKILL at the end of the grace period),
and client traffic goes through a gateway (`--gateway`): Traefik, a real Gateway
API implementation, serving the routes of the gatewayAPI router (the default),
or the project's proxy in front of the rollout's Service (the service router;
the earlier rows, and vLLM, whose answers do not name their pod).

A pod leaves service when its revision is replaced or rolled back, or when
the rollout is scaled down. By `--leave`, each cycle:
- `promotion`: rolls out a new revision of the same model (only a pod
  annotation differs) as a canary at setWeight 50, then after a short pause
  promotes it; the previous revision's Deployment goes 1 -> 0 and its pod
  leaves while the load has requests in flight on it;
- `rollback`: the same canary, and once it answers requests the user aborts
  (`modelrollout.dev/abort`); the canary's weight goes to 0 and its pod
  leaves with requests in flight on it;
- `scaledown`: with two stable pods serving, scales the rollout to one
  (`spec.runtime.replicas`, what `kubectl scale` writes through the scale
  subresource: no new revision), waits until the pod the ReplicaSet chose
  has gone, then scales back to two.
At most two servers run at once.

The load: `--workers` client threads, each sending completions of `--tokens`
(200-400 by default, ignore_eos) in turn streamed and not, through the gateway,
for the whole run. A request fails when it gets no 200, raises, or (streamed)
ends without a finish_reason of "length"/"stop" and `[DONE]`, or (not
streamed) without every token asked for. A request is in flight at a pod's
departure when that pod served it (modelserve's `x-modelserve-pod`, or the
proxy's `x-served-by-pod`), it started before the pod left rotation and ended
after; cut when such a request failed.

    .venv/bin/python bench/drain.py --engine torch --cycles 10              # after
    .venv/bin/python bench/drain.py --engine torch --cycles 10 --no-drain   # before
    .venv/bin/python bench/drain.py --engine torch --cycles 10 --leave rollback
    .venv/bin/python bench/drain.py --engine torch --cycles 10 --leave scaledown
    .venv/bin/python bench/drain.py --engine vllm --cycles 10 --gateway proxy

`--node real` runs the pods on the local cluster's real node instead
(realnode.py: a kubelet on containerd, real containers of the serving image
`make images` builds, real probes and SIGTERM from the kubelet, real pod
network), with the image's own tiny model; engine torch through Traefik only.

    .venv/bin/python bench/drain.py --node real --cycles 20 --leave rollback

`--no-drain` runs the operator with its pod spec less the drain work: no
preStop sleep and a drain time of 0 (modelserve's --drain-timeout 0, vLLM's
--shutdown-timeout 0: abort in-flight requests). It changes the operator
process of this bench only (a sitecustomize on its path), never the product.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from kubernetes import config

from modelrollout.engine.commands import annotation_for
from modelrollout.kube.api import MODELROLLOUTS, KubeApi
from modelrollout.kube.labels import GROUP, VERSION
from modelrollout_dev import cluster, realnode
from modelrollout_dev.gateway import Gateway
from modelrollout_dev.load import served_revision, wait_until_served
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.podprocesses import PodProcesses
from modelrollout_dev.traefik import Traefik
from modelserve.http_defaults import SERVED_BY_HEADER

NAMESPACE = "bench-drain"
NAME = "chat"
GATEWAY = "bench-gw"
CYCLE_ANNOTATION = "bench.modelrollout.dev/cycle"
POLL_SECONDS = 0.02
PROMPTS = (
    "Summarise why a canary rollout shifts traffic in small steps.",
    "Write a short note to the on-call engineer about the model upgrade tonight.",
    "Explain what a readiness probe protects a model server from.",
    "List three things to check before promoting a new model revision.",
)
ENGINES: dict[str, dict[str, Any]] = {
    "torch": {"engine": "torch", "image": "modelrollout/modelserve:dev"},
    "vllm": {
        "engine": "vllm",
        "image": "vllm/vllm-openai:v0.32.0",
        # vLLM's CPU build on this machine: a 1 GiB KV cache, float32, a context the model
        # holds, and no torch.compile (minutes per start on a loaded 2-core machine).
        "env": [{"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"}],
        "args": ["--max-model-len", "512", "--dtype", "float32", "--enforce-eager"],
        "startupTimeout": "10m",
    },
}
# Loaded on the operator's interpreter with --no-drain: its pod spec without the drain work.
NO_DRAIN_SITECUSTOMIZE = """
import modelrollout.engine.podspec as podspec

_build_pod_spec = podspec.build_pod_spec


def build_pod_spec(spec):
    pod_spec = _build_pod_spec(spec)
    container = pod_spec["containers"][0]
    container.pop("lifecycle", None)
    args = container["args"]
    for flag in ("--drain-timeout", "--shutdown-timeout"):
        if flag in args:
            args[args.index(flag) + 1] = "0"
    return pod_spec


podspec.build_pod_spec = build_pod_spec
"""


@dataclass
class Request:
    stream: bool
    started: float
    ended: float = 0.0
    revision: str = "none"
    pod: str = "none"
    outcome: str = ""  # "ok", or what failed: a status, an exception, a short answer

    def served_by(self, response: httpx.Response) -> None:
        """The pod (and its revision) that answers, from the server's or the proxy's headers."""
        self.revision = served_revision(response.headers, NAME)
        headers = response.headers
        self.pod = headers.get(SERVED_BY_HEADER) or headers.get("x-served-by-pod", "none")


class Load:
    """Client threads sending long completions, streamed and not, until stopped."""

    def __init__(self, url: str, workers: int, tokens: tuple[int, int], seed: int = 0) -> None:
        self.url = url
        self.tokens = tokens
        self.requests: list[Request] = []
        # Answers begun (their headers in) by revision, long before they end.
        self.answering: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(random.Random(seed + i),), daemon=True)
            for i in range(workers)
        ]

    def _run(self, rng: random.Random) -> None:
        stream = rng.random() < 0.5
        with httpx.Client(timeout=httpx.Timeout(300.0, connect=5.0)) as http:
            while not self._stop.is_set():
                max_tokens = rng.randint(*self.tokens)
                body = {
                    "model": NAME,
                    "prompt": rng.choice(PROMPTS),
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "ignore_eos": True,
                    "stream": stream,
                }
                request = Request(stream=stream, started=time.monotonic())
                try:
                    request.outcome = self._send(http, body, request)
                except httpx.HTTPError as error:
                    request.outcome = type(error).__name__
                request.ended = time.monotonic()
                with self._lock:
                    self.requests.append(request)
                stream = not stream

    def _served_by(self, request: Request, response: httpx.Response) -> None:
        request.served_by(response)
        with self._lock:
            self.answering[request.revision] += 1

    def _send(self, http: httpx.Client, body: dict[str, Any], request: Request) -> str:
        url = f"{self.url}/v1/completions"
        if not body["stream"]:
            response = http.post(url, json=body)
            self._served_by(request, response)
            if response.status_code != 200:
                return f"status {response.status_code}"
            tokens = response.json().get("usage", {}).get("completion_tokens")
            return "ok" if tokens == body["max_tokens"] else f"short answer ({tokens} tokens)"
        finish, done = None, False
        with http.stream("POST", url, json=body) as response:
            self._served_by(request, response)
            if response.status_code != 200:
                response.read()
                return f"status {response.status_code}"
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    done = True
                    continue
                for choice in json.loads(data).get("choices", []):
                    finish = choice.get("finish_reason") or finish
        if finish not in ("length", "stop"):
            return f"stream finish_reason={finish}"
        return "ok" if done else "stream without [DONE]"

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=180)

    def done(self) -> list[Request]:
        with self._lock:
            return list(self.requests)


class Departures:
    """When each harness pod left rotation (its endpoint turned unhealthy for good)."""

    def __init__(self, pods: PodProcesses | realnode.NodePods) -> None:
        self._pods = pods
        self.healthy_until: dict[str, tuple[str, float]] = {}  # pod -> (revision, time)
        self.left: dict[str, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            endpoints = self._pods.endpoints()
            for name, endpoint in endpoints.items():
                if endpoint.healthy:
                    self.healthy_until[name] = (endpoint.revision, now)
                    self.left.pop(name, None)
                elif name in self.healthy_until and name not in self.left:
                    self.left[name] = self.healthy_until[name]
            for name, last_healthy in self.healthy_until.items():
                if name not in endpoints and name not in self.left:
                    self.left[name] = last_healthy
            self._stop.wait(POLL_SECONDS)

    def start(self) -> Departures:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def manifest(
    args: argparse.Namespace, model_uri: str, placement: dict[str, Any], cycle: int
) -> dict[str, Any]:
    engine, grace, leave = args.engine, args.grace, args.leave
    runtime = {
        **ENGINES[engine],
        "replicas": 2 if leave == "scaledown" else 1,
        "terminationGracePeriod": grace,
        "podAnnotations": {CYCLE_ANNOTATION: str(cycle)},
        **placement,
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRollout",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "model": {"name": NAME, "uri": model_uri},
            "runtime": runtime,
            "traffic": (
                {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": GATEWAY}]}}
                if args.gateway == "traefik"
                else {"router": "service"}
            ),
            "strategy": {
                # rollback: the canary waits at 50% for the bench's abort.
                "canary": {
                    "steps": [
                        {"setWeight": 50},
                        {"pause": {"duration": "3s"} if leave == "promotion" else {}},
                    ]
                }
            },
            "progressDeadline": "30m",
        },
    }


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def status(api: KubeApi) -> dict[str, Any]:
    status: dict[str, Any] = (api.get(MODELROLLOUTS, NAMESPACE, NAME) or {}).get("status", {})
    return status


def promoted_from(api: KubeApi, previous: str) -> bool:
    return status(api).get("phase") == "Succeeded" and status(api).get("stableRevision") != previous


def gone(pods: PodProcesses | realnode.NodePods, revision: str) -> bool:
    return all(endpoint.revision != revision for endpoint in pods.endpoints().values())


def roll_back_once_serving(api: KubeApi, load: Load, cycle: int) -> str:
    """Abort the canary once it has answered requests at 50%; the revision rolled back."""
    wait(lambda: status(api).get("phase") == "Paused", 900, f"cycle {cycle}: the canary at 50%")
    canary: str = status(api)["canaryRevision"]
    # Answers through the canary begin (headers) while others are still being generated.
    wait(lambda: load.answering[canary] >= 2, 300, f"cycle {cycle}: the canary serving")
    api.merge_patch(
        MODELROLLOUTS,
        NAMESPACE,
        NAME,
        {"metadata": {"annotations": {annotation_for("abort"): f"cycle-{cycle}"}}},
    )
    wait(lambda: status(api).get("phase") == "RolledBack", 300, f"cycle {cycle}: rollback")
    return canary


def scale_down_once(
    api: KubeApi, pods: PodProcesses | realnode.NodePods, load: Load, revision: str, cycle: int
) -> None:
    """From two serving pods of `revision` to one, as `kubectl scale` does; then back to two.

    Both pods first answer requests: the ReplicaSet removes the one that became
    Ready last, which, removed as soon as it is Ready, would have served nothing.
    """

    def names(healthy_only: bool) -> set[str]:
        endpoints = [(n, e) for n, e in pods.endpoints().items() if e.revision == revision]
        return {n for n, e in endpoints if e.healthy or not healthy_only}

    def served(pod: str) -> int:
        return sum(1 for request in load.done() if request.pod == pod)

    wait(lambda: len(names(healthy_only=True)) == 2, 600, f"cycle {cycle}: two serving pods")
    before = names(healthy_only=False)
    wait(lambda: all(served(pod) >= 2 for pod in before), 300, f"cycle {cycle}: both serving")
    scale = {"spec": {"runtime": {"replicas": 1}}}
    api.merge_patch(MODELROLLOUTS, NAMESPACE, NAME, scale)
    wait(lambda: len(names(healthy_only=False) & before) == 1, 300, f"cycle {cycle}: a pod gone")
    scale["spec"]["runtime"]["replicas"] = 2
    api.merge_patch(MODELROLLOUTS, NAMESPACE, NAME, scale)


def make_model(root: Path) -> Path:
    """The tiny Llama both engines serve (head_dim 64: vLLM's CPU attention needs >= 32)."""
    path = root / "tiny-drain"
    if not (path / "config.json").is_file():
        subprocess.run(
            [sys.executable, "-m", "modelserve.cli", "make-tiny-model", str(path),
             "--hidden-size", "256", "--heads", "4", "--kv-heads", "2", "--layers", "2"],
            check=True, capture_output=True,
        )  # fmt: skip
    return path


def run_engine(
    api: KubeApi, state: cluster.ClusterState, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    engine = args.engine
    pods: PodProcesses | realnode.NodePods
    if args.node == "real":
        pods = realnode.NodePods(api, NAMESPACE, realnode.SERVING_IMAGE)
        model_uri = realnode.serving_image_model(0)
    else:
        pods = PodProcesses(api, NAMESPACE, state.pod_network, work / "pods").start()
        model_uri = f"file://{make_model(work)}"
    if args.gateway == "traefik":
        gateway: Traefik | Gateway = Traefik(
            state.kubeconfig, work, NAMESPACE, gateway_name=GATEWAY, namespaces=(NAMESPACE,)
        )
        gateway.start()
    else:
        assert isinstance(pods, PodProcesses), "main() refuses the proxy with --node real"
        gateway = Gateway(api, NAMESPACE, pods, service=NAME).start()
    extra_env: dict[str, str] = {}
    if args.no_drain:
        shim = work / "no-drain"
        shim.mkdir(parents=True, exist_ok=True)
        (shim / "sitecustomize.py").write_text(NO_DRAIN_SITECUSTOMIZE)
        extra_env["PYTHONPATH"] = ":".join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))
    operator = OperatorProcess(state.kubeconfig, NAMESPACE, work, 1.0, extra_env=extra_env)
    operator.start()
    departures = Departures(pods).start()
    cycle_times: list[float] = []
    load: Load | None = None
    try:
        first = manifest(args, model_uri, pods.placement(), 0)
        api.create(MODELROLLOUTS, NAMESPACE, first)
        wait(lambda: status(api).get("phase") == "Succeeded", 600, "the first revision stable")

        def serving(revision: str) -> bool:
            return any(e.healthy and e.revision == revision for e in pods.endpoints().values())

        stable = status(api)["stableRevision"]
        wait(lambda: serving(stable), 600, "the first server to load")
        # The gateway programs the route and endpoints in its own time: count from its first 200.
        wait_until_served(gateway.url, NAME)
        load = Load(gateway.url, args.workers, args.tokens).start()
        time.sleep(3)
        for cycle in range(1, args.cycles + 1):
            began = time.monotonic()
            if args.leave == "scaledown":
                scale_down_once(api, pods, load, stable, cycle)
                moved = f"{stable} scaled 2 -> 1 -> 2"
            else:
                body = manifest(args, model_uri, pods.placement(), cycle)
                api.merge_patch(MODELROLLOUTS, NAMESPACE, NAME, {"spec": body["spec"]})
                if args.leave == "promotion":
                    previous = stable
                    wait(partial(promoted_from, api, previous), 900, f"cycle {cycle}: promotion")
                    stable = status(api)["stableRevision"]
                    moved = f"{previous} -> {stable}"
                else:
                    previous = roll_back_once_serving(api, load, cycle)
                    moved = f"{previous} rolled back"
                wait(partial(gone, pods, previous), 300, f"cycle {cycle}: the previous pod gone")
            cycle_times.append(time.monotonic() - began)
            failed = Counter(r.outcome for r in load.done() if r.outcome != "ok")
            print(
                f"[{engine}] cycle {cycle:2d}: {moved} in "
                f"{cycle_times[-1]:.0f}s; {len(load.done())} requests, "
                f"{sum(failed.values())} failed {dict(failed)}",
                flush=True,
            )
        time.sleep(2)
    finally:
        if load is not None:
            load.stop()
        departures.stop()
        operator.stop()
        gateway.stop()
        pods.stop()
        subprocess.run(
            [state.kubectl, "--kubeconfig", state.kubeconfig, "delete", "modelrollout", NAME,
             "-n", NAMESPACE, "--ignore-not-found", "--wait=false"],
            capture_output=True,
        )  # fmt: skip
    assert load is not None
    requests = load.done()
    failures = Counter(r.outcome for r in requests if r.outcome != "ok")
    in_flight, cut = 0, Counter[str]()
    for pod, (_, left_at) in departures.left.items():
        for request in requests:
            if request.pod == pod and request.started < left_at < request.ended:
                in_flight += 1
                if request.outcome != "ok":
                    cut[request.outcome] += 1
    durations = sorted(r.ended - r.started for r in requests if r.outcome == "ok")
    return {
        "engine": engine,
        "node": args.node,
        "gateway": args.gateway,
        "drain": "off (--no-drain)" if args.no_drain else "on (the operator's pod spec)",
        "pods_leave_by": args.leave,
        "termination_grace_period": args.grace,
        "workers": args.workers,
        "max_tokens": "-".join(map(str, args.tokens)),
        "cycles": len(cycle_times),
        "departures": len(departures.left),
        "requests": len(requests),
        "streamed": sum(1 for r in requests if r.stream),
        "failed": sum(failures.values()),
        "failed_by": dict(failures),
        "in_flight_at_departure": in_flight,
        "in_flight_cut": sum(cut.values()),
        "requests_by_pod": dict(Counter(r.pod for r in requests)),
        "cut_by": dict(cut),
        "ok_seconds_median": round(durations[len(durations) // 2], 1) if durations else None,
        "ok_seconds_max": round(durations[-1], 1) if durations else None,
        "cycle_seconds_median": sorted(cycle_times)[len(cycle_times) // 2] if cycle_times else 0,
        **({"proxy_failed": gateway.snapshot()["failed"]} if isinstance(gateway, Gateway) else {}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=sorted(ENGINES), default="torch")
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument(
        "--workers",
        type=int,
        help="client threads (default: 4 for vllm, 2 for torch, whose 400-token answers took "
        "over 2 minutes with 4 at once on a loaded 2-core machine, past the gateway's timeout)",
    )
    parser.add_argument(
        "--no-drain",
        action="store_true",
        help="the operator's pod spec without preStop and with a drain time of 0 (before)",
    )
    parser.add_argument(
        "--grace",
        default="180s",
        help="runtime.terminationGracePeriod: longer than the longest request (default 180s: "
        "a 400-token modelserve answer took over 50 s on a loaded 2-core machine)",
    )
    parser.add_argument(
        "--tokens",
        type=lambda text: tuple(int(n) for n in text.split("-", 1)),
        default=(200, 400),
        help="the range of max_tokens (ignore_eos) of each request, MIN-MAX",
    )
    parser.add_argument(
        "--leave",
        choices=("promotion", "rollback", "scaledown"),
        default="promotion",
        help="how each cycle's pod leaves: the stable's on promotion, the canary's when "
        "the user aborts at 50%%, or one of two stable pods on a scale to one "
        "(default: promotion)",
    )
    parser.add_argument(
        "--gateway",
        choices=("traefik", "proxy"),
        default="traefik",
        help="Traefik serving the gatewayAPI router's routes (default), or the project's "
        "proxy in front of the service router's Service",
    )
    parser.add_argument(
        "--node",
        choices=("harness", "real"),
        default="harness",
        help="where the pods run: the harness's processes on a kwok node (default), or "
        "containers on the real node (needs `make images` and Debian's containerd)",
    )
    parser.add_argument(
        "--cluster",
        help="the local cluster to run on (started if not running; default: one per engine "
        "and mode, so that runs can go side by side)",
    )
    parser.add_argument("--keep-cluster", action="store_true")
    args = parser.parse_args()
    if args.node == "real" and (args.engine, args.gateway) != ("torch", "traefik"):
        parser.error("--node real runs engine torch through Traefik")
    if args.engine == "vllm" and args.gateway == "traefik":
        parser.error("--engine vllm needs --gateway proxy: vLLM's answers do not name their pod")
    if args.workers is None:
        args.workers = 4 if args.engine == "vllm" else 2
    # Stopped with SIGTERM (e.g. from a background job, where SIGINT is ignored), still clean up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    cluster_name = args.cluster or (
        f"bench-drain-{args.engine}{'-off' if args.no_drain else ''}"
        f"{ {'promotion': '', 'rollback': '-rb', 'scaledown': '-sd'}[args.leave] }"
        f"{'-real' if args.node == 'real' else ''}"
    )
    state = cluster.up(cluster_name, gpu_nodes=1, gpus_per_node=1)
    if args.node == "real":
        node = cluster.start_real_node(state)
        realnode.ensure_image(node, realnode.SERVING_IMAGE)
    crd = Path(__file__).resolve().parents[1] / "crds" / "modelrollouts.modelrollout.dev.yaml"
    kubectl = [state.kubectl, "--kubeconfig", state.kubeconfig]
    try:
        subprocess.run(
            [*kubectl, "apply", "--server-side", "-f", str(crd)], check=True, capture_output=True
        )
        subprocess.run([*kubectl, "delete", "ns", NAMESPACE, "--ignore-not-found", "--wait"],
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run([*kubectl, "create", "ns", NAMESPACE], check=True, capture_output=True)
        api = KubeApi(config.new_client_from_config(config_file=state.kubeconfig))
        work = Path(tempfile.mkdtemp(prefix=f"bench-drain-{args.engine}-"))
        print(f"[{args.engine}] logs in {work}", flush=True)
        result = run_engine(api, state, args, work)
    finally:
        if not args.keep_cluster:
            cluster.down(cluster_name)
    print(json.dumps(result, indent=2))
    print(
        f"{result['engine']} on {result['node']} through {result['gateway']}, "
        f"drain {result['drain']}, "
        f"pods leave by {result['pods_leave_by']}: "
        f"{result['cycles']} cycles "
        f"({result['departures']} pods left), {result['requests']} requests, "
        f"{result['failed']} failed {result['failed_by']}, "
        f"{result['in_flight_cut']} of {result['in_flight_at_departure']} in flight at a "
        f"departure cut {result['cut_by']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
