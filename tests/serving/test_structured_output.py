"""Structured output and honest refusals against a real `modelserve serve` process.

The tiny model has random weights: left alone it writes noise, so every JSON answer
here is the grammar's doing, and is checked with the `jsonschema` library.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import pytest

from modelserve.api.app import STRUCTURED_COMPLETE_FIELD
from tests.serving.conftest import TINY_MODEL_NAME, ServerProcess

pytestmark = pytest.mark.serving

# Bounded everywhere, so a random model's answer ends well within max_tokens.
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 1, "maximum": 999},
        "status": {"enum": ["pending", "shipped", "delivered"]},
        "express": {"type": "boolean"},
        "note": {"anyOf": [{"type": "string", "maxLength": 6}, {"type": "null"}]},
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 2,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{3}$"},
                    "qty": {"type": "integer", "minimum": 1, "maximum": 9},
                },
                "required": ["sku", "qty"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["id", "status", "express", "note", "items"],
    "additionalProperties": False,
}
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "order", "schema": ORDER_SCHEMA, "strict": True},
}
MESSAGES = [{"role": "user", "content": "Give me the order as JSON."}]


def chat(server: ServerProcess, **body: Any) -> httpx.Response:
    return httpx.post(
        server.base_url + "/v1/chat/completions",
        json={"model": TINY_MODEL_NAME, "messages": MESSAGES, **body},
        timeout=120,
    )


def complete(server: ServerProcess, **body: Any) -> httpx.Response:
    return httpx.post(
        server.base_url + "/v1/completions",
        json={"model": TINY_MODEL_NAME, **body},
        timeout=120,
    )


def stream_chunks(server: ServerProcess, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = []
    with httpx.stream(
        "POST",
        server.base_url + path,
        json={"model": TINY_MODEL_NAME, "stream": True, **body},
        timeout=120,
    ) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[len("data: ") :]))
    return chunks


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    return error


def test_json_schema_answers_validate_greedy_and_sampled(server: ServerProcess) -> None:
    """Greedy and seeded sampling, several prompts, batched together: every answer is whole
    JSON that validates against the schema."""
    prompts = ["Give me the order.", "Order 7?", "Tell me a story about a robot.", "Hi"]
    jobs: list[dict[str, Any]] = [
        {"messages": [{"role": "user", "content": p}], "temperature": 0} for p in prompts
    ] + [{"temperature": 1.0, "seed": seed} for seed in range(6)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(lambda job: chat(server, response_format=SCHEMA_FORMAT, **job), jobs)
        )
    for response in responses:
        assert response.status_code == 200, response.text
        [choice] = response.json()["choices"]
        assert choice["finish_reason"] == "stop", choice
        assert choice[STRUCTURED_COMPLETE_FIELD] is True
        jsonschema.validate(json.loads(choice["message"]["content"]), ORDER_SCHEMA)


def test_json_object_on_completions_is_a_json_object(server: ServerProcess) -> None:
    for seed in range(3):
        response = complete(
            server,
            prompt="JSON:",
            max_tokens=200,
            temperature=1.0,
            seed=seed,
            response_format={"type": "json_object"},
        )
        assert response.status_code == 200, response.text
        [choice] = response.json()["choices"]
        if choice["finish_reason"] == "length":
            # An unbounded object may run out of tokens: then it says so.
            assert choice[STRUCTURED_COMPLETE_FIELD] is False
            continue
        assert choice[STRUCTURED_COMPLETE_FIELD] is True
        assert isinstance(json.loads(choice["text"]), dict)


def test_a_cut_answer_says_it_is_incomplete(server: ServerProcess) -> None:
    response = chat(server, response_format=SCHEMA_FORMAT, temperature=0, max_tokens=5)
    assert response.status_code == 200, response.text
    [choice] = response.json()["choices"]
    assert choice["finish_reason"] == "length"
    assert choice[STRUCTURED_COMPLETE_FIELD] is False
    assert choice["message"]["content"].startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice["message"]["content"])


def test_streamed_json_adds_up_to_the_whole_answer(server: ServerProcess) -> None:
    body = {"messages": MESSAGES, "response_format": SCHEMA_FORMAT, "temperature": 0}
    chunks = stream_chunks(server, "/v1/chat/completions", body)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    last = chunks[-1]["choices"][0]
    assert last["finish_reason"] == "stop"
    assert last[STRUCTURED_COMPLETE_FIELD] is True
    # Only the last chunk carries the verdict.
    assert all(STRUCTURED_COMPLETE_FIELD not in c["choices"][0] for c in chunks[:-1])
    whole = chat(server, **{k: v for k, v in body.items() if k != "messages"})
    assert text == whole.json()["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(text), ORDER_SCHEMA)

    cut = stream_chunks(
        server,
        "/v1/completions",
        {"prompt": "JSON:", "max_tokens": 4, "temperature": 0, "response_format": SCHEMA_FORMAT},
    )
    assert cut[-1]["choices"][0]["finish_reason"] == "length"
    assert cut[-1]["choices"][0][STRUCTURED_COMPLETE_FIELD] is False


def test_a_constrained_row_leaves_its_batch_neighbours_alone(server: ServerProcess) -> None:
    free = {"prompt": "Kubernetes schedules", "max_tokens": 24, "temperature": 0}
    alone = complete(server, **free, ignore_eos=True).json()["choices"][0]["text"]
    with ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(
                complete, server, prompt="JSON:", max_tokens=200, response_format=SCHEMA_FORMAT
            )
            for _ in range(3)
        ]
        beside = pool.submit(complete, server, **free, ignore_eos=True)
        assert beside.result().json()["choices"][0]["text"] == alone
        for future in futures:
            assert future.result().json()["choices"][0][STRUCTURED_COMPLETE_FIELD] is True
    unconstrained = complete(server, **free).json()["choices"][0]
    assert STRUCTURED_COMPLETE_FIELD not in unconstrained
    text_format = complete(server, **free, response_format={"type": "text"}).json()
    assert STRUCTURED_COMPLETE_FIELD not in text_format["choices"][0]


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        (
            {"response_format": {"type": "xml"}},
            "response_format",
            "response_format.type",
        ),
        (
            {"response_format": {"type": "json_schema"}},
            "response_format",
            "json_schema",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "n", "schema": {"type": "integer", "multipleOf": 3}},
                }
            },
            "response_format.json_schema.schema",
            "multipleOf",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "n", "schema": {"type": "bogus"}},
                }
            },
            "response_format.json_schema.schema",
            "bogus",
        ),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {}}},
                ]
            },
            "tools",
            "tool calling is not supported",
        ),
        ({"tool_choice": "required"}, "tool_choice", "tool calling is not supported"),
        ({"functions": [{"name": "f"}]}, "functions", "tool calling is not supported"),
        ({"n": 2}, "n", "only n=1"),
    ],
)
def test_what_is_not_honoured_is_refused_by_name(
    server: ServerProcess, body: dict[str, Any], param: str, says: str
) -> None:
    response = chat(server, max_tokens=4, **body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["param"] == param
    assert says in error["message"]
    # An empty tool list and tool_choice "none" ask for nothing: answered as usual.
    assert chat(server, max_tokens=2, tools=[], tool_choice="none").status_code == 200


def test_completions_refuse_n_and_bad_schemas_too(server: ServerProcess) -> None:
    response = complete(server, prompt="Hi", n=3)
    assert response.status_code == 400
    assert error_of(response)["param"] == "n"
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}}
    response = complete(server, prompt="Hi", response_format=bad)
    assert response.status_code == 400
    assert error_of(response)["param"] == "response_format.json_schema.schema"
