"""Fixtures for the serving suite: a tiny model on disk and real `modelserve serve` processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

TINY_MODEL_NAME = "tiny"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelserve.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model in a shape vLLM's CPU build serves."""
    from modelserve.tiny_model import VLLM_SHAPE, make_tiny_model

    shape = VLLM_SHAPE
    return make_tiny_model(tmp_path_factory.mktemp("vllm-tiny"), seed=0, shape=shape)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A `modelserve serve` subprocess on a loopback port."""

    process: subprocess.Popen[str]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def start_server(model: Path | str, log_dir: Path, *extra_args: str) -> ServerProcess:
    """Start `modelserve serve` on `model` (a directory or a model URI); return once healthy."""
    port = free_port()
    log_path = log_dir / f"modelserve-{port}.log"
    # The server's torch gets one thread: the suite runs on small CPUs next to other work.
    # HOSTNAME as a container has it: its pod's name.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOSTNAME": SERVER_POD_NAME}
    env.pop(MODELSERVE_FAULT_ENV, None)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelserve.cli",
                "serve",
                "--model",
                str(model),
                "--served-model-name",
                TINY_MODEL_NAME,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "info",
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"modelserve exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.base_url + "/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"modelserve did not become healthy:\n{server.log()}")


MODELSERVE_FAULT_ENV = "MODELSERVE_FAULT_INJECTION"
SERVER_POD_NAME = "chat-0a1b2c3d4e-5f6789abcd-x2k4q"


@pytest.fixture(scope="module")
def server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A batching server (batch 8) without faults, shared by a module's tests."""
    process = start_server(tiny_model_dir, tmp_path_factory.mktemp("logs"), "--max-batch-size", "8")
    yield process
    process.stop()


def scrape(base_url: str) -> dict[str, float]:
    """The server's metrics as {series: value}, e.g. 'vllm:num_requests_running{...}'."""
    values: dict[str, float] = {}
    for line in httpx.get(base_url + "/metrics", timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            values[series] = float(value)
    return values


def metric(values: dict[str, float], name: str, **labels: str) -> float:
    """The sum over series of `name` whose labels include `labels`."""
    total = 0.0
    found = False
    for series, value in values.items():
        series_name, _, label_text = series.partition("{")
        if series_name != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += value
            found = True
    if not found:
        raise KeyError(f"no series {name} with {labels}")
    return total
