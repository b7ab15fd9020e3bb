"""The pod spec of a revision, from `spec.model` + `spec.runtime`: pure."""

from __future__ import annotations

import math
from typing import Any

from modelrollout.engine import runtimes
from modelrollout.models import ModelRolloutSpec, parse_duration

# Endpoints controllers and gateways need a moment to stop sending traffic to
# a terminating pod; the server drains in-flight requests after that.
PRE_STOP_SLEEP_SECONDS = 5


def build_pod_spec(spec: ModelRolloutSpec) -> dict[str, Any]:
    runtime = spec.runtime
    grace_seconds = math.ceil(parse_duration(runtime.termination_grace_period))
    serving = runtimes.RuntimeSpec(
        engine=runtime.engine,
        image=runtime.image,
        model_name=spec.model.name,
        model_uri=spec.model.uri,
        args=tuple(runtime.args),
        resources=runtime.resources.model_dump(by_alias=True, exclude_defaults=True),
        env={
            variable.name: variable.value
            if variable.value_from is None
            else variable.value_from.model_dump(by_alias=True, exclude_none=True)
            for variable in runtime.env
        },
        env_from=[
            source.model_dump(by_alias=True, exclude_none=True) for source in runtime.env_from
        ],
        startup_timeout_s=math.ceil(parse_duration(runtime.startup_timeout)),
        port=runtime.port,
        shm_size=runtime.shm_size,
        # The server must finish draining before the kubelet's SIGKILL.
        drain_timeout_s=max(1, grace_seconds - PRE_STOP_SLEEP_SECONDS - 5),
    )
    pod_spec = runtimes.build_pod_spec(serving)
    container = pod_spec["containers"][0]
    container["lifecycle"] = {
        "preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}},
    }
    pod_spec["terminationGracePeriodSeconds"] = grace_seconds
    if runtime.node_selector:
        pod_spec["nodeSelector"] = dict(runtime.node_selector)
    if runtime.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in runtime.tolerations
        ]
    return pod_spec
