"""Quality-gate suites and checks, without servers: validation, each check, the result size."""

from __future__ import annotations

import json

import pytest

from modelserve.gates import (
    TERMINATION_MESSAGE_LIMIT,
    AnswerPair,
    Gate,
    SuiteError,
    check_agreement,
    check_contains,
    check_json,
    check_json_schema,
    check_latency,
    check_not_contains,
    check_perplexity,
    check_regex,
    error_result,
    fit_result,
    load_suite,
    percentile,
    result_of,
)

pytestmark = pytest.mark.unit

FULL_SUITE = """
prompts:
  - name: capital
    prompt: "The capital of France is"
    maxTokens: 8
    stop: ["\\n"]
    expect: {contains: Paris, regex: "^\\\\s*Paris"}
  - name: extract
    messages: [{role: user, content: 'Answer in JSON: {"city": ...}'}]
    expect: {json: true}
  - name: free
    prompt: "Once upon a time"
agreement: {minRatio: 0.9}
perplexity: {texts: ["The quick brown fox jumps over the lazy dog."]}
latency: {maxMs: 2000}
"""


def test_a_full_suite_loads_with_defaults() -> None:
    suite = load_suite(FULL_SUITE)
    capital, extract, free = suite.prompts
    assert capital.max_tokens == 8 and capital.stop == ["\n"]
    assert capital.expect is not None and capital.expect.regex == r"^\s*Paris"
    assert extract.messages is not None and extract.expect is not None
    assert extract.expect.valid_json and extract.max_tokens == 16
    assert free.expect is None
    assert suite.agreement is not None and suite.agreement.min_ratio == 0.9
    assert suite.perplexity is not None and suite.perplexity.max_increase_percent == 3.0
    assert suite.latency is not None and suite.latency.percentile == 95.0
    assert suite.compares_with_stable() == ["agreement", "perplexity"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prompts: [{name: a, prompt: x, maxToken: 3}]", "prompts[0].maxToken: unknown field"),
        ("prompts: [{name: a, prompt: x, max_tokens: 3}]", "prompts[0].max_tokens: unknown field"),
        ("prompts: [{name: a, prompt: x, maxTokens: 0}]", "prompts[0].maxTokens: Input should be"),
        ("prompts: [{name: a, prompt: x, expect: {}}]", "prompts[0].expect: expect needs"),
        ("prompts: [{name: a, prompt: x, expect: {regex: '('}}]", "prompts[0].expect.regex: not"),
        ("prompts: [{name: 'a b', prompt: x}]\nlatency: {maxMs: 1}", "prompts[0].name: String"),
        ("prompts: [{name: a}]\nlatency: {maxMs: 1}", "prompts[0]: prompt 'a' needs exactly one"),
        (
            "prompts: [{name: a, prompt: x}, {name: a, prompt: y}]\nlatency: {maxMs: 1}",
            "prompts: prompt name 'a' appears more than once",
        ),
        ("perplexity: {texts: []}", "perplexity.texts: List should have at least 1 item"),
        ("perplexity: {maxIncreasePercent: -1, texts: [a]}", "perplexity.maxIncreasePercent:"),
        ("agreement: {minRatio: 1.5}", "agreement.minRatio: Input should be less than"),
        (
            "agreement: {minRatio: 0.5}",
            "invalid suite: agreement is measured on the prompts, and prompts is empty",
        ),
        ("latency: {percentile: 95}", "latency.maxMs: Field required"),
        ("prompts: [{name: a, prompt: x}]", "invalid suite: the suite checks nothing"),
        ("gates: []", "gates: unknown field"),
        (
            "prompts: [{name: a, prompt: x, responseFormat: {type: json_schema},"
            " expect: {json: true}}]",
            "prompts[0].responseFormat: schema is required with type json_schema, and only with it",
        ),
        (
            "prompts: [{name: a, prompt: x, responseFormat: {type: json_object, schema: {}},"
            " expect: {json: true}}]",
            "prompts[0].responseFormat: schema is required with type json_schema, and only with it",
        ),
        (
            "prompts: [{name: a, prompt: x, responseFormat: {type: xml}, expect: {json: true}}]",
            "prompts[0].responseFormat.type: Input should be 'json_object' or 'json_schema'",
        ),
        (
            "prompts: [{name: a, prompt: x, responseFormat: {type: json_schema,"
            " schema: {type: bogus}}, expect: {json: true}}]",
            "prompts[0].responseFormat.schema: not a valid JSON Schema: 'bogus' is not valid",
        ),
        (
            "prompts: [{name: a, prompt: x, expect: {jsonSchema: {required: 3}}}]",
            "prompts[0].expect.jsonSchema: not a valid JSON Schema: 3 is not of type 'array'",
        ),
        ("prompts: [{name: a, prompt: x, expect: {notContains: ''}}]", "prompts[0].expect.notC"),
        ("- a list", "the suite must be a mapping"),
        ("prompts: [", "the suite is not valid YAML"),
    ],
)
def test_suite_errors_name_the_field(text: str, expected: str) -> None:
    with pytest.raises(SuiteError) as raised:
        load_suite(text)
    assert expected in str(raised.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SuiteError) as raised:
        load_suite("agreement: {minRatio: 2}\nlatency: {maxMs: 0}")
    assert "agreement.minRatio" in str(raised.value) and "latency.maxMs" in str(raised.value)


def test_json_check() -> None:
    assert check_json("p", ' {"city": "Paris"}\n').passed
    assert check_json("p", "[1, 2]").passed
    failed = check_json("p", '{"city": Paris')
    assert not failed.passed and failed.name == "json:p" and failed.value is None
    assert failed.message.startswith("not JSON (")
    assert failed.message.endswith('got "{\\"city\\": Paris"')
    assert not check_json("p", "").passed


APP_SUITE = """
prompts:
  - name: order
    messages:
      - {role: system, content: "Answer as JSON."}
      - {role: user, content: "My order 12 is late."}
      - {role: assistant, content: "Sorry! Which order?"}
      - {role: user, content: "12."}
    responseFormat: {type: json_schema, name: order, schema: &order {type: object,
      properties: {id: {type: integer}}, required: [id]}}
    expect: {jsonSchema: *order, notContains: "Globex"}
  - name: any-object
    prompt: "JSON:"
    responseFormat: {type: json_object}
    expect: {json: true}
"""


def test_app_flow_prompts_load_and_ask_for_the_response_format() -> None:
    order, any_object = load_suite(APP_SUITE).prompts
    assert order.messages is not None
    assert [m.role for m in order.messages] == ["system", "user", "assistant", "user"]
    assert order.expect is not None and order.expect.not_contains == "Globex"
    assert order.response_format is not None
    schema = {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}
    assert order.expect.json_schema == schema
    # The OpenAI shape both engines take (vLLM and modelserve).
    assert order.response_format.request() == {
        "type": "json_schema",
        "json_schema": {"name": "order", "schema": schema, "strict": True},
    }
    assert any_object.response_format is not None
    assert any_object.response_format.request() == {"type": "json_object"}


def test_json_schema_check_names_where_the_answer_is_invalid() -> None:
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "integer"}}},
        "required": ["items"],
    }
    passed = check_json_schema("p", ' {"items": [1, 2]}\n', schema)
    assert passed.passed and passed.name == "jsonSchema:p"
    assert passed.message == passed.threshold == "valid against the schema"
    wrong_item = check_json_schema("p", '{"items": [1, "two"]}', schema)
    assert not wrong_item.passed
    assert wrong_item.message == "invalid at items/1: 'two' is not of type 'integer'"
    missing = check_json_schema("p", "{}", schema)
    assert missing.message == "invalid at the answer: 'items' is a required property"
    not_json = check_json_schema("p", '{"items": [1,', schema)
    assert not not_json.passed and not_json.message.startswith("not JSON (")


def test_not_contains_check_quotes_the_answer() -> None:
    assert check_not_contains("rules", "We only sell our own routers.", "Globex").passed
    failed = check_not_contains("rules", "Globex makes a fine router.", "Globex")
    assert failed.name == "notContains:rules" and not failed.passed
    assert failed.threshold == 'does not contain "Globex"'
    assert failed.message == ('expected not to contain "Globex", got "Globex makes a fine router."')


def test_contains_check_quotes_a_short_diff() -> None:
    assert check_contains("capital", "Paris, of course", "Paris").passed
    failed = check_contains("capital", "Lyon is the capital. " * 20, "Paris")
    assert failed.name == "contains:capital" and not failed.passed
    assert failed.message.startswith('expected to contain "Paris", got "Lyon is the capital. ')
    assert "…" in failed.message and len(failed.message) <= 200
    assert failed.threshold == 'contains "Paris"'


def test_regex_check_searches_anywhere() -> None:
    assert check_regex("n", "the answer is 42.", r"\d+").passed
    assert not check_regex("n", "the answer is 42.", r"^\d+$").passed
    failed = check_regex("n", "no digits", r"\d+")
    assert failed.name == "regex:n" and failed.message == r'expected /\d+/, got "no digits"'


def test_agreement_compares_stripped_answers() -> None:
    pairs = [
        AnswerPair("a", " Paris\n", "Paris"),
        AnswerPair("b", "4", "4"),
        AnswerPair("c", "blue", "red"),
        AnswerPair("d", "yes", "yes"),
    ]
    gate = check_agreement(pairs, 0.75)
    assert gate.passed and gate.value == 0.75 and gate.threshold == ">= 0.75"
    failed = check_agreement(pairs, 0.9)
    assert not failed.passed
    assert failed.message == '3/4 answers equal stable\'s; c: candidate "blue" vs stable "red"'
    with pytest.raises(ValueError):
        check_agreement([], 0.5)


def test_perplexity_allows_the_configured_increase() -> None:
    gate = check_perplexity(10.29, 10.0, 3.0)
    assert gate.passed and gate.value == pytest.approx(2.9)
    assert gate.threshold == "<= +3% vs stable"
    failed = check_perplexity(10.31, 10.0, 3.0)
    assert not failed.passed and failed.message == "candidate 10.31 vs stable 10 (+3.10%)"
    assert check_perplexity(5.0, 10.0, 0.0).passed  # better than stable
    assert check_perplexity(10.0, 10.0, 0.0).passed
    with pytest.raises(ValueError):
        check_perplexity(float("inf"), 10.0, 3.0)


def test_latency_uses_the_nearest_rank_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 95) == 95.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 50) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    with pytest.raises(ValueError):
        percentile([], 95)
    assert check_latency(values, 95, 95.0).passed
    failed = check_latency(values, 95, 94.9)
    assert not failed.passed and failed.value == 95.0 and failed.threshold == "p95 <= 94.9 ms"
    assert failed.message == "p95 95.0 ms over 100 requests, budget 94.9 ms"


def test_result_json_has_the_documented_shape() -> None:
    result = result_of([check_json("p", "{}"), check_contains("q", "x", "y")])
    assert json.loads(result.to_json()) == {
        "passed": False,
        "error": None,
        "omitted": 0,
        "gates": [
            {
                "name": "json:p",
                "passed": True,
                "value": None,
                "threshold": "parses as JSON",
                "message": "valid JSON",
            },
            {
                "name": "contains:q",
                "passed": False,
                "value": None,
                "threshold": 'contains "y"',
                "message": 'expected to contain "y", got "x"',
            },
        ],
    }
    assert result_of([]).passed
    assert json.loads(error_result("x" * 5000).to_json())["error"].endswith("…")
    assert len(error_result("\x00" * 5000).to_json().encode()) < TERMINATION_MESSAGE_LIMIT


def _gate(index: int, passed: bool) -> Gate:
    return Gate(
        name=f"contains:prompt-{index:03d}",
        passed=passed,
        value=None,
        threshold='contains "something"',
        message="é" * 300,
    )


def test_a_small_result_keeps_its_messages() -> None:
    result = result_of([_gate(0, False)])
    fitted = fit_result(result)
    assert fitted.gates[0].message == "é" * 199 + "…"


@pytest.mark.parametrize("count", [10, 30, 200])
def test_result_is_capped_below_the_termination_message_limit(count: int) -> None:
    gates = [_gate(i, passed=i % 2 == 0) for i in range(count)]
    fitted = fit_result(result_of(gates))
    assert len(fitted.to_json().encode()) < TERMINATION_MESSAGE_LIMIT
    assert not fitted.passed
    assert fitted.omitted == count - len(fitted.gates)
    kept_failing = [g for g in fitted.gates if not g.passed]
    kept_passing = [g for g in fitted.gates if g.passed]
    # Failing gates are what the operator shows; passing ones go first.
    assert kept_failing and (not kept_passing or len(kept_failing) == count // 2)
    if count == 10:
        assert fitted.omitted == 0 and kept_failing[0].message.startswith("é")
