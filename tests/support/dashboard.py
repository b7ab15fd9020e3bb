"""`kubectl modelrollout dashboard` run as a user runs it, and its server-sent events read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from kubernetes import client

from modelrollout.kube.labels import GROUP, PLURAL
from modelrollout_dev.identity import service_account_token, token_kubeconfig
from modelrollout_dev.processes import free_port
from tests.support.kube import wait_until
from tests.support.status_watch import Recording

STARTUP_SECONDS = 60


class Dashboard:
    """The plugin's `dashboard` command in a subprocess, on a free loopback port."""

    def __init__(
        self,
        kubeconfig: str,
        namespace: str,
        log: Path,
        startup_seconds: float = STARTUP_SECONDS,
        arguments: Sequence[str] | None = None,
    ) -> None:
        """`arguments`: the plugin's arguments as a pod runs them (the chart's Deployment), run
        here with `kubeconfig` and on a free loopback port instead of their address and port."""
        self.port = free_port()
        self._startup_seconds = startup_seconds
        self.url = f"http://127.0.0.1:{self.port}"
        if arguments is None:
            arguments = ["-n", namespace, "dashboard"]
        kept = [a for a in arguments if not a.startswith(("--address=", "--port="))]
        self._argv = [
            sys.executable,
            "-m",
            "modelrollout.kubectl.cli",
            "--kubeconfig",
            kubeconfig,
            *kept,
            "--address=127.0.0.1",
            f"--port={self.port}",
        ]
        self._log_path = log
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Dashboard:
        log = self._log_path.open("wb")
        self._process = subprocess.Popen(
            self._argv, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
        )
        log.close()

        def synced() -> bool:
            # Synced, or told why not: a kind the user may not list is reported, not waited on.
            assert self._process is not None and self._process.poll() is None, (
                self._log_path.read_text()
            )
            try:
                stats = httpx.get(f"{self.url}/api/stats", timeout=5).json()
            except httpx.HTTPError:
                return False
            kinds = stats["kinds"]
            return all(
                synced or kinds[kind]["last_error"] for kind, synced in stats["synced"].items()
            )

        wait_until(synced, self._startup_seconds, "the dashboard to list rollouts and events")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.url}{path}", timeout=10)
        response.raise_for_status()
        return response.json()

    def command(self, namespace: str, name: str, command: str, **body: Any) -> httpx.Response:
        return httpx.post(
            f"{self.url}/api/rollouts/{namespace}/{name}/commands/{command}",
            json=body,
            headers={"X-Modelrollout-Dashboard": "1"},
            timeout=30,
        )


class EventStream(Recording):
    """One page's server-sent events, as (event, data) in the order they came, and when."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.arrivals: list[float] = []
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=None))
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> EventStream:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def _read(self) -> None:
        event, data = "message", ""
        try:
            with self._client.stream("GET", self.url) as response:
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data += line[5:].strip()
                    elif not line and data:
                        with self._changed:
                            self.events.append((event, json.loads(data)))
                            self.arrivals.append(time.monotonic())
                            self._changed.notify_all()
                        event, data = "message", ""
        except httpx.HTTPError:
            return

    def wait_event(self, event: str, test: Any, timeout: float, what: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((d for e, d in reversed(self.events) if e == event and test(d)), None)

        return self.wait_for(found, timeout, what)


def viewer_kubeconfig(
    api_client: client.ApiClient,
    admin_kubeconfig: str,
    namespace: str,
    path: Path,
    events: bool = True,
) -> str:
    """A kubeconfig for a ServiceAccount that may read rollouts (and Events unless `events` is
    False), and not patch."""
    core = client.CoreV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "viewer"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "viewer"},
            "rules": [
                {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch"]},
                *(
                    [
                        {
                            "apiGroups": [""],
                            "resources": ["events"],
                            "verbs": ["get", "list", "watch"],
                        }
                    ]
                    if events
                    else []
                ),
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "viewer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "viewer"},
            "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": namespace}],
        },
    )
    token = service_account_token(api_client, namespace, "viewer")
    return token_kubeconfig(admin_kubeconfig, token, path)
