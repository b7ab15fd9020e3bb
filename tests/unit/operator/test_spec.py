"""parse_spec: the DESIGN.md resource parses; bad input names the field as the user wrote it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelrollout.models import InvalidSpecError, parse_spec
from modelrollout.models import spec as spec_module
from modelrollout.models.spec import Threshold
from tests.unit.operator.builders import example_spec

pytestmark = pytest.mark.unit


def test_design_example_parses_with_aliases_and_defaults() -> None:
    spec = parse_spec(example_spec())
    assert spec.traffic.gateway_api is not None
    assert spec.traffic.gateway_api.parent_refs[0].name == "inference-gw"
    assert spec.analysis.checks[0].for_ == "3m"
    assert spec.runtime.resources.limits == {"nvidia.com/gpu": "1"}
    assert spec.runtime.port == 8000
    assert spec.runtime.capacity == "surge"
    assert spec.runtime.termination_grace_period == "60s"
    assert spec.canary.abort_scale_down_delay == "30s"
    assert [step.kind for step in spec.canary.steps] == [
        "setWeight",
        "pause",
        "setWeight",
        "analysis",
        "setWeight",
    ]


def test_dumps_back_to_the_camel_case_the_user_wrote() -> None:
    dumped = parse_spec(example_spec()).model_dump(by_alias=True, exclude_defaults=True)
    assert dumped["traffic"]["gatewayAPI"]["parentRefs"] == [{"name": "inference-gw"}]
    assert dumped["analysis"]["checks"][0]["for"] == "3m"
    assert parse_spec(dumped) == parse_spec(example_spec())


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


_DELETE = object()

SHADOW = {"mirrorPercent": 10, "duration": "10m", "then": "promote"}

FIELD_REF = {"fieldRef": {"fieldPath": "metadata.name"}}
SECRET_KEY_REF = {"secretKeyRef": {"name": "hf-token", "key": "token"}}
LONG_REF = {"secretKeyRef": {"name": "s" * 253, "key": "k" * 253}}
# Names and values 64770 characters, under the bound; two references of 507 pass it.
ENV_OVER_BOUND_BY_REFERENCES = [
    {"name": "A", "value": "x" * 32768},
    {"name": "B", "value": "x" * 32000},
    {"name": "C", "valueFrom": LONG_REF},
    {"name": "D", "valueFrom": LONG_REF},
]

INVALID: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("missing model uri", _set("model.uri", _DELETE), "spec.model.uri", "required"),
    ("unknown engine", _set("runtime.engine", "tgi"), "spec.runtime.engine", "vllm"),
    ("zero replicas", _set("runtime.replicas", 0), "spec.runtime.replicas", "greater than"),
    ("bad duration", _set("progressDeadline", "20 minutes"), "spec.progressDeadline", "duration"),
    (
        "bad breachWhen",
        _set("analysis.checks.0.breachWhen", "above 0.01"),
        "spec.analysis.checks[0].breachWhen",
        "operator",
    ),
    (
        "weight over 100",
        _set("strategy.canary.steps.0.setWeight", 150),
        "spec.strategy.canary.steps[0].setWeight",
        "less than or equal to 100",
    ),
    ("no steps", _set("strategy.canary.steps", []), "spec.strategy.canary.steps", "at least 1"),
    (
        "two kinds in one step",
        _set("strategy.canary.steps.0", {"setWeight": 5, "pause": {}}),
        "spec.strategy.canary.steps[0]",
        "exactly one of setWeight, pause, analysis",
    ),
    (
        "two strategies",
        _set("strategy.shadow", SHADOW),
        "spec.strategy",
        "exactly one of canary, blueGreen, shadow",
    ),
    (
        "no strategy",
        _set("strategy", {}),
        "spec.strategy",
        "exactly one of canary, blueGreen, shadow",
    ),
    (
        "shadow with the service router",
        _set("strategy", {"shadow": SHADOW}),
        "spec.strategy.shadow",
        "needs a router with request mirroring; traffic.router service has none",
    ),
    (
        "gatewayAPI without parentRefs",
        lambda s: s["traffic"].update(router="gatewayAPI", gatewayAPI={"parentRefs": []}),
        "spec.traffic.gatewayAPI.parentRefs",
        "parentRef",
    ),
    (
        "duplicate check names",
        _set("analysis.checks.1.name", "error-rate"),
        "spec.analysis.checks[1].name",
        "duplicate check name 'error-rate'",
    ),
    (
        "query and builtin on one check",
        _set("analysis.checks.0.query", "up"),
        "spec.analysis.checks[0]",
        "either query or builtin, not both",
    ),
    (
        "neither query nor builtin",
        _set("analysis.checks.0.builtin", _DELETE),
        "spec.analysis.checks[0]",
        "one of query or builtin",
    ),
    (
        "unknown template variable",
        _set("analysis.checks.1.query", 'up{pod="{{pod}}"}'),
        "spec.analysis.checks[1].query",
        "unknown template variable {{pod}}",
    ),
    (
        "unknown variable in alert labels",
        _set("analysis.alerts.0.matchLabels.revision", "{{canary.rev}}"),
        "spec.analysis.alerts[0].matchLabels.revision",
        "{{canary.rev}}",
    ),
    (
        "compareTo on a query check",
        _set("analysis.checks.1.compareTo", "stable"),
        "spec.analysis.checks[1].compareTo",
        "builtin checks only",
    ),
    (
        "unknown builtin",
        _set("analysis.checks.0.builtin", "gpuTemperature"),
        "spec.analysis.checks[0].builtin",
        "errorRate",
    ),
    ("unknown field", _set("runtime.gpus", 2), "spec.runtime.gpus", "unknown field"),
    (
        "checks without prometheus",
        _set("analysis.prometheus", _DELETE),
        "spec.analysis.prometheus",
        "Prometheus address",
    ),
    (
        "minStableReplicas over replicas",
        _set("runtime.minStableReplicas", 3),
        "spec.runtime.minStableReplicas",
        "must not exceed",
    ),
    (
        "check name with a colon",
        _set("analysis.checks.0.name", "alert:x"),
        "spec.analysis.checks[0].name",
        "pattern",
    ),
    (
        "duration beyond a year",
        _set("strategy.canary.steps.1.pause.duration", "9000h"),
        "spec.strategy.canary.steps[1].pause.duration",
        "at most 8760h",
    ),
    ("progressDeadline 0s", _set("progressDeadline", "0s"), "spec.progressDeadline", "at least 1s"),
    (
        "Prometheus timeout 0s",
        _set("analysis.prometheus.timeout", "0s"),
        "spec.analysis.prometheus.timeout",
        "above 0",
    ),
    (
        "Prometheus address that is no URL",
        _set("analysis.prometheus.address", "http://[::1"),
        "spec.analysis.prometheus.address",
        "not a URL",
    ),
    (
        "variable outside a double-quoted string",
        _set("analysis.checks.1.query", "up{model='{{model}}'}"),
        "spec.analysis.checks[1].query",
        "{{model}} must stand inside a double-quoted string",
    ),
    (
        "model uri of an unknown scheme",
        _set("model.uri", "s3://bucket/key"),
        "spec.model.uri",
        "unsupported scheme 's3'",
    ),
    (
        "model uri that would be looked up on the operator's disk",
        _set("model.uri", "c:models"),
        "spec.model.uri",
        "unsupported scheme",
    ),
    ("model name with a quote", _set("model.name", 'chat"x'), "spec.model.name", "pattern"),
    (
        "half a GPU",
        _set("runtime.resources.limits", {"nvidia.com/gpu": "500m"}),
        "spec.runtime.resources.limits",
        "not a whole number",
    ),
    (
        "a negative quantity",
        _set("runtime.resources.limits", {"cpu": -1}),
        "spec.runtime.resources.limits.cpu",
        "pattern",
    ),
    (
        "requests over limits",
        _set("runtime.resources", {"limits": {"memory": "1Gi"}, "requests": {"memory": "2G"}}),
        "spec.runtime.resources.requests.memory",
        "2G exceeds limits.memory (1Gi)",
    ),
    (
        "GPU requests below limits",
        _set(
            "runtime.resources",
            {"limits": {"nvidia.com/gpu": 2}, "requests": {"nvidia.com/gpu": 1}},
        ),
        "spec.runtime.resources.requests.nvidia.com/gpu",
        "cannot be overcommitted",
    ),
    (
        "nodeSelector key that is no label key",
        _set("runtime.nodeSelector", {"-pool": "a"}),
        "spec.runtime.nodeSelector",
        "not a label key",
    ),
    (
        "toleration without key",
        _set("runtime.tolerations", [{"effect": "NoSchedule"}]),
        "spec.runtime.tolerations[0]",
        "operator Exists",
    ),
    (
        "environment variable name with =",
        _set("runtime.env", [{"name": "A=B"}]),
        "spec.runtime.env[0].name",
        "pattern",
    ),
    (
        "env value and valueFrom both",
        _set("runtime.env", [{"name": "A", "value": "v", "valueFrom": FIELD_REF}]),
        "spec.runtime.env[0]",
        "value and valueFrom are exclusive",
    ),
    (
        "env valueFrom with two sources",
        _set("runtime.env", [{"name": "A", "valueFrom": {**FIELD_REF, **SECRET_KEY_REF}}]),
        "spec.runtime.env[0].valueFrom",
        "exactly one of secretKeyRef, configMapKeyRef, fieldRef",
    ),
    (
        "env secretKeyRef to an invalid name",
        _set(
            "runtime.env",
            [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "Hf", "key": "t"}}}],
        ),
        "spec.runtime.env[0].valueFrom.secretKeyRef.name",
        "pattern",
    ),
    (
        "env fieldRef to a field the downward API lacks",
        _set("runtime.env", [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.x"}}}]),
        "spec.runtime.env[0].valueFrom.fieldRef.fieldPath",
        "pattern",
    ),
    (
        "env over the size bound by its references",
        _set("runtime.env", ENV_OVER_BOUND_BY_REFERENCES),
        "spec.runtime.env",
        "names, values and references: at most 65536 characters",
    ),
    (
        "envFrom with both a Secret and a ConfigMap",
        _set("runtime.envFrom", [{"secretRef": {"name": "a"}, "configMapRef": {"name": "b"}}]),
        "spec.runtime.envFrom[0]",
        "exactly one of secretRef, configMapRef",
    ),
    (
        "the same listener twice",
        _set("traffic.gatewayAPI.parentRefs", [{"name": "gw"}, {"name": "gw", "port": 80}]),
        "spec.traffic.gatewayAPI.parentRefs[1]",
        "referenced twice",
    ),
    ("model is not an object", _set("model", "chat"), "spec.model", "must be an object"),
    ("replicas as text", _set("runtime.replicas", "2"), "spec.runtime.replicas", "integer"),
    (
        "mirrorPercent 0",
        lambda s: s.update(
            strategy={"shadow": {**SHADOW, "mirrorPercent": 0}},
            traffic={"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}]}},
        ),
        "spec.strategy.shadow.mirrorPercent",
        "greater than or equal to 1",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "field_path", "message"),
    [pytest.param(m, p, msg, id=name) for name, m, p, msg in INVALID],
)
def test_invalid_spec_names_the_field(
    mutate: Callable[[dict[str, Any]], None], field_path: str, message: str
) -> None:
    spec = example_spec()
    mutate(spec)
    with pytest.raises(InvalidSpecError) as raised:
        parse_spec(spec)
    assert raised.value.field_path == field_path
    assert message in raised.value.message


@pytest.mark.parametrize(
    "mutate",
    [
        _set("progressDeadline", "1s"),
        _set("strategy.canary.steps.1.pause.duration", "8760h"),
        _set("model.name", "meta-llama/Llama-3.2-3B-Instruct"),
        _set("model.uri", "/models/chat"),
        _set("model.uri", "hf://Qwen/Qwen2.5-1.5B-Instruct@main"),
        _set(
            "runtime.resources",
            {
                "limits": {
                    "nvidia.com/gpu": 2,
                    "cpu": "4",
                    "memory": "64Gi",
                    "hugepages-2Mi": "1Gi",
                },
                "requests": {"nvidia.com/gpu": "2", "cpu": "1500m", "memory": "32G"},
            },
        ),
        _set("runtime.nodeSelector", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "x": ""}),
        _set("runtime.tolerations", [{"operator": "Exists"}]),
        _set(
            "runtime.tolerations",
            [
                {
                    "key": "node.kubernetes.io/unreachable",
                    "effect": "NoExecute",
                    "tolerationSeconds": 60,
                }
            ],
        ),
        _set("runtime.env", [{"name": "HF_HOME", "value": "/cache"}, {"name": "_x.y-z"}]),
        _set("runtime.env", ENV_OVER_BOUND_BY_REFERENCES[:3]),
        _set(
            "runtime.env",
            [
                {"name": "HF_TOKEN", "valueFrom": SECRET_KEY_REF},
                {
                    "name": "A",
                    "value": "",
                    "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}},
                },
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            ],
        ),
        _set(
            "runtime.envFrom",
            [
                {"prefix": "HF_", "secretRef": {"name": "hf", "optional": True}},
                {"configMapRef": {"name": "c"}},
            ],
        ),
        _set(
            "traffic.gatewayAPI.parentRefs",
            [{"name": "gw", "sectionName": "http"}, {"name": "gw", "sectionName": "https"}],
        ),
        _set("traffic.gatewayAPI.hostnames", ["*.example.com", "chat.example.com"]),
        _set("analysis.prometheus.address", "https://prometheus.example.com:9443/prefix"),
        _set(
            "analysis.checks.1.query",
            'x{a="{{model}}", b=~"{{canary.revision}}|{{stable.revision}}"}',
        ),
    ],
)
def test_valid_edge_cases_are_accepted(mutate: Callable[[dict[str, Any]], None]) -> None:
    spec = example_spec()
    mutate(spec)
    parse_spec(spec)


CRD_PATH = Path(__file__).resolve().parents[3] / "crds" / "modelrollouts.modelrollout.dev.yaml"


@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        ("model.name", "MODEL_NAME_PATTERN"),
        ("runtime.image", "IMAGE_PATTERN"),
        ("runtime.env.[].name", "ENV_NAME_PATTERN"),
        ("runtime.nodeSelector.{}", "LABEL_VALUE_PATTERN"),
        ("runtime.tolerations.[].key", "QUALIFIED_NAME_PATTERN"),
        ("runtime.tolerations.[].value", "LABEL_VALUE_PATTERN"),
        ("runtime.resources.limits.{}", "QUANTITY_PATTERN"),
        ("runtime.resources.requests.{}", "QUANTITY_PATTERN"),
        ("traffic.gatewayAPI.hostnames.[]", "HOSTNAME_PATTERN"),
        ("traffic.gatewayAPI.parentRefs.[].group", "GROUP_PATTERN"),
        ("traffic.gatewayAPI.parentRefs.[].kind", "KIND_PATTERN"),
        ("traffic.gatewayAPI.parentRefs.[].namespace", "DNS_LABEL_PATTERN"),
        ("traffic.gatewayAPI.parentRefs.[].sectionName", "SECTION_NAME_PATTERN"),
        ("analysis.prometheus.address", "PROMETHEUS_ADDRESS_PATTERN"),
        ("analysis.provider.address", "PROMETHEUS_ADDRESS_PATTERN"),
        ("analysis.provider.headers.[].name", "HEADER_NAME_PATTERN"),
        ("analysis.provider.auth.bearerToken.secretKeyRef.name", "CONFIGMAP_NAME_PATTERN"),
        ("analysis.provider.tls.ca.configMapKeyRef.key", "CONFIGMAP_KEY_PATTERN"),
    ],
)
def test_the_crd_has_the_patterns_of_the_models(path: str, pattern: str) -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    node = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for part in path.split("."):
        node = {"[]": node.get("items"), "{}": node.get("additionalProperties")}.get(part) or node[
            "properties"
        ][part]
    assert node["pattern"] == getattr(spec_module, pattern)


def test_shadow_is_accepted_with_gateway_api() -> None:
    spec = example_spec()
    spec["strategy"] = {"shadow": SHADOW}
    spec["traffic"]["router"] = "gatewayAPI"
    assert parse_spec(spec).strategy.shadow is not None


def test_blue_green_defaults() -> None:
    spec = example_spec()
    spec["strategy"] = {"blueGreen": {"postPromotionAnalysis": {"duration": "5m"}}}
    blue_green = parse_spec(spec).strategy.blue_green
    assert blue_green is not None
    assert blue_green.scale_down_delay == "30s"
    assert blue_green.auto_promotion_after is None


def test_spec_that_is_not_an_object() -> None:
    with pytest.raises(InvalidSpecError) as raised:
        parse_spec(["model"])
    assert raised.value.field_path == "spec"


@pytest.mark.parametrize(
    ("text", "value", "breached"),
    [
        ("> 0.01", 0.02, True),
        ("> 0.01", 0.01, False),
        (">= 0.01", 0.01, True),
        ("<0.5", 0.4, True),
        ("<= -1", -1.0, True),
        ("== 0", 0.0, True),
        ("!= 0", 0.0, False),
        ("> 1", float("inf"), True),
        ("> 1", float("nan"), False),
    ],
)
def test_breach_when(text: str, value: float, breached: bool) -> None:
    assert Threshold.parse(text).breached_by(value) is breached


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "model",
        "runtime",
        "strategy",
        "canary",
        "steps",
        "setWeight",
        "pause",
        "analysis",
        "checks",
        "alerts",
        "query",
        "builtin",
        "breachWhen",
        "for",
        "name",
        "matchLabels",
        "traffic",
        "router",
        "gatewayAPI",
        "shadow",
        "replicas",
        "duration",
    ]
)


def _mutations(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The valid example with random values planted at random (often real) keys."""

    def plant(spec: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
        changed = copy.deepcopy(spec)
        node: Any = changed
        for key in path[:-1]:
            if isinstance(node, dict) and isinstance(node.get(key), dict | list):
                node = node[key]
            elif isinstance(node, list) and node:
                node = node[0]
        if isinstance(node, dict):
            node[path[-1]] = value
        return changed

    return st.builds(plant, st.just(base), st.lists(KEYS, min_size=1, max_size=5), JSON)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSON, st.dictionaries(KEYS, JSON, max_size=6), _mutations(example_spec())))
def test_parse_spec_only_ever_raises_invalid_spec_error(body: Any) -> None:
    try:
        parse_spec(body)
    except InvalidSpecError as error:
        assert error.field_path.startswith("spec")
        assert error.message
