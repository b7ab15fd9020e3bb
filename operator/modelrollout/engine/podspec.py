"""The pod template of a revision, from `spec.model` + `spec.runtime`: pure.

The platform fields (`imagePullSecrets`, `affinity`, `securityContext`, extra
`volumes` ...) are passed through as written: models/spec.py refuses what would
clash with what the operator writes, the API server checks the rest when the
Deployment is created (engine/children.py reports its refusal as InvalidSpec).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

from modelrollout.engine import runtimes
from modelrollout.models import ModelRolloutSpec, parse_duration
from modelrollout.models.spec import Toleration

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
    pod_spec.update(node_placement(runtime.node_selector, runtime.tolerations))
    if runtime.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": ref.name} for ref in runtime.image_pull_secrets]
    for key, value in (
        ("serviceAccountName", runtime.service_account_name),
        ("priorityClassName", runtime.priority_class_name),
        ("runtimeClassName", runtime.runtime_class_name),
        ("affinity", runtime.affinity),
        ("securityContext", runtime.security_context),
    ):
        if value is not None:
            pod_spec[key] = copy.deepcopy(value)
    if runtime.topology_spread_constraints:
        pod_spec["topologySpreadConstraints"] = copy.deepcopy(runtime.topology_spread_constraints)
    if runtime.volumes:
        pod_spec["volumes"] = [*pod_spec["volumes"], *copy.deepcopy(runtime.volumes)]
    if runtime.volume_mounts:
        container["volumeMounts"] = [
            *container["volumeMounts"],
            *copy.deepcopy(runtime.volume_mounts),
        ]
    if runtime.container_security_context is not None:
        container["securityContext"] = copy.deepcopy(runtime.container_security_context)
    return pod_spec


def node_placement(
    node_selector: Mapping[str, str], tolerations: Sequence[Toleration]
) -> dict[str, Any]:
    """A pod spec's nodeSelector and tolerations, those that are set."""
    placement: dict[str, Any] = {}
    if node_selector:
        placement["nodeSelector"] = dict(node_selector)
    if tolerations:
        placement["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in tolerations
        ]
    return placement


def build_pod_metadata(spec: ModelRolloutSpec) -> dict[str, dict[str, str]]:
    """The user's labels and annotations of the pod template (never the operator's keys:
    models/spec.py refuses them)."""
    metadata: dict[str, dict[str, str]] = {}
    if spec.runtime.pod_labels:
        metadata["labels"] = dict(spec.runtime.pod_labels)
    if spec.runtime.pod_annotations:
        metadata["annotations"] = dict(spec.runtime.pod_annotations)
    return metadata
