"""The ModelRollout spec: pydantic models of exactly what the CRD accepts.

`parse_spec` is the operator's one entry point: it validates a resource's
`spec` dict and judges what the API server cannot (duplicate check names,
unknown template variables, strategy/router combinations), raising
`InvalidSpecError` with the dotted path of the offending field as the user
wrote it (`spec.analysis.checks[1].breachWhen`).

Durations stay strings (as written) and are converted with `parse_duration`
where used, so a spec round-trips unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from modelrollout.analysis.templates import TEMPLATE_VARIABLES, template_variables
from modelrollout.models.durations import DurationError, parse_duration

# Kept in sync with the CRD's `pattern` by tests/unit/operator/test_crd.py.
BREACH_WHEN_PATTERN = r"^(>|>=|<|<=|==|!=) *-?[0-9]+(\.[0-9]+)?$"
_BREACH_WHEN = re.compile(BREACH_WHEN_PATTERN)
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

NAME_MAX = 63
MAX_REPLICAS = 64
MAX_STEPS = 32
MAX_CHECKS = 16
MAX_ALERTS = 16

BuiltinCheck = Literal["errorRate", "latencyP99", "ttftP99", "interTokenLatencyP99"]
Action = Literal["rollback", "pause"]


class InvalidSpecError(ValueError):
    """The spec is not acceptable; `field_path` names the field as the user wrote it."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field_path = field_path
        self.message = message


def _check_duration(text: str) -> str:
    try:
        parse_duration(text)
    except DurationError as error:
        raise ValueError(str(error)) from None
    return text


def _check_breach_when(text: str) -> str:
    if _BREACH_WHEN.fullmatch(text) is None:
        raise ValueError(
            f"{text!r} is not a condition: write an operator (> >= < <= == !=) and a number, "
            'like "> 0.01"'
        )
    return text


def _quantity(value: Any) -> Any:
    # YAML turns `nvidia.com/gpu: 1` into an int; Kubernetes quantities are strings.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Duration = Annotated[str, Field(min_length=2, max_length=32), AfterValidator(_check_duration)]
BreachWhen = Annotated[str, Field(max_length=64), AfterValidator(_check_breach_when)]
Quantity = Annotated[str, Field(min_length=1, max_length=64), BeforeValidator(_quantity)]
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX)]
ShortText = Annotated[str, Field(max_length=253)]
Percent = Annotated[int, Field(ge=0, le=100)]


@dataclass(frozen=True)
class Threshold:
    """A parsed `breachWhen`: the sample breaches when `value <op> bound` holds."""

    op: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> Threshold:
        match = _BREACH_WHEN.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not a breachWhen condition")
        return cls(match.group(1), float(text[len(match.group(1)) :].strip()))

    def breached_by(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return {
            ">": value > self.bound,
            ">=": value >= self.bound,
            "<": value < self.bound,
            "<=": value <= self.bound,
            "==": value == self.bound,
            "!=": value != self.bound,
        }[self.op]


class SpecModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ModelSource(SpecModel):
    name: Name
    uri: Annotated[str, Field(min_length=1, max_length=1024)]


class Resources(SpecModel):
    limits: Annotated[dict[str, Quantity], Field(max_length=16)] = {}
    requests: Annotated[dict[str, Quantity], Field(max_length=16)] = {}


class Toleration(SpecModel):
    key: ShortText | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: ShortText | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None


class EnvVar(SpecModel):
    name: Annotated[str, Field(min_length=1, max_length=253)]
    value: Annotated[str, Field(max_length=32768)] = ""


class Runtime(SpecModel):
    engine: Literal["vllm", "torch"]
    image: Annotated[str, Field(min_length=1, max_length=512)]
    args: Annotated[list[Annotated[str, Field(max_length=4096)]], Field(max_length=64)] = []
    replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] = 1
    resources: Resources = Resources()
    node_selector: Annotated[dict[str, ShortText], Field(max_length=32)] = {}
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = []
    startup_timeout: Duration = "15m"
    capacity: Literal["surge", "shift"] = "surge"
    min_stable_replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    env: Annotated[list[EnvVar], Field(max_length=64)] = []
    termination_grace_period: Duration = "60s"


class ParentRef(SpecModel):
    group: ShortText | None = None
    kind: Annotated[str, Field(max_length=63)] | None = None
    namespace: Annotated[str, Field(max_length=63)] | None = None
    name: ShortText
    section_name: Annotated[str, Field(max_length=253)] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None


class GatewayAPI(SpecModel):
    parent_refs: Annotated[list[ParentRef], Field(max_length=32)] = []
    hostnames: Annotated[list[ShortText], Field(max_length=16)] = []


class Traffic(SpecModel):
    router: Literal["service", "gatewayAPI"] = "service"
    gateway_api: GatewayAPI | None = Field(default=None, alias="gatewayAPI")


class PauseStep(SpecModel):
    duration: Duration | None = None


class AnalysisStep(SpecModel):
    duration: Duration


class CanaryStep(SpecModel):
    set_weight: Percent | None = None
    pause: PauseStep | None = None
    analysis: AnalysisStep | None = None

    @property
    def kind(self) -> Literal["setWeight", "pause", "analysis"]:
        if self.set_weight is not None:
            return "setWeight"
        return "pause" if self.pause is not None else "analysis"


class CanaryStrategy(SpecModel):
    steps: Annotated[list[CanaryStep], Field(min_length=1, max_length=MAX_STEPS)]
    abort_scale_down_delay: Duration = "30s"


class PostPromotionAnalysis(SpecModel):
    duration: Duration


class BlueGreenStrategy(SpecModel):
    auto_promotion_after: Duration | None = None
    scale_down_delay: Duration = "30s"
    post_promotion_analysis: PostPromotionAnalysis | None = None


class ShadowStrategy(SpecModel):
    mirror_percent: Annotated[int, Field(ge=1, le=100)]
    duration: Duration
    then: Literal["promote", "canary", "stop"]


class Strategy(SpecModel):
    canary: CanaryStrategy | None = None
    blue_green: BlueGreenStrategy | None = None
    shadow: ShadowStrategy | None = None


class PrometheusSource(SpecModel):
    address: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^https?://")]
    timeout: Duration = "5s"


CheckName = Annotated[
    str,
    Field(min_length=1, max_length=NAME_MAX, pattern=r"^[a-zA-Z0-9]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?$"),
]


class Check(SpecModel):
    # No ':' in check names: alerts appear in status.checks as `alert:<alertname>`.
    name: CheckName
    builtin: BuiltinCheck | None = None
    query: Annotated[str, Field(min_length=1, max_length=8192)] | None = None
    compare_to: Literal["stable"] | None = None
    window: Duration = "1m"
    breach_when: BreachWhen
    for_: Duration = Field(default="0s", alias="for")
    action: Action = "rollback"

    @property
    def threshold(self) -> Threshold:
        return Threshold.parse(self.breach_when)


class Alert(SpecModel):
    alertname: Annotated[str, Field(min_length=1, max_length=253)]
    match_labels: Annotated[dict[str, ShortText], Field(max_length=16)] = {}
    action: Action = "rollback"


class WhenMetricsUnavailable(SpecModel):
    action: Action = "pause"
    after: Duration = "60s"


class Analysis(SpecModel):
    prometheus: PrometheusSource | None = None
    interval: Duration = "15s"
    checks: Annotated[list[Check], Field(max_length=MAX_CHECKS)] = []
    alerts: Annotated[list[Alert], Field(max_length=MAX_ALERTS)] = []
    when_metrics_unavailable: WhenMetricsUnavailable = WhenMetricsUnavailable()


class ModelRolloutSpec(SpecModel):
    model: ModelSource
    runtime: Runtime
    traffic: Traffic = Traffic()
    strategy: Strategy
    analysis: Analysis = Analysis()
    progress_deadline: Duration = "20m"
    revision_history_limit: Annotated[int, Field(ge=0, le=100)] = 5

    @property
    def canary(self) -> CanaryStrategy:
        """The canary strategy; only call where parse_spec has shown it is the one set."""
        if self.strategy.canary is None:
            raise ValueError("this rollout's strategy is not canary")
        return self.strategy.canary


def parse_spec(body_spec: Any) -> ModelRolloutSpec:
    """Validate a resource's `spec`; raise InvalidSpecError naming the first bad field."""
    if not isinstance(body_spec, dict):
        raise InvalidSpecError("spec", "must be an object")
    try:
        spec = ModelRolloutSpec.model_validate(body_spec)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        raise InvalidSpecError(_field_path(first["loc"]), _message(first)) from None
    for path, message in _semantic_errors(spec):
        raise InvalidSpecError(path, message)
    return spec


def _field_path(loc: Sequence[int | str]) -> str:
    path = "spec"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}"
    return path


def _message(error: Any) -> str:
    message = str(error["msg"])
    if error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    elif error["type"] == "extra_forbidden":
        message = "unknown field"
    return message


def _semantic_errors(spec: ModelRolloutSpec) -> Iterator[tuple[str, str]]:
    """What the API server's schema and CEL rules cannot judge (or may not be installed to)."""
    strategies = [
        name
        for name, value in (
            ("canary", spec.strategy.canary),
            ("blueGreen", spec.strategy.blue_green),
            ("shadow", spec.strategy.shadow),
        )
        if value is not None
    ]
    if len(strategies) != 1:
        yield "spec.strategy", "set exactly one of canary, blueGreen, shadow"
    if spec.strategy.canary is not None:
        for index, step in enumerate(spec.strategy.canary.steps):
            kinds = [step.set_weight is not None, step.pause is not None, step.analysis is not None]
            if sum(kinds) != 1:
                yield (
                    f"spec.strategy.canary.steps[{index}]",
                    "a step sets exactly one of setWeight, pause, analysis",
                )
    if spec.strategy.shadow is not None and spec.traffic.router != "gatewayAPI":
        yield (
            "spec.strategy.shadow",
            "shadow needs traffic.router gatewayAPI: a Service cannot mirror requests",
        )
    if spec.traffic.router == "gatewayAPI" and (
        spec.traffic.gateway_api is None or not spec.traffic.gateway_api.parent_refs
    ):
        yield (
            "spec.traffic.gatewayAPI.parentRefs",
            "router gatewayAPI needs at least one parentRef (the Gateway to attach to)",
        )
    yield from _analysis_errors(spec.analysis)
    if spec.runtime.min_stable_replicas is not None and (
        spec.runtime.min_stable_replicas > spec.runtime.replicas
    ):
        yield "spec.runtime.minStableReplicas", "must not exceed runtime.replicas"


def _analysis_errors(analysis: Analysis) -> Iterator[tuple[str, str]]:
    if (analysis.checks or analysis.alerts) and analysis.prometheus is None:
        yield "spec.analysis.prometheus", "checks and alerts need a Prometheus address"
    seen: set[str] = set()
    for index, check in enumerate(analysis.checks):
        path = f"spec.analysis.checks[{index}]"
        if check.name in seen:
            yield f"{path}.name", f"duplicate check name {check.name!r}"
        seen.add(check.name)
        if check.builtin is not None and check.query is not None:
            yield path, "set either query or builtin, not both"
        elif check.builtin is None and check.query is None:
            yield path, "set one of query or builtin"
        if check.compare_to is not None and check.builtin is None:
            yield f"{path}.compareTo", "compareTo works with builtin checks only"
        if check.query is not None:
            yield from _unknown_variables(f"{path}.query", check.query)
    alertnames: set[str] = set()
    for index, alert in enumerate(analysis.alerts):
        if alert.alertname in alertnames:
            yield f"spec.analysis.alerts[{index}].alertname", f"duplicate alert {alert.alertname!r}"
        alertnames.add(alert.alertname)
        for key, value in alert.match_labels.items():
            if _LABEL_NAME.fullmatch(key) is None:
                yield (
                    f"spec.analysis.alerts[{index}].matchLabels",
                    f"{key!r} is not a Prometheus label name",
                )
            yield from _unknown_variables(f"spec.analysis.alerts[{index}].matchLabels.{key}", value)


def _unknown_variables(path: str, text: str) -> Iterator[tuple[str, str]]:
    for variable in template_variables(text):
        if variable not in TEMPLATE_VARIABLES:
            known = ", ".join("{{" + name + "}}" for name in TEMPLATE_VARIABLES)
            yield path, f"unknown template variable {{{{{variable}}}}}; known: {known}"
