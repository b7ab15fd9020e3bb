"""Pure builders of the serving container and pod spec for the engines `vllm` and `torch`.

The controller builds every revision's pod with them (engine/podspec.py), so
they import no torch and touch no API: every function takes plain values and
returns plain dicts in Kubernetes' camelCase shape, ready to be put into a
Deployment's pod template.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelrollout.models.spec import (
    DEFAULT_SHM_SIZE,
    GPU_RESOURCE,
    HF_CACHE_VOLUME,
    HF_HOME,
    MODEL_VOLUME,
    SHM_PATH,
    SHM_VOLUME,
)
from modelrollout.models.uri import DEFAULT_PVC_MOUNT_ROOT, HubModel, PVCModel, parse_model_uri

HEALTH_PATH = "/health"
# modelserve's liveness path: 200 while the process answers, whatever /health says (an
# open circuit breaker makes the pod unready, and must not get it restarted). vLLM has
# no such path: its liveness stays on /health.
TORCH_LIVENESS_PATH = "/live"
# vLLM's OpenAI server module: stable across images whatever their entrypoint.
VLLM_COMMAND = ("python3", "-m", "vllm.entrypoints.openai.api_server")
TORCH_COMMAND = ("modelserve", "serve")
STARTUP_PROBE_PERIOD_S = 10


@dataclass(frozen=True)
class RuntimeSpec:
    """What a serving container needs, engine-independent."""

    engine: str  # "vllm" | "torch"
    image: str
    model_name: str
    model_uri: str
    args: Sequence[str] = ()
    resources: Mapping[str, Any] = field(default_factory=dict)
    # A literal value, or a container's valueFrom (a Secret or ConfigMap key, a pod field).
    env: Mapping[str, str | Mapping[str, Any]] = field(default_factory=dict)
    # A container's envFrom: Secrets and ConfigMaps whose every key becomes a variable.
    env_from: Sequence[Mapping[str, Any]] = ()
    startup_timeout_s: int = 900
    port: int = 8000
    pvc_mount_root: str = DEFAULT_PVC_MOUNT_ROOT
    # Time in-flight requests may take to finish after SIGTERM: torch's --drain-timeout,
    # vLLM's --shutdown-timeout (vLLM's default 0 aborts them).
    drain_timeout_s: int = 30
    shm_size: str = DEFAULT_SHM_SIZE


def gpu_count(resources: Mapping[str, Any]) -> int:
    """GPUs asked for in `resources` (limits first, then requests); 0 when none."""
    for section in ("limits", "requests"):
        value = (resources.get(section) or {}).get(GPU_RESOURCE)
        if value is not None:
            count = int(str(value))
            if count < 0:
                raise ValueError(f"{section}.{GPU_RESOURCE} must not be negative")
            return count
    return 0


def model_location(spec: RuntimeSpec) -> tuple[str, str | None]:
    """Where the engine reads the model: (path or hub repo id, hub revision or None)."""
    source = parse_model_uri(spec.model_uri)
    if isinstance(source, PVCModel):
        return str(source.mounted_path(spec.pvc_mount_root)), None
    if isinstance(source, HubModel):
        return source.repo_id, source.revision
    return str(source.path), None


def model_volumes(spec: RuntimeSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts) for the model: the claim read-only for pvc://, a download cache
    for hf://, nothing else."""
    source = parse_model_uri(spec.model_uri)
    if isinstance(source, HubModel):
        return [{"name": HF_CACHE_VOLUME, "emptyDir": {}}], [
            {"name": HF_CACHE_VOLUME, "mountPath": HF_HOME}
        ]
    if not isinstance(source, PVCModel):
        return [], []
    volume = {
        "name": MODEL_VOLUME,
        "persistentVolumeClaim": {"claimName": source.claim, "readOnly": True},
    }
    mount = {
        "name": MODEL_VOLUME,
        "mountPath": f"{spec.pvc_mount_root.rstrip('/')}/{source.claim}",
        "readOnly": True,
    }
    return [volume], [mount]


def shm_volume(spec: RuntimeSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    volume = {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}}
    return volume, {"name": SHM_VOLUME, "mountPath": SHM_PATH}


def probes(spec: RuntimeSpec) -> dict[str, dict[str, Any]]:
    """Startup probe covering the whole model load, readiness on /health, then liveness."""
    http_get = {"path": HEALTH_PATH, "port": "http"}
    liveness_path = TORCH_LIVENESS_PATH if spec.engine == "torch" else HEALTH_PATH
    return {
        "startupProbe": {
            "httpGet": http_get,
            "periodSeconds": STARTUP_PROBE_PERIOD_S,
            "timeoutSeconds": 5,
            "failureThreshold": max(1, math.ceil(spec.startup_timeout_s / STARTUP_PROBE_PERIOD_S)),
        },
        "readinessProbe": {
            "httpGet": http_get,
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 2,
        },
        # Longer than the drain, so a draining server (503 on /health) is not restarted.
        "livenessProbe": {
            "httpGet": {"path": liveness_path, "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": max(6, math.ceil(spec.drain_timeout_s / 10) + 3),
        },
    }


# How long the server keeps an idle connection: above a gateway's idle timeout for
# upstream connections (Traefik 90 s, NGINX 60 s), or the server may close one just as
# the gateway sends a request on it. vLLM's default is 5 s; modelserve's own is 120 s.
KEEP_ALIVE_TIMEOUT_S = 120
VLLM_KEEP_ALIVE_ENV = "VLLM_HTTP_TIMEOUT_KEEP_ALIVE"


def _env(spec: RuntimeSpec, offline: bool) -> list[dict[str, Any]]:
    env: dict[str, str | Mapping[str, Any]] = (
        {"HF_HUB_OFFLINE": "1"} if offline else {"HF_HOME": HF_HOME}
    )
    if spec.engine == "vllm":
        env[VLLM_KEEP_ALIVE_ENV] = str(KEEP_ALIVE_TIMEOUT_S)
    env.update(spec.env)
    return [
        {"name": name, "value": value}
        if isinstance(value, str)
        else {"name": name, "valueFrom": dict(value)}
        for name, value in sorted(env.items())
    ]


def vllm_args(spec: RuntimeSpec) -> list[str]:
    location, revision = model_location(spec)
    args = [
        "--model", location,
        "--served-model-name", spec.model_name,
        "--tensor-parallel-size", str(max(1, gpu_count(spec.resources))),
        "--port", str(spec.port),
        "--shutdown-timeout", str(spec.drain_timeout_s),
    ]  # fmt: skip
    if revision:
        args += ["--revision", revision]
    return args + list(spec.args)


def torch_args(spec: RuntimeSpec) -> list[str]:
    # modelserve resolves pvc:// and hf:// itself; it gets the URI as written.
    return [
        "--model", spec.model_uri,
        "--served-model-name", spec.model_name,
        "--host", "0.0.0.0",
        "--port", str(spec.port),
        "--pvc-mount-root", spec.pvc_mount_root,
        "--drain-timeout", str(spec.drain_timeout_s),
        *spec.args,
    ]  # fmt: skip


def build_container(spec: RuntimeSpec, name: str = "server") -> dict[str, Any]:
    """The serving container for `spec.engine`."""
    if spec.engine == "vllm":
        command, args = list(VLLM_COMMAND), vllm_args(spec)
    elif spec.engine == "torch":
        command, args = list(TORCH_COMMAND), torch_args(spec)
    else:
        raise ValueError(f"unknown engine {spec.engine!r}: expected vllm or torch")
    offline = not isinstance(parse_model_uri(spec.model_uri), HubModel)
    _, model_mounts = model_volumes(spec)
    _, shm_mount = shm_volume(spec)
    return {
        "name": name,
        "image": spec.image,
        "command": command,
        "args": args,
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "env": _env(spec, offline),
        **({"envFrom": [dict(source) for source in spec.env_from]} if spec.env_from else {}),
        "resources": {k: dict(v) for k, v in spec.resources.items()},
        "volumeMounts": [shm_mount, *model_mounts],
        **probes(spec),
    }


def build_pod_spec(spec: RuntimeSpec) -> dict[str, Any]:
    """A pod spec with the serving container, its volumes, and time to drain on termination."""
    model_vols, _ = model_volumes(spec)
    shm_vol, _ = shm_volume(spec)
    return {
        "containers": [build_container(spec)],
        "volumes": [shm_vol, *model_vols],
        "terminationGracePeriodSeconds": spec.drain_timeout_s + 15,
    }
