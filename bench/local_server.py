"""A modelserve process on loopback for the serving benches, returned once /health answers."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from modelrollout_dev.processes import free_port
from modelserve.tiny_model import TinyModelShape, make_tiny_model

MODEL_NAME = "bench"


def bench_model(directory: Path, hidden_size: int, layers: int, heads: int) -> Path:
    """The benches' tiny random Llama-style model: FFN twice as wide, half as many KV heads."""
    shape = TinyModelShape(
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
    )
    return make_tiny_model(directory, seed=0, shape=shape)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str


def start_server(
    model_dir: Path, log: Path, *args: str, env: dict[str, str] | None = None
) -> Server:
    """`modelserve serve` on the tiny model with `args` after the common flags."""
    port = free_port()
    command = [
        sys.executable, "-m", "modelserve.cli", "serve", "--model", str(model_dir),
        "--served-model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", *args,
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return Server(process, url)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"server did not become healthy: {log.read_text()[-3000:]}")
