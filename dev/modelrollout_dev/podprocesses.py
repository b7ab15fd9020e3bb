"""Run a real model server process for each Ready pod: a stand-in for the kubelet, nothing else.

kwok schedules pods and marks them Running and Ready, but runs no
container. For tests and the demo that need real traffic, this starts the
pod's own serving command (`modelserve serve ...` from the pod spec, with its
env, so fault injection set on a revision reaches it) on a loopback port,
registers it with Prometheus under the labels a PodMonitor would add, and
drains it with SIGTERM when the pod goes away, as the kubelet would.

A quality-gate Job's pod (label modelrollout.dev/evaluation; the local
cluster's kwok stages leave it Running instead of completing it) is run once
as its own `modelserve eval` command: the suite read from the ConfigMap its
pod mounts, each `http://<service>:<port>` replaced by a healthy server of
the revision that Service selects (what kube-proxy would pick), and the
result written back the way the kubelet reports it: the container terminated
with the exit code and the termination-log file as its message, the pod
Succeeded or Failed.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelrollout.kube.api import PODS, SERVICES, KubeApi, Resource
from modelrollout.kube.labels import EVALUATION_LABEL, REVISION_LABEL, ROLE_LABEL, ROLLOUT_LABEL
from modelrollout_dev.prometheus import PrometheusHandle

CONFIGMAPS = Resource("", "v1", "configmaps")
# How long an evaluation pod waits for healthy servers of the revisions it compares.
SERVER_WAIT_SECONDS = 90.0


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


@dataclass
class _Evaluation:
    pod: str
    container: dict[str, Any]
    popen: subprocess.Popen[bytes]
    termination_log: Path
    started_at: str


def _timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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


def local_eval_command(
    container: dict[str, Any],
    suite_file: Path,
    termination_log: Path,
    resolve: Callable[[str], str],
) -> list[str] | None:
    """The container's `modelserve eval` command, runnable here: None for anything else.

    `--suite` names `suite_file`, each `--candidate`/`--stable` URL goes through
    `resolve`, and the result is also written to `termination_log`.
    """
    command = [*(container.get("command") or []), *(container.get("args") or [])]
    if command[:2] != ["modelserve", "eval"]:
        return None
    executable = shutil.which("modelserve", path=str(Path(sys.executable).parent)) or "modelserve"
    rewritten = [executable, "eval"]
    args = iter(command[2:])
    for arg in args:
        if arg == "--suite":
            next(args, None)
            rewritten += ["--suite", str(suite_file)]
        elif arg in ("--candidate", "--stable"):
            rewritten += [arg, resolve(next(args, ""))]
        elif arg == "--termination-log":
            next(args, None)
        else:
            rewritten.append(arg)
    return [*rewritten, "--termination-log", str(termination_log)]


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
        self._evaluations: dict[str, _Evaluation] = {}
        # Evaluation pods already run (or not runnable here): each runs once.
        self._evaluated: set[str] = set()
        self._evaluation_seen: dict[str, float] = {}
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
            for evaluation in self._evaluations.values():
                evaluation.popen.kill()
                evaluation.popen.wait(timeout=10)
            self._evaluations.clear()

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
        self._sync_evaluations()

    # -- quality-gate Job pods -------------------------------------------------

    def _sync_evaluations(self) -> None:
        for pod in self._api.list(PODS, self._namespace, EVALUATION_LABEL):
            name = pod["metadata"]["name"]
            if name in self._evaluated or pod.get("status", {}).get("phase") != "Running":
                continue
            # kwok marks pods Ready before the servers standing in for them have loaded
            # their model; a kubelet's readiness probe would not. Wait for them a while.
            first_seen = self._evaluation_seen.setdefault(name, time.monotonic())
            container = pod["spec"]["containers"][0]
            args = [*(container.get("command") or []), *(container.get("args") or [])]
            urls = [
                args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--candidate", "--stable")
            ]
            waiting = any(self._resolve(url) == url for url in urls)
            if waiting and time.monotonic() - first_seen < SERVER_WAIT_SECONDS:
                continue
            self._evaluated.add(name)
            self._start_evaluation(pod)
        for name, evaluation in list(self._evaluations.items()):
            code = evaluation.popen.poll()
            if code is not None:
                del self._evaluations[name]
                self._report(evaluation, code)

    def _resolve(self, url: str) -> str:
        """A Service URL as the healthy server of the revision the Service selects."""
        parts = urlsplit(url)
        service = self._api.get(SERVICES, self._namespace, parts.hostname or "")
        revision = ((service or {}).get("spec", {}).get("selector") or {}).get(REVISION_LABEL)
        with self._lock:
            addresses = sorted(
                p.address
                for p in self._processes.values()
                if p.labels.get("revision") == revision and p.healthy and p.stopping_since is None
            )
        # No server: the original URL fails to connect here, as it would in a cluster.
        return f"http://{addresses[0]}" if addresses else url

    def _start_evaluation(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        work = self._log_dir / name
        work.mkdir(parents=True, exist_ok=True)
        suite_file = work / "suite.yaml"
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts") or []}
        args = [*(container.get("command") or []), *(container.get("args") or [])]
        suite_path = args[args.index("--suite") + 1] if "--suite" in args else ""
        for volume in pod["spec"].get("volumes") or []:
            mount = mounts.get(volume["name"])
            if "configMap" in volume and mount and suite_path.startswith(f"{mount}/"):
                config_map = self._api.get(CONFIGMAPS, self._namespace, volume["configMap"]["name"])
                key = suite_path[len(mount) + 1 :]
                # A missing ConfigMap or key leaves no file: the suite fails to load, exit 2.
                text = ((config_map or {}).get("data") or {}).get(key)
                if text is not None:
                    suite_file.write_text(text)
        termination_log = work / "termination-log"
        termination_log.write_text("")
        command = local_eval_command(container, suite_file, termination_log, self._resolve)
        if command is None:
            print(f"[pod-processes] pod {name}: cannot run here", file=sys.stderr, flush=True)
            return
        log = (self._log_dir / f"{name}.log").open("ab")
        popen = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._evaluations[name] = _Evaluation(name, container, popen, termination_log, _timestamp())

    def _report(self, evaluation: _Evaluation, code: int) -> None:
        """What the kubelet reports for a finished container with terminationMessagePolicy File."""
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "message": evaluation.termination_log.read_text()[:4096],
            "startedAt": evaluation.started_at,
            "finishedAt": _timestamp(),
        }
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": evaluation.container["name"],
                    "image": evaluation.container.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {"terminated": terminated},
                }
            ],
        }
        self._api.merge_patch(
            PODS, self._namespace, evaluation.pod, {"status": status}, subresource="status"
        )

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
