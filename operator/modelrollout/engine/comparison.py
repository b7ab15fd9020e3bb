"""The shadow comparison proxy's life: when it runs, what it is, and putting it in and out of
the route (strategy.shadow.comparison; the proxy itself is modelrollout/shadowproxy/).

Pure rules first (`comparison_wanted`, the builders), then what the reconciler
applies. The proxy runs while a shadow mirrors (weights.mirror above 0, phase
Progressing or Paused): a Deployment and a Service `<name>-shadow-compare`,
owned by the ModelRollout, run from the operator's own image. Its pods carry
`modelrollout.dev/shadow-compare: <name>` and never `modelrollout.dev/rollout`,
so no Service or Deployment of the rollout selects them; the model-pods scrape
job keeps them by that label. It reaches stable and the candidate through the
revisions' Services (`<name>-<revision>`), which it creates where the router
keeps none.

Traffic: the router sends stable's share to the proxy (Backends.comparison)
only once a proxy pod is Ready, and back to stable in the tick the shadow
ends, before the proxy is deleted (the reconciler routes first, then calls
`converge_comparison`). A gateway or the EndpointSlices may still send it
requests for a moment after the route changed: like a serving pod, the proxy
keeps answering through a preStop sleep, then drains on SIGTERM.
"""

from __future__ import annotations

import math
from typing import Any

from modelrollout.engine.podspec import PRE_STOP_SLEEP_SECONDS, node_placement
from modelrollout.kube.api import DEPLOYMENTS, SERVICES, KubeApi
from modelrollout.kube.labels import (
    ROLE_LABEL,
    ROLE_SHADOW_COMPARE,
    comparison_object_name,
    proxy_selector,
    revision_object_name,
)
from modelrollout.kube.workloads import (
    HTTP_PORT_NAME,
    RolloutRef,
    build_service,
)
from modelrollout.models.durations import parse_duration
from modelrollout.models.spec import ModelRolloutSpec
from modelrollout.models.status import ModelRolloutStatus
from modelrollout.traffic.base import (
    Capability,
    RouterCapabilities,
    ensure_revision_service,
    retire_revision_services,
)

PROXY_PORT = 8000
# After the preStop sleep, how long in-flight answers may take to finish.
PROXY_DRAIN_SECONDS = 30
# The operator's own image (settings: MODELROLLOUT_SHADOW_PROXY_IMAGE; the chart sets it).
DEFAULT_SHADOW_PROXY_IMAGE = "ghcr.io/modelrollout/operator:0.1.0"
# The proxy copies requests and holds answers in memory for the window: a small pod.
PROXY_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}


def comparison_wanted(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> bool:
    """Whether the proxy should run now: a shadow with comparison that is mirroring."""
    shadow = spec.strategy.shadow
    return (
        shadow is not None
        and shadow.comparison is not None
        and status.canary_revision is not None
        and status.stable_revision is not None
        and status.weights.mirror > 0
        and status.phase in ("Progressing", "Paused")
    )


def proxy_args(spec: ModelRolloutSpec, status: ModelRolloutStatus, rollout: str) -> list[str]:
    shadow = spec.strategy.shadow
    assert shadow is not None and shadow.comparison is not None
    assert status.stable_revision is not None and status.canary_revision is not None
    port = spec.runtime.port

    def url(revision: str) -> str:
        return f"http://{revision_object_name(rollout, revision)}:{port}"

    return [
        "--stable", url(status.stable_revision),
        "--candidate", url(status.canary_revision),
        "--candidate-revision", status.canary_revision,
        "--sample-percent", str(shadow.mirror_percent),
        "--window", str(math.ceil(parse_duration(shadow.comparison.window))),
        "--max-pending", str(shadow.comparison.max_pending),
        "--port", str(PROXY_PORT),
    ]  # fmt: skip


def build_proxy_deployment(
    rollout: RolloutRef, spec: ModelRolloutSpec, status: ModelRolloutStatus, image: str
) -> dict[str, Any]:
    """The proxy's Deployment, placed like the serving pods (runtime.nodeSelector and
    tolerations), without their GPUs."""
    labels = proxy_selector(rollout.name)
    probe = {"httpGet": {"path": "/healthz", "port": HTTP_PORT_NAME}, "periodSeconds": 2}
    pod_spec: dict[str, Any] = {
        "containers": [
            {
                "name": "shadow-compare",
                "image": image,
                "command": ["python", "-m", "modelrollout.shadowproxy"],
                "args": proxy_args(spec, status, rollout.name),
                "ports": [{"name": HTTP_PORT_NAME, "containerPort": PROXY_PORT}],
                "readinessProbe": probe,
                "resources": PROXY_RESOURCES,
                # Deleted right after the route left it: it keeps answering while gateways
                # and EndpointSlices catch up, then drains what it holds (aiohttp on SIGTERM).
                "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}},
            }
        ],
        "terminationGracePeriodSeconds": PRE_STOP_SLEEP_SECONDS + PROXY_DRAIN_SECONDS,
    }
    pod_spec.update(node_placement(spec.runtime.node_selector, spec.runtime.tolerations))
    if spec.runtime.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": r.name} for r in spec.runtime.image_pull_secrets]
    name = comparison_object_name(rollout.name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": rollout.namespace,
            "labels": {**labels, "app.kubernetes.io/managed-by": "modelrollout"},
            "ownerReferences": [rollout.owner_reference()],
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, ROLE_LABEL: ROLE_SHADOW_COMPARE}},
                "spec": pod_spec,
            },
        },
    }


def build_proxy_service(rollout: RolloutRef, port: int) -> dict[str, Any]:
    """The proxy's Service, on the serving port: a route's backendRef to it needs no other."""
    return build_service(
        rollout, comparison_object_name(rollout.name), proxy_selector(rollout.name), port
    )


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def proxy_ready(api: KubeApi, rollout: RolloutRef) -> bool:
    deployment = api.get_owned(DEPLOYMENTS, rollout.namespace, comparison_object_name(rollout.name))
    return (
        deployment is not None
        and int((deployment.get("status") or {}).get("readyReplicas") or 0) > 0
    )


def converge_comparison(
    api: KubeApi,
    rollout: RolloutRef,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    capabilities: RouterCapabilities,
    image: str,
) -> None:
    """Run the proxy while `comparison_wanted`, delete it otherwise (the route already left it)."""
    name = comparison_object_name(rollout.name)
    deployment = api.get_owned(DEPLOYMENTS, rollout.namespace, name)
    if not comparison_wanted(spec, status):
        if deployment is not None:
            api.delete(DEPLOYMENTS, rollout.namespace, name)
            if Capability.REVISION_SERVICES not in capabilities:
                # Those it made for the proxy: such a router keeps none of its own.
                retire_revision_services(api, rollout, keep=set())
        if api.get_owned(SERVICES, rollout.namespace, name) is not None:
            api.delete(SERVICES, rollout.namespace, name)
        return
    if Capability.REVISION_SERVICES not in capabilities:
        for revision in (status.stable_revision, status.canary_revision):
            assert revision is not None
            ensure_revision_service(api, rollout, revision, spec.runtime.port)
    desired = build_proxy_deployment(rollout, spec, status, image)
    template = desired["spec"]["template"]
    if deployment is None:
        api.create(DEPLOYMENTS, rollout.namespace, desired)
    elif _container(deployment).get("args") != _container(desired)["args"] or (
        _container(deployment).get("image") != image
    ):
        # A new candidate or sample share: the proxy restarts with it.
        api.merge_patch(DEPLOYMENTS, rollout.namespace, name, {"spec": {"template": template}})
    if api.get_owned(SERVICES, rollout.namespace, name) is None:
        api.create(SERVICES, rollout.namespace, build_proxy_service(rollout, spec.runtime.port))
