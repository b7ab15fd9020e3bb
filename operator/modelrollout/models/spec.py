"""The ModelRollout spec: pydantic models of exactly what the CRD accepts.

`parse_spec` is the operator's one entry point: it validates a resource's
`spec` dict and judges what the API server cannot (duplicate check names,
unknown template variables, strategy/router combinations), raising
`InvalidSpecError` with the dotted path of the offending field as the user
wrote it (`spec.analysis.checks[1].breachWhen`).

Durations stay strings (as written) and are converted with `parse_duration`
where used, so a spec round-trips unchanged.

Whatever reaches a child object (Deployment, Service, HTTPRoute) or a query
is checked here against the rules of what receives it (label keys and values,
quantities, tolerations, Gateway API names, PromQL quoting, int32 seconds), so
that a spec the API server stored never makes the operator write an object
the API server then refuses, or fail half-way through a tick.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from modelrollout.analysis.templates import (
    TEMPLATE_VARIABLES,
    template_variables,
    unquoted_variables,
)
from modelrollout.models.durations import DurationError, parse_duration
from modelserve.config.uri import ModelURIError, parse_model_uri

# Kept in sync with the CRD's `pattern` by tests/unit/operator/test_crd.py.
BREACH_WHEN_PATTERN = r"^(>|>=|<|<=|==|!=) *-?[0-9]+(\.[0-9]+)?$"
_BREACH_WHEN = re.compile(BREACH_WHEN_PATTERN)
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# The patterns below are the CRD's too (tests/unit/operator/test_spec.py checks).
# What clients send as "model": no spaces, controls or look-alike characters.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9._:/@+]*[A-Za-z0-9])?$"
# An image reference is printable ASCII without spaces.
IMAGE_PATTERN = r"^[!-~]+$"
# Names every Kubernetes version accepts for an environment variable.
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# Kubernetes label values (nodeSelector, toleration values).
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
# Kubernetes qualified names (label keys, taint keys): [DNS-subdomain/]name.
QUALIFIED_NAME_PATTERN = rf"^({_DNS_SUBDOMAIN}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?$"
# Kubernetes resource quantities, without sign (a negative request is refused).
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
# Gateway API's own patterns for an HTTPRoute's hostnames and parentRefs.
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
GROUP_PATTERN = rf"^$|^{_DNS_SUBDOMAIN}$"
KIND_PATTERN = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SECTION_NAME_PATTERN = rf"^{_DNS_SUBDOMAIN}$"
# ConfigMap names (DNS subdomains) and keys, as the API server checks them.
CONFIGMAP_NAME_PATTERN = rf"^{_DNS_SUBDOMAIN}$"
CONFIGMAP_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
# A Prometheus base URL: scheme and host, an optional path, nothing else.
PROMETHEUS_ADDRESS_PATTERN = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
# An HTTP header name (RFC 9110 token).
HEADER_NAME_PATTERN = r"^[-!#$%&'*+.^_`|~0-9A-Za-z]+$"

_QUALIFIED_NAME = re.compile(QUALIFIED_NAME_PATTERN)
_QUANTITY = re.compile(QUANTITY_PATTERN)
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_QUANTITY_SUFFIXES = {
    **{f"{prefix}i": Decimal(1024) ** (power + 1) for power, prefix in enumerate("KMGTPE")},
    **{
        prefix: Decimal(10) ** power
        for prefix, power in zip("numkMGTPE", (-9, -6, -3, 3, 6, 9, 12, 15, 18), strict=True)
    },
    "": Decimal(1),
}

NAME_MAX = 63
MAX_REPLICAS = 64
MAX_STEPS = 32
MAX_CHECKS = 16
MAX_ALERTS = 16
MAX_HEADERS = 16
# Every duration becomes an int32 of seconds somewhere (progressDeadlineSeconds,
# probe thresholds) or a socket timeout; a year is far beyond any sensible wait.
MAX_DURATION = "8760h"
# env and args are copied into status.history for undo: the object must stay small.
MAX_ENV_LENGTH = 65536
MAX_ARGS_LENGTH = 65536

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
        seconds = parse_duration(text)
    except DurationError as error:
        raise ValueError(str(error)) from None
    if seconds > parse_duration(MAX_DURATION):
        raise ValueError(f"{text!r} is too long: at most {MAX_DURATION} (a year)")
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


def _check_model_uri(uri: str) -> str:
    if any(unicodedata.category(char) in ("Cc", "Cf") for char in uri):
        raise ValueError("must not contain control or invisible formatting characters")
    if "://" not in uri and _URI_SCHEME.match(uri):
        # parse_model_uri would look for such a path on the operator's own disk.
        raise ValueError(
            f"{uri!r} looks like a URI of an unsupported scheme: "
            "use pvc://CLAIM/PATH, hf://ORG/NAME@REVISION, file:///PATH or a path"
        )
    try:
        parse_model_uri(uri)
    except ModelURIError as error:
        raise ValueError(str(error)) from None
    return uri


def is_qualified_name(text: str) -> bool:
    """A Kubernetes qualified name: a label key, taint key or extended resource name."""
    prefix, _, _ = text.rpartition("/")
    return _QUALIFIED_NAME.fullmatch(text) is not None and len(prefix) <= 253


def _check_label_keys(labels: dict[str, str]) -> dict[str, str]:
    for key in labels:
        if not is_qualified_name(key):
            raise ValueError(f"{key!r} is not a label key ([prefix/]name, name at most 63)")
    return labels


def _check_resource_names(quantities: dict[str, str]) -> dict[str, str]:
    for name, value in quantities.items():
        standard = name in _STANDARD_RESOURCES or name.startswith("hugepages-")
        if not standard and ("/" not in name or not is_qualified_name(name)):
            raise ValueError(
                f"{name!r} is not a resource name: cpu, memory, ephemeral-storage, "
                "hugepages-SIZE or a qualified name such as nvidia.com/gpu"
            )
        if "/" in name and re.fullmatch(r"[0-9]+", value) is None:
            raise ValueError(f"{name}: {value!r} is not a whole number (extended resources count)")
    return quantities


def _check_args_size(args: list[str]) -> list[str]:
    if sum(map(len, args)) > MAX_ARGS_LENGTH:
        raise ValueError(f"at most {MAX_ARGS_LENGTH} characters in all")
    return args


def _check_prometheus_address(address: str) -> str:
    try:
        parts = urlsplit(address)
        parts.port  # noqa: B018 - raises ValueError when the port is not a number in range
    except ValueError as error:
        raise ValueError(f"{address!r} is not a URL: {error}") from None
    if not parts.hostname:
        raise ValueError(f"{address!r} names no host")
    return address


def quantity_value(text: str) -> Decimal:
    """The number a Kubernetes quantity (`500m`, `2Gi`, `1e3`) stands for."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a quantity")
    number, suffix = match.group(1), match.group(3) or ""
    if suffix[:1] in ("e", "E"):
        return Decimal(f"{number}{suffix}")
    return Decimal(number) * _QUANTITY_SUFFIXES[suffix]


Duration = Annotated[str, Field(min_length=2, max_length=32), AfterValidator(_check_duration)]
BreachWhen = Annotated[str, Field(max_length=64), AfterValidator(_check_breach_when)]
Quantity = Annotated[
    str, Field(min_length=1, max_length=64, pattern=QUANTITY_PATTERN), BeforeValidator(_quantity)
]
Quantities = Annotated[
    dict[str, Quantity], Field(max_length=16), AfterValidator(_check_resource_names)
]
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX)]
ShortText = Annotated[str, Field(max_length=253)]
Percent = Annotated[int, Field(ge=0, le=100)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
QualifiedName = Annotated[str, Field(max_length=253, pattern=QUALIFIED_NAME_PATTERN)]


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
    # Strict: no "2" for 2 or true for 1, as the API server's schema.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, strict=True
    )


class ModelSource(SpecModel):
    name: Annotated[Name, Field(pattern=MODEL_NAME_PATTERN)]
    uri: Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(_check_model_uri)]


class Resources(SpecModel):
    limits: Quantities = {}
    requests: Quantities = {}


class Toleration(SpecModel):
    key: QualifiedName | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: LabelValue | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None


class EnvVar(SpecModel):
    name: Annotated[str, Field(min_length=1, max_length=253, pattern=ENV_NAME_PATTERN)]
    value: Annotated[str, Field(max_length=32768)] = ""


def _check_env_size(env: list[EnvVar]) -> list[EnvVar]:
    if sum(len(var.name) + len(var.value) for var in env) > MAX_ENV_LENGTH:
        raise ValueError(f"names and values: at most {MAX_ENV_LENGTH} characters in all")
    return env


class Runtime(SpecModel):
    engine: Literal["vllm", "torch"]
    image: Annotated[str, Field(min_length=1, max_length=512, pattern=IMAGE_PATTERN)]
    args: Annotated[
        list[Annotated[str, Field(max_length=4096)]],
        Field(max_length=64),
        AfterValidator(_check_args_size),
    ] = []
    replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] = 1
    resources: Resources = Resources()
    node_selector: Annotated[
        dict[str, LabelValue], Field(max_length=32), AfterValidator(_check_label_keys)
    ] = {}
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = []
    startup_timeout: Duration = "15m"
    capacity: Literal["surge", "shift"] = "surge"
    min_stable_replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    env: Annotated[list[EnvVar], Field(max_length=64), AfterValidator(_check_env_size)] = []
    termination_grace_period: Duration = "60s"


class ParentRef(SpecModel):
    group: Annotated[str, Field(max_length=253, pattern=GROUP_PATTERN)] | None = None
    kind: Annotated[str, Field(min_length=1, max_length=63, pattern=KIND_PATTERN)] | None = None
    namespace: (
        Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)] | None
    ) = None
    name: Annotated[str, Field(min_length=1, max_length=253)]
    section_name: (
        Annotated[str, Field(min_length=1, max_length=253, pattern=SECTION_NAME_PATTERN)] | None
    ) = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None


Hostname = Annotated[str, Field(min_length=1, max_length=253, pattern=HOSTNAME_PATTERN)]


class GatewayAPI(SpecModel):
    parent_refs: Annotated[list[ParentRef], Field(max_length=32)] = []
    hostnames: Annotated[list[Hostname], Field(max_length=16)] = []


class Traffic(SpecModel):
    router: Literal["service", "gatewayAPI"] = "service"
    gateway_api: GatewayAPI | None = Field(default=None, alias="gatewayAPI")


class PauseStep(SpecModel):
    duration: Duration | None = None


class AnalysisStep(SpecModel):
    duration: Duration


class SuiteSource(SpecModel):
    config_map_name: Annotated[
        str, Field(min_length=1, max_length=253, pattern=CONFIGMAP_NAME_PATTERN)
    ]
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=CONFIGMAP_KEY_PATTERN)] = (
        "suite.yaml"
    )


class EvaluationStep(SpecModel):
    """Quality gates (`modelserve eval --suite`) run by a Job against canary and stable."""

    suite: SuiteSource
    timeout: Duration = "10m"
    # Default: runtime.image, which must then contain `modelserve` (a vLLM image does not).
    image: Annotated[str, Field(min_length=1, max_length=512, pattern=IMAGE_PATTERN)] | None = None


class CanaryStep(SpecModel):
    set_weight: Percent | None = None
    pause: PauseStep | None = None
    analysis: AnalysisStep | None = None
    evaluation: EvaluationStep | None = None

    @property
    def kind(self) -> Literal["setWeight", "pause", "analysis", "evaluation"]:
        if self.set_weight is not None:
            return "setWeight"
        if self.pause is not None:
            return "pause"
        return "analysis" if self.analysis is not None else "evaluation"


class CanaryStrategy(SpecModel):
    steps: Annotated[list[CanaryStep], Field(min_length=1, max_length=MAX_STEPS)]
    abort_scale_down_delay: Duration = "30s"


class PostPromotionAnalysis(SpecModel):
    duration: Duration


class BlueGreenStrategy(SpecModel):
    auto_promotion_after: Duration | None = None
    scale_down_delay: Duration = "30s"
    post_promotion_analysis: PostPromotionAnalysis | None = None
    pre_promotion_evaluation: EvaluationStep | None = None


class ShadowStrategy(SpecModel):
    mirror_percent: Annotated[int, Field(ge=1, le=100)]
    duration: Duration
    then: Literal["promote", "canary", "stop"]


class Strategy(SpecModel):
    canary: CanaryStrategy | None = None
    blue_green: BlueGreenStrategy | None = None
    shadow: ShadowStrategy | None = None


PrometheusAddress = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        pattern=PROMETHEUS_ADDRESS_PATTERN,
        description="Base URL of the Prometheus HTTP API, http:// or https://.",
    ),
    AfterValidator(_check_prometheus_address),
]
QueryTimeout = Annotated[Duration, Field(description="Timeout of each query (connect and read).")]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=CONFIGMAP_NAME_PATTERN)]
ObjectKey = Annotated[str, Field(min_length=1, max_length=253, pattern=CONFIGMAP_KEY_PATTERN)]


class SecretKeyRef(SpecModel):
    """One key of a Secret in the rollout's namespace."""

    name: Annotated[
        ObjectName, Field(description="Name of the Secret, in the rollout's namespace.")
    ]
    key: Annotated[ObjectKey, Field(description="Key in the Secret's data.")]


class ConfigMapKeyRef(SpecModel):
    """One key of a ConfigMap in the rollout's namespace."""

    name: Annotated[
        ObjectName, Field(description="Name of the ConfigMap, in the rollout's namespace.")
    ]
    key: Annotated[ObjectKey, Field(description="Key in the ConfigMap's data.")]


class SecretValue(SpecModel):
    """A secret value: always read from a Secret, never written in the spec."""

    secret_key_ref: Annotated[SecretKeyRef, Field(description="The Secret key holding the value.")]


class PlainOrSecretValue(SpecModel):
    """A value written in the spec (`value`) or read from a Secret (`secretKeyRef`)."""

    value: (
        Annotated[
            str, Field(min_length=1, max_length=1024, description="The value itself (not secret).")
        ]
        | None
    ) = None
    secret_key_ref: Annotated[
        SecretKeyRef | None, Field(description="The Secret key holding the value.")
    ] = None


class BasicAuth(SpecModel):
    username: Annotated[
        PlainOrSecretValue, Field(description="The user name: a value or a Secret key.")
    ]
    password: Annotated[SecretValue, Field(description="The password, from a Secret.")]


class HttpAuth(SpecModel):
    """How the provider authenticates: one of a bearer token or basic auth."""

    bearer_token: Annotated[
        SecretValue | None,
        Field(description="Sent as `Authorization: Bearer <token>`; the token from a Secret."),
    ] = None
    basic_auth: Annotated[
        BasicAuth | None, Field(description="HTTP basic auth; the password from a Secret.")
    ] = None


class CertificateSource(SpecModel):
    """PEM certificates from one of a Secret key or a ConfigMap key."""

    secret_key_ref: Annotated[
        SecretKeyRef | None, Field(description="A Secret key holding PEM certificates.")
    ] = None
    config_map_key_ref: Annotated[
        ConfigMapKeyRef | None, Field(description="A ConfigMap key holding PEM certificates.")
    ] = None


class TlsConfig(SpecModel):
    ca: Annotated[
        CertificateSource | None,
        Field(
            description="The CA that signs the server's certificate, trusted instead of the "
            "system's CAs."
        ),
    ] = None
    insecure_skip_verify: Annotated[
        bool,
        Field(description="Accept any server certificate (no verification): for tests only."),
    ] = False


class HttpHeader(PlainOrSecretValue):
    """An extra request header (`X-Scope-OrgID` of Thanos or Mimir, a managed service's key)."""

    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=256,
            pattern=HEADER_NAME_PATTERN,
            description="The header's name.",
        ),
    ]


class PrometheusProviderSpec(SpecModel):
    """A Prometheus-compatible HTTP API (Prometheus, Thanos, Mimir, managed services)."""

    type: Annotated[Literal["prometheus"], Field(description="The kind of metric provider.")]
    address: PrometheusAddress
    timeout: QueryTimeout = "5s"
    auth: Annotated[
        HttpAuth | None, Field(description="Credentials: a bearer token or basic auth.")
    ] = None
    tls: Annotated[
        TlsConfig | None, Field(description="How the server's certificate is verified.")
    ] = None
    headers: Annotated[
        list[HttpHeader],
        Field(max_length=MAX_HEADERS, description="Extra HTTP headers sent with each request."),
    ] = []


# Every provider's config, told apart by `type` (analysis/registry.py maps each type
# to its provider class). With a second provider this becomes
# `Annotated[A | B, Field(discriminator="type")]`.
MetricProviderSpec = PrometheusProviderSpec


class PrometheusSource(SpecModel):
    """The older form of `analysis.provider` with `type: prometheus`, still accepted."""

    address: PrometheusAddress
    timeout: QueryTimeout = "5s"

    def as_provider(self) -> PrometheusProviderSpec:
        return PrometheusProviderSpec(type="prometheus", address=self.address, timeout=self.timeout)


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
    provider: Annotated[
        MetricProviderSpec | None,
        Field(description="Where metrics come from; required when there are checks or alerts."),
    ] = None
    prometheus: Annotated[
        PrometheusSource | None,
        Field(description="The older form of `provider` with type prometheus."),
    ] = None
    interval: Duration = "15s"
    checks: Annotated[list[Check], Field(max_length=MAX_CHECKS)] = []
    alerts: Annotated[list[Alert], Field(max_length=MAX_ALERTS)] = []
    when_metrics_unavailable: WhenMetricsUnavailable = WhenMetricsUnavailable()

    @property
    def metric_provider(self) -> MetricProviderSpec | None:
        """The provider to query: `provider`, or `prometheus` in the form of a provider."""
        if self.provider is not None:
            return self.provider
        return None if self.prometheus is None else self.prometheus.as_provider()

    @property
    def provider_path(self) -> str:
        """Where the provider is written in the spec, for messages."""
        return "spec.analysis.prometheus" if self.provider is None else "spec.analysis.provider"


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
    elif error["type"] in ("model_type", "dict_type"):
        # pydantic would name its own class ("instance of ModelSource").
        message = "must be an object"
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
            kinds = [
                step.set_weight is not None,
                step.pause is not None,
                step.analysis is not None,
                step.evaluation is not None,
            ]
            if sum(kinds) != 1:
                yield (
                    f"spec.strategy.canary.steps[{index}]",
                    "a step sets exactly one of setWeight, pause, analysis, evaluation",
                )
            if step.evaluation is not None:
                yield from _evaluation_errors(
                    f"spec.strategy.canary.steps[{index}].evaluation", step.evaluation
                )
    if spec.strategy.blue_green is not None and spec.strategy.blue_green.pre_promotion_evaluation:
        yield from _evaluation_errors(
            "spec.strategy.blueGreen.prePromotionEvaluation",
            spec.strategy.blue_green.pre_promotion_evaluation,
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
    if spec.traffic.gateway_api is not None:
        yield from _parent_ref_errors(spec.traffic.gateway_api.parent_refs)
    yield from _analysis_errors(spec.analysis)
    if spec.runtime.min_stable_replicas is not None and (
        spec.runtime.min_stable_replicas > spec.runtime.replicas
    ):
        yield "spec.runtime.minStableReplicas", "must not exceed runtime.replicas"
    yield from _toleration_errors(spec.runtime.tolerations)
    yield from _resource_errors(spec.runtime.resources)
    if parse_duration(spec.progress_deadline) < 1:
        # It is also each Deployment's progressDeadlineSeconds, which must be above 0.
        yield "spec.progressDeadline", "must be at least 1s"


def _evaluation_errors(path: str, evaluation: EvaluationStep) -> Iterator[tuple[str, str]]:
    # It becomes the Job's activeDeadlineSeconds, which must be above 0.
    if evaluation.suite.key in (".", ".."):
        yield f"{path}.suite.key", "must not be . or .. (it is a file name under /suite)"
    if parse_duration(evaluation.timeout) < 1:
        yield f"{path}.timeout", "must be at least 1s"


def _toleration_errors(tolerations: Sequence[Toleration]) -> Iterator[tuple[str, str]]:
    """What Kubernetes' Pod validation would refuse (the CRD's rules say the same)."""
    for index, toleration in enumerate(tolerations):
        path = f"spec.runtime.tolerations[{index}]"
        if not toleration.key and toleration.operator != "Exists":
            yield path, "a toleration without key needs operator Exists (it matches every taint)"
        if toleration.operator == "Exists" and toleration.value:
            yield f"{path}.value", "must be empty with operator Exists"
        if toleration.toleration_seconds is not None and toleration.effect != "NoExecute":
            yield f"{path}.tolerationSeconds", "needs effect NoExecute"


def _resource_errors(resources: Resources) -> Iterator[tuple[str, str]]:
    """Requests within limits; extended resources (nvidia.com/gpu) cannot be overcommitted."""
    for name, request in resources.requests.items():
        path = f"spec.runtime.resources.requests.{name}"
        limit = resources.limits.get(name)
        if "/" in name and (limit is None or quantity_value(request) != quantity_value(limit)):
            yield path, f"must equal limits.{name}: an extended resource cannot be overcommitted"
        elif limit is not None and quantity_value(request) > quantity_value(limit):
            yield path, f"{request} exceeds limits.{name} ({limit})"


def _parent_ref_errors(parent_refs: Sequence[ParentRef]) -> Iterator[tuple[str, str]]:
    """Gateway API's rule: references to one parent differ by sectionName or port."""
    seen: dict[tuple[str, str, str, str], list[tuple[str, int]]] = {}
    for index, ref in enumerate(parent_refs):
        parent = (
            ref.group if ref.group is not None else "gateway.networking.k8s.io",
            ref.kind or "Gateway",
            ref.namespace or "",
            ref.name,
        )
        listener = (ref.section_name or "", ref.port or 0)
        others = seen.setdefault(parent, [])
        shape = (bool(listener[0]), bool(listener[1]))
        if listener in others or any((bool(s), bool(p)) != shape for s, p in others):
            yield (
                f"spec.traffic.gatewayAPI.parentRefs[{index}]",
                f"{ref.name!r} is referenced twice: references to one parent need distinct "
                "sectionName or port, set on all of them",
            )
        others.append(listener)


def _one_of(path: str, fields: dict[str, object]) -> Iterator[tuple[str, str]]:
    if sum(value is not None for value in fields.values()) != 1:
        yield path, f"set exactly one of {', '.join(fields)}"


def _provider_errors(analysis: Analysis) -> Iterator[tuple[str, str]]:
    if analysis.provider is not None and analysis.prometheus is not None:
        yield (
            "spec.analysis.provider",
            "set either provider or prometheus (its older form), not both",
        )
    provider = analysis.metric_provider
    if (analysis.checks or analysis.alerts) and provider is None:
        yield (
            "spec.analysis.prometheus",
            "checks and alerts need a Prometheus address (analysis.provider or "
            "analysis.prometheus)",
        )
    if provider is None:
        return
    path = analysis.provider_path
    if parse_duration(provider.timeout) == 0:
        yield f"{path}.timeout", "must be above 0: no query answers in no time"
    if provider.auth is not None:
        auth = provider.auth
        yield from _one_of(
            f"{path}.auth", {"bearerToken": auth.bearer_token, "basicAuth": auth.basic_auth}
        )
        if auth.basic_auth is not None:
            username = auth.basic_auth.username
            yield from _one_of(
                f"{path}.auth.basicAuth.username",
                {"value": username.value, "secretKeyRef": username.secret_key_ref},
            )
    if provider.tls is not None and provider.tls.ca is not None:
        ca = provider.tls.ca
        yield from _one_of(
            f"{path}.tls.ca",
            {"secretKeyRef": ca.secret_key_ref, "configMapKeyRef": ca.config_map_key_ref},
        )
    names: set[str] = set()
    for index, header in enumerate(provider.headers):
        header_path = f"{path}.headers[{index}]"
        yield from _one_of(
            header_path, {"value": header.value, "secretKeyRef": header.secret_key_ref}
        )
        name = header.name.lower()
        if name in names:
            yield f"{header_path}.name", f"duplicate header {header.name!r}"
        names.add(name)
        if name == "authorization" and provider.auth is not None:
            yield f"{header_path}.name", "Authorization is set by auth: set one or the other"


def _analysis_errors(analysis: Analysis) -> Iterator[tuple[str, str]]:
    yield from _provider_errors(analysis)
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
            for variable in unquoted_variables(check.query):
                yield (
                    f"{path}.query",
                    f"{{{{{variable}}}}} must stand inside a double-quoted string, "
                    f'like revision="{{{{{variable}}}}}": only there is its value escaped',
                )
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
