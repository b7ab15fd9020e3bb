"""The serving container the operator writes for engine vllm, run under the real vLLM.

The controller's own builder makes the pod spec from a ModelRollout spec; the
test runs the serving container's command, args and env as written, and
changes only what a kubelet provides differently here: the model volume's
mount (the claim's files are a local directory) and `python3`, which is the
vLLM environment's interpreter instead of the image's. The rest is the spec's:
the port, the CPU-build settings (`runtime.env`, `runtime.args`) and the drain
time (`runtime.terminationGracePeriod`).
"""

from __future__ import annotations

import os
import re
import resource
import signal
import time
from pathlib import Path
from typing import Any, get_args

import pytest

from modelrollout.analysis.builtins import builtin_query
from modelrollout.engine.podspec import build_pod_spec
from modelrollout.models import parse_spec
from modelrollout.models.spec import ServingBuiltin
from tests.serving.conftest import TINY_MODEL_NAME, free_port, scrape
from tests.serving.test_vllm_cpu_server import (
    STALL_S,
    STREAM_TOKENS,
    VllmServer,
    complete,
    launch,
    stop,
    stream_completion,
    vllm_executable,
)
from tests.unit.operator.builders import example_spec

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1200)]

CLAIM = "models"
MODEL_PATH = "tiny/v1"
# A PromQL metric name directly followed by its label selector.
SELECTED_METRIC = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def rollout_spec(port: int) -> dict[str, Any]:
    body = example_spec()
    body["model"] = {"name": TINY_MODEL_NAME, "uri": f"pvc://{CLAIM}/{MODEL_PATH}"}
    body["runtime"].update(
        engine="vllm",
        resources={},
        port=port,
        replicas=1,
        # vLLM's CPU build: a 1 GiB KV cache, float32, and a context the tiny model holds.
        env=[{"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"}],
        args=["--max-model-len", "512", "--dtype", "float32"],
        terminationGracePeriod="60s",
    )
    return body


def metric_names_the_builtins_query() -> set[str]:
    names: set[str] = set()
    # The shadow comparison's builtins read the comparison proxy's series, not the server's.
    for check in get_args(ServingBuiltin):
        names.update(SELECTED_METRIC.findall(builtin_query(check, "canary", "1m")))
    return names


def container_command(pod: dict[str, Any], claim_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The serving container's command line and env, with the kubelet's part done here."""
    container = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"model": CLAIM}
    mount_path = mounts["model"]

    def on_this_machine(arg: str) -> str:
        return str(claim_dir) + arg.removeprefix(mount_path) if arg.startswith(mount_path) else arg

    command = [*container["command"], *container["args"]]
    assert command[0] == "python3"
    python = vllm_executable().parent / "python"
    command = [str(python), *(on_this_machine(arg) for arg in command[1:])]
    env = {**os.environ, **{e["name"]: e["value"] for e in container["env"]}}
    env.pop("PYTHONPATH", None)
    return command, env


def children_max_rss_mib() -> float:
    # ru_maxrss of reaped children in KiB on Linux: the largest vLLM process.
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def test_the_operators_vllm_container_serves_and_drains_on_sigterm(
    vllm_model_dir: Path, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    claim_dir = tmp_path / "claim"
    (claim_dir / MODEL_PATH).parent.mkdir(parents=True)
    (claim_dir / MODEL_PATH).symlink_to(vllm_model_dir)
    port = free_port()
    pod = build_pod_spec(parse_spec(rollout_spec(port)))
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    readiness = container["readinessProbe"]["httpGet"]
    assert ports[readiness["port"]] == port
    command, env = container_command(pod, claim_dir)

    started = time.monotonic()
    server: VllmServer = launch(command, env, port, tmp_path / "vllm.log", readiness["path"])
    ready_s = time.monotonic() - started
    record_property("ready_s", round(ready_s, 1))
    print(f"vLLM from the operator's pod spec: ready in {ready_s:.1f}s")
    try:
        completion = complete(server, max_tokens=8)
        assert completion["model"] == TINY_MODEL_NAME
        assert completion["usage"]["completion_tokens"] == 8
        exposed = {series.partition("{")[0] for series in scrape(server.base_url)}
        queried = metric_names_the_builtins_query()
        assert queried, "the built-in checks query no metric"
        assert queried <= exposed, sorted(queried - exposed)

        stream = stream_completion(server, first_chunks=3)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(STALL_S + 60) == 0, server.log_tail()
        assert stream.ended.wait(30)
    finally:
        stop(server)
    print(f"largest vLLM process: {children_max_rss_mib():.0f} MiB RSS")
    assert stream.error is None, stream.error
    assert stream.finish_reasons == ["length"], stream
    assert stream.completion_tokens == STREAM_TOKENS, stream
