"""Shadow output comparison: what the comparison proxy measures for the same weights and for
different weights, and what it costs a request.

Starts three `modelserve serve` processes on loopback (stable, a second server on the
same tiny random-weights model, one on a model of other weights), and the comparison
proxy (`python -m modelrollout.shadowproxy`, sampling 100%) in front of stable with each
candidate in turn. Sends the same requests through the proxy: greedy completions of
varied prompts, seeded sampled ones, and JSON-mode ones where the server has them; then
reads the proxy's /metrics and prints each measure as its builtin computes it, and the
median latency through the proxy against stable directly (with 100% copied, the
candidate competes with stable for this machine's CPU; a last pass copies nothing and so
shows the proxy's own cost).

    .venv/bin/python bench/shadow_comparison.py [--requests 60 --max-tokens 16]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from local_server import MODEL_NAME, Server, start_server
from modelrollout.shadowproxy import metrics
from modelrollout_dev.processes import free_port
from modelserve.tiny_model import make_tiny_model

PROMPTS = [
    "The capital of France is", "Once upon a time", "1, 2, 3, 4,", "def main():",
    "A model rollout", "The weather today", "In the beginning", "Dear team,",
    "The quick brown fox", "SELECT * FROM", "Kubernetes is", "To be or not",
]  # fmt: skip


def bodies(count: int, max_tokens: int, json_mode: bool) -> list[dict[str, object]]:
    """Greedy requests, every fourth seeded and sampled, every sixth JSON-mode (if any)."""
    out: list[dict[str, object]] = []
    for index in range(count):
        body: dict[str, object] = {
            "model": MODEL_NAME,
            "prompt": PROMPTS[index % len(PROMPTS)],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        if index % 4 == 3:
            body.update(temperature=0.8, seed=index)
        if json_mode and index % 6 == 5:
            body["response_format"] = {"type": "json_object"}
        out.append(body)
    return out


def start_proxy(
    stable: str, candidate: str, log: Path, sample_percent: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable, "-m", "modelrollout.shadowproxy", "--stable", stable,
        "--candidate", candidate, "--candidate-revision", "candidate",
        "--sample-percent", str(sample_percent), "--window", "120",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"proxy did not start: {log.read_text()}")


def samples(url: str) -> dict[str, float]:
    """Every sample of the proxy's /metrics by name and labels other than candidate."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            labels = ",".join(
                f"{key}={value}" for key, value in sorted(sample.labels.items())
                if key not in ("candidate", "le")
            )  # fmt: skip
            if "le" not in sample.labels:
                found[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return found


def ratio(numerator: float, denominator: float) -> str:
    return "n/a" if denominator == 0 else f"{numerator / denominator:.3f}"


def run(stable: Server, candidate: Server, label: str, work: Path, args: argparse.Namespace,
        json_mode: bool, sample_percent: int = 100) -> None:  # fmt: skip
    log = work / f"proxy-{label.replace(' ', '-')}.log"
    proxy, url = start_proxy(stable.url, candidate.url, log, sample_percent)
    through, direct = [], []
    try:
        with httpx.Client(timeout=120) as http:
            for body in bodies(args.requests, args.max_tokens, json_mode):
                for target, times in ((url, through), (stable.url, direct)):
                    started = time.monotonic()
                    response = http.post(target + "/v1/completions", json=body)
                    response.raise_for_status()
                    times.append(time.monotonic() - started)
        deadline = time.monotonic() + 120
        expected = args.requests if sample_percent == 100 else 0
        while samples(url).get(metrics.COMPARISONS, 0) < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"comparisons missing: {samples(url)}")
            time.sleep(0.2)
        got = samples(url)
    finally:
        proxy.terminate()
        proxy.wait(10)
    compared = got[metrics.COMPARISONS]
    if sample_percent == 0:
        print(
            f"{label:17} | {compared:4.0f} | {'-':18} | {'-':15} | {'-':11} | {'-':15} | "
            f"{'-':24} | {'-':12} | {statistics.median(through) * 1000:6.1f} | "
            f"{statistics.median(direct) * 1000:6.1f}"
        )
        return
    agreement = ratio(
        got[metrics.TOKEN_AGREEMENT + "_sum"], got[metrics.TOKEN_AGREEMENT + "_count"]
    )
    latency = ratio(
        got[metrics.LATENCY + "_sum{side=candidate}"], got[metrics.LATENCY + "_sum{side=stable}"]
    )
    print(
        f"{label:17} | {compared:4.0f} | "
        f"{ratio(got[metrics.EXACT_MATCHES], got[metrics.EXACT_COMPARISONS])} "
        f"({got[metrics.EXACT_COMPARISONS]:.0f}) | "
        f"{agreement} | "
        f"{ratio(got[metrics.LENGTH_RATIO + '_sum'], got[metrics.LENGTH_RATIO + '_count'])} | "
        f"{ratio(got[metrics.EMPTY_ANSWERS + '{side=candidate}'], compared)} | "
        f"{ratio(got[metrics.JSON_VALID + '{side=candidate}'], got[metrics.JSON_REQUESTS])} "
        f"(stable {ratio(got[metrics.JSON_VALID + '{side=stable}'], got[metrics.JSON_REQUESTS])}"
        f", {got[metrics.JSON_REQUESTS]:.0f}) | "
        f"{latency} | "
        f"{statistics.median(through) * 1000:6.1f} | {statistics.median(direct) * 1000:6.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shadow-bench-") as tmp:
        work = Path(tmp)
        first = make_tiny_model(work / "v1", seed=0)
        other = make_tiny_model(work / "v2", seed=1)
        servers = [
            start_server(first, work / "stable.log"),
            start_server(first, work / "same.log"),
            start_server(other, work / "different.log"),
        ]
        try:
            probe = {"model": MODEL_NAME, "prompt": "x", "max_tokens": 4,
                     "response_format": {"type": "json_object"}}  # fmt: skip
            json_mode = httpx.post(servers[0].url + "/v1/completions", json=probe).is_success
            print(
                f"{args.requests} requests, max_tokens {args.max_tokens}, sampled 100%; every 4th "
                f"seeded (temperature 0.8), the rest greedy; JSON mode: "
                f"{'every 6th' if json_mode else 'not offered by the server'}"
            )
            print(
                "candidate         | cmp  | exactMatchRate (n) | outputAgreement | lengthRatio | "
                "emptyAnswerRate | jsonValidity (stable's, n) | latencyRatio | p50 via proxy ms | "
                "p50 direct ms"
            )
            run(servers[0], servers[1], "same weights", work, args, json_mode)
            run(servers[0], servers[2], "different weights", work, args, json_mode)
            # The proxy's own cost: nothing copied, so no candidate competes for the CPU.
            run(servers[0], servers[1], "none (sample 0%)", work, args, json_mode, 0)
        finally:
            for server in servers:
                server.process.terminate()
            for server in servers:
                server.process.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
