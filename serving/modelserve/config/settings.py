"""Settings of `modelserve serve`."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelrollout.models.uri import DEFAULT_PVC_MOUNT_ROOT
from modelserve.faults import FaultInjection

# Which pod answered, through any gateway: what a client (or a test) attributes an
# answer by when the gateway in between says nothing of where it sent the request.
SERVED_BY_HEADER = "x-modelserve-pod"


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
    faults: FaultInjection = field(default_factory=FaultInjection)
    # Named in every response's SERVED_BY_HEADER: a container's hostname is its pod's name.
    pod_name: str = ""
