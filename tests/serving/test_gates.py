"""Quality gates against real `modelserve serve` processes on tiny random models.

Three servers: stable (seed 0), an identical twin (seed 0 again, its own
process) and a candidate with different weights (seed 3).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from modelserve.gates import (
    GateRunError,
    SuiteResult,
    load_suite,
    run_suite,
)
from tests.serving.conftest import TINY_MODEL_NAME, ServerProcess, free_port, start_server

pytestmark = pytest.mark.serving

# On these texts the seed-3 model's perplexity is about 13% above the seed-0
# model's (both random: a different seed could as well be better).
REFERENCE_TEXTS = [
    "A model rollout moves traffic from a stable version to a canary in small steps.",
    "The quick brown fox jumps over the lazy dog.",
]

COMPARISON_SUITE = f"""
prompts:
  - {{name: capital, prompt: "What is the capital of France?", maxTokens: 8}}
  - {{name: spider, prompt: "How many legs does a spider have?", maxTokens: 8}}
  - name: chat
    messages: [{{role: user, content: "Tell me a story about a robot"}}]
    maxTokens: 8
agreement: {{minRatio: 1.0}}
perplexity: {{maxIncreasePercent: 3, texts: {json.dumps(REFERENCE_TEXTS)}}}
"""


@dataclass
class Servers:
    stable: ServerProcess
    twin: ServerProcess
    different: ServerProcess


@pytest.fixture(scope="module")
def servers(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    from modelserve.tiny_model import make_tiny_model

    different_dir = make_tiny_model(tmp_path_factory.mktemp("tiny-model-seed-3"), seed=3)
    logs = tmp_path_factory.mktemp("gate-logs")
    # Started together: each spends seconds importing torch.
    with ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(start_server, model, logs)
            for model in (tiny_model_dir, tiny_model_dir, different_dir)
        ]
        started = [f.exception() or f.result() for f in futures]
    processes = [s for s in started if isinstance(s, ServerProcess)]
    try:
        if len(processes) < 3:
            raise next(s for s in started if isinstance(s, BaseException))
        yield Servers(*processes)
    finally:
        for process in processes:
            process.stop()


def greedy(server: ServerProcess, prompt: str, max_tokens: int) -> str:
    response = httpx.post(
        server.base_url + "/v1/completions",
        json={
            "model": TINY_MODEL_NAME,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
        },
        timeout=60,
    )
    response.raise_for_status()
    text: str = response.json()["choices"][0]["text"]
    return text


def gates_by_name(result: SuiteResult) -> dict[str, dict[str, object]]:
    return {g.name: g.model_dump() for g in result.gates}


def test_an_identical_model_passes_agreement_and_perplexity(servers: Servers) -> None:
    suite = load_suite(COMPARISON_SUITE)
    result = run_suite(suite, servers.twin.base_url, servers.stable.base_url, TINY_MODEL_NAME)
    gates = gates_by_name(result)
    assert result.passed, result
    assert gates["agreement"]["value"] == 1.0
    assert gates["perplexity"]["value"] == 0.0


def test_a_model_with_different_weights_fails_agreement_and_perplexity(servers: Servers) -> None:
    suite = load_suite(COMPARISON_SUITE)
    result = run_suite(suite, servers.different.base_url, servers.stable.base_url, TINY_MODEL_NAME)
    gates = gates_by_name(result)
    assert not result.passed
    assert [g.name for g in result.gates] == ["agreement", "perplexity"]
    agreement, perplexity = gates["agreement"], gates["perplexity"]
    assert agreement["passed"] is False and agreement["value"] == 0.0
    stable_answer = greedy(servers.stable, "What is the capital of France?", 8).strip()
    assert f"stable {json.dumps(stable_answer[:59], ensure_ascii=False)}" in str(
        agreement["message"]
    )
    assert perplexity["passed"] is False
    assert isinstance(perplexity["value"], float) and perplexity["value"] > 3.0


def test_malformed_json_fails_a_json_gate_and_quotes_the_output(servers: Servers) -> None:
    prompt = "Answer in JSON: what is the capital of France?"
    answer = greedy(servers.stable, prompt, 12)
    suite = load_suite(
        f"""
prompts:
  - name: city
    prompt: {json.dumps(prompt)}
    maxTokens: 12
    expect: {{json: true, contains: {json.dumps(answer[:5])}}}
"""
    )
    result = run_suite(suite, servers.stable.base_url, None, TINY_MODEL_NAME)
    gates = gates_by_name(result)
    assert not result.passed
    assert gates["contains:city"]["passed"] is True
    json_gate = gates["json:city"]
    assert json_gate["passed"] is False
    assert str(json_gate["message"]).startswith("not JSON (")
    assert f"got {json.dumps(answer[:59], ensure_ascii=False)}" in str(json_gate["message"])


@pytest.mark.parametrize(("max_ms", "passes"), [(0.001, False), (60_000, True)])
def test_latency_budget(servers: Servers, max_ms: float, passes: bool) -> None:
    suite = load_suite(
        f"""
prompts: [{{name: a, prompt: "Hi", maxTokens: 4}}, {{name: b, prompt: "Kubernetes", maxTokens: 4}}]
latency: {{percentile: 95, maxMs: {max_ms}}}
"""
    )
    result = run_suite(suite, servers.different.base_url, None, TINY_MODEL_NAME)
    [gate] = result.gates
    assert gate.name == "latency" and gate.passed is passes and result.passed is passes
    assert gate.value is not None and 0.001 < gate.value < 60_000


def test_comparison_gates_need_a_stable_url(servers: Servers) -> None:
    with pytest.raises(GateRunError, match="agreement and perplexity compare with the stable"):
        run_suite(load_suite(COMPARISON_SUITE), servers.twin.base_url, None, TINY_MODEL_NAME)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelserve.cli", "eval", "--model", TINY_MODEL_NAME, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_exit_codes_output_file_and_termination_log(servers: Servers, tmp_path: Path) -> None:
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(COMPARISON_SUITE)
    output = tmp_path / "result.json"
    termination_log = tmp_path / "termination-log"
    termination_log.touch()  # kubelet creates it; the CLI writes it only when it exists
    common = ["--suite", str(suite_file), "--stable", servers.stable.base_url]

    passing = run_cli(
        *common,
        "--candidate",
        servers.twin.base_url,
        "--output",
        str(output),
        "--termination-log",
        str(termination_log),
    )
    assert passing.returncode == 0, passing.stderr
    assert json.loads(passing.stdout)["passed"] is True
    assert output.read_text() == termination_log.read_text() == passing.stdout.strip()

    failing = run_cli(*common, "--candidate", servers.different.base_url, "--output", str(output))
    assert failing.returncode == 1, failing.stderr
    result = json.loads(output.read_text())
    assert result["passed"] is False and result["error"] is None
    assert {g["name"]: g["passed"] for g in result["gates"]} == {
        "agreement": False,
        "perplexity": False,
    }

    unreachable = run_cli(*common, "--candidate", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 2
    error = json.loads(unreachable.stdout)
    assert error["passed"] is False and error["gates"] == []
    assert error["error"].startswith("candidate at http://127.0.0.1:")

    bad_suite = tmp_path / "bad.yaml"
    bad_suite.write_text("prompts: [{name: a, prompt: x, maxToken: 3}]\nlatency: {maxMs: 1}")
    malformed = run_cli(
        "--suite", str(bad_suite), "--candidate", servers.twin.base_url, "--output", str(output)
    )
    assert malformed.returncode == 2
    assert "prompts[0].maxToken: unknown field" in json.loads(output.read_text())["error"]

    no_stable = run_cli("--suite", str(suite_file), "--candidate", servers.twin.base_url)
    assert no_stable.returncode == 2 and "pass --stable URL" in no_stable.stderr


def test_cli_perplexity_mode_still_works(servers: Servers, tmp_path: Path) -> None:
    text_file = tmp_path / "corpus.txt"
    text_file.write_text("\n\n".join(REFERENCE_TEXTS))
    completed = run_cli("--url", servers.stable.base_url, "--text-file", str(text_file))
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("tokens scored: ")
    mixed = run_cli("--url", servers.stable.base_url, "--suite", str(text_file))
    assert mixed.returncode == 2 and "--suite takes --candidate" in mixed.stderr


def test_a_candidate_not_yet_reachable_is_waited_for_not_judged(servers: Servers) -> None:
    """An evaluation Job can start before the node routes the canary's new Service: the
    suite rides out refused connections for a while instead of failing to run."""
    port = free_port()
    upstream = servers.twin.base_url

    class Forward(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            answer = httpx.post(
                f"{upstream}{self.path}",
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=60,
            )
            self.send_response(answer.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

    opened: list[ThreadingHTTPServer] = []

    def open_later() -> None:
        time.sleep(2)
        opened.append(ThreadingHTTPServer(("127.0.0.1", port), Forward))
        opened[0].serve_forever()

    threading.Thread(target=open_later, daemon=True).start()
    try:
        result = run_suite(
            load_suite(COMPARISON_SUITE),
            f"http://127.0.0.1:{port}",
            servers.stable.base_url,
            TINY_MODEL_NAME,
        )
    finally:
        if opened:
            opened[0].shutdown()
    assert result.error is None, result
    assert all(gate.passed for gate in result.gates), result.gates
