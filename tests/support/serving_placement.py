"""Where a test's serving pods run: the harness on a kwok node, or the real node's kubelet.

A test written against `ServingPlacement` runs unchanged on either: the
runtime fields that place its pods, the model URIs its servers can read, and a
wait until a revision's servers answer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

from modelrollout.kube.api import KubeApi
from modelrollout_dev.podprocesses import Endpoint, PodProcesses
from modelrollout_dev.realnode import PLACEMENT, SERVING_IMAGE, NodePods, serving_image_model
from tests.support.kube import wait_until


class ServingPlacement(Protocol):
    name: str

    def placement(self) -> dict[str, Any]:
        """The `runtime` fields that put a rollout's pods here."""
        ...

    def model_uri(self, index: int) -> str:
        """The URI of the `index`th tiny model, as the servers here read it."""
        ...

    def job_placement(self) -> dict[str, Any]:
        """The nodeSelector and tolerations that put an evaluation Job's pod here."""
        ...

    def wait_for_servers(self, revision: str, count: int = 2) -> None:
        """Until `count` servers of `revision` answer."""
        ...

    def endpoints(self) -> dict[str, Endpoint]:
        """Every serving pod by name, with its revision and whether it is healthy."""
        ...


class HarnessPlacement:
    """Pods on a kwok node whose containers the harness runs as host processes."""

    name = "harness"

    def __init__(self, pods: PodProcesses, models: list[Path]) -> None:
        self.pods = pods
        self._models = models

    def placement(self) -> dict[str, Any]:
        return self.pods.placement()

    def endpoints(self) -> dict[str, Endpoint]:
        return self.pods.endpoints()

    def model_uri(self, index: int) -> str:
        return f"file://{self._models[index]}"

    def job_placement(self) -> dict[str, Any]:
        # Any kwok node: the harness runs the Job pods that kwok leaves to it.
        return {}

    def wait_for_servers(self, revision: str, count: int = 2) -> None:
        # kwok's Ready comes before the harness's servers have loaded their model.
        deadline = time.monotonic() + 90
        while (
            sum(1 for e in self.pods.endpoints().values() if e.revision == revision and e.healthy)
            < count
        ):
            assert time.monotonic() < deadline, f"{revision} not healthy: {self.pods.endpoints()}"
            time.sleep(0.5)


class RealNodePlacement:
    """Pods the real node's kubelet runs as containers of the project's serving image."""

    name = "real-node"

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self.pods = NodePods(api, namespace, SERVING_IMAGE)

    def placement(self) -> dict[str, Any]:
        return self.pods.placement()

    def endpoints(self) -> dict[str, Endpoint]:
        return self.pods.endpoints()

    def model_uri(self, index: int) -> str:
        return serving_image_model(index)

    def job_placement(self) -> dict[str, Any]:
        return {key: PLACEMENT[key] for key in ("nodeSelector", "tolerations")}

    def wait_for_servers(self, revision: str, count: int = 2) -> None:
        def ready() -> int:
            return sum(
                1 for e in self.pods.endpoints().values() if e.revision == revision and e.healthy
            )

        wait_until(lambda: ready() >= count, 180, f"{count} Ready pods of {revision}")
