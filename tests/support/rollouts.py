"""Building, applying and watching ModelRollouts in tests."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from modelrollout.kube.labels import GROUP, PLURAL, VERSION
from tests.support.kube import wait_until
from tests.support.status_watch import State, StatusWatch

# kind runs the pods for real: its image has the test models baked in (scripts/e2e-kind.sh).
TEST_IMAGE = os.environ.get("MODELROLLOUT_TEST_IMAGE", "modelrollout/modelserve:dev")
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


# The Gateway the manifests' gatewayAPI router attaches routes to (the `traefik` fixture's).
TEST_GATEWAY = "inference-gw"


def rollout_manifest(
    name: str,
    model_uri: str,
    steps: list[dict[str, Any]],
    *,
    replicas: int = 2,
    gpus: int = 1,
    router: str = "service",
    analysis: dict[str, Any] | None = None,
    progress_deadline: str = "20m",
    args: list[str] | None = None,
    env: list[dict[str, str]] | None = None,
    placement: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A canary ModelRollout; `placement` (runtime nodeSelector and tolerations, e.g. a
    harness node's `PodProcesses.placement()`) replaces the GPU toleration."""
    runtime: dict[str, Any] = {
        "engine": "torch",
        "image": TEST_IMAGE,
        "replicas": replicas,
        "resources": {"limits": {"nvidia.com/gpu": gpus}},
        "tolerations": [GPU_TOLERATION],
        "terminationGracePeriod": "10s",
    }
    if placement:
        runtime.update(placement)
    if args:
        runtime["args"] = args
    if env:
        runtime["env"] = env
    spec: dict[str, Any] = {
        "model": {"name": name, "uri": model_uri},
        "runtime": runtime,
        "traffic": {"router": router},
        "strategy": {"canary": {"steps": steps}},
        "progressDeadline": progress_deadline,
    }
    if router == "gatewayAPI":
        spec["traffic"]["gatewayAPI"] = {"parentRefs": [{"name": TEST_GATEWAY}]}
    if analysis is not None:
        spec["analysis"] = analysis
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRollout",
        "metadata": {"name": name},
        "spec": spec,
    }


class Rollouts:
    """ModelRollouts in one namespace."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, manifest
        )
        return body

    def get(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return body

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def patch_spec(self, name: str, spec_patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the spec; returns the rollout as written."""
        body: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec_patch}
        )
        return body

    def annotate(self, name: str, annotations: dict[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"metadata": {"annotations": annotations}}
        )
        return body

    def current_phase(self, name: str) -> str | None:
        """The phase, once the operator has seen the latest spec; None before."""
        body = self.get(name)
        status: dict[str, Any] = body.get("status") or {}
        if status.get("observedGeneration") != body["metadata"]["generation"]:
            return None
        phase: str | None = status.get("phase")
        return phase

    def wait_phase(self, name: str, phases: set[str], timeout: float) -> dict[str, Any]:
        """Wait for a phase the operator reached after seeing the latest spec."""

        def reached() -> dict[str, Any] | None:
            body = self.get(name)
            status: dict[str, Any] = body.get("status") or {}
            current = status.get("observedGeneration") == body["metadata"]["generation"]
            return status if current and status.get("phase") in phases else None

        try:
            return wait_until(reached, timeout, f"{name} to reach phase {sorted(phases)}")
        except AssertionError as error:
            status = self.status(name)
            keys = ("phase", "currentStep", "weights", "message", "checks")
            brief = {key: status.get(key) for key in keys}
            raise AssertionError(f"{error}; status now: {brief}") from None

    def deployments(self, name: str) -> dict[str, client.V1Deployment]:
        items = self.apps.list_namespaced_deployment(
            self.namespace, label_selector=f"{GROUP}/rollout={name}"
        ).items
        return {d.metadata.labels[f"{GROUP}/revision"]: d for d in items}

    def events(self, name: str) -> list[client.CoreV1Event]:
        items = self.core.list_namespaced_event(
            self.namespace,
            field_selector=f"involvedObject.name={name},involvedObject.kind=ModelRollout",
        ).items
        return sorted(
            items, key=lambda e: (e.first_timestamp or e.event_time or 0, e.metadata.name)
        )


@dataclass
class StatusRecorder:
    """Every distinct (phase, step, canary weight) a rollout went through, from a watch.

    A poll missed steps that last less than its interval (a weight set in the
    same tick as the pause before it ended); the watch sees every version.
    """

    rollouts: Rollouts
    name: str
    _watch: StatusWatch | None = None

    @property
    def seen(self) -> list[State]:
        return list(self._watch.seen[self.name]) if self._watch is not None else []

    @property
    def seen_at(self) -> list[float]:
        """When each state in `seen` was recorded (time.monotonic())."""
        return list(self._watch.seen_at[self.name]) if self._watch is not None else []

    def wait_for_phase(self, phase: str, timeout: float) -> None:
        assert self._watch is not None, "not recording"
        self._watch.wait_for_phase(self.name, phase, timeout)

    @contextmanager
    def recording(self) -> Iterator[StatusRecorder]:
        with StatusWatch(self.rollouts.apps.api_client, self.rollouts.namespace) as watched:
            self._watch = watched
            yield self


def with_model(manifest: dict[str, Any], uri: str) -> dict[str, Any]:
    changed = copy.deepcopy(manifest)
    changed["spec"]["model"]["uri"] = uri
    return changed
