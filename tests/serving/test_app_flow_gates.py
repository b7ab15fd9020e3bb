"""The shipped app-flow gate suite (examples/app-flow-gates.yaml) run by `modelserve eval`,
as the evaluation Job runs it, against both engines a rollout can run: a real
`modelserve serve` process and the real vLLM (its CPU build, scripts/vllm-env.sh).

Both serve the same tiny model, scripted to answer every chat prompt with
CONFORMING_ANSWER (greedy): a model that keeps the persona, names no competitor
and remembers the name and the item, so every gate of the suite passes on either
engine, the JSON gate by the engine's constrained decoding alone (responseFormat).
A suite the model does not meet fails its gates with the answer quoted. Candidate
and stable are the same server, so agreement is 1.

Where the engines differ (serving/README.md, "App-flow gates on both engines"):
- vLLM's JSON grammar allows any whitespace between tokens unless it runs with
  `--structured-outputs-config.disable_any_whitespace=true`; without it this model
  pads the JSON with whitespace until maxTokens and the JSON gate fails (vLLM takes the
  flag only with `--structured-outputs-config.backend=xgrammar`, or guidance). modelserve
  always generates compact JSON. The vLLM server here runs with the flag, as the
  example's rollout does.
- Tool calls: both refuse a request that offers tools (400) unless vLLM runs with
  `--enable-auto-tool-choice --tool-call-parser ...`; vLLM answers one with
  tool_choice "none" as if no tools were offered, modelserve refuses it too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from modelserve.gates import TERMINATION_MESSAGE_LIMIT, load_suite
from tests.serving.conftest import TINY_MODEL_NAME, start_server
from tests.serving.test_vllm_cpu_server import start_vllm, stop
from tests.support.kube import REPO_ROOT

pytestmark = pytest.mark.serving

EXAMPLE = REPO_ROOT / "examples" / "app-flow-gates.yaml"
CONFORMING_ANSWER = "Acme: Priya, the blue kettle."
GATES = [
    "regex:persona-prefix",
    "notContains:no-competitors",
    "jsonSchema:ticket-json",
    "contains:remembers-name",
    "regex:remembers-item",
    "agreement",
]
# What the operator writes for a vllm pod, plus: compact JSON (see the module's doc; vLLM
# takes the flag only with a backend named, xgrammar or guidance), no torch.compile warm-up
# (minutes on a busy 2-core machine, for a model this small).
VLLM_ARGS = (
    "--structured-outputs-config.backend=xgrammar",
    "--structured-outputs-config.disable_any_whitespace=true",
    "--enforce-eager",
)


def example_suite_text() -> str:
    documents: list[dict[str, Any]] = list(yaml.safe_load_all(EXAMPLE.read_text()))
    config_map = next(d for d in documents if d["kind"] == "ConfigMap")
    text: str = config_map["data"]["suite.yaml"]
    return text


def example_suite() -> dict[str, Any]:
    """The example suite as a document, to change before `run_eval` writes it."""
    suite: dict[str, Any] = yaml.safe_load(example_suite_text())
    return suite


def example_rollout_args() -> list[str]:
    documents: list[dict[str, Any]] = list(yaml.safe_load_all(EXAMPLE.read_text()))
    rollout = next(d for d in documents if d["kind"] == "ModelRollout")
    args: list[str] = rollout["spec"]["runtime"]["args"]
    return args


@dataclass(frozen=True)
class Engine:
    name: str
    base_url: str


@pytest.fixture(scope="module")
def conforming_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model in vLLM's shape, answering CONFORMING_ANSWER to any chat prompt."""
    from modelserve.tiny_model import VLLM_SHAPE, make_tiny_model

    return make_tiny_model(
        tmp_path_factory.mktemp("conforming-model"),
        seed=0,
        shape=VLLM_SHAPE,
        scripted_answer=CONFORMING_ANSWER,
    )


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("modelserve"),
        # One vLLM server for the module's tests (pytest groups them by this parameter).
        pytest.param("vllm", marks=[pytest.mark.vllm, pytest.mark.timeout(1200)]),
    ],
)
def engine(
    request: pytest.FixtureRequest,
    conforming_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Engine]:
    logs = tmp_path_factory.mktemp(f"{request.param}-logs")
    if request.param == "modelserve":
        server = start_server(conforming_model_dir, logs)
        yield Engine("modelserve", server.base_url)
        server.stop()
    else:
        vllm = start_vllm(conforming_model_dir, logs, *VLLM_ARGS)
        yield Engine("vllm", vllm.base_url)
        stop(vllm)


def run_eval(suite: dict[str, Any], engine: Engine, work: Path) -> tuple[int, dict[str, Any]]:
    """`modelserve eval` of `suite` with the engine as candidate and stable: exit code, result."""
    suite_file = work / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(suite))
    output = work / "result.json"
    run = subprocess.run(
        [
            sys.executable, "-m", "modelserve.cli", "eval",
            "--suite", str(suite_file),
            "--candidate", engine.base_url,
            "--stable", engine.base_url,
            "--model", TINY_MODEL_NAME,
            "--output", str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert run.returncode in (0, 1), run.stderr
    assert len(output.read_bytes()) < TERMINATION_MESSAGE_LIMIT
    result: dict[str, Any] = json.loads(output.read_text())
    assert result["error"] is None and result["omitted"] == 0, result
    return run.returncode, result


def prompt_of(suite: dict[str, Any], name: str) -> dict[str, Any]:
    prompt: dict[str, Any] = next(p for p in suite["prompts"] if p["name"] == name)
    return prompt


def test_the_example_suite_loads() -> None:
    suite = load_suite(example_suite_text())
    ticket = next(p for p in suite.prompts if p.name == "ticket-json")
    assert ticket.response_format is not None and ticket.expect is not None
    # The YAML anchor gives the gate the very schema the server is asked to enforce.
    assert ticket.expect.json_schema == ticket.response_format.json_schema
    assert ticket.response_format.request()["json_schema"]["name"] == "ticket"
    # The example's vLLM rollout asks for compact JSON, as the vLLM server here runs.
    assert set(VLLM_ARGS[:2]) <= set(example_rollout_args())


def test_the_example_suite_passes_for_a_conforming_model(engine: Engine, tmp_path: Path) -> None:
    returncode, result = run_eval(example_suite(), engine, tmp_path)
    assert returncode == 0 and result["passed"] is True, result
    gates = {g["name"]: g for g in result["gates"]}
    assert list(gates) == GATES
    assert all(g["passed"] for g in gates.values()), result
    assert gates["jsonSchema:ticket-json"]["message"] == "valid against the schema"
    assert gates["agreement"]["value"] == 1.0


def test_gates_fail_with_the_answer_quoted_when_the_model_breaks_them(
    engine: Engine, tmp_path: Path
) -> None:
    """The same suite, with the JSON prompt's responseFormat left out (the server no longer
    constrains the answer) and the product ("kettle") forbidden: the plain-text answer is
    not JSON, and it names the product."""
    suite = example_suite()
    del prompt_of(suite, "ticket-json")["responseFormat"]
    prompt_of(suite, "no-competitors")["expect"] = {"notContains": "kettle"}
    returncode, result = run_eval(suite, engine, tmp_path)
    assert returncode == 1 and result["passed"] is False
    gates = {g["name"]: g for g in result["gates"]}
    assert list(gates) == GATES
    quoted = json.dumps(CONFORMING_ANSWER)
    assert gates["jsonSchema:ticket-json"] == {
        "name": "jsonSchema:ticket-json",
        "passed": False,
        "value": None,
        "threshold": "valid against the schema",
        "message": f"not JSON (Expecting value: line 1 column 1 (char 0)): got {quoted}",
    }
    assert gates["notContains:no-competitors"]["passed"] is False
    assert gates["notContains:no-competitors"]["message"] == (
        f'expected not to contain "kettle", got {quoted}'
    )
    assert [name for name, g in gates.items() if not g["passed"]] == [
        "notContains:no-competitors",
        "jsonSchema:ticket-json",
    ]


def chat(engine: Engine, prompt: dict[str, Any], **fields: Any) -> httpx.Response:
    return httpx.post(
        engine.base_url + "/v1/chat/completions",
        json={
            "model": TINY_MODEL_NAME,
            "messages": prompt["messages"],
            "max_tokens": prompt["maxTokens"],
            "temperature": 0,
            **fields,
        },
        timeout=120,
    )


def test_the_json_answer_is_whole_and_valid_against_the_schema(engine: Engine) -> None:
    """The ticket prompt's answer, asked directly: the grammar ended it (finish_reason stop,
    not length), it parses and it is valid. modelserve also says so in the choice."""
    ticket = next(p for p in load_suite(example_suite_text()).prompts if p.name == "ticket-json")
    assert ticket.response_format is not None
    response = chat(
        engine,
        prompt_of(example_suite(), "ticket-json"),
        response_format=ticket.response_format.request(),
    )
    response.raise_for_status()
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    if engine.name == "modelserve":
        assert choice["structured_output_complete"] is True
    answer = json.loads(choice["message"]["content"])
    jsonschema.validate(answer, ticket.response_format.json_schema)


LOOKUP_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "parameters": {
            "type": "object",
            "properties": {"orderId": {"type": "integer"}},
            "required": ["orderId"],
        },
    },
}


def test_tool_calls_are_refused_by_both_engines(engine: Engine) -> None:
    """Neither engine, as run here, calls tools: a request that offers them (tool_choice
    auto, the default with tools) or demands one is refused with 400 naming why, never
    answered as if the tools were not there. With tool_choice "none" vLLM answers without
    the tools, as OpenAI does; modelserve refuses any tools."""
    prompt = prompt_of(example_suite(), "remembers-name")
    refusal = {
        "modelserve": "tools: tool calling is not supported by this server",
        "vllm": "--tool-call-parser to be set",
    }[engine.name]
    named = {"type": "function", "function": {"name": "lookup_order"}}
    for tool_choice in (None, "auto", "required", named):
        fields: dict[str, Any] = {"tools": [LOOKUP_TOOL]}
        if tool_choice is not None:
            fields["tool_choice"] = tool_choice
        response = chat(engine, prompt, **fields)
        assert response.status_code == 400, (tool_choice, response.text)
        assert refusal in response.json()["error"]["message"], (tool_choice, response.text)
    unused = chat(engine, prompt, tools=[LOOKUP_TOOL], tool_choice="none")
    if engine.name == "vllm":
        assert unused.status_code == 200, unused.text
        message = unused.json()["choices"][0]["message"]
        assert message["content"] == CONFORMING_ANSWER and not message.get("tool_calls")
    else:
        assert unused.status_code == 400, unused.text


def test_a_scripted_answer_needs_distinct_tokens(tmp_path: Path) -> None:
    """The scripted model is a chain from each token to the next: a repeated one is refused."""
    from modelserve.tiny_model import make_tiny_model

    with pytest.raises(ValueError, match=r"must be distinct.*'Ġhi', ',', 'Ġhi'"):
        make_tiny_model(tmp_path, scripted_answer="Acme: hi, hi")
