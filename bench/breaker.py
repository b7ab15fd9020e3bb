"""Circuit breaker: how fast an open breaker refuses, against a normal request.

Starts two `modelserve serve` processes on a generated random-weights model: a
healthy one, and one whose engine fails its first steps (engine-level fault
injection) so that its breaker opens and stays open (long cool-down). Sends
requests one after another on a kept-alive connection to each and prints the
latency percentiles of a normal generation and of an open breaker's 503.

    .venv/bin/python bench/breaker.py [--hidden-size 1024 --layers 4 --max-tokens 32]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from modelrollout_dev.processes import free_port
from modelserve.loadgen import percentile
from modelserve.tiny_model import TinyModelShape, make_tiny_model

MODEL_NAME = "bench"
BREAKER_FAILURES = 5


def start_server(model_dir: Path, log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable, "-m", "modelserve.cli", "serve", "--model", str(model_dir),
        "--served-model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", *extra,
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"server did not become healthy: {log.read_text()[-3000:]}")


def timed(
    client: httpx.Client, url: str, body: dict[str, object], count: int, status: int
) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        response = client.post(url + "/v1/completions", json=body)
        latencies.append(time.perf_counter() - started)
        if response.status_code != status:
            raise RuntimeError(f"expected {status}, got {response.status_code}: {response.text}")
    return latencies


def _ms(latencies: list[float], q: float) -> float:
    value = percentile(latencies, q)
    assert value is not None
    return value * 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--hidden-size", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=50, help="normal generations timed")
    parser.add_argument("--refusals", type=int, default=500, help="open-breaker 503s timed")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="modelserve-breaker-bench-"))
    shape = TinyModelShape(
        hidden_size=args.hidden_size,
        intermediate_size=args.hidden_size * 2,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=4,
    )
    model_dir = make_tiny_model(work / "model", seed=0, shape=shape)
    print(
        f"model: Llama-style, hidden {args.hidden_size}, {args.layers} layers, vocab 512, fp32; "
        f"{args.max_tokens} output tokens per request, non-streaming, greedy; "
        f"{os.cpu_count()} CPUs; sequential requests on one kept-alive connection"
    )
    body = {
        "model": MODEL_NAME,
        "prompt": "Tell me a story",
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    healthy = start_server(model_dir, work / "healthy.log")
    tripped = start_server(
        model_dir, work / "tripped.log",
        "--breaker-failures", str(BREAKER_FAILURES), "--breaker-cooldown", "3600",
        "--fault-injection", "--fault-engine-error-rate", "1",
    )  # fmt: skip
    try:
        with httpx.Client(timeout=120) as client:
            timed(client, healthy[1], body, 3, 200)  # warm-up
            normal = timed(client, healthy[1], body, args.requests, 200)
            timed(client, tripped[1], body, BREAKER_FAILURES, 500)  # opens the breaker
            refused = timed(client, tripped[1], body, args.refusals, 503)
    finally:
        for process, _ in (healthy, tripped):
            process.kill()
            process.wait(10)
    print("case                 |     n |  p50 ms |  p95 ms |  p99 ms")
    for name, latencies in (("normal generation", normal), ("open breaker (503)", refused)):
        p50, p95, p99 = (_ms(latencies, q) for q in (50, 95, 99))
        print(f"{name:<20} | {len(latencies):5d} | {p50:7.2f} | {p95:7.2f} | {p99:7.2f}")
    ratio = _ms(normal, 50) / _ms(refused, 50)
    print(f"p50 normal / p50 open-breaker refusal: {ratio:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
