"""Settings of `modelserve serve`."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelrollout.models.uri import DEFAULT_PVC_MOUNT_ROOT
from modelserve.faults import FaultInjection
from modelserve.http_defaults import KEEP_ALIVE_TIMEOUT_S


@dataclass(frozen=True)
class ServeSettings:
    model_uri: str
    served_model_name: str
    pvc_mount_root: str = DEFAULT_PVC_MOUNT_ROOT
    dtype: str = "float32"
    # "auto": the first CUDA device when there is one, else the CPU.
    device: str = "auto"
    max_model_len: int | None = None
    # 1 turns batching off: requests are decoded one after another.
    max_batch_size: int = 32
    # Requests waiting for a batch slot; one more is answered 429 at once.
    max_queue_size: int = 256
    request_timeout_s: float = 600.0
    # After SIGTERM: how long in-flight requests may take before the server exits anyway.
    drain_timeout_s: float = 30.0
    # Engine failures in a row that open the circuit breaker; 0 turns the breaker off.
    breaker_failure_threshold: int = 5
    # Seconds an open breaker refuses requests before its half-open trial.
    breaker_cooldown_s: float = 30.0
    faults: FaultInjection = field(default_factory=FaultInjection)
    keep_alive_timeout_s: float = KEEP_ALIVE_TIMEOUT_S
    # The response cache (modelserve.api.cache): answers held at most; 0 turns it off.
    response_cache_size: int = 0
    response_cache_ttl_s: float = 300.0
    response_cache_max_bytes: int = 64 * 1024 * 1024
    # Named in every response's SERVED_BY_HEADER: a container's hostname is its pod's name.
    pod_name: str = ""
