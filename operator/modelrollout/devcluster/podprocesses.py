"""Run a real model server process for each Ready pod: a stand-in for the kubelet, nothing else.

kwok schedules pods and marks them Running and Ready, but runs no
container. For tests and the demo that need real traffic, this starts the
pod's own serving command (`modelserve serve ...` from the pod spec, with its
env, so fault injection set on a revision reaches it) on a loopback port,
registers it with Prometheus under the labels a PodMonitor would add, and
drains it with SIGTERM when the pod goes away, as the kubelet would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelrollout.devcluster.prometheus import PrometheusHandle
from modelrollout.kube.api import PODS, KubeApi
from modelrollout.kube.labels import REVISION_LABEL, ROLE_LABEL, ROLLOUT_LABEL


@dataclass(frozen=True)
class Endpoint:
    pod: str
    address: str
    revision: str
    role: str
    labels: dict[str, str]
    healthy: bool


@dataclass
class _Process:
    pod: str
    popen: subprocess.Popen[bytes]
    address: str
    labels: dict[str, str]
    grace_seconds: float
    pre_stop_seconds: float
    healthy: bool = False
    stopping_since: float | None = None
    signalled: bool = False
    target: str = ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pod_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    status = pod.get("status", {})
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
    )


def local_command(container: dict[str, Any], port: int) -> list[str] | None:
    """The container's command and args, runnable here, listening on 127.0.0.1:port.

    Only our own `modelserve` image can run here; other images (vLLM) cannot.
    """
    command = list(container.get("command") or [])
    if not command or command[0] != "modelserve":
        return None
    executable = shutil.which("modelserve", path=str(Path(sys.executable).parent)) or "modelserve"
    args = [*command[1:], *(container.get("args") or [])]
    rewritten: list[str] = []
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
            continue
        if arg in ("--port", "--host"):
            skip_next = True
            continue
        if arg.startswith(("--port=", "--host=")):
            continue
        rewritten.append(arg)
    return [executable, *rewritten, "--host", "127.0.0.1", "--port", str(port)]


class PodProcesses:
    """Keeps one server process per Ready pod of the rollouts in a namespace."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        prometheus: PrometheusHandle | None,
        log_dir: Path,
        poll_interval: float = 0.3,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._prometheus = prometheus
        self._log_dir = log_dir
        self._poll_interval = poll_interval
        self._processes: dict[str, _Process] = {}
        self._not_runnable: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PodProcesses:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name="pod-processes", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            for process in self._processes.values():
                self._terminate(process, now=True)
            for process in self._processes.values():
                try:
                    process.popen.wait(timeout=process.grace_seconds)
                except subprocess.TimeoutExpired:
                    process.popen.kill()
                    process.popen.wait(timeout=10)
                self._reap(process, force_after=0)
            self._processes.clear()

    def endpoints(self) -> dict[str, Endpoint]:
        with self._lock:
            return {
                name: Endpoint(
                    pod=name,
                    address=p.address,
                    revision=p.labels.get("revision", ""),
                    role=p.labels.get("role", ""),
                    labels=dict(p.labels),
                    healthy=p.healthy and p.stopping_since is None,
                )
                for name, p in self._processes.items()
            }

    def pids(self) -> list[int]:
        with self._lock:
            return [p.popen.pid for p in self._processes.values()]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as error:  # keep standing in for the kubelet through API hiccups
                print(f"[pod-processes] sync failed: {error}", file=sys.stderr, flush=True)
            self._stop.wait(self._poll_interval)

    def _sync(self) -> None:
        pods = self._api.list(PODS, self._namespace, ROLLOUT_LABEL)
        ready = {pod["metadata"]["name"]: pod for pod in pods if _pod_ready(pod)}
        with self._lock:
            for name, running in list(self._processes.items()):
                # A pod gone, or a server that exited by itself (restarted like a container).
                exited = running.popen.poll() is not None
                if name not in ready or exited or running.stopping_since is not None:
                    self._terminate(running)
                if running.stopping_since is not None and self._reap(
                    running, running.grace_seconds
                ):
                    del self._processes[name]
            for name, pod in ready.items():
                process = self._processes.get(name)
                if process is None:
                    if name not in self._not_runnable:
                        self._launch(pod)
                    continue
                labels = self._labels(pod)
                if labels != process.labels:
                    process.labels = labels
                    self._register(process)
                if not process.healthy:
                    process.healthy = self._healthy(process.address)
                    if process.healthy:
                        self._register(process)

    def _labels(self, pod: dict[str, Any]) -> dict[str, str]:
        labels = pod["metadata"].get("labels", {})
        return {
            "namespace": self._namespace,
            "pod": pod["metadata"]["name"],
            "rollout": labels.get(ROLLOUT_LABEL, ""),
            "revision": labels.get(REVISION_LABEL, ""),
            "role": labels.get(ROLE_LABEL, ""),
        }

    def _launch(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        port = _free_port()
        command = local_command(container, port)
        if command is None:
            self._not_runnable.add(name)
            print(
                f"[pod-processes] pod {name}: image {container.get('image')} cannot run here",
                file=sys.stderr,
                flush=True,
            )
            return
        env = {**os.environ}
        for variable in container.get("env") or []:
            if "value" in variable:
                env[variable["name"]] = variable["value"]
        log = (self._log_dir / f"{name}.log").open("ab")
        popen = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        grace = float(pod["spec"].get("terminationGracePeriodSeconds") or 30)
        pre_stop = float(
            ((container.get("lifecycle") or {}).get("preStop") or {})
            .get("sleep", {})
            .get("seconds")
            or 0
        )
        process = _Process(
            name, popen, f"127.0.0.1:{port}", self._labels(pod), grace, min(pre_stop, grace)
        )
        process.target = f"{self._namespace}.{name}"
        self._processes[name] = process

    def _register(self, process: _Process) -> None:
        if self._prometheus is not None:
            self._prometheus.register_target(process.target, process.address, process.labels)

    @staticmethod
    def _healthy(address: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{address}/health", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _terminate(self, process: _Process, now: bool = False) -> None:
        """Out of rotation at once; SIGTERM after the preStop hook, as the kubelet does."""
        if process.stopping_since is None:
            process.stopping_since = time.monotonic()
        due = now or time.monotonic() - process.stopping_since >= process.pre_stop_seconds
        if due and not process.signalled and process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
            process.signalled = True

    def _reap(self, process: _Process, force_after: float) -> bool:
        """True once the process is gone (killed after its grace period) and unregistered."""
        if process.popen.poll() is None:
            started = process.stopping_since or time.monotonic()
            if time.monotonic() - started < force_after:
                return False
            process.popen.kill()
            process.popen.wait(timeout=10)
        if self._prometheus is not None:
            self._prometheus.unregister_target(process.target)
        return True
