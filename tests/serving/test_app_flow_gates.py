"""The shipped app-flow gate suite (examples/app-flow-gates.yaml) run by `modelserve eval`
against a real `modelserve serve` process, as the evaluation Job runs it.

The tiny model has random weights: it keeps no persona and remembers no name, so
those gates fail with the answer quoted, while the JSON gate passes by the
server's constrained decoding alone (the suite's responseFormat). Candidate and
stable are the same server, so agreement is 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from modelserve.gates import TERMINATION_MESSAGE_LIMIT, load_suite
from tests.serving.conftest import TINY_MODEL_NAME, ServerProcess
from tests.support.kube import REPO_ROOT

pytestmark = pytest.mark.serving

EXAMPLE = REPO_ROOT / "examples" / "app-flow-gates.yaml"


def example_suite() -> str:
    documents: list[dict[str, Any]] = list(yaml.safe_load_all(EXAMPLE.read_text()))
    config_map = next(d for d in documents if d["kind"] == "ConfigMap")
    text: str = config_map["data"]["suite.yaml"]
    return text


def test_the_example_suite_loads() -> None:
    suite = load_suite(example_suite())
    ticket = next(p for p in suite.prompts if p.name == "ticket-json")
    assert ticket.response_format is not None and ticket.expect is not None
    # The YAML anchor gives the gate the very schema the server is asked to enforce.
    assert ticket.expect.json_schema == ticket.response_format.json_schema
    assert ticket.response_format.request()["json_schema"]["name"] == "ticket"


def test_modelserve_eval_runs_the_example_against_a_server(
    server: ServerProcess, tmp_path: Path
) -> None:
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(example_suite())
    output = tmp_path / "result.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelserve.cli",
            "eval",
            "--suite",
            str(suite_file),
            "--candidate",
            server.base_url,
            "--stable",
            server.base_url,
            "--model",
            TINY_MODEL_NAME,
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Exit 1: the suite ran and judged the model failing (2 would be "could not run").
    assert run.returncode == 1, run.stderr
    assert len(output.read_bytes()) < TERMINATION_MESSAGE_LIMIT
    result = json.loads(output.read_text())
    assert result["passed"] is False and result["error"] is None and result["omitted"] == 0
    gates = {g["name"]: g for g in result["gates"]}
    assert list(gates) == [
        "regex:persona-prefix",
        "notContains:no-competitors",
        "jsonSchema:ticket-json",
        "contains:remembers-name",
        "regex:remembers-item",
        "agreement",
    ]
    assert gates["jsonSchema:ticket-json"]["passed"] is True
    assert gates["jsonSchema:ticket-json"]["message"] == "valid against the schema"
    assert gates["notContains:no-competitors"]["passed"] is True
    assert gates["agreement"]["passed"] is True and gates["agreement"]["value"] == 1.0
    for name, expected in (
        ("regex:persona-prefix", "expected /^\\s*Acme:/, got "),
        ("contains:remembers-name", 'expected to contain "Priya", got '),
        ("regex:remembers-item", "expected /(?i)blue/, got "),
    ):
        assert gates[name]["passed"] is False
        assert gates[name]["message"].startswith(expected), gates[name]


def test_the_json_gate_checks_what_the_server_answers(server: ServerProcess) -> None:
    """The ticket prompt's answer, asked directly, is complete JSON valid against the schema."""
    ticket = next(p for p in load_suite(example_suite()).prompts if p.name == "ticket-json")
    assert ticket.messages is not None and ticket.response_format is not None
    response = httpx.post(
        server.base_url + "/v1/chat/completions",
        json={
            "model": TINY_MODEL_NAME,
            "messages": [m.model_dump() for m in ticket.messages],
            "max_tokens": ticket.max_tokens,
            "temperature": 0,
            "response_format": ticket.response_format.request(),
        },
        timeout=120,
    )
    response.raise_for_status()
    choice = response.json()["choices"][0]
    assert choice["structured_output_complete"] is True
    answer = json.loads(choice["message"]["content"])
    jsonschema.validate(answer, ticket.response_format.json_schema)
