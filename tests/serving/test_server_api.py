"""The OpenAI API of a real `modelserve serve` process on the tiny model."""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelserve.http_defaults import SERVED_BY_HEADER
from tests.serving.conftest import (
    SERVER_POD_NAME,
    TINY_MODEL_NAME,
    ServerProcess,
    metric,
    scrape,
)

pytestmark = pytest.mark.serving

PROMPTS = [
    "Hi",
    "What is the capital of France?",
    "Tell me a story about a robot who learns to paint the sea at night, then more.",
    "Kubernetes schedules pods onto nodes",
]


def complete(server: ServerProcess, **body: Any) -> httpx.Response:
    return httpx.post(
        server.base_url + "/v1/completions",
        json={"model": TINY_MODEL_NAME, **body},
        timeout=60,
    )


def greedy_text(server: ServerProcess, prompt: str, max_tokens: int) -> dict[str, Any]:
    response = complete(
        server, prompt=prompt, max_tokens=max_tokens, temperature=0, ignore_eos=True, logprobs=0
    )
    assert response.status_code == 200, response.text
    choice: dict[str, Any] = response.json()["choices"][0]
    return choice


def sse_events(response: httpx.Response) -> list[Any]:
    events: list[Any] = []
    for line in response.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), line
        payload = line[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_completion_has_the_openai_shape(server: ServerProcess) -> None:
    response = complete(server, prompt="What is", max_tokens=5, temperature=0, ignore_eos=True)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["model"] == TINY_MODEL_NAME
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert isinstance(choice["text"], str)
    assert choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 5


def test_every_answer_names_the_pod_that_served_it(server: ServerProcess) -> None:
    """Through a gateway that says nothing of where it sent a request, the answer does."""
    answers = [
        complete(server, prompt="Hi", max_tokens=2),
        complete(server, prompt="Hi", max_tokens=-1),  # refused: 400
        httpx.get(server.base_url + "/health", timeout=10),
        httpx.get(server.base_url + "/v1/nowhere", timeout=10),
    ]
    with httpx.stream(
        "POST",
        server.base_url + "/v1/completions",
        json={"model": TINY_MODEL_NAME, "prompt": "Hi", "max_tokens": 2, "stream": True},
        timeout=60,
    ) as streamed:
        answers.append(streamed)
    assert [a.status_code for a in answers] == [200, 400, 200, 404, 200]
    assert [a.headers.get_list(SERVED_BY_HEADER) for a in answers] == [[SERVER_POD_NAME]] * 5


# uvicorn closes a connection idle this long unless told otherwise.
UVICORN_DEFAULT_KEEP_ALIVE_S = 5


def test_an_idle_connection_stays_open_for_the_gateway_to_reuse(server: ServerProcess) -> None:
    """Traefik reuses an idle upstream connection for up to 90 s: a server that closes it
    sooner (uvicorn's default is 5 s) races the gateway's next request on it."""
    url = httpx.URL(server.base_url)
    connection = http.client.HTTPConnection(url.host, url.port, timeout=30)
    try:
        connection.request("GET", "/health")
        connection.getresponse().read()
        first_socket = connection.sock
        # The idleness under test, not a wait for some state.
        time.sleep(UVICORN_DEFAULT_KEEP_ALIVE_S + 2)
        connection.request("GET", "/health")
        reused = connection.sock is first_socket
        # Raises RemoteDisconnected where the server closed the connection while idle.
        answer = connection.getresponse()
        answer.read()
    finally:
        connection.close()
    assert reused and answer.status == 200


def test_streamed_chunks_are_well_formed_and_add_up(server: ServerProcess) -> None:
    expected = greedy_text(server, PROMPTS[1], 12)["text"]
    with httpx.stream(
        "POST",
        server.base_url + "/v1/completions",
        json={
            "model": TINY_MODEL_NAME,
            "prompt": PROMPTS[1],
            "max_tokens": 12,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks, usage_chunk = events[:-2], events[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 12
    assert len({c["id"] for c in chunks}) == 1
    for c in chunks:
        assert c["object"] == "text_completion"
        assert set(c["choices"][0]) == {"index", "text", "logprobs", "finish_reason"}
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert "".join(c["choices"][0]["text"] for c in chunks) == expected


def test_chat_completion_and_its_stream(server: ServerProcess) -> None:
    body = {
        "model": TINY_MODEL_NAME,
        "messages": [{"role": "user", "content": "How many legs does a spider have?"}],
        "max_tokens": 8,
        "temperature": 0,
        "ignore_eos": True,
    }
    response = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200
    answer = response.json()
    assert answer["object"] == "chat.completion"
    message = answer["choices"][0]["message"]
    assert message["role"] == "assistant"
    with httpx.stream(
        "POST", server.base_url + "/v1/chat/completions", json={**body, "stream": True}, timeout=60
    ) as stream:
        events = sse_events(stream)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == message["content"]


def test_greedy_decoding_is_deterministic_and_equals_generate(
    server: ServerProcess, tiny_model_dir: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    for prompt in PROMPTS[:3]:
        first = greedy_text(server, prompt, 16)
        second = greedy_text(server, prompt, 16)
        assert first == second
        input_ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            generated = model.generate(
                input_ids, max_new_tokens=16, min_new_tokens=16, do_sample=False
            )[0, input_ids.shape[1] :]
        expected_tokens = [tokenizer.decode([t]) for t in generated.tolist()]
        assert first["logprobs"]["tokens"] == expected_tokens
        # As vLLM's detokenizer: text up to the last token that completes a character.
        complete = len(generated)
        while tokenizer.decode(generated[:complete], skip_special_tokens=True).endswith("\ufffd"):
            complete -= 1
        assert first["text"] == tokenizer.decode(generated[:complete], skip_special_tokens=True)


def test_prompt_logprobs_with_echo_match_the_model(
    server: ServerProcess, tiny_model_dir: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompt = PROMPTS[1]
    response = complete(server, prompt=prompt, max_tokens=0, echo=True, logprobs=1)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["text"] == prompt
    logprobs = choice["logprobs"]
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        expected = torch.log_softmax(model(input_ids).logits[0, :-1].float(), dim=-1)
    targets = input_ids[0, 1:]
    expected_scores = expected[torch.arange(len(targets)), targets].tolist()
    assert logprobs["token_logprobs"][0] is None
    assert logprobs["token_logprobs"][1:] == pytest.approx(expected_scores, abs=1e-4)
    assert len(logprobs["tokens"]) == input_ids.shape[1]


def test_batched_answers_equal_one_at_a_time(server: ServerProcess) -> None:
    max_tokens = 160
    alone = [greedy_text(server, p, max_tokens)["text"] for p in PROMPTS]
    running_seen: list[float] = []
    done = threading.Event()

    def watch_running() -> None:
        while not done.is_set():
            running_seen.append(metric(scrape(server.base_url), "vllm:num_requests_running"))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_running)
    watcher.start()
    try:
        with ThreadPoolExecutor(len(PROMPTS) * 2) as pool:
            together = list(
                pool.map(lambda p: greedy_text(server, p, max_tokens)["text"], PROMPTS * 2)
            )
    finally:
        done.set()
        watcher.join()
    assert together == alone * 2
    # The requests really shared batches (a broken batcher would run them one by one).
    assert max(running_seen) >= 2


def test_seeded_sampling_is_reproducible(server: ServerProcess) -> None:
    def sample(seed: int) -> str:
        response = complete(
            server, prompt=PROMPTS[0], max_tokens=24, temperature=1.0, top_p=0.9, top_k=50,
            seed=seed, ignore_eos=True,
        )  # fmt: skip
        assert response.status_code == 200
        return str(response.json()["choices"][0]["text"])

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)}) > 1


def test_stop_string_ends_the_completion_before_it(server: ServerProcess) -> None:
    full = greedy_text(server, PROMPTS[2], 24)["text"]
    stop = full[6:9]
    response = complete(
        server, prompt=PROMPTS[2], max_tokens=24, temperature=0, ignore_eos=True, stop=[stop]
    )
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == full[: full.index(stop)]


def test_metrics_move_as_requests_are_served(server: ServerProcess) -> None:
    before = scrape(server.base_url)
    assert (
        complete(server, prompt="Hi", max_tokens=4, temperature=0, ignore_eos=True).status_code
        == 200
    )
    with httpx.stream(
        "POST",
        server.base_url + "/v1/completions",
        json={
            "model": TINY_MODEL_NAME,
            "prompt": "Hi there",
            "max_tokens": 6,
            "stream": True,
            "temperature": 0,
            "ignore_eos": True,
        },
        timeout=60,
    ) as response:
        sse_events(response)
    after = scrape(server.base_url)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    labels = {"model_name": TINY_MODEL_NAME}
    assert delta("vllm:request_success_total", finished_reason="length", **labels) == 2
    assert delta("vllm:e2e_request_latency_seconds_count", **labels) == 2
    assert delta("vllm:time_to_first_token_seconds_count", **labels) == 2
    assert delta("vllm:inter_token_latency_seconds_count", **labels) == (4 - 1) + (6 - 1)
    assert delta("vllm:generation_tokens_total", **labels) == 10
    assert delta("vllm:prompt_tokens_total", **labels) >= 4
    assert delta("http_requests_total", handler="/v1/completions", status="2xx") == 2
    assert metric(after, "vllm:num_requests_running", **labels) == 0
    assert metric(after, "vllm:num_requests_waiting", **labels) == 0


def _error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("content", "status", "param"),
    [
        (b"{not json", 400, None),
        (json.dumps({"model": "no-such-model", "prompt": "Hi"}).encode(), 404, "model"),
        (json.dumps({"model": TINY_MODEL_NAME, "prompt": ""}).encode(), 400, "prompt"),
        (
            json.dumps({"model": TINY_MODEL_NAME, "prompt": "Hi", "max_tokens": 100000}).encode(),
            400,
            "max_tokens",
        ),
        (
            json.dumps({"model": TINY_MODEL_NAME, "prompt": "Hi", "max_tokens": "many"}).encode(),
            400,
            "max_tokens",
        ),
        (json.dumps({"model": TINY_MODEL_NAME, "prompt": 12}).encode(), 400, "prompt"),
        (
            json.dumps({"model": TINY_MODEL_NAME, "prompt": "Hi", "temperature": -1}).encode(),
            400,
            "temperature",
        ),
        (json.dumps({"model": TINY_MODEL_NAME}).encode(), 400, "prompt"),
    ],
)
def test_bad_input_gets_a_4xx_and_the_server_stays_up(
    server: ServerProcess, content: bytes, status: int, param: str | None
) -> None:
    response = httpx.post(
        server.base_url + "/v1/completions",
        content=content,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == status, response.text
    assert _error_of(response)["param"] == param
    assert httpx.get(server.base_url + "/health", timeout=5).status_code == 200
    assert complete(server, prompt="Hi", max_tokens=2).status_code == 200


def test_bad_chat_input_gets_a_4xx(server: ServerProcess) -> None:
    url = server.base_url + "/v1/chat/completions"
    assert (
        httpx.post(url, json={"model": TINY_MODEL_NAME, "messages": []}, timeout=30).status_code
        == 400
    )
    wrong_role = {"model": TINY_MODEL_NAME, "messages": [{"role": "robot", "content": "x"}]}
    response = httpx.post(url, json=wrong_role, timeout=30)
    assert response.status_code == 400
    _error_of(response)


def test_models_and_health(server: ServerProcess) -> None:
    models = httpx.get(server.base_url + "/v1/models", timeout=5).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [TINY_MODEL_NAME]
    assert httpx.get(server.base_url + "/health", timeout=5).json() == {"status": "ok"}


def test_eval_perplexity_scores_every_token_after_the_first(server: ServerProcess) -> None:
    from modelserve.eval import perplexity

    texts = [PROMPTS[1], PROMPTS[2]]
    result = perplexity(server.base_url, TINY_MODEL_NAME, texts)
    prompt_tokens = [
        complete(server, prompt=t, max_tokens=0, echo=True).json()["usage"]["prompt_tokens"]
        for t in texts
    ]
    assert result.tokens_scored == sum(n - 1 for n in prompt_tokens)
    # Finite, and above 1: a random-weights model is never certain.
    assert 1.0 < result.perplexity < 1e6


def test_logprob_text_offsets_index_the_returned_text(server: ServerProcess) -> None:
    # Characters outside the tokenizer's training text split into byte-level tokens.
    prompt = "Café 日本: the quick brown fox"
    response = complete(
        server, prompt=prompt, max_tokens=6, echo=True, logprobs=0, temperature=0,
        ignore_eos=True,
    )  # fmt: skip
    choice = response.json()["choices"][0]
    text, logprobs = choice["text"], choice["logprobs"]
    assert text.startswith(prompt)
    tokens, offsets = logprobs["tokens"], logprobs["text_offset"]
    assert any("\ufffd" in token for token in tokens)
    assert offsets == sorted(offsets) and offsets[0] == 0
    # Past the begin-of-text token, each whole-character token's text sits at its offset.
    for token, offset in zip(tokens[1:], offsets[1:], strict=True):
        if "\ufffd" not in token:
            assert text[offset : offset + len(token)] == token
