"""Faults for chaos tests on the local cluster: stop one process, start it again as it was.

A process is captured from /proc before it is stopped (its command line,
working directory, environment and the file its output went to), so it comes
back exactly as it ran: same flags, same port, same data directory, output
appended to the same log. kwokctl's control-plane components are found
through their pid files, which are rewritten with the new pid, so
`cluster.down` (and `kwokctl delete cluster`) stop the new process.
Nothing here restarts a whole cluster: `kwokctl stop/start cluster` brings
every component back at once and leaves the control plane slow for a while.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from modelrollout_dev import cluster, processes

KUBE_APISERVER = "kube-apiserver"


class FaultError(RuntimeError):
    """A process could not be stopped, started again, or did not come back healthy."""


@dataclass(frozen=True)
class ProcessImage:
    """What it takes to start a process again as it was."""

    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str]
    log_path: Path | None  # where its stdout and stderr went, if a regular file

    @classmethod
    def of(cls, pid: int) -> ProcessImage:
        proc = Path(f"/proc/{pid}")
        try:
            raw = (proc / "cmdline").read_bytes()
            cwd = os.readlink(proc / "cwd")
            environ = (proc / "environ").read_bytes()
            output = os.readlink(proc / "fd" / "1")
        except OSError as error:
            raise FaultError(f"cannot read process {pid} from /proc: {error}") from error
        # Each argument ends in a NUL: split, drop what follows the last, keep empty ones.
        argv = tuple(arg.decode(errors="surrogateescape") for arg in raw.split(b"\0")[:-1])
        if not argv:
            raise FaultError(f"process {pid} has no command line (a zombie?)")
        env = dict(
            entry.decode(errors="surrogateescape").split("=", 1)
            for entry in environ.split(b"\0")
            if b"=" in entry
        )
        log_path = Path(output) if output.startswith("/") and Path(output).is_file() else None
        return cls(argv=argv, cwd=cwd, env=env, log_path=log_path)

    def start(self) -> int:
        """Start it detached (its own session), output appended to the same log; its pid."""
        with contextlib.ExitStack() as stack:
            output = (
                stack.enter_context(self.log_path.open("ab"))
                if self.log_path is not None
                else subprocess.DEVNULL
            )
            process = subprocess.Popen(
                list(self.argv),
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _STARTED[process.pid] = process  # reaped when stopped; no "still running" warning
        return process.pid


# Processes this module started, kept so they are reaped rather than left as zombies.
_STARTED: dict[int, subprocess.Popen[bytes]] = {}


def kill(pid: int, sig: signal.Signals = signal.SIGKILL, timeout: float = 15.0) -> None:
    """Send `sig` and wait until the process is gone (escalating to SIGKILL at `timeout`)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            if sig == signal.SIGKILL:
                raise FaultError(f"process {pid} outlived SIGKILL for {timeout:.0f}s")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            sig, deadline = signal.SIGKILL, time.monotonic() + timeout
        time.sleep(0.05)


def process_alive(pid: int) -> bool:
    """Whether the process runs; a zombie (ended, not yet reaped by its parent) does not."""
    return _alive(pid)


def _alive(pid: int) -> bool:
    started = _STARTED.get(pid)
    if started is not None:
        if started.poll() is None:
            return True
        del _STARTED[pid]
        return False
    return processes.pid_alive(pid)  # a zombie counts as gone


@dataclass(frozen=True)
class StoppedProcess:
    """A process this module stopped, ready to be started again as it was."""

    image: ProcessImage
    pid_file: Path | None = None

    def start(self) -> int:
        pid = self.image.start()
        if self.pid_file is not None:
            # As kwokctl writes it: the bare number, so its own `delete cluster` finds it too.
            tmp = self.pid_file.with_suffix(".pid.tmp")
            tmp.write_text(str(pid))
            os.replace(tmp, self.pid_file)
        return pid


def stop_process(
    pid: int, sig: signal.Signals = signal.SIGKILL, pid_file: Path | None = None
) -> StoppedProcess:
    """Capture the process, then stop it with `sig`; `start()` on the result brings it back."""
    image = ProcessImage.of(pid)
    kill(pid, sig)
    return StoppedProcess(image, pid_file)


def component_pid_file(name: str, component: str) -> Path:
    return cluster.cluster_dir(name) / "kwok" / "clusters" / name / "pids" / f"{component}.pid"


def stop_component(
    name: str, component: str = KUBE_APISERVER, sig: signal.Signals = signal.SIGKILL
) -> StoppedProcess:
    """Stop one control-plane process of cluster `name` (the others keep running)."""
    pid = cluster.kwok_component_pids(name).get(component)
    if pid is None or not _alive(pid):
        raise FaultError(f"cluster {name!r} has no running {component}")
    return stop_process(pid, sig, component_pid_file(name, component))


def api_ready(name: str) -> bool:
    state = cluster.load_state(name)
    if state is None:
        raise FaultError(f"no cluster named {name!r}")
    try:
        cluster.kubectl(state, ["get", "--raw", "/readyz"])
    except cluster.ClusterError:
        return False
    return True


def wait_api_ready(name: str, timeout: float = 90.0) -> float:
    """Wait for the API server's /readyz; how long it took."""
    started = time.monotonic()
    while not api_ready(name):
        if time.monotonic() - started > timeout:
            raise FaultError(f"the API server of {name!r} not ready after {timeout:.0f}s")
        time.sleep(0.25)
    return time.monotonic() - started


@dataclass(frozen=True)
class Outage:
    """What a control-plane outage did, for the test's report."""

    down_s: float  # from the kill to the new process's start
    ready_s: float  # from the new start to /readyz
    new_pid: int
    # Components that exited by themselves during the outage (a lost leader
    # election ends kube-controller-manager and kube-scheduler) and were started
    # again, as a kubelet restarts a crashed static pod.
    restarted: tuple[str, ...]


def restart_kube_apiserver(
    name: str,
    down_for: float,
    sig: signal.Signals = signal.SIGKILL,
    ready_timeout: float = 90.0,
    settle: float = 3.0,
) -> Outage:
    """Stop only the API server of cluster `name` for `down_for` seconds, then start it again.

    etcd, the controllers and the scheduler keep running. kube-controller-manager
    and kube-scheduler end themselves when they cannot renew their leader Lease
    for 10 s; any component that exits before the API server is ready or
    within `settle` seconds after is started again, as it was, and named in
    the result. The controllers' watches back off after an outage (client-go:
    up to 30 s, reset after 2 minutes of calm), so a second restart of the
    same cluster within minutes leaves them reacting tens of seconds late:
    give each such test a cluster of its own.
    """
    others = {
        component: ProcessImage.of(pid)
        for component, pid in cluster.kwok_component_pids(name).items()
        if component != KUBE_APISERVER and _alive(pid)
    }
    stopped_at = time.monotonic()
    stopped = stop_component(name, KUBE_APISERVER, sig)
    time.sleep(max(0.0, down_for - (time.monotonic() - stopped_at)))
    new_pid = stopped.start()
    started_at = time.monotonic()
    ready_s = wait_api_ready(name, ready_timeout)
    restarted: list[str] = []
    settled_at = time.monotonic() + settle
    while True:
        pids = cluster.kwok_component_pids(name)
        for component, image in others.items():
            pid = pids.get(component)
            if pid is None or not _alive(pid):
                StoppedProcess(image, component_pid_file(name, component)).start()
                restarted.append(component)
        if time.monotonic() >= settled_at:
            break
        time.sleep(0.25)
    return Outage(
        down_s=started_at - stopped_at,
        ready_s=ready_s,
        new_pid=new_pid,
        restarted=tuple(restarted),
    )
