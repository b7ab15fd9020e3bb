"""parse_spec under fuzzing and the bad-input corpus.

parse_spec is the operator's only judge of a spec: whatever a resource holds,
it returns a spec or raises InvalidSpecError whose field path starts at
`spec` and leads through the input (then, for a missing field, through field
names of the schema); nothing else escapes it. A parsed spec dumped by alias
parses back equal, and its pods can be built. Every case of the corpus
(tests/support/bad_inputs.py) in the spec itself is refused, naming the field
the API server names.
"""

from __future__ import annotations

import copy
import re
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrollout.engine.podspec import build_pod_spec
from modelrollout.models import InvalidSpecError, ModelRolloutSpec, parse_spec
from modelrollout.models.spec import MAX_REPLICAS
from modelrollout_dev.reference import pydantic_fields
from tests.support.bad_inputs import CASES, BadInput, names_field
from tests.unit.operator.builders import example_spec

pytestmark = pytest.mark.unit

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every field name the spec models know, by alias (`checks`, `breachWhen` ...).
SCHEMA_NAMES = {
    path.rpartition(".")[2].removesuffix("[]") for path in pydantic_fields(ModelRolloutSpec, "spec")
}


def test_the_corpus_has_at_least_50_named_cases() -> None:
    assert len(CASES) >= 50
    assert len({case.name for case in CASES}) == len(CASES)
    assert {case.outcome for case in CASES} == {"api", "operator"}


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.name) for c in CASES if c.judged_by_parse_spec]
)
def test_parse_spec_refuses_every_corpus_case_naming_the_field(case: BadInput) -> None:
    with pytest.raises(InvalidSpecError) as raised:
        parse_spec(case.spec())
    assert names_field(raised.value.field_path, case.field), raised.value
    if case.outcome == "operator":  # an api case's `says` is in the API server's words
        assert case.says in str(raised.value), raised.value


def unexplained_part(body: Any, field_path: str) -> str:
    """What of `field_path` does not lead through `body` (keys may hold dots)."""
    assert field_path.startswith("spec"), field_path
    rest, node = field_path[len("spec") :], body
    while rest:
        index = re.match(r"\[(\d+)\]", rest)
        if index is not None and isinstance(node, list) and int(index.group(1)) < len(node):
            node, rest = node[int(index.group(1))], rest[index.end() :]
            continue
        keys = [
            key
            for key in (node if isinstance(node, dict) and rest.startswith(".") else ())
            if rest[1:] == key or rest[1:].startswith((f"{key}.", f"{key}["))
        ]
        if not keys:
            return rest
        key = max(keys, key=len)
        node, rest = node[key], rest[1 + len(key) :]
    return rest


def check_outcome(body: Any) -> None:
    """parse_spec's contract for any input, and the round trip for what it accepts."""
    try:
        spec = parse_spec(body)
    except InvalidSpecError as error:
        missing = unexplained_part(body, error.field_path)
        # Only a missing field (required, or needed by another) may lie beyond the input.
        assert all(name in SCHEMA_NAMES for name in missing.split(".")[1:]), error
        assert re.fullmatch(r"(\.[A-Za-z]+)*", missing), error
        assert error.message, error
        return
    assert_round_trip_and_buildable(spec)


def assert_round_trip_and_buildable(spec: ModelRolloutSpec) -> None:
    for dumped in (
        spec.model_dump(by_alias=True),
        spec.model_dump(by_alias=True, mode="json", exclude_defaults=True),
    ):
        assert parse_spec(dumped) == spec
    # Whatever parse_spec accepts, the operator can build its pods from.
    build_pod_spec(spec)


HOSTILE_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\u202e",
        "\u200b",
        "\U0001f680",
        '"} or vector(1) #',
        "{{model}}",
        "{{pod}}",
        "1e9h",
        "-5m",
        "99999999999h",
        "0s",
        "> NaN",
        "> 0.01",
        "x" * 5000,
    ]
)
LEAF = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63, -(2**63), 10**9, 101, -1, 0])
    | st.floats()
    | st.text(max_size=12)
    | HOSTILE_TEXT
)
KEYS = st.sampled_from(sorted(SCHEMA_NAMES)) | st.text(max_size=8)
JSON = st.recursive(
    LEAF,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=24,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indexes) into `node`, itself included."""
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


EXAMPLE_PATHS = _paths(example_spec())[1:]


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    return isinstance(node, list) and isinstance(part, int) and part < len(node)


@st.composite
def mutated_examples(draw: st.DrawFn) -> dict[str, Any]:
    """The valid example with a few fields replaced, deleted or given a stray sibling."""
    spec = example_spec()
    for _ in range(draw(st.integers(1, 3))):
        *parents, last = draw(st.sampled_from(EXAMPLE_PATHS))
        node: Any = spec
        for part in parents:
            if not _has(node, part):
                break
            node = node[part]
        else:
            if not _has(node, last):
                continue
            action = draw(st.sampled_from(["replace", "delete", "sibling"]))
            if isinstance(node, dict) and action == "delete":
                del node[last]
            elif isinstance(node, dict) and action == "sibling":
                node[draw(KEYS)] = draw(JSON)
            else:
                node[last] = draw(JSON)
    return spec


@FUZZ
@given(st.one_of(JSON, st.dictionaries(KEYS, JSON, max_size=6), mutated_examples()))
def test_parse_spec_returns_a_spec_or_names_a_field_of_the_input(body: Any) -> None:
    check_outcome(body)


LABEL = st.from_regex(r"[a-z]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
DURATION = st.builds(
    lambda hours, minutes, seconds: f"{hours}h{minutes}m{seconds}s",
    st.integers(0, 8000),
    st.integers(0, 59),
    st.integers(1, 59),
) | st.sampled_from(["1s", "250ms", "5m", "1h30m", "8760h"])
STEP = st.one_of(
    st.builds(lambda weight: {"setWeight": weight}, st.integers(0, 100)),
    st.just({"pause": {}}),
    st.builds(lambda d: {"pause": {"duration": d}}, DURATION),
    st.builds(lambda d: {"analysis": {"duration": d}}, DURATION),
)
VARIABLE = st.sampled_from(["namespace", "rollout", "canary.revision", "stable.revision", "model"])
CHECK = st.one_of(
    st.builds(
        lambda builtin, compare: {
            "builtin": builtin,
            **({"compareTo": "stable"} if compare else {}),
        },
        st.sampled_from(["errorRate", "latencyP99", "ttftP99", "interTokenLatencyP99"]),
        st.booleans(),
    ),
    st.builds(lambda v: {"query": f'sum(rate(x{{a="{{{{{v}}}}}"}}[1m]))'}, VARIABLE),
)


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    """Valid specs well beyond the example: every one must parse and round-trip."""
    spec = example_spec()
    spec["model"]["name"] = draw(
        st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9._:/@+]{0,40}[A-Za-z0-9])?", fullmatch=True)
    )
    spec["model"]["uri"] = draw(
        st.builds(lambda claim, path: f"pvc://{claim}/{path}", LABEL, LABEL)
        | st.builds(lambda org, name: f"hf://{org}/{name}@main", LABEL, LABEL)
        | st.builds(lambda path: f"file:///models/{path}", LABEL)
    )
    runtime = spec["runtime"]
    runtime["replicas"] = draw(st.integers(1, MAX_REPLICAS))
    runtime["port"] = draw(st.integers(1, 65535))
    runtime["startupTimeout"] = draw(DURATION)
    gpus = draw(st.integers(0, 8))
    cpu = draw(st.sampled_from(["500m", "2", "1.5", "1e3", ".5"]))
    runtime["resources"] = {
        "limits": {"nvidia.com/gpu": gpus, "cpu": cpu, "memory": "64Gi"},
        "requests": {"nvidia.com/gpu": str(gpus), "cpu": cpu},
    }
    runtime["nodeSelector"] = draw(
        st.dictionaries(st.builds(lambda p, n: f"{p}.io/{n}", LABEL, LABEL), LABEL, max_size=3)
    )
    runtime["tolerations"] = [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    runtime["env"] = [
        {"name": name, "value": value}
        for name, value in draw(
            st.dictionaries(
                st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True),
                st.text(string.printable, max_size=20),
                max_size=3,
            )
        ).items()
    ]
    spec["strategy"]["canary"]["steps"] = draw(st.lists(STEP, min_size=1, max_size=32))
    names = draw(st.lists(LABEL, min_size=0, max_size=16, unique=True))
    spec["analysis"]["checks"] = [
        {
            "name": name,
            "breachWhen": draw(st.sampled_from(["> 0.01", "<= 5", "!= -1"])),
            **draw(CHECK),
        }
        for name in names
    ]
    spec["analysis"]["interval"] = draw(DURATION)
    spec["traffic"]["gatewayAPI"]["hostnames"] = draw(
        st.lists(st.builds(lambda a, b: f"{a}.{b}", LABEL, LABEL), max_size=3)
    )
    spec["progressDeadline"] = draw(DURATION.filter(lambda text: text != "250ms"))
    return copy.deepcopy(spec)


@FUZZ
@given(valid_specs())
def test_valid_specs_parse_and_round_trip(body: dict[str, Any]) -> None:
    assert_round_trip_and_buildable(parse_spec(body))
