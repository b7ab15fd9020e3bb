"""Run the real operator (`kopf run -m modelrollout.main`) as a process, as in production.

Used by the demo, the benchmarks and the e2e tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from modelrollout_dev.logs import log_tail


class OperatorProcess:
    """The operator watching one namespace; killable with SIGKILL for restart tests."""

    def __init__(
        self,
        kubeconfig: str,
        namespace: str,
        log_dir: Path,
        tick_interval: float = 1.0,
        metrics_port: int | None = None,
        extra_env: dict[str, str] | None = None,
        liveness_port: int | None = None,
    ) -> None:
        self.liveness_port = liveness_port
        self.metrics_port = metrics_port
        self.extra_env = extra_env or {}
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_dir / f"operator-{namespace}.log"
        self.tick_interval = tick_interval
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "MODELROLLOUT_TICK_INTERVAL": str(self.tick_interval),
            "MODELROLLOUT_METRICS_PORT": "off"
            if self.metrics_port is None
            else str(self.metrics_port),
            **self.extra_env,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kopf",
                    "run",
                    "-m",
                    "modelrollout.main",
                    "--standalone",
                    "--namespace",
                    self.namespace,
                    *(
                        [f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz"]
                        if self.liveness_port is not None
                        else []
                    ),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self._process is not None, "operator not started"
        return self._process.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, exactly like an OOM kill or a node loss."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> OperatorProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
