"""Model-quality gates: a suite of prompts run against a candidate model (and stable).

The suite is YAML (a ConfigMap key mounted into the evaluation Job's pod):

    prompts:                          # each answered greedily (temperature 0)
      - name: capital                 # [A-Za-z0-9._-], unique; gate names use it
        prompt: "The capital of France is"   # /v1/completions; or `messages:` for chat
        maxTokens: 16                 # default 16
        stop: ["\\n"]                 # optional, at most 4
        expect: {contains: "Paris"}   # any of contains / notContains / regex (re.search) /
                                      # json: true / jsonSchema: {...} (parses and validates)
      - name: order                   # chat: system prompt, earlier turns, then the question
        messages: [{role: system, content: "..."}, {role: user, content: "..."}]
        responseFormat: {type: json_schema, schema: {...}}   # or {type: json_object}: sent as
                                      # the OpenAI response_format (modelserve and vLLM enforce it)
        expect: {jsonSchema: {...}}
    agreement: {minRatio: 0.9}        # share of prompts whose answers equal stable's
    perplexity: {maxIncreasePercent: 3, texts: ["...", "..."]}  # vs stable's, prompt logprobs
    latency: {percentile: 95, maxMs: 2000}   # per prompt request, on the candidate

The result is one JSON object, at most 4095 bytes so that it fits a container's
termination message (the operator reads it from the Job pod's terminated state):

    {"passed": bool, "error": str | null, "omitted": int,
     "gates": [{"name": "contains:capital" | "notContains:<p>" | "regex:<p>" | "json:<p>"
                         | "jsonSchema:<p>" | "agreement" | "perplexity" | "latency",
                "passed": bool, "value": float | null, "threshold": str, "message": str}]}

`error` is set (and `gates` empty) when the suite could not run; `omitted` counts
gates left out to fit the size (passing ones first).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
import jsonschema
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from modelserve.eval import perplexity, server_client

# Kubernetes keeps at most this many bytes of a container's termination message.
TERMINATION_MESSAGE_LIMIT = 4096
MESSAGE_LIMIT = 200
# How much of a model's answer a failure message quotes.
QUOTE_LIMIT = 60


class SuiteError(ValueError):
    """The suite file is malformed; the message names the field."""


class GateRunError(RuntimeError):
    """The suite could not be run (a server unreachable or answering nonsense, no stable URL)."""


# --- the suite file -----------------------------------------------------------------


class _SuiteModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True)


class ChatMessage(_SuiteModel):
    role: Literal["system", "user", "assistant"]
    content: str


def _checked_schema(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None:
        try:
            jsonschema.validators.validator_for(value).check_schema(value)
        except jsonschema.SchemaError as error:
            raise ValueError(f"not a valid JSON Schema: {error.message}") from None
    return value


class Expect(_SuiteModel):
    contains: Annotated[str, Field(min_length=1)] | None = None
    not_contains: Annotated[str, Field(min_length=1)] | None = None
    regex: Annotated[str, Field(min_length=1)] | None = None
    # `json` would shadow BaseModel.json.
    valid_json: bool = Field(default=False, alias="json")
    json_schema: dict[str, Any] | None = None

    _schema_is_valid = field_validator("json_schema")(_checked_schema)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"not a valid regular expression: {error}") from None
        return value

    @model_validator(mode="after")
    def _expects_something(self) -> Expect:
        if (
            self.contains is None
            and self.not_contains is None
            and self.regex is None
            and not self.valid_json
            and self.json_schema is None
        ):
            raise ValueError("expect needs contains, notContains, regex, json: true or jsonSchema")
        return self


class ResponseFormat(_SuiteModel):
    """The OpenAI `response_format` of a prompt: constrained decoding in modelserve and vLLM."""

    type: Literal["json_object", "json_schema"]
    # `schema` would shadow BaseModel.schema.
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "answer"

    _schema_is_valid = field_validator("json_schema")(_checked_schema)

    @model_validator(mode="after")
    def _schema_iff_json_schema(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("schema is required with type json_schema, and only with it")
        return self

    def request(self) -> dict[str, Any]:
        """The request's `response_format` field."""
        if self.json_schema is None:
            return {"type": "json_object"}
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": self.json_schema, "strict": True},
        }


class Prompt(_SuiteModel):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=63)]
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=4096)] = 16
    stop: Annotated[list[str], Field(max_length=4)] | None = None
    response_format: ResponseFormat | None = None
    expect: Expect | None = None

    @model_validator(mode="after")
    def _one_input(self) -> Prompt:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError(f"prompt {self.name!r} needs exactly one of prompt or messages")
        return self


class Agreement(_SuiteModel):
    min_ratio: Annotated[float, Field(ge=0.0, le=1.0)]


class PerplexityGate(_SuiteModel):
    max_increase_percent: Annotated[float, Field(ge=0.0)] = 3.0
    texts: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


class Latency(_SuiteModel):
    percentile: Annotated[float, Field(gt=0.0, le=100.0)] = 95.0
    max_ms: Annotated[float, Field(gt=0.0)]


class Suite(_SuiteModel):
    prompts: list[Prompt] = Field(default_factory=list)
    agreement: Agreement | None = None
    perplexity: PerplexityGate | None = None
    latency: Latency | None = None

    @field_validator("prompts")
    @classmethod
    def _unique_names(cls, prompts: list[Prompt]) -> list[Prompt]:
        seen: set[str] = set()
        for prompt in prompts:
            if prompt.name in seen:
                raise ValueError(f"prompt name {prompt.name!r} appears more than once")
            seen.add(prompt.name)
        return prompts

    @model_validator(mode="after")
    def _checks_something(self) -> Suite:
        for gate in ("agreement", "latency"):
            if getattr(self, gate) is not None and not self.prompts:
                raise ValueError(f"{gate} is measured on the prompts, and prompts is empty")
        if not any(p.expect for p in self.prompts) and not (
            self.agreement or self.perplexity or self.latency
        ):
            raise ValueError(
                "the suite checks nothing: give prompts with expect, agreement, "
                "perplexity or latency"
            )
        return self

    def compares_with_stable(self) -> list[str]:
        """The configured gates that need the stable model's answers."""
        return [
            name
            for name, gate in (("agreement", self.agreement), ("perplexity", self.perplexity))
            if gate is not None
        ]


def _field_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def load_suite(text: str) -> Suite:
    """Parse and validate a suite; SuiteError lists every problem with its field path."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SuiteError(f"the suite is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise SuiteError("the suite must be a mapping with prompts, agreement, perplexity, latency")
    try:
        return Suite.model_validate(document)
    except ValidationError as error:
        problems = []
        for detail in error.errors():
            message = detail["msg"].removeprefix("Value error, ")
            if detail["type"] == "extra_forbidden":
                message = "unknown field"
            path = _field_path(detail["loc"])
            problems.append(f"{path}: {message}" if path else message)
        raise SuiteError("invalid suite: " + "; ".join(problems)) from None


# --- the result -----------------------------------------------------------------------


class Gate(BaseModel):
    name: str
    passed: bool
    value: float | None
    threshold: str
    message: str


class SuiteResult(BaseModel):
    passed: bool
    error: str | None = None
    omitted: int = 0
    gates: list[Gate] = Field(default_factory=list)

    def to_json(self) -> str:
        return self.model_dump_json()


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` cut to at most `limit` characters, an ellipsis marking the cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…" if limit > 0 else ""


def _quote(text: str) -> str:
    # JSON quoting shows newlines and quotes in a model's answer unambiguously.
    return json.dumps(clip(text, QUOTE_LIMIT), ensure_ascii=False)


def result_of(gates: Sequence[Gate]) -> SuiteResult:
    return SuiteResult(passed=all(g.passed for g in gates), gates=list(gates))


def error_result(message: str) -> SuiteResult:
    # 600 characters stay under the size limit even when each is JSON-escaped to 6 bytes.
    return SuiteResult(passed=False, error=clip(message, 600))


def fit_result(result: SuiteResult, limit: int = TERMINATION_MESSAGE_LIMIT) -> SuiteResult:
    """`result` shrunk below `limit` bytes of JSON.

    Passing gates lose their messages first, then failing ones are shortened,
    then whole gates are left out (passing first, from the end) and counted.
    """

    def size(candidate: SuiteResult) -> int:
        return len(candidate.to_json().encode())

    def with_messages(passing: int, failing: int) -> SuiteResult:
        gates = [
            g.model_copy(update={"message": clip(g.message, failing if not g.passed else passing)})
            for g in result.gates
        ]
        return result.model_copy(update={"gates": gates})

    fitted = with_messages(MESSAGE_LIMIT, MESSAGE_LIMIT)
    for passing, failing in ((0, MESSAGE_LIMIT), (0, 80), (0, 0)):
        if size(fitted) < limit:
            return fitted
        fitted = with_messages(passing, failing)
    gates = list(fitted.gates)
    while gates and size(fitted.model_copy(update={"gates": gates})) >= limit:
        passed = [i for i, g in enumerate(gates) if g.passed]
        del gates[passed[-1] if passed else -1]
    return fitted.model_copy(
        update={"gates": gates, "omitted": result.omitted + len(result.gates) - len(gates)}
    )


# --- pure checks ------------------------------------------------------------------------


def check_json(prompt: str, answer: str) -> Gate:
    """The answer, stripped, parses as JSON."""
    try:
        json.loads(answer.strip())
    except ValueError as error:
        message = f"not JSON ({error.args[0] if error.args else error}): got {_quote(answer)}"
        passed = False
    else:
        message, passed = "valid JSON", True
    return Gate(
        name=f"json:{prompt}",
        passed=passed,
        value=None,
        threshold="parses as JSON",
        message=clip(message),
    )


def check_json_schema(prompt: str, answer: str, schema: dict[str, Any]) -> Gate:
    """The answer, stripped, parses as JSON and is valid against `schema`."""
    try:
        document = json.loads(answer.strip())
    except ValueError as error:
        message = f"not JSON ({error.args[0] if error.args else error}): got {_quote(answer)}"
    else:
        problem = jsonschema.exceptions.best_match(
            jsonschema.validators.validator_for(schema)(schema).iter_errors(document)
        )
        if problem is None:
            message = "valid against the schema"
        else:
            where = "/".join(str(part) for part in problem.absolute_path) or "the answer"
            message = f"invalid at {where}: {problem.message}"
    return Gate(
        name=f"jsonSchema:{prompt}",
        passed=message == "valid against the schema",
        value=None,
        threshold="valid against the schema",
        message=clip(message),
    )


def check_not_contains(prompt: str, answer: str, needle: str) -> Gate:
    """`needle` nowhere in the answer (a system prompt's "never say ..." kept)."""
    passed = needle not in answer
    return Gate(
        name=f"notContains:{prompt}",
        passed=passed,
        value=None,
        threshold=clip(f"does not contain {_quote(needle)}", 100),
        message=clip(
            f"does not contain {_quote(needle)}"
            if passed
            else f"expected not to contain {_quote(needle)}, got {_quote(answer)}"
        ),
    )


def check_contains(prompt: str, answer: str, needle: str) -> Gate:
    passed = needle in answer
    return Gate(
        name=f"contains:{prompt}",
        passed=passed,
        value=None,
        threshold=clip(f"contains {_quote(needle)}", 100),
        message=clip(
            f"contains {_quote(needle)}"
            if passed
            else f"expected to contain {_quote(needle)}, got {_quote(answer)}"
        ),
    )


def check_regex(prompt: str, answer: str, pattern: str) -> Gate:
    """`pattern` found anywhere in the answer (re.search; anchor it with ^ and $ for all)."""
    passed = re.search(pattern, answer) is not None
    return Gate(
        name=f"regex:{prompt}",
        passed=passed,
        value=None,
        threshold=clip(f"matches /{pattern}/", 100),
        message=clip(
            f"matches /{pattern}/" if passed else f"expected /{pattern}/, got {_quote(answer)}"
        ),
    )


@dataclass(frozen=True)
class AnswerPair:
    prompt: str
    candidate: str
    stable: str


def check_agreement(pairs: Sequence[AnswerPair], min_ratio: float) -> Gate:
    """Share of prompts whose greedy answers are equal after stripping whitespace at both ends."""
    if not pairs:
        raise ValueError("agreement needs at least one prompt")
    differing = [p for p in pairs if p.candidate.strip() != p.stable.strip()]
    ratio = (len(pairs) - len(differing)) / len(pairs)
    passed = ratio >= min_ratio
    summary = f"{len(pairs) - len(differing)}/{len(pairs)} answers equal stable's"
    details = [
        f"{p.prompt}: candidate {_quote(p.candidate.strip())} vs stable {_quote(p.stable.strip())}"
        for p in differing
    ]
    return Gate(
        name="agreement",
        passed=passed,
        value=round(ratio, 4),
        threshold=f">= {min_ratio:g}",
        message=clip("; ".join([summary, *([] if passed else details)])),
    )


def check_perplexity(candidate: float, stable: float, max_increase_percent: float) -> Gate:
    """Candidate perplexity at most `max_increase_percent` above stable's (lower always passes)."""
    if not (math.isfinite(candidate) and math.isfinite(stable)) or stable <= 0:
        raise ValueError(f"perplexities must be finite and positive: {candidate}, {stable}")
    increase = (candidate / stable - 1.0) * 100.0
    passed = increase <= max_increase_percent
    return Gate(
        name="perplexity",
        passed=passed,
        value=round(increase, 4),
        threshold=f"<= +{max_increase_percent:g}% vs stable",
        message=clip(f"candidate {candidate:.4g} vs stable {stable:.4g} ({increase:+.2f}%)"),
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of values at or below it."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(math.ceil(q / 100.0 * len(ordered)), 1)
    return ordered[rank - 1]


def check_latency(latencies_ms: Sequence[float], q: float, max_ms: float) -> Gate:
    observed = percentile(latencies_ms, q)
    passed = observed <= max_ms
    return Gate(
        name="latency",
        passed=passed,
        value=round(observed, 3),
        threshold=f"p{q:g} <= {max_ms:g} ms",
        message=clip(
            f"p{q:g} {observed:.1f} ms over {len(latencies_ms)} requests"
            + ("" if passed else f", budget {max_ms:g} ms")
        ),
    )


# --- running a suite against servers ----------------------------------------------------


@dataclass(frozen=True)
class Answer:
    text: str
    latency_ms: float


class _Server:
    """One model server (`role` is candidate or stable), asked greedily over the OpenAI API."""

    def __init__(self, role: str, base_url: str, model: str, timeout_s: float) -> None:
        self.role = role
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        # Gates judge the model, not a server's response cache (a rerun would be all hits).
        self._client = server_client(
            self.base_url, timeout_s, headers={"Cache-Control": "no-cache"}
        )

    def close(self) -> None:
        self._client.close()

    def _failed(self, what: str, error: Exception) -> GateRunError:
        detail = str(error)
        if isinstance(error, httpx.HTTPStatusError):
            detail += f": {clip(error.response.text, 300)}"
        return GateRunError(f"{self.role} at {self.base_url}: {what} failed: {detail}")

    def answer(self, prompt: Prompt) -> Answer:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": prompt.max_tokens,
            "temperature": 0,
        }
        if prompt.stop:
            body["stop"] = prompt.stop
        if prompt.response_format is not None:
            body["response_format"] = prompt.response_format.request()
        if prompt.messages is not None:
            path = "/v1/chat/completions"
            body["messages"] = [m.model_dump() for m in prompt.messages]
        else:
            path = "/v1/completions"
            body["prompt"] = prompt.prompt
        started = time.perf_counter()
        try:
            response = self._client.post(path, json=body)
            response.raise_for_status()
            choice = response.json()["choices"][0]
            text = choice["message"]["content"] if prompt.messages else choice["text"]
        except httpx.HTTPError as error:
            raise self._failed(f"prompt {prompt.name!r}", error) from None
        except (ValueError, LookupError, TypeError) as error:
            raise self._failed(
                f"prompt {prompt.name!r}", ValueError(f"odd answer: {error}")
            ) from None
        if not isinstance(text, str):
            raise self._failed(f"prompt {prompt.name!r}", ValueError("the answer is not text"))
        return Answer(text, (time.perf_counter() - started) * 1000.0)

    def perplexity(self, texts: list[str]) -> float:
        try:
            return perplexity(self.base_url, self.model, texts, self.timeout_s).perplexity
        except httpx.HTTPError as error:
            raise self._failed("perplexity", error) from None
        except (ValueError, LookupError, TypeError) as error:
            raise self._failed("perplexity", ValueError(str(error))) from None


def run_suite(
    suite: Suite,
    candidate_url: str,
    stable_url: str | None,
    model: str,
    timeout_s: float = 120.0,
) -> SuiteResult:
    """Run every gate of `suite`; GateRunError when it cannot (no gate is then judged)."""
    needs_stable = suite.compares_with_stable()
    if needs_stable and stable_url is None:
        raise GateRunError(
            f"{' and '.join(needs_stable)} compare with the stable model: pass --stable URL"
        )
    candidate = _Server("candidate", candidate_url, model, timeout_s)
    stable = _Server("stable", stable_url, model, timeout_s) if stable_url else None
    try:
        gates: list[Gate] = []
        answers = {p.name: candidate.answer(p) for p in suite.prompts}
        for prompt in suite.prompts:
            text = answers[prompt.name].text
            if prompt.expect is None:
                continue
            expect = prompt.expect
            if expect.contains is not None:
                gates.append(check_contains(prompt.name, text, expect.contains))
            if expect.not_contains is not None:
                gates.append(check_not_contains(prompt.name, text, expect.not_contains))
            if expect.regex is not None:
                gates.append(check_regex(prompt.name, text, expect.regex))
            if expect.valid_json:
                gates.append(check_json(prompt.name, text))
            if expect.json_schema is not None:
                gates.append(check_json_schema(prompt.name, text, expect.json_schema))
        if suite.agreement is not None and stable is not None:
            pairs = [
                AnswerPair(p.name, answers[p.name].text, stable.answer(p).text)
                for p in suite.prompts
            ]
            gates.append(check_agreement(pairs, suite.agreement.min_ratio))
        if suite.perplexity is not None and stable is not None:
            texts = suite.perplexity.texts
            gates.append(
                check_perplexity(
                    candidate.perplexity(texts),
                    stable.perplexity(texts),
                    suite.perplexity.max_increase_percent,
                )
            )
        if suite.latency is not None:
            latencies = [a.latency_ms for a in answers.values()]
            gates.append(check_latency(latencies, suite.latency.percentile, suite.latency.max_ms))
        return result_of(gates)
    finally:
        candidate.close()
        if stable is not None:
            stable.close()
