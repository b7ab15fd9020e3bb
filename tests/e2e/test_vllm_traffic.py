"""Rollouts of the `vllm` engine under real traffic: one model, two engines, the same answers.

The harness is the kubelet of its own node (`PodProcesses`): a `vllm` pod runs
the operator's own command line (`python3 -m vllm.entrypoints.openai.api_server
...`) under vLLM's CPU build, a `torch` pod its own `modelserve serve`, each
Ready when its own probes pass; Traefik (the local cluster's Gateway API
implementation) carries the gatewayAPI router's weights to the pods, and its
access log says which revision's Service took each request (vLLM's answers do
not say); the evaluation Job's pod runs its own `modelserve eval`. The operator,
the API server, Prometheus, Traefik, vLLM, modelserve and their metrics are real.

vLLM on this CPU build: a 1 GiB KV cache, float32, a 512-token context,
`--enforce-eager` (its torch.compile warm-up took five of a start's ten minutes
on a busy 2-core machine, for a model this small), and a model whose attention
heads are 64 wide (the CPU attention needs 32 or more). A vLLM server takes
~4 GiB: one replica per revision, never more than two servers at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from modelrollout.kube.api import KubeApi
from modelrollout.kube.labels import EVALUATION_LABEL, REVISION_LABEL
from modelrollout_dev import realnode
from modelrollout_dev.load import BackgroundLoad, wait_until_served
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.podprocesses import PodProcesses
from modelrollout_dev.prometheus import PrometheusHandle
from modelrollout_dev.toolchain import vllm_python
from modelrollout_dev.traefik import Traefik
from tests.conftest import ClusterUnderTest
from tests.e2e.conftest import TEST_TICK_INTERVAL
from tests.support.kube import wait_until
from tests.support.rollouts import TEST_IMAGE, Rollouts, rollout_manifest
from tests.support.serving_placement import HarnessPlacement, RealNodePlacement, ServingPlacement
from tests.support.status_watch import ObjectWatch

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.localharness,
    pytest.mark.vllm,
    pytest.mark.timeout(2400),
]


# The image a cluster would pull; here only its command line runs, under the CPU build.
VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"
# A start took up to ten minutes on a 2-core machine shared with other vLLM servers;
# the startup probe polls every 10 s.
VLLM_READY_WITHIN = 900
# A vLLM canary's start, its steps and (for the gates) the evaluation Job.
ROLLOUT_WITHIN = VLLM_READY_WITHIN + 300
TERMINAL = {"Succeeded", "RolledBack", "Paused"}

GATE_SUITE = {
    "prompts": [
        {"name": f"p{index}", "prompt": prompt, "maxTokens": 8}
        for index, prompt in enumerate(
            ["The capital of France is", "Once upon a time", "1, 2, 3, 4,", "def main():"]
        )
    ],
    # Greedy answers, candidate against stable: every one must be the same.
    "agreement": {"minRatio": 1.0},
}


@pytest.fixture(scope="module", autouse=True)
def vllm_cpu_build() -> Path:
    """vLLM's CPU build is part of set-up: a machine without it fails here, never skips."""
    python = vllm_python()
    if python is None:
        pytest.fail(
            "vLLM's CPU build is not installed: run scripts/vllm-env.sh "
            "(scripts/bootstrap.sh runs it)",
            pytrace=False,
        )
    return python


@pytest.fixture(scope="module")
def vllm_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny models both engines serve (heads 64 wide): `same` (seed 0) and `other` (seed 1),
    of one shape; and `narrow`, the default tiny model, whose heads are 16 wide."""
    from modelserve.tiny_model import VLLM_SHAPE, make_tiny_model

    root = tmp_path_factory.mktemp("vllm-models")
    shape = VLLM_SHAPE
    return {
        "same": make_tiny_model(root / "same", seed=0, shape=shape),
        "other": make_tiny_model(root / "other", seed=1, shape=shape),
        "narrow": make_tiny_model(root / "narrow", seed=0),
    }


@pytest.fixture
def operator_process(
    cluster_under_test: ClusterUnderTest,
    namespace: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[OperatorProcess]:
    """The operator, with modelserve's image as its evaluation image (the chart's
    `evaluation.image`): a vLLM image has no `modelserve eval`."""
    process = OperatorProcess(
        cluster_under_test.kubeconfig,
        namespace,
        tmp_path,
        tick_interval=TEST_TICK_INTERVAL,
        extra_env={"MODELROLLOUT_EVALUATION_IMAGE": TEST_IMAGE},
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"--- operator log ({process.log_path}) ---\n{process.log_tail(120)}")


@dataclass(frozen=True)
class VllmServing:
    """Where a vLLM test's pods run, and what they run there: the model URIs, the vLLM image
    and the evaluation Job's image (vLLM's has no `modelserve eval`)."""

    at: ServingPlacement
    models: dict[str, str]
    vllm_image: str
    evaluation_image: str
    # What an evaluation step adds to run its Job here (nothing: the operator's defaults).
    evaluation_fields: dict[str, Any]
    # What the vLLM container's env adds here.
    vllm_env: list[dict[str, str]]

    def serving(self, revision: str) -> bool:
        return any(e.revision == revision and e.healthy for e in self.at.endpoints().values())


@pytest.fixture(params=["harness", pytest.param("real-node", marks=pytest.mark.realnode)])
def vllm_serving(
    request: pytest.FixtureRequest,
    kube_api_client: client.ApiClient,
    namespace: str,
    vllm_models: dict[str, Path],
) -> VllmServing:
    """The harness running vLLM's CPU build from the host, or the real node's kubelet
    running it from its own image (`make images-vllm`)."""
    if request.param == "real-node":
        node: realnode.RealNodeState = request.getfixturevalue("real_node")
        try:
            realnode.ensure_image(node, realnode.VLLM_IMAGE)
        except realnode.RealNodeError as error:
            pytest.fail(f"{error} (`make images-vllm` builds the image)")
        at = RealNodePlacement(KubeApi(kube_api_client), namespace)
        return VllmServing(
            at,
            {
                "same": realnode.serving_image_model(0, "vllm"),
                "other": realnode.serving_image_model(1, "vllm"),
            },
            realnode.VLLM_IMAGE,
            realnode.SERVING_IMAGE,
            {"image": realnode.SERVING_IMAGE, **at.job_placement()},
            # The node gives containers no cpuset of their own (no CPU manager): vLLM's CPU
            # build would pin each server's threads to the first core, where the canary's
            # engine stalled for minutes behind the loaded stable (as on the harness).
            [{"name": "VLLM_CPU_OMP_THREADS_BIND", "value": "nobind"}],
        )
    pods: PodProcesses = request.getfixturevalue("pods")
    return VllmServing(
        HarnessPlacement(pods, []),
        {name: f"file://{path}" for name, path in vllm_models.items()},
        VLLM_IMAGE,
        TEST_IMAGE,
        {},
        [],
    )


@pytest.fixture
def pod_history(rollouts: Rollouts) -> Iterator[ObjectWatch]:
    """Every version of the namespace's pods, for each vLLM pod's time to Ready."""
    with ObjectWatch(rollouts.core.list_namespaced_pod, rollouts.namespace) as watched:
        yield watched
    for pod, seconds in vllm_ready_times(watched).items():
        print(f"vLLM pod {pod}: Ready {seconds:.0f}s after its container started")


@pytest.fixture
def job_history(rollouts: Rollouts) -> Iterator[ObjectWatch]:
    """Every version of the namespace's Jobs: the evaluation Jobs, gone once they are done."""
    batch = client.BatchV1Api(rollouts.apps.api_client)
    with ObjectWatch(batch.list_namespaced_job, rollouts.namespace) as watched:
        yield watched


def vllm_ready_times(pods: ObjectWatch) -> dict[str, float]:
    """Seconds from each vLLM container's start to its pod's first Ready, as the kubelet
    reported them (the container's startedAt, the Ready condition's lastTransitionTime)."""
    times: dict[str, float] = {}
    for kind, pod in pods.events:
        name = pod["metadata"]["name"]
        if kind == "DELETED" or name in times:
            continue
        if pod["spec"]["containers"][0].get("command", [])[:1] != ["python3"]:
            continue
        status = pod.get("status") or {}
        ready = next(
            (c for c in status.get("conditions") or [] if c["type"] == "Ready"), {"status": ""}
        )
        running = ((status.get("containerStatuses") or [{}])[0].get("state") or {}).get("running")
        if ready["status"] == "True" and running:
            times[name] = (
                _parse_time(ready["lastTransitionTime"]) - _parse_time(running["startedAt"])
            ).total_seconds()
    return times


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


def vllm_runtime(
    manifest: dict[str, Any],
    args: list[str] | None = None,
    env: list[dict[str, str]] | None = None,
    image: str = VLLM_IMAGE,
) -> dict[str, Any]:
    """`manifest`'s runtime with engine vllm and the settings its CPU build needs here."""
    return {
        **manifest["spec"]["runtime"],
        "engine": "vllm",
        "image": image,
        "env": [{"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"}, *(env or [])],
        "args": ["--max-model-len", "512", "--dtype", "float32", "--enforce-eager", *(args or [])],
        "terminationGracePeriod": "60s",
        "startupTimeout": "15m",
    }


def serving(pods: PodProcesses, revision: str) -> bool:
    return any(e.revision == revision and e.healthy for e in pods.endpoints().values())


def wait_gone(pods: PodProcesses, revision: str) -> None:
    """Until no server of `revision` runs: a third vLLM would not fit beside two."""
    wait_until(
        lambda: not any(e.revision == revision for e in pods.endpoints().values()),
        120,
        f"the servers of {revision} to stop",
    )


def answers(
    traefik: Traefik, namespace: str, load: BackgroundLoad, since: int
) -> dict[tuple[str, str], int]:
    """Requests since `since` by (revision, status): each answer as Traefik logged it (the
    revision of the Service it went to), and each connection error its client saw."""
    gateway_side = traefik.answers_by_revision(namespace, "chat", since)
    client_errors = {key: n for key, n in load.snapshot().items() if not key[1].isdigit()}
    return {**gateway_side, **client_errors}


@pytest.fixture
def gate_step(kube_api_client: client.ApiClient, namespace: str) -> dict[str, Any]:
    """GATE_SUITE in the ConfigMap chat-gates; returns an evaluation step that runs it."""
    client.CoreV1Api(kube_api_client).create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="chat-gates"),
            data={"suite.yaml": yaml.safe_dump(GATE_SUITE)},
        ),
    )
    return {"evaluation": {"suite": {"configMapName": "chat-gates"}, "timeout": "5m"}}


def error_rate_check() -> dict[str, Any]:
    return {
        "name": "error-rate",
        "builtin": "errorRate",
        "window": "10s",
        "breachWhen": "> 0.2",
        "for": "2s",
        "action": "rollback",
    }


def test_torch_to_vllm_of_the_same_weights_passes_agreement_other_weights_are_rolled_back(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    vllm_serving: VllmServing,
    traefik: Traefik,
    prometheus: PrometheusHandle,
    gate_step: dict[str, Any],
    pod_history: ObjectWatch,
    job_history: ObjectWatch,
) -> None:
    """Run on the harness, and on the real node (the torch, vLLM and evaluation pods as
    containers of the project's images, the Job finding the Services through the cluster
    DNS)."""
    at = vllm_serving
    gate_step["evaluation"].update(at.evaluation_fields)
    analysis = {
        "prometheus": {"address": prometheus.url, "timeout": "2s"},
        "interval": "1s",
        "checks": [error_rate_check()],
        "whenMetricsUnavailable": {"action": "pause", "after": "60s"},
    }
    steps = [{"setWeight": 50}, {"analysis": {"duration": "10s"}}, gate_step]
    v1 = rollout_manifest(
        "chat",
        at.models["same"],
        steps,
        replicas=1,
        router="gatewayAPI",
        analysis=analysis,
        placement=at.at.placement(),
    )
    rollouts.create(v1)
    on_torch = rollouts.wait_phase("chat", {"Succeeded"}, 180)["stableRevision"]
    wait_until(lambda: at.serving(on_torch), 180, "the torch server")
    wait_until_served(traefik.url, "chat")

    since = traefik.access_log_length()
    with BackgroundLoad(traefik.url, "chat") as load:
        # The same weights under vLLM: the same greedy answers, so the gate passes.
        rollouts.patch_spec(
            "chat", {"runtime": vllm_runtime(v1, env=at.vllm_env, image=at.vllm_image)}
        )
        promoted = rollouts.wait_phase("chat", TERMINAL, ROLLOUT_WITHIN)
        assert promoted["phase"] == "Succeeded", promoted
        on_vllm = promoted["stableRevision"]
        assert on_vllm != on_torch
        assert promoted["history"][0]["revision"] == on_vllm
        assert promoted["history"][0]["outcome"] == "Promoted"
        assert promoted["gatesRevision"] == on_vllm
        agreement = {gate["name"]: gate for gate in promoted["gates"]}["agreement"]
        assert agreement["passed"] and agreement["value"] == 1.0, promoted["gates"]
        wait_until(lambda: at.serving(on_vllm), 60, "the promoted vLLM server")

        # Other weights of the same shape under vLLM: other answers, rolled back by the gate.
        rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": at.models["other"]}})
        rolled_back = rollouts.wait_phase("chat", TERMINAL, ROLLOUT_WITHIN)
    answered = answers(traefik, rollouts.namespace, load, since)
    assert rolled_back["phase"] == "RolledBack", rolled_back
    assert rolled_back["stableRevision"] == on_vllm
    other = rolled_back["history"][0]["revision"]
    assert rolled_back["history"][0]["outcome"] == "RolledBack"
    assert rolled_back["history"][0]["reason"].startswith("quality gates failed: "), rolled_back
    assert rolled_back["gatesRevision"] == other
    agreement = {gate["name"]: gate for gate in rolled_back["gates"]}["agreement"]
    assert not agreement["passed"] and agreement["value"] < 1.0, rolled_back["gates"]

    # Both vLLM canaries really answered users while they were canaries, and never failed.
    assert answered.get((on_torch, "200"), 0) > 0, answered
    assert answered.get((on_vllm, "200"), 0) > 0, answered
    assert answered.get((other, "200"), 0) > 0, answered
    assert {status for _, status in answered} == {"200"}, answered
    # The evaluation Jobs ran modelserve's image, not the vLLM image.
    images = {
        job["metadata"]["labels"][REVISION_LABEL]: pod["containers"][0]["image"]
        for _, job in job_history.events
        if EVALUATION_LABEL in job["metadata"].get("labels", {})
        for pod in [job["spec"]["template"]["spec"]]
    }
    assert images == {on_vllm: at.evaluation_image, other: at.evaluation_image}, images
    assert len(vllm_ready_times(pod_history)) == 2, vllm_ready_times(pod_history)


def test_vllm_canaries_rolled_back_by_ttft_against_stable_and_by_vllms_own_error_rate(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    routed_traffic: tuple[PodProcesses, Traefik],
    vllm_models: dict[str, Path],
    prometheus: PrometheusHandle,
    pod_history: ObjectWatch,
) -> None:
    """Two real regressions of a vLLM revision, each caught from vLLM's own metrics.

    Latency: `--max-num-seqs 1` makes vLLM run one request at a time, so under
    the same concurrent load each request waits for those before it: its time to
    first token, against stable's continuous batching, breaches `ttftP99`
    compared with stable.

    Errors: the revision serves a model whose attention heads are 16 wide, which
    vLLM's CPU attention does not support ("Unsupported CPU attention
    configuration"). It loads and turns Ready, and its engine dies at the first
    request: every request then gets a 500 ("EngineCore encountered an issue").
    By default vLLM's API server then exits (with code 0) at once, before any
    scrape could see those 500s; `VLLM_KEEP_ALIVE_ON_ENGINE_DEATH=1`, set for
    every revision here, keeps it up answering 500 (its /health 503, so the
    readiness probe takes it out of the endpoints), and `errorRate` reads the
    500s from vLLM's `http_requests_total{status="5xx"}`.
    """
    pods, traefik = routed_traffic
    keep_alive = [{"name": "VLLM_KEEP_ALIVE_ON_ENGINE_DEATH", "value": "1"}]
    analysis = {
        "prometheus": {"address": prometheus.url, "timeout": "2s"},
        "interval": "1s",
        "checks": [
            error_rate_check(),
            {
                "name": "ttft-vs-stable",
                "builtin": "ttftP99",
                "compareTo": "stable",
                "window": "15s",
                "breachWhen": "> 2",
                "for": "3s",
                "action": "rollback",
            },
        ],
        "whenMetricsUnavailable": {"action": "pause", "after": "60s"},
    }
    steps = [{"setWeight": 50}, {"analysis": {"duration": "60s"}}]
    manifest = rollout_manifest(
        "chat",
        f"file://{vllm_models['same']}",
        steps,
        replicas=1,
        router="gatewayAPI",
        analysis=analysis,
        placement=pods.placement(),
    )
    manifest["spec"]["runtime"] = vllm_runtime(manifest, env=keep_alive)
    rollouts.create(manifest)
    stable = rollouts.wait_phase("chat", {"Succeeded"}, VLLM_READY_WITHIN)["stableRevision"]
    wait_until(lambda: serving(pods, stable), VLLM_READY_WITHIN, "the stable vLLM server")
    wait_until_served(traefik.url, "chat")

    since = traefik.access_log_length()
    # Enough clients that several requests wait on each server at once.
    with BackgroundLoad(traefik.url, "chat", workers=8) as load:
        rollouts.patch_spec(
            "chat", {"runtime": vllm_runtime(manifest, ["--max-num-seqs", "1"], keep_alive)}
        )
        slow = rollouts.wait_phase("chat", TERMINAL, ROLLOUT_WITHIN)
        assert slow["phase"] == "RolledBack", (slow["checks"], slow["history"][:1])
        assert slow["stableRevision"] == stable
        one_at_a_time = slow["history"][0]["revision"]
        assert "ttft-vs-stable" in slow["history"][0]["reason"], slow["history"][0]
        ttft = next(c for c in slow["checks"] if c["name"] == "ttft-vs-stable")
        assert ttft["value"] > 2, ttft
        wait_gone(pods, one_at_a_time)

        rollouts.patch_spec(
            "chat",
            {
                "model": {"name": "chat", "uri": f"file://{vllm_models['narrow']}"},
                "runtime": vllm_runtime(manifest, env=keep_alive),
            },
        )
        failing = rollouts.wait_phase("chat", TERMINAL, ROLLOUT_WITHIN)
    answered = answers(traefik, rollouts.namespace, load, since)
    assert failing["phase"] == "RolledBack", (failing["checks"], failing["history"][:1])
    assert failing["stableRevision"] == stable
    narrow = failing["history"][0]["revision"]
    assert "error-rate" in failing["history"][0]["reason"], failing["history"][0]
    errors = next(c for c in failing["checks"] if c["name"] == "error-rate")
    assert errors["value"] > 0.2, errors

    # Each canary answered users: the slow one slowly, the failing one with vLLM's 500s.
    assert answered.get((one_at_a_time, "200"), 0) > 0, answered
    assert answered.get((narrow, "500"), 0) > 0, answered
    assert answered.get((stable, "200"), 0) > 0, answered
    assert {status for (revision, status) in answered if revision != narrow} == {"200"}, answered
    assert len(vllm_ready_times(pod_history)) == 3, vllm_ready_times(pod_history)
    # `kubectl describe pod` says why the canary was not Ready while vLLM loaded.
    narrow_pods = {
        pod["metadata"]["name"]
        for _, pod in pod_history.events
        if (pod["metadata"].get("labels") or {}).get(REVISION_LABEL) == narrow
    }
    unhealthy = [
        event.message
        for event in rollouts.core.list_namespaced_event(rollouts.namespace).items
        if event.reason == "Unhealthy" and event.involved_object.name in narrow_pods
    ]
    assert any(
        message.startswith("Startup probe failed: Get ") and "Connection refused" in message
        for message in unhealthy
    ), unhealthy
