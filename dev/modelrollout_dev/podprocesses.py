"""The kubelet of one node, run as local processes: a stand-in for the kubelet, nothing else.

kwok runs no container and marks its pods Ready at once, before any model has
loaded. For tests and the demo that need real traffic, `PodProcesses` adds a
node of its own to the cluster (`harness-<namespace>`, tainted so that only
pods placed there on purpose land on it: `placement()`), which kwok keeps
Ready but whose pods it leaves alone (see `cluster.kwok_stages`). For each pod
the scheduler binds to that node, it does what a kubelet would:

- gives the pod an IP of the cluster's pod network (`podnetwork`: an address
  that exists only in the cluster's network namespace) and runs the pod's own
  serving command (`modelserve serve ...`, or vLLM's
  `python3 -m vllm.entrypoints.openai.api_server ...` under the vLLM CPU
  build's interpreter) in that namespace, its args as written except the
  listen address, with the pod's env, listening on the pod's IP and its own
  container port, as the pod's EndpointSlices say;
- runs the container's startup, readiness and liveness probes, as the pod spec
  gives them, against that server, and reports the pod Ready only while its
  readiness probe passes: a slow model load keeps the pod out of endpoints;
  each failed probe is a Warning Event `Unhealthy` on the pod, as the kubelet
  posts it (`kubectl describe pod` shows why a pod left its endpoints);
- restarts a container that exits or fails its liveness probe, with back-off;
- on deletion: out of rotation, the preStop sleep, SIGTERM, SIGKILL at the end
  of the grace period, then removes the pod, so it stays Terminating while it
  drains.

The cluster's Prometheus finds these servers itself, through the API server
(`prometheus.model_pods_job`), as it would find a real node's pods.

The shadow comparison proxy's pod (label modelrollout.dev/shadow-compare, the
operator's own image) runs the same way as its own
`python -m modelrollout.shadowproxy` command, under this interpreter (the
operator image's), listening on the pod's IP; its `--stable` and
`--candidate` Service URLs become a ready server of the revision each Service
selects (there is no kube-proxy here: one server per Service, picked when the
container starts, as one long-lived connection through kube-proxy would be).
The container waits for such servers as a Job's pod does.

A quality-gate Job's pod (label modelrollout.dev/evaluation) runs on a kwok
node, where the local cluster's kwok stages leave it Running instead of
completing it: it is run once as its own `modelserve eval` command, the suite
read from the ConfigMap its pod mounts, each `http://<service>:<port>` replaced
by a ready server of the revision that Service selects (what kube-proxy would
pick), and the result written back the way the kubelet reports it: the
container terminated with the exit code and the termination-log file as its
message, the pod Succeeded or Failed. An analysis-load Job's pod (label
modelrollout.dev/load) runs the same way as its own `modelserve loadgen`
command, its `--target` resolved alike and its prompts file read from the
ConfigMap its pod mounts. A Job pod deleted while it runs is killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelrollout.kube.api import NODES, PODS, SERVICES, KubeApi, KubeApiError, Resource
from modelrollout.kube.events import EVENTS, build_event
from modelrollout.kube.labels import (
    EVALUATION_LABEL,
    LOAD_LABEL,
    REVISION_LABEL,
    ROLE_LABEL,
    ROLLOUT_LABEL,
)
from modelrollout_dev.nodes import GPU_TAINT, HARNESS_NODE_PREFIX, fake_node
from modelrollout_dev.podnetwork import PodNetwork
from modelrollout_dev.toolchain import vllm_python

CONFIGMAPS = Resource("", "v1", "configmaps")
# How long an evaluation or load pod waits for ready servers of the revisions it addresses.
SERVER_WAIT_SECONDS = 90.0
HARNESS_LABEL = "modelrollout.dev/harness"
# GPUs the harness node advertises: the test rollouts ask for one per pod.
HARNESS_NODE_GPUS = 16
# The kubelet's container restart back-off: 10 s, doubled per restart, at most 5 minutes.
RESTART_BACKOFF_SECONDS = 10.0
RESTART_BACKOFF_MAX_SECONDS = 300.0
VLLM_MODULE = "vllm.entrypoints.openai.api_server"


@dataclass(frozen=True)
class Endpoint:
    pod: str
    address: str
    revision: str
    role: str
    labels: dict[str, str]
    healthy: bool
    # The pod's own labels, which a Service's selector matches.
    pod_labels: dict[str, str] = field(default_factory=dict)


@dataclass
class _JobRun:
    """The one container of a Job's pod (an evaluation, an analysis load), run to its end."""

    pod: str
    container: dict[str, Any]
    popen: subprocess.Popen[bytes]
    termination_log: Path
    started_at: str


def _timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def harness_node_name(namespace: str) -> str:
    return f"{HARNESS_NODE_PREFIX}{namespace}"


def _without_listen_flags(args: list[str]) -> list[str]:
    """`args` less --host/--port (either form): the harness chooses where a server listens."""
    kept: list[str] = []
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
        elif arg in ("--port", "--host"):
            skip_next = True
        elif not arg.startswith(("--port=", "--host=")):
            kept.append(arg)
    return kept


def container_port(container: dict[str, Any]) -> int:
    """The container's first declared port: where its server listens (8000 if none is)."""
    ports = container.get("ports") or [{}]
    return int(ports[0].get("containerPort", 8000))


def local_command(container: dict[str, Any], host: str) -> list[str] | None:
    """The container's command and args, runnable here, listening on host:containerPort.

    Our own `modelserve` image runs as the project's `modelserve`; vLLM's module as
    vLLM's CPU build (scripts/vllm-env.sh), whose own parser judges every other
    flag as written. Other images cannot run here: None.
    """
    command = [*(container.get("command") or []), *(container.get("args") or [])]
    listen = ["--host", host, "--port", str(container_port(container))]
    if command[:1] == ["modelserve"]:
        return [_modelserve(), *_without_listen_flags(command[1:]), *listen]
    if command[:3] == ["python3", "-m", VLLM_MODULE]:
        python = vllm_python()
        if python is None:
            return None
        return [str(python), "-m", VLLM_MODULE, *_without_listen_flags(command[3:]), *listen]
    return None


SHADOW_PROXY_COMMAND = ["python", "-m", "modelrollout.shadowproxy"]


def local_proxy_command(
    container: dict[str, Any], host: str, resolve: Callable[[str], str]
) -> list[str] | None:
    """The comparison proxy's command, runnable here: None for any other container.

    Its upstream URLs go through `resolve`; it listens on host:containerPort.
    """
    command = [*(container.get("command") or []), *(container.get("args") or [])]
    if command[:3] != SHADOW_PROXY_COMMAND:
        return None
    flags: dict[str, Callable[[str], list[str]]] = {
        "--stable": lambda url: ["--stable", resolve(url)],
        "--candidate": lambda url: ["--candidate", resolve(url)],
    }
    listen = ["--host", host, "--port", str(container_port(container))]
    rewritten = _rewritten(_without_listen_flags(command[3:]), flags)
    return [sys.executable, "-m", "modelrollout.shadowproxy", *rewritten, *listen]


def _upstream_urls(container: dict[str, Any]) -> list[str]:
    args = [*(container.get("command") or []), *(container.get("args") or [])]
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--candidate", "--stable")]


def _modelserve() -> str:
    """The project's `modelserve`, beside this interpreter (the image's entrypoint)."""
    return shutil.which("modelserve", path=str(Path(sys.executable).parent)) or "modelserve"


def _rewritten(args: list[str], flags: dict[str, Callable[[str], list[str]]]) -> list[str]:
    """`args` with each flag of `flags`, and the value after it, replaced by what
    `flags[flag](value)` gives; every other argument as it is."""
    rewritten: list[str] = []
    values = iter(args)
    for arg in values:
        rewrite = flags.get(arg)
        rewritten += [arg] if rewrite is None else rewrite(next(values, ""))
    return rewritten


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
    flags: dict[str, Callable[[str], list[str]]] = {
        "--suite": lambda _: ["--suite", str(suite_file)],
        "--candidate": lambda url: ["--candidate", resolve(url)],
        "--stable": lambda url: ["--stable", resolve(url)],
        "--termination-log": lambda _: [],
    }
    rewritten = _rewritten(command[2:], flags)
    return [_modelserve(), "eval", *rewritten, "--termination-log", str(termination_log)]


def local_load_command(
    container: dict[str, Any], prompts_file: Path, resolve: Callable[[str], str]
) -> list[str] | None:
    """The container's `modelserve loadgen` command, runnable here: None for anything else.

    Each `--target` URL goes through `resolve`; `--prompts-file` names `prompts_file`.
    """
    command = [*(container.get("command") or []), *(container.get("args") or [])]
    if command[:2] != ["modelserve", "loadgen"]:
        return None
    flags: dict[str, Callable[[str], list[str]]] = {
        "--target": lambda url: ["--target", resolve(url)],
        "--prompts-file": lambda _: ["--prompts-file", str(prompts_file)],
    }
    return [_modelserve(), "loadgen", *_rewritten(command[2:], flags)]


@dataclass(frozen=True)
class Probe:
    """An httpGet probe as a pod spec gives it, with the kubelet's defaults."""

    path: str
    initial_delay: float
    period: float
    timeout: float
    failure_threshold: int

    @classmethod
    def from_spec(cls, probe: dict[str, Any] | None) -> Probe | None:
        if not probe:
            return None
        http_get = probe.get("httpGet")
        if http_get is None:
            raise ValueError(f"the harness runs httpGet probes only, not {sorted(probe)}")
        return cls(
            path=http_get.get("path", "/"),
            initial_delay=float(probe.get("initialDelaySeconds", 0)),
            period=float(probe.get("periodSeconds", 10)),
            timeout=float(probe.get("timeoutSeconds", 1)),
            failure_threshold=int(probe.get("failureThreshold", 3)),
        )

    def failure(self, address: str) -> str | None:
        """Why the probe failed, in the kubelet's words; None on a 2xx or 3xx within the timeout."""
        url = f"http://{address}{self.path}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                status = int(response.status)
        except urllib.error.HTTPError as error:
            status = error.code
        except (urllib.error.URLError, OSError, ValueError) as error:
            return f'Get "{url}": {getattr(error, "reason", error)}'
        return None if 200 <= status < 400 else f"HTTP probe failed with statuscode: {status}"


@dataclass
class _Container:
    """One pod's serving container, run and probed by its own thread."""

    pod: str
    uid: str
    spec: dict[str, Any]
    pod_ip: str
    labels: dict[str, str]
    pod_labels: dict[str, str]
    grace_seconds: float
    pre_stop_seconds: float
    log_path: Path
    admitted_at: str = field(default_factory=_timestamp)
    popen: subprocess.Popen[bytes] | None = None
    started: bool = False
    ready: bool = False
    restarts: int = 0
    started_at: str = ""
    waiting: tuple[str, str] | None = None  # (reason, message) while not running
    last_exit: dict[str, Any] | None = None
    terminating: threading.Event = field(default_factory=threading.Event)
    terminated: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None  # monotonic time at which the grace period ends
    thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.pod_ip}:{container_port(self.spec)}"


class PodProcesses:
    """The kubelet of the node `harness-<namespace>`, for the rollouts' pods in that namespace."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        network: PodNetwork,
        log_dir: Path,
        poll_interval: float = 0.3,
    ) -> None:
        self._api = api
        self._namespace = namespace
        self._network = network
        self._log_dir = log_dir
        self._poll_interval = poll_interval
        self.node = harness_node_name(namespace)
        self._containers: dict[str, _Container] = {}
        self._job_runs: dict[str, _JobRun] = {}
        # Job pods already run (or not runnable here): each runs once.
        self._jobs_started: set[str] = set()
        self._job_pods_seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def placement(self) -> dict[str, Any]:
        """The `runtime` fields that place a rollout's pods on this harness's node."""
        return {
            "nodeSelector": {HARNESS_LABEL: self._namespace},
            "tolerations": [
                {"key": HARNESS_LABEL, "operator": "Equal", "value": self._namespace,
                 "effect": "NoSchedule"},
                {"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"},
            ],
        }  # fmt: skip

    def start(self) -> PodProcesses:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        node = fake_node(self.node, HARNESS_NODE_GPUS)
        node["metadata"]["labels"][HARNESS_LABEL] = self._namespace
        node["spec"]["taints"] = [
            *node["spec"].get("taints", []),
            {"key": HARNESS_LABEL, "value": self._namespace, "effect": "NoSchedule"},
        ]
        try:
            self._api.create(NODES, "", node)
        except KubeApiError as error:
            if error.status != 409:
                raise
        self._thread = threading.Thread(target=self._loop, name="pod-processes", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop every server (SIGTERM, SIGKILL after its grace), then take the node away."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            containers = list(self._containers.values())
            self._containers.clear()
            job_runs = list(self._job_runs.values())
            self._job_runs.clear()
        for container in containers:
            container.deadline = time.monotonic() + container.grace_seconds
            container.pre_stop_seconds = 0
            container.terminating.set()
        for container in containers:
            if container.thread is not None:
                container.thread.join(timeout=container.grace_seconds + 15)
        for job_run in job_runs:
            _kill_group(job_run.popen)
        # Without its kubelet, a pod of this node would stay Terminating for ever.
        for pod in self._node_pods():
            self._delete_pod(pod["metadata"]["name"], pod["metadata"].get("uid"))
        self._api.delete(NODES, "", self.node)

    def endpoints(self) -> dict[str, Endpoint]:
        """Every server by pod: healthy while its pod is Ready and not terminating."""
        with self._lock:
            return {
                name: Endpoint(
                    pod=name,
                    address=c.address,
                    revision=c.labels.get("revision", ""),
                    role=c.labels.get("role", ""),
                    labels=dict(c.labels),
                    healthy=c.ready and not c.terminating.is_set(),
                    pod_labels=dict(c.pod_labels),
                )
                for name, c in self._containers.items()
            }

    def pids(self) -> list[int]:
        with self._lock:
            return [c.popen.pid for c in self._containers.values() if c.popen is not None]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as error:  # keep standing in for the kubelet through API hiccups
                print(f"[pod-processes] sync failed: {error}", file=sys.stderr, flush=True)
            self._stop.wait(self._poll_interval)

    def _node_pods(self) -> list[dict[str, Any]]:
        return [
            pod
            for pod in self._api.list(PODS, self._namespace)
            if pod["spec"].get("nodeName") == self.node
        ]

    def _sync(self) -> None:
        pods = {pod["metadata"]["name"]: pod for pod in self._node_pods()}
        with self._lock:
            for name, container in list(self._containers.items()):
                pod = pods.get(name)
                if pod is None or pod["metadata"].get("uid") != container.uid:
                    # Deleted by force (or replaced): the kubelet kills what is left at once.
                    container.deadline = time.monotonic()
                    container.terminating.set()
                elif pod["metadata"].get("deletionTimestamp"):
                    self._begin_termination(container, pod)
                else:
                    container.pod_labels = dict(pod["metadata"].get("labels") or {})
                    container.labels = self._labels(pod)
                if container.terminated.is_set():
                    del self._containers[name]
            for name, pod in pods.items():
                if name not in self._containers and not pod["metadata"].get("deletionTimestamp"):
                    self._admit(pod)
                elif name not in self._containers:
                    # Terminating, and never run or already stopped: nothing left to wait for.
                    self._delete_pod(name, pod["metadata"].get("uid"))
        self._sync_job_pods()

    @staticmethod
    def _begin_termination(container: _Container, pod: dict[str, Any]) -> None:
        if container.terminating.is_set():
            return
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        container.grace_seconds = float(container.grace_seconds if grace is None else grace)
        container.pre_stop_seconds = min(container.pre_stop_seconds, container.grace_seconds)
        container.deadline = time.monotonic() + container.grace_seconds
        container.terminating.set()

    # -- serving pods ----------------------------------------------------------

    def _admit(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        spec = pod["spec"]["containers"][0]
        pre_stop = ((spec.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {})
        grace = float(pod["spec"].get("terminationGracePeriodSeconds") or 30)
        container = _Container(
            pod=name,
            uid=pod["metadata"]["uid"],
            spec=spec,
            pod_ip=self._network.claim_address(self.node, pod["metadata"]["uid"]),
            labels=self._labels(pod),
            pod_labels=dict(pod["metadata"].get("labels") or {}),
            grace_seconds=grace,
            pre_stop_seconds=min(float(pre_stop.get("seconds") or 0), grace),
            log_path=self._log_dir / f"{name}.log",
        )
        self._containers[name] = container
        container.thread = threading.Thread(
            target=self._run, args=(container,), name=f"pod-{name}", daemon=True
        )
        container.thread.start()

    def _run(self, container: _Container) -> None:
        """The container's whole life: start, probe, restart, and stop when told."""
        try:
            backoff = RESTART_BACKOFF_SECONDS
            while not container.terminating.is_set():
                if not self._launch(container):
                    return
                self._report(container)
                self._probe_until_exit(container)
                if container.terminating.is_set():
                    break
                self._kill(container, "Error")
                container.restarts += 1
                container.waiting = ("CrashLoopBackOff", f"back-off {backoff:.0f}s restarting")
                self._report(container)
                container.terminating.wait(backoff)
                backoff = min(backoff * 2, RESTART_BACKOFF_MAX_SECONDS)
            self._shut_down(container)
        except Exception as error:  # a kubelet keeps going whatever one pod does
            print(f"[pod-processes] pod {container.pod}: {error}", file=sys.stderr, flush=True)
            _kill_group(container.popen)
        finally:
            self._network.release_address(container.pod_ip)
            if container.deadline is not None:
                self._delete_pod(container.pod, container.uid)
            container.terminated.set()

    def _launch(self, container: _Container) -> bool:
        command = local_command(container.spec, container.pod_ip)
        if command is None and container.spec.get("command", [])[:3] == SHADOW_PROXY_COMMAND:
            # The servers it addresses may still be loading: wait for them a while.
            deadline = time.monotonic() + SERVER_WAIT_SECONDS
            while (
                any(self._resolve(url) == url for url in _upstream_urls(container.spec))
                and time.monotonic() < deadline
                and not container.terminating.wait(self._poll_interval)
            ):
                pass
            command = local_proxy_command(container.spec, container.pod_ip, self._resolve)
        if command is None:
            message = f"the image {container.spec.get('image')} cannot run here"
            print(f"[pod-processes] pod {container.pod}: {message}", file=sys.stderr, flush=True)
            container.waiting = ("CreateContainerError", message)
            self._report(container)
            container.terminating.wait()
            return False
        # A container's hostname, and so its HOSTNAME, is its pod's name.
        env = {**os.environ, "HOSTNAME": container.pod}
        if command[0] not in (_modelserve(), sys.executable):
            # vLLM's interpreter has its own site-packages: the project's path would shadow them.
            env.pop("PYTHONPATH", None)
            # A kubelet gives each container a cpuset of its own; here every server sees the
            # same cores, and vLLM's CPU build pins its threads to the first one it sees:
            # two servers on one core starve each other (a canary's start stalled for
            # minutes behind a loaded stable). Unpinned, unless the pod says otherwise.
            env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        for variable in container.spec.get("env") or []:
            if "value" in variable:
                env[variable["name"]] = variable["value"]
        with container.log_path.open("ab") as log:
            container.popen = subprocess.Popen(
                self._network.command(command),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        container.started = container.ready = False
        container.waiting = None
        container.started_at = _timestamp()
        return True

    def _probe_until_exit(self, container: _Container) -> None:
        """Run the container's probes at their periods until it exits, fails its startup or
        liveness probe, or is told to terminate; report each change of readiness."""
        startup = Probe.from_spec(container.spec.get("startupProbe"))
        readiness = Probe.from_spec(container.spec.get("readinessProbe"))
        liveness = Probe.from_spec(container.spec.get("livenessProbe"))
        assert container.popen is not None
        launched = time.monotonic()
        failures = {"startup": 0, "readiness": 0, "liveness": 0}
        due = {
            name: launched + (probe.initial_delay if probe else 0)
            for name, probe in (("startup", startup), ("readiness", readiness),
                                ("liveness", liveness))
        }  # fmt: skip
        if startup is None:
            container.started = True
        while not container.terminating.is_set():
            if container.popen.poll() is not None:
                return
            now = time.monotonic()
            if not container.started:
                assert startup is not None
                if now >= due["startup"]:
                    due["startup"] = now + startup.period
                    if self._probe(container, "Startup", startup):
                        container.started = True
                        self._report(container)
                        due["readiness"] = due["liveness"] = time.monotonic()
                    else:
                        failures["startup"] += 1
                        if failures["startup"] >= startup.failure_threshold:
                            return
            else:
                if readiness is None:
                    if not container.ready:
                        container.ready = True
                        self._report(container)
                elif now >= due["readiness"]:
                    due["readiness"] = now + readiness.period
                    passed = self._probe(container, "Readiness", readiness)
                    failures["readiness"] = 0 if passed else failures["readiness"] + 1
                    ready = passed or (
                        container.ready and failures["readiness"] < readiness.failure_threshold
                    )
                    if ready != container.ready:
                        container.ready = ready
                        self._report(container)
                if liveness is not None and now >= due["liveness"]:
                    due["liveness"] = now + liveness.period
                    alive = self._probe(container, "Liveness", liveness)
                    failures["liveness"] = 0 if alive else failures["liveness"] + 1
                    if failures["liveness"] >= liveness.failure_threshold:
                        return
            next_due = min(
                due["startup"] if not container.started else
                min(due["readiness"], due["liveness"]),
                time.monotonic() + 1.0,
            )  # fmt: skip
            container.terminating.wait(max(0.05, next_due - time.monotonic()))

    def _probe(self, container: _Container, kind: str, probe: Probe) -> bool:
        """Run `probe`; a failure is a Warning Event on the pod, as the kubelet posts it."""
        failure = probe.failure(container.address)
        if failure is None:
            return True
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": container.pod, "namespace": self._namespace, "uid": container.uid}}  # fmt: skip
        event = build_event(pod, "Warning", "Unhealthy", f"{kind} probe failed: {failure}")
        event.update(
            source={"component": "kubelet", "host": self.node},
            reportingComponent="kubelet",
            reportingInstance=self.node,
        )
        try:
            self._api.create(EVENTS, self._namespace, event)
        except KubeApiError as error:
            print(
                f"[pod-processes] pod {container.pod}: event: {error}", file=sys.stderr, flush=True
            )
        return False

    def _shut_down(self, container: _Container) -> None:
        """Out of rotation, preStop sleep, SIGTERM, SIGKILL when the grace period ends."""
        container.ready = False
        self._report(container)
        deadline = container.deadline or time.monotonic()
        popen = container.popen
        if popen is None or popen.poll() is not None:
            return
        # preStop runs while the server still serves: endpoints are being updated meanwhile.
        self._sleep_or_exit(popen, min(container.pre_stop_seconds, deadline - time.monotonic()))
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        self._kill(container, "Completed")

    @staticmethod
    def _sleep_or_exit(popen: subprocess.Popen[bytes], seconds: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=max(0.0, seconds))

    def _kill(self, container: _Container, reason: str) -> None:
        popen = container.popen
        if popen is None:
            return
        _kill_group(popen)
        code = popen.returncode
        container.started = container.ready = False
        container.last_exit = {
            "exitCode": code if code is not None and code >= 0 else 137,
            "reason": reason if code == 0 else "Error",
            "startedAt": container.started_at,
            "finishedAt": _timestamp(),
        }

    def _report(self, container: _Container) -> None:
        """The pod's status as the kubelet reports it: phase, IP, conditions, container state."""
        now = _timestamp()
        ready = "True" if container.ready and not container.terminating.is_set() else "False"
        state: dict[str, Any]
        if container.waiting is not None:
            reason, message = container.waiting
            state = {"waiting": {"reason": reason, "message": message}}
        else:
            state = {"running": {"startedAt": container.started_at}}
        status: dict[str, Any] = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": container.pod_ip,
            "podIPs": [{"ip": container.pod_ip}],
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
                {"type": "Ready", "status": ready, "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": container.spec["name"],
                    "image": container.spec.get("image", ""),
                    "imageID": "",
                    "containerID": f"harness://{container.popen.pid if container.popen else 0}",
                    "ready": ready == "True",
                    "started": container.started,
                    "restartCount": container.restarts,
                    "state": state,
                    **(
                        {"lastState": {"terminated": container.last_exit}}
                        if container.last_exit
                        else {}
                    ),
                }
            ],
        }
        status["startTime"] = container.admitted_at
        try:
            self._api.merge_patch(
                PODS, self._namespace, container.pod, {"status": status}, subresource="status"
            )
        except KubeApiError as error:
            if error.status != 404:
                raise

    def _delete_pod(self, name: str, uid: str | None) -> None:
        """The kubelet's last word on a pod whose containers have stopped."""
        try:
            self._api.delete(PODS, self._namespace, name, grace_period_seconds=0, uid=uid)
        except KubeApiError as error:
            if error.status != 409:  # the name now belongs to another pod
                raise

    # -- quality-gate Job pods -------------------------------------------------

    def _sync_job_pods(self) -> None:
        """Run each evaluation and analysis-load pod once, as its kubelet would."""
        pods = {
            pod["metadata"]["name"]: pod
            for label in (EVALUATION_LABEL, LOAD_LABEL)
            for pod in self._api.list(PODS, self._namespace, label)
        }
        for name, pod in pods.items():
            if name in self._jobs_started or pod.get("status", {}).get("phase") != "Running":
                continue
            if pod["metadata"].get("deletionTimestamp"):
                continue
            # The servers addressed may still be loading: wait for them a while.
            first_seen = self._job_pods_seen.setdefault(name, time.monotonic())
            container = pod["spec"]["containers"][0]
            args = [*(container.get("command") or []), *(container.get("args") or [])]
            urls = [
                args[i + 1]
                for i, a in enumerate(args[:-1])
                if a in ("--candidate", "--stable", "--target")
            ]
            waiting = any(self._resolve(url) == url for url in urls)
            if waiting and time.monotonic() - first_seen < SERVER_WAIT_SECONDS:
                continue
            self._jobs_started.add(name)
            self._start_job_pod(pod)
        for name, job_run in list(self._job_runs.items()):
            current = pods.get(name)
            if current is None or current["metadata"].get("deletionTimestamp"):
                # A deleted pod's container is killed, whatever it was doing.
                _kill_group(job_run.popen)
                del self._job_runs[name]
                continue
            code = job_run.popen.poll()
            if code is not None:
                del self._job_runs[name]
                self._report_job_run(job_run, code)

    def _resolve(self, url: str) -> str:
        """A Service URL as the ready server of the revision the Service selects."""
        parts = urlsplit(url)
        service = self._api.get(SERVICES, self._namespace, parts.hostname or "")
        revision = ((service or {}).get("spec", {}).get("selector") or {}).get(REVISION_LABEL)
        addresses = sorted(
            e.address for e in self.endpoints().values() if e.revision == revision and e.healthy
        )
        # No server: the original URL fails to connect here, as it would in a cluster.
        return f"http://{addresses[0]}" if addresses else url

    def _config_map_file(
        self, pod: dict[str, Any], container: dict[str, Any], path: str, target: Path
    ) -> None:
        """Write the ConfigMap key mounted at `path` in the container to `target`, as the
        kubelet projects it; a missing ConfigMap or key leaves no file."""
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts") or []}
        for volume in pod["spec"].get("volumes") or []:
            mount = mounts.get(volume["name"])
            if "configMap" in volume and mount and path.startswith(f"{mount}/"):
                config_map = self._api.get(CONFIGMAPS, self._namespace, volume["configMap"]["name"])
                text = ((config_map or {}).get("data") or {}).get(path[len(mount) + 1 :])
                if text is not None:
                    target.write_text(text)

    def _start_job_pod(self, pod: dict[str, Any]) -> None:
        name: str = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        work = self._log_dir / name
        work.mkdir(parents=True, exist_ok=True)
        args = [*(container.get("command") or []), *(container.get("args") or [])]

        def mounted(flag: str, file_name: str) -> Path:
            local = work / file_name
            if flag in args:
                self._config_map_file(pod, container, args[args.index(flag) + 1], local)
            return local

        termination_log = work / "termination-log"
        termination_log.write_text("")
        command = local_eval_command(
            container, mounted("--suite", "suite.yaml"), termination_log, self._resolve
        ) or local_load_command(container, mounted("--prompts-file", "prompts.txt"), self._resolve)
        if command is None:
            print(f"[pod-processes] pod {name}: cannot run here", file=sys.stderr, flush=True)
            return
        log = (self._log_dir / f"{name}.log").open("ab")
        popen = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._job_runs[name] = _JobRun(name, container, popen, termination_log, _timestamp())

    def _report_job_run(self, job_run: _JobRun, code: int) -> None:
        """What the kubelet reports for a finished container with terminationMessagePolicy File."""
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "message": job_run.termination_log.read_text()[:4096],
            "startedAt": job_run.started_at,
            "finishedAt": _timestamp(),
        }
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": job_run.container["name"],
                    "image": job_run.container.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {"terminated": terminated},
                }
            ],
        }
        self._api.merge_patch(
            PODS, self._namespace, job_run.pod, {"status": status}, subresource="status"
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


def _kill_group(popen: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL the process and everything it started (vLLM runs its engine as a child)."""
    if popen is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)
    popen.wait(timeout=30)
