"""GuideLLM and the project's load generator against modelserve and vLLM, checked against
the servers' own latency histograms.

For each engine (`modelserve serve` and vLLM, the CPU build from scripts/vllm-env.sh
unless --vllm-python names another) this starts a server on one tiny Llama (head_dim
64, which vLLM's CPU attention needs), warms it up, then drives it twice with the same
concurrency and request count: once with modelserve's loadgen, once with GuideLLM (from
scripts/guidellm-env.sh, a venv of its own). Around each run it reads the server's
`/metrics` and takes the delta of

    vllm:time_to_first_token_seconds   (sum, count)
    vllm:inter_token_latency_seconds   (sum, count)

(both engines export these names; the `ttftP99` and `interTokenLatencyP99` analysis
metrics query them), so the server's mean over exactly that run sits beside the
client's mean. A client starts its clock before sending and stops it on receipt; a
server counts from arrival to the token leaving its engine. So the client's TTFT is the
server's plus transport and HTTP handling, and the ITLs, both over the same gaps between
tokens, should match. The verdict (exit 1 with --check when missed):

    TTFT: server mean * TTFT_MIN_RATIO <= client mean <= server mean + transport allowance
          (allowance: max(TTFT_MAX_EXCESS_S, TTFT_MAX_EXCESS_RATIO * server mean))
    ITL:  ITL_MIN_RATIO <= client mean / server mean <= ITL_MAX_RATIO
    count: the histogram's TTFT count delta == requests the client completed

    .venv/bin/python bench/guidellm_compare.py [--engines modelserve vllm]
        [--requests 24 --concurrency 4 --output-tokens 32 --device cpu --check]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from modelserve.loadgen import LoadConfig, Target, run_load
from modelserve.tiny_model import VLLM_SHAPE, make_tiny_model

REPO = Path(__file__).resolve().parents[1]
MODEL_NAME = "tiny"
TTFT_HISTOGRAM = "vllm:time_to_first_token_seconds"
ITL_HISTOGRAM = "vllm:inter_token_latency_seconds"
# A client cannot see a token before the server made it; 5% covers the two clocks'
# rounding (both are this machine's monotonic/wall clocks, read in different processes).
TTFT_MIN_RATIO = 0.95
# Transport and HTTP handling on a loaded 2-core machine: tens of ms per request.
TTFT_MAX_EXCESS_S = 0.1
TTFT_MAX_EXCESS_RATIO = 1.0
ITL_MIN_RATIO = 0.8
ITL_MAX_RATIO = 1.25
HEALTHY_WITHIN_S = 600


@dataclass
class Server:
    engine: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    start_s: float


@dataclass
class Histograms:
    ttft_sum: float
    ttft_count: float
    itl_sum: float
    itl_count: float

    def minus(self, before: Histograms) -> Histograms:
        return Histograms(
            self.ttft_sum - before.ttft_sum,
            self.ttft_count - before.ttft_count,
            self.itl_sum - before.itl_sum,
            self.itl_count - before.itl_count,
        )


@dataclass
class ClientRun:
    """What a client saw: requests sent and completed, mean TTFT and mean ITL in seconds."""

    requests: int
    ok: int
    ttft_s: float
    itl_s: float


@dataclass
class Comparison:
    """One client's run against one engine: its means beside the server's."""

    engine: str
    client: str
    requests: int
    ok: int
    client_ttft_s: float
    server_ttft_s: float
    server_ttft_count: int
    client_itl_s: float
    server_itl_s: float

    @property
    def ttft_ratio(self) -> float:
        return self.client_ttft_s / self.server_ttft_s

    @property
    def itl_ratio(self) -> float:
        return self.client_itl_s / self.server_itl_s

    def misses(self) -> list[str]:
        """What falls outside the stated agreement; empty when it all agrees."""
        missed = []
        allowance = max(TTFT_MAX_EXCESS_S, TTFT_MAX_EXCESS_RATIO * self.server_ttft_s)
        if not (
            self.server_ttft_s * TTFT_MIN_RATIO
            <= self.client_ttft_s
            <= self.server_ttft_s + allowance
        ):
            missed.append(
                f"TTFT {self.client_ttft_s * 1000:.1f} ms vs server "
                f"{self.server_ttft_s * 1000:.1f} ms (allowed +{allowance * 1000:.0f} ms)"
            )
        if not ITL_MIN_RATIO <= self.itl_ratio <= ITL_MAX_RATIO:
            missed.append(f"ITL ratio {self.itl_ratio:.2f}")
        if self.server_ttft_count != self.ok:
            missed.append(f"histogram counted {self.server_ttft_count} requests, client {self.ok}")
        return missed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_python(script: str) -> Path:
    """The python of a cached environment that `script` (scripts/*-env.sh) builds once."""
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / script)], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


def start(engine: str, command: list[str], env: dict[str, str], port: int, log: Path) -> Server:
    began = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = began + HEALTHY_WITHIN_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{engine} exited with {process.returncode}: {log.read_text()[-4000:]}"
            )
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return Server(engine, process, url, log, time.monotonic() - began)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(
        f"{engine} was not healthy within {HEALTHY_WITHIN_S}s: {log.read_text()[-3000:]}"
    )


def start_modelserve(model_dir: Path, device: str, work: Path) -> Server:
    port = free_port()
    command = [
        sys.executable, "-m", "modelserve.cli", "serve", "--model", str(model_dir),
        "--served-model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port),
        "--max-batch-size", "8", "--device", device, "--log-level", "warning",
    ]  # fmt: skip
    return start("modelserve", command, dict(os.environ), port, work / "modelserve.log")


def start_vllm(model_dir: Path, device: str, vllm_python: Path, work: Path) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = "1"  # GiB; the CPU build's default is 4
        device_args = ["--dtype", "float32"]
    else:
        device_args = ["--dtype", "float16", "--gpu-memory-utilization", "0.3"]
    command = [
        str(vllm_python.parent / "vllm"), "serve", "--model", str(model_dir),
        "--served-model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "512", *device_args,
    ]  # fmt: skip
    return start("vllm", command, env, port, work / "vllm.log")


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(60)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(30)


def histograms(server: Server) -> Histograms:
    """The server's TTFT and ITL histogram sums and counts, summed over label sets."""
    values: dict[str, float] = {}
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return Histograms(
        values[TTFT_HISTOGRAM + "_sum"],
        values[TTFT_HISTOGRAM + "_count"],
        values[ITL_HISTOGRAM + "_sum"],
        values[ITL_HISTOGRAM + "_count"],
    )


def loadgen_config(server: Server, concurrency: int, requests: int, tokens: int) -> LoadConfig:
    return LoadConfig(
        targets=[Target(server.url)],
        model=MODEL_NAME,
        concurrency=concurrency,
        max_requests=requests,
        max_tokens=tokens,
        temperature=0.0,
        stream=True,
        ignore_eos=True,
        request_timeout_s=300,
    )


def run_loadgen(server: Server, args: argparse.Namespace, work: Path) -> ClientRun:
    """One loadgen run; its ITL is weighted by token gaps, as the histogram's is."""
    result = run_load(loadgen_config(server, args.concurrency, args.requests, args.output_tokens))
    done = [o for o in result.outcomes if o.ok and o.ttft_s is not None]
    ttft = sum(o.ttft_s or 0.0 for o in done) / len(done)
    gaps = sum(o.completion_tokens - 1 for o in done)
    itl = sum(o.e2e_s - (o.ttft_s or 0.0) for o in done) / gaps
    return ClientRun(result.requests, len(done), ttft, itl)


def run_guidellm(server: Server, args: argparse.Namespace, work: Path) -> ClientRun:
    """One GuideLLM run, read from its own JSON report."""
    report = work / f"guidellm-{server.engine}.json"
    scenario = {
        "metadata": {"name": f"{server.engine}-concurrent-{args.concurrency}"},
        "spec": {
            "backend": {
                "kind": "openai_http",
                "target": server.url,
                "model": MODEL_NAME,
                "request_format": "/v1/completions",
                "http2": False,
                "timeout": 300,
            },
            "tokenizer": {"kind": "huggingface_auto", "model": str(args.model_dir)},
            "profile": {"kind": "concurrent", "streams": [args.concurrency]},
            "data": [
                {
                    "kind": "synthetic_text",
                    "prompt_tokens": args.prompt_tokens,
                    "output_tokens": args.output_tokens,
                }
            ],
            "constraints": [{"kind": "max_requests", "count": args.requests}],
            "outputs": [{"kind": "json", "path": str(report)}],
        },
    }
    scenario_path = work / f"guidellm-{server.engine}-scenario.json"
    scenario_path.write_text(json.dumps(scenario, indent=1))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [
        str(args.guidellm_python.parent / "guidellm"), "run", "--scenario", str(scenario_path),
        "--disable-progress", "--disable-console",
    ]  # fmt: skip
    log = work / f"guidellm-{server.engine}.log"
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"guidellm exited with {done.returncode}: {log.read_text()[-4000:]}")
    metrics = json.loads(report.read_text())["benchmarks"][0]["metrics"]
    totals = metrics["request_totals"]
    itl = metrics["inter_token_latency_ms"]["successful"]
    return ClientRun(
        int(totals["total"]),
        int(totals["successful"]),
        metrics["time_to_first_token_ms"]["successful"]["mean"] / 1000,
        itl["total_sum"] / itl["count"] / 1000,
    )


Client = Callable[[Server, argparse.Namespace, Path], ClientRun]
CLIENTS: dict[str, Client] = {"loadgen": run_loadgen, "guidellm": run_guidellm}


def compare(server: Server, client: str, args: argparse.Namespace, work: Path) -> Comparison:
    before = histograms(server)
    run = CLIENTS[client](server, args, work)
    delta = histograms(server).minus(before)
    return Comparison(
        engine=server.engine,
        client=client,
        requests=run.requests,
        ok=run.ok,
        client_ttft_s=run.ttft_s,
        server_ttft_s=delta.ttft_sum / delta.ttft_count,
        server_ttft_count=round(delta.ttft_count),
        client_itl_s=run.itl_s,
        server_itl_s=delta.itl_sum / delta.itl_count,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--engines", nargs="+", choices=("modelserve", "vllm"),
                        default=["modelserve", "vllm"])  # fmt: skip
    parser.add_argument("--clients", nargs="+", choices=tuple(CLIENTS), default=list(CLIENTS))
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=64, help="GuideLLM's prompts")
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for both engines")
    parser.add_argument("--vllm-python", type=Path, help="default: scripts/vllm-env.sh's")
    parser.add_argument("--guidellm-python", type=Path, help="default: scripts/guidellm-env.sh's")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--check", action="store_true", help="exit 1 when an agreement is missed")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="guidellm-compare-"))
    shape = VLLM_SHAPE
    args.model_dir = make_tiny_model(work / "model", seed=0, shape=shape)
    if "guidellm" in args.clients and args.guidellm_python is None:
        args.guidellm_python = env_python("guidellm-env.sh")
    if "vllm" in args.engines and args.vllm_python is None:
        args.vllm_python = env_python("vllm-env.sh")
    print(
        f"model: tiny Llama (hidden 256, 2 layers, 4 heads), device {args.device}; "
        f"{args.requests} requests at concurrency {args.concurrency}, {args.output_tokens} "
        f"output tokens each (ignore_eos), streaming; {os.cpu_count()} CPUs; work dir {work}",
        flush=True,
    )

    comparisons: list[Comparison] = []
    start_times: dict[str, float] = {}
    for engine in args.engines:
        if engine == "modelserve":
            server = start_modelserve(args.model_dir, args.device, work)
        else:
            server = start_vllm(args.model_dir, args.device, args.vllm_python, work)
        start_times[engine] = server.start_s
        print(f"{engine}: healthy {server.start_s:.1f} s after start", flush=True)
        try:
            run_load(loadgen_config(server, args.concurrency, args.concurrency, args.output_tokens))
            for client in args.clients:
                comparisons.append(compare(server, client, args, work))
        finally:
            stop(server)

    header = (
        f"{'engine':<10} | {'client':<8} | {'ok/sent':>7} | {'TTFT client':>11} | "
        f"{'TTFT server':>11} | {'ratio':>5} | {'ITL client':>10} | {'ITL server':>10} | "
        f"{'ratio':>5} | agreement"
    )
    print("\n" + header + "\n" + "-" * len(header) + "   (means in ms; server = histogram delta)")
    for c in comparisons:
        misses = c.misses()
        print(
            f"{c.engine:<10} | {c.client:<8} | {f'{c.ok}/{c.requests}':>7} | "
            f"{c.client_ttft_s * 1000:>11.1f} | {c.server_ttft_s * 1000:>11.1f} | "
            f"{c.ttft_ratio:>5.2f} | {c.client_itl_s * 1000:>10.2f} | "
            f"{c.server_itl_s * 1000:>10.2f} | {c.itl_ratio:>5.2f} | "
            f"{'; '.join(misses) or 'ok'}"
        )
    if args.json:
        figures: dict[str, Any] = {
            "start_s": start_times,
            "comparisons": [
                asdict(c)
                | {"ttft_ratio": c.ttft_ratio, "itl_ratio": c.itl_ratio, "misses": c.misses()}
                for c in comparisons
            ],
        }
        args.json.write_text(json.dumps(figures, indent=1))
    missed = any(c.misses() for c in comparisons)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
