"""The pure pod-spec builders for the vllm and torch engines."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from modelrollout.engine.runtimes import (
    RuntimeSpec,
    build_container,
    build_pod_spec,
    gpu_count,
)
from modelrollout.models.uri import ModelURIError

pytestmark = pytest.mark.unit


def vllm_spec(**overrides: object) -> RuntimeSpec:
    fields: dict[str, object] = {
        "engine": "vllm",
        "image": "vllm/vllm-openai:v0.11.0",
        "model_name": "chat",
        "model_uri": "pvc://models/llama-3.2-3b/v1.3-int4-g64",
        "args": ["--max-model-len=8192"],
        "resources": {"limits": {"nvidia.com/gpu": 2}},
        "startup_timeout_s": 900,
    }
    fields.update(overrides)
    return RuntimeSpec(**fields)  # type: ignore[arg-type]


def test_vllm_container_args_model_path_tensor_parallel_and_user_args_last() -> None:
    container = build_container(vllm_spec())
    assert container["image"] == "vllm/vllm-openai:v0.11.0"
    assert container["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert container["args"] == [
        "--model", "/models/models/llama-3.2-3b/v1.3-int4-g64",
        "--served-model-name", "chat",
        "--tensor-parallel-size", "2",
        "--port", "8000",
        "--shutdown-timeout", "30",
        "--max-model-len=8192",
    ]  # fmt: skip
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 2}}
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]


def test_vllm_keeps_idle_connections_longer_than_gateways_do_unless_the_user_says() -> None:
    def keep_alive(container: dict[str, Any]) -> list[str]:
        env = container["env"]
        return [e["value"] for e in env if e["name"] == "VLLM_HTTP_TIMEOUT_KEEP_ALIVE"]

    assert keep_alive(build_container(vllm_spec())) == ["120"]
    assert keep_alive(build_container(vllm_spec(env={"VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "600"}))) == [
        "600"
    ]
    # modelserve's own default is as long: it gets no variable it would not read.
    torch = vllm_spec(engine="torch", image="modelrollout/modelserve:dev")
    assert keep_alive(build_container(torch)) == []


def test_pvc_model_is_mounted_read_only_and_shm_is_memory() -> None:
    pod = build_pod_spec(vllm_spec())
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["model"] == {"name": "model", "mountPath": "/models/models", "readOnly": True}
    assert mounts["dshm"]["mountPath"] == "/dev/shm"


def test_startup_probe_covers_the_startup_timeout() -> None:
    container = build_container(vllm_spec(startup_timeout_s=905))
    startup = container["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 905
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"


def test_modelserve_liveness_ignores_readiness() -> None:
    """An open circuit breaker makes modelserve unready (/health 503); /live keeps it alive."""
    container = build_container(vllm_spec(engine="torch", image="modelrollout/modelserve:dev"))
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"] == {"path": "/live", "port": "http"}


def test_hub_model_passes_revision_and_stays_online() -> None:
    container = build_container(
        vllm_spec(model_uri="hf://meta-llama/Llama-3.2-3B@abc123", resources={})
    )
    args = container["args"]
    assert args[args.index("--model") + 1] == "meta-llama/Llama-3.2-3B"
    assert args[args.index("--revision") + 1] == "abc123"
    assert args[args.index("--tensor-parallel-size") + 1] == "1"
    assert all(e["name"] != "HF_HUB_OFFLINE" for e in container["env"])
    assert all(
        v["name"] != "model" for v in build_pod_spec(vllm_spec(model_uri="hf://a/b"))["volumes"]
    )


@pytest.mark.parametrize("engine", ["vllm", "torch"])
def test_hub_models_download_into_a_cache_that_outlives_container_restarts(engine: str) -> None:
    pod = build_pod_spec(vllm_spec(engine=engine, model_uri="hf://org/model@main"))
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["hf-cache"] == {"name": "hf-cache", "emptyDir": {}}
    container = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["HF_HOME"] == mounts["hf-cache"]
    pvc_pod = build_pod_spec(vllm_spec())
    assert "hf-cache" not in {v["name"] for v in pvc_pod["volumes"]}
    assert "HF_HOME" not in {e["name"] for e in pvc_pod["containers"][0]["env"]}


def test_torch_container_runs_modelserve_with_the_uri() -> None:
    spec = vllm_spec(
        engine="torch", image="modelrollout/serving:0.1.0", args=["--max-batch-size=16"]
    )
    container = build_container(spec)
    assert container["command"] == ["modelserve", "serve"]
    args = container["args"]
    assert args[args.index("--model") + 1] == "pvc://models/llama-3.2-3b/v1.3-int4-g64"
    assert args[-1] == "--max-batch-size=16"
    assert build_pod_spec(spec)["terminationGracePeriodSeconds"] > spec.drain_timeout_s


def test_gpu_count_reads_limits_then_requests() -> None:
    assert gpu_count({}) == 0
    assert gpu_count({"requests": {"nvidia.com/gpu": "4"}}) == 4
    assert gpu_count({"limits": {"nvidia.com/gpu": 1}, "requests": {"nvidia.com/gpu": 4}}) == 1


def test_bad_engine_and_bad_uri_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        build_container(vllm_spec(engine="tgi"))
    with pytest.raises(ModelURIError):
        build_container(vllm_spec(model_uri="s4://bucket/model"))


def test_the_builder_module_does_not_import_torch() -> None:
    code = "import sys, modelrollout.engine.runtimes; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
