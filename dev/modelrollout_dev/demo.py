"""`modelrollout demo`: a real rollout on the local cluster, narrated.

Starts the local cluster and Prometheus, installs the CRD, runs the operator,
and drives traffic through real model servers run as the pods' own command lines
(the harness is the kubelet of a node of its own; see `podprocesses`), printing
the progress as it goes. Requests go through Traefik, a real Gateway API
implementation, in front of the rollout's Service (the torch scenes), or through
the project's proxy (`gateway`), which names the revision each answer came from
(the vLLM scenes: vLLM's answers do not say).

- engine torch (the default): a good revision promoted, then a bad one
  (injected errors) rolled back on its own;
- engine vllm: the torch revision moved to vLLM (its CPU build) with the same
  weights, judged by a quality gate that compares both engines' greedy answers
  and promoted; then a vLLM revision that runs one request at a time
  (`--max-num-seqs 1`), rolled back by its time to first token against stable.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import config

from modelrollout.kube.api import CONFIGMAPS, HTTPROUTES, MODELROLLOUTS, KubeApi
from modelrollout.kube.labels import GROUP, VERSION
from modelrollout_dev import cluster
from modelrollout_dev.gateway import Gateway
from modelrollout_dev.load import BackgroundLoad, wait_until_served
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.podprocesses import PodProcesses, harness_node_name
from modelrollout_dev.traefik import Traefik, service_route

NAMESPACE = "demo"
ROLLOUT = "chat"
CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "modelrollouts.modelrollout.dev.yaml"


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def rollout_manifest(
    model_uri: str, prometheus_url: str, args: list[str], placement: dict[str, Any]
) -> dict[str, Any]:
    """The demo's rollout; `placement` puts its pods on the harness's node."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRollout",
        "metadata": {"name": ROLLOUT, "namespace": NAMESPACE},
        "spec": {
            "model": {"name": ROLLOUT, "uri": model_uri},
            "runtime": {
                "engine": "torch",
                "image": "modelrollout/modelserve:dev",
                "args": args,
                "replicas": 2,
                "resources": {"limits": {"nvidia.com/gpu": 1}},
                **placement,
                "startupTimeout": "2m",
                "terminationGracePeriod": "10s",
            },
            "traffic": {"router": "service"},
            "strategy": {
                "canary": {
                    "steps": [
                        {"setWeight": 25},
                        {"analysis": {"duration": "10s"}},
                        {"setWeight": 50},
                        {"analysis": {"duration": "10s"}},
                    ]
                }
            },
            "analysis": {
                "prometheus": {"address": prometheus_url, "timeout": "2s"},
                "interval": "2s",
                "checks": [
                    {
                        "name": "error-rate",
                        "builtin": "errorRate",
                        "window": "10s",
                        "breachWhen": "> 0.05",
                        "for": "4s",
                        "action": "rollback",
                    },
                    {
                        "name": "p99-latency",
                        "builtin": "latencyP99",
                        "window": "30s",
                        "breachWhen": "> 5",
                        "for": "10s",
                        "action": "pause",
                    },
                ],
                "whenMetricsUnavailable": {"action": "pause", "after": "60s"},
            },
            "progressDeadline": "3m",
        },
    }


def _describe(status: dict[str, Any]) -> str:
    weights = status.get("weights") or {}
    checks = ", ".join(
        f"{c['name']}={c['value']:.3g} ({c['state']})"
        if c.get("value") is not None
        else f"{c['name']}: {c['state']}"
        for c in status.get("checks") or []
    )
    step = status.get("currentStep")
    return (
        f"phase={status.get('phase')} step={'-' if step is None else step + 1} "
        f"weights stable/canary={weights.get('stable', 0)}/{weights.get('canary', 0)}"
        + (f" | {checks}" if checks else "")
    )


def _follow(
    api: KubeApi, done: Callable[[dict[str, Any]], bool], generation: int, timeout: float
) -> dict[str, Any]:
    """Print every change of the rollout's status until `done`; return the final status."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        body = api.get(MODELROLLOUTS, NAMESPACE, ROLLOUT) or {}
        status: dict[str, Any] = body.get("status") or {}
        if status.get("observedGeneration", 0) >= generation:
            line = _describe(status)
            if line != last:
                _say(f"  {line}")
                last = line
            if done(status):
                return status
        time.sleep(0.5)
    raise TimeoutError(f"the rollout did not finish in {timeout:.0f}s: {last}")


def _apply(api: KubeApi, manifest: dict[str, Any]) -> int:
    current = api.get(MODELROLLOUTS, NAMESPACE, ROLLOUT)
    if current is None:
        created = api.create(MODELROLLOUTS, NAMESPACE, manifest)
        return int(created["metadata"]["generation"])
    patched = api.merge_patch(MODELROLLOUTS, NAMESPACE, ROLLOUT, {"spec": manifest["spec"]})
    return int(patched["metadata"]["generation"])


def make_tiny_models(root: Path, count: int = 2) -> list[Path]:
    """Tiny random-weights models `tiny-v1`, `tiny-v2`, ... (seeds 0, 1, ...), made once."""
    paths = [root / f"tiny-v{index + 1}" for index in range(count)]
    for seed, path in enumerate(paths):
        if not (path / "config.json").is_file():
            _say(f"creating a tiny random-weights model in {path}")
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "modelserve.cli",
                    "make-tiny-model",
                    str(path),
                    "--seed",
                    str(seed),
                ],
                check=True,
                capture_output=True,
            )
    return paths


# vLLM's CPU build here: a 1 GiB KV cache, float32, a 512-token context, no torch.compile
# warm-up (half of a start on 2 cores, for a model this small).
VLLM_ARGS = ["--max-model-len", "512", "--dtype", "float32", "--enforce-eager"]
GATE_SUITE = {
    "prompts": [
        {"name": f"p{index}", "prompt": prompt, "maxTokens": 8}
        for index, prompt in enumerate(
            ["The capital of France is", "Once upon a time", "1, 2, 3, 4,", "def main():"]
        )
    ],
    # Greedy answers of the candidate against stable's: every one the same.
    "agreement": {"minRatio": 1.0},
}


def vllm_runtime(runtime: dict[str, Any], args: list[str]) -> dict[str, Any]:
    """`runtime` on engine vllm, with what its CPU build needs here."""
    return {
        **runtime,
        "engine": "vllm",
        "image": "vllm/vllm-openai:v0.32.0",
        "env": [{"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"}],
        "args": [*VLLM_ARGS, *args],
        "startupTimeout": "15m",
        "terminationGracePeriod": "60s",
        "replicas": 1,
    }


def vllm_scenes(
    api: KubeApi, pods: PodProcesses, gateway: Gateway, directory: Path, prometheus_url: str
) -> int:
    """torch to vLLM of the same weights, promoted; then a slow vLLM revision, rolled back."""
    from modelserve.tiny_model import VLLM_SHAPE, make_tiny_model

    shape = VLLM_SHAPE
    model = directory / "models" / "tiny-vllm"
    if not (model / "config.json").is_file():
        _say(f"creating a tiny random-weights model in {model}")
        make_tiny_model(model, seed=0, shape=shape)
    api.create(
        CONFIGMAPS,
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "chat-gates"},
            "data": {"suite.yaml": yaml.safe_dump(GATE_SUITE)},
        },
    )
    manifest = rollout_manifest(f"file://{model}", prometheus_url, [], pods.placement())
    spec = manifest["spec"]
    spec["runtime"]["replicas"] = 1
    spec["strategy"]["canary"]["steps"] = [
        {"setWeight": 50},
        {"analysis": {"duration": "30s"}},
        {"evaluation": {"suite": {"configMapName": "chat-gates"}, "timeout": "5m"}},
    ]
    # Against a stable on vLLM too: the built-in latency checks read each engine's metrics.
    ttft_check = {
        "name": "ttft-vs-stable",
        "builtin": "ttftP99",
        "compareTo": "stable",
        "window": "15s",
        "breachWhen": "> 2",
        "for": "3s",
        "action": "rollback",
    }
    spec["progressDeadline"] = "20m"
    _say("applying ModelRollout chat (torch engine, one replica):")
    print(yaml.safe_dump(manifest, sort_keys=False), flush=True)
    generation = _apply(api, manifest)
    stable = _follow(api, lambda s: s.get("phase") == "Succeeded", generation, 300)
    _say(f"revision {stable['stableRevision']} is stable; waiting for its server's probes")
    deadline = time.monotonic() + 300
    while not any(e.healthy for e in pods.endpoints().values()):
        if time.monotonic() > deadline:
            raise TimeoutError("the model server did not become Ready")
        time.sleep(0.5)
    with BackgroundLoad(gateway.url, ROLLOUT, workers=8) as load:
        _say("moving it to vLLM, same weights: a quality gate compares both engines' answers")
        spec["runtime"] = vllm_runtime(spec["runtime"], [])
        generation = _apply(api, manifest)
        done = ("Succeeded", "RolledBack")
        status = _follow(api, lambda s: s.get("phase") in done, generation, 1200)
        _say(f"outcome: {status['phase']}: {status.get('message', '')}")
        for gate in status.get("gates") or []:
            _say(f"  gate {gate['name']}: value {gate.get('value')} passed={gate['passed']}")
        if status["phase"] != "Succeeded":
            return 1
        _say("a vLLM revision that runs one request at a time (--max-num-seqs 1)")
        spec["runtime"] = vllm_runtime(spec["runtime"], ["--max-num-seqs", "1"])
        spec["analysis"]["checks"].append(ttft_check)
        generation = _apply(api, manifest)
        status = _follow(api, lambda s: s.get("phase") in done, generation, 1200)
        _say(f"outcome: {status['phase']}: {status.get('message', '')}")
        for entry in status.get("history", []):
            _say(f"  history: {entry['revision']} {entry['outcome']}: {entry.get('reason', '')}")
    _say("answers seen by clients, by serving revision and HTTP status:")
    for (revision, code), count in sorted(load.snapshot().items()):
        _say(f"  {revision} {code}: {count}")
    return 0 if status["phase"] == "RolledBack" else 1


def run(keep_cluster: bool, engine: str = "torch") -> int:
    _say("starting the local cluster (real kube-apiserver, scheduler, etcd; kwok nodes)")
    state = cluster.up()
    directory = Path(state.directory)
    kubectl = [state.kubectl, "--kubeconfig", state.kubeconfig]
    subprocess.run(
        [*kubectl, "apply", "--server-side", "-f", str(CRD_FILE)], check=True, capture_output=True
    )
    # A demo stopped by force leaves its harness node and pods behind: with no kubelet
    # left to finish them, the pods would hold the namespace's deletion for ever.
    subprocess.run(
        [*kubectl, "delete", "node", harness_node_name(NAMESPACE), "--ignore-not-found"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*kubectl, "delete", "pods", "--all", "-n", NAMESPACE, "--force", "--grace-period=0"],
        capture_output=True,
    )
    subprocess.run(
        [*kubectl, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait"],
        check=True,
        capture_output=True,
    )
    subprocess.run([*kubectl, "create", "namespace", NAMESPACE], check=True, capture_output=True)
    models = make_tiny_models(directory / "models")
    api = KubeApi(config.new_client_from_config(config_file=state.kubeconfig))

    # The quality gate's Job runs `modelserve eval`: an image a vLLM image is not.
    operator = OperatorProcess(
        state.kubeconfig,
        NAMESPACE,
        directory,
        tick_interval=1.0,
        extra_env={"MODELROLLOUT_EVALUATION_IMAGE": "modelrollout/modelserve:dev"},
    )
    operator.start()
    _say(f"operator running (pid {operator.pid}, log {operator.log_path})")
    pods = PodProcesses(api, NAMESPACE, state.pod_network, directory / "demo-pods").start()
    gateway: Gateway | Traefik
    if engine == "vllm":
        gateway = Gateway(api, NAMESPACE, pods, service=ROLLOUT).start()
    else:
        gateway = Traefik(state.kubeconfig, directory, NAMESPACE, namespaces=(NAMESPACE,))
        gateway.start()
        api.create(HTTPROUTES, NAMESPACE, service_route(NAMESPACE, gateway.gateway_name, ROLLOUT))
    load = BackgroundLoad(gateway.url, ROLLOUT)
    try:
        if isinstance(gateway, Gateway):
            return vllm_scenes(api, pods, gateway, directory, state.prometheus_url)
        first = rollout_manifest(f"file://{models[0]}", state.prometheus_url, [], pods.placement())
        _say("applying ModelRollout chat (torch engine, tiny model v1):")
        print(yaml.safe_dump(first, sort_keys=False), flush=True)
        generation = _apply(api, first)
        status = _follow(api, lambda s: s.get("phase") == "Succeeded", generation, 120)
        stable = status["stableRevision"]
        _say(f"revision {stable} is stable; waiting for its model servers to load")
        deadline = time.monotonic() + 120
        while sum(e.healthy for e in pods.endpoints().values()) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError("the model servers did not become healthy")
            time.sleep(0.5)
        wait_until_served(gateway.url, ROLLOUT)
        load.start()
        _say(f"sending traffic through Traefik at {gateway.url}, in front of Service {ROLLOUT}")

        _say("rolling out a good revision (model v2)")
        good = rollout_manifest(f"file://{models[1]}", state.prometheus_url, [], pods.placement())
        generation = _apply(api, good)
        status = _follow(
            api, lambda s: s.get("phase") in ("Succeeded", "RolledBack"), generation, 240
        )
        _say(f"outcome: {status['phase']}: {status.get('message', '')}")

        _say("rolling out a bad revision (v2 answering 30% of requests with HTTP 500)")
        bad = rollout_manifest(
            f"file://{models[1]}",
            state.prometheus_url,
            ["--fault-injection", "--fault-error-rate=0.3", "--fault-seed=1"],
            pods.placement(),
        )
        generation = _apply(api, bad)
        status = _follow(
            api, lambda s: s.get("phase") in ("Succeeded", "RolledBack"), generation, 240
        )
        _say(f"outcome: {status['phase']}: {status.get('message', '')}")
        for entry in status.get("history", []):
            _say(f"  history: {entry['revision']} {entry['outcome']}: {entry.get('reason', '')}")
        load.stop()
        _say("answers seen by clients, by serving revision and HTTP status:")
        for (revision, code), count in sorted(load.snapshot().items()):
            _say(f"  {revision} {code}: {count}")
        return 0 if status["phase"] == "RolledBack" else 1
    finally:
        load.stop()
        gateway.stop()
        pods.stop()
        operator.stop()
        if keep_cluster:
            _say("the cluster stays up: 'modelrollout dev cluster down' stops it")
        else:
            cluster.down()
