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
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from modelrollout.analysis.templates import (
    TEMPLATE_VARIABLES,
    template_variables,
    unquoted_variables,
)
from modelrollout.models.durations import DURATION_PATTERN, DurationError, parse_duration
from modelrollout.models.notifications import (
    MAX_SINKS,
    NOTIFICATION_EVENTS,
    NotificationEvent,
    NotificationTemplate,
    SinkName,
    SinkType,
)
from modelrollout.models.schema import FREE_FORM, INT_OR_STRING, list_map, rule, validations
from modelrollout.models.uri import (
    DEFAULT_PVC_MOUNT_ROOT,
    ModelURIError,
    PVCModel,
    parse_model_uri,
    parse_zoo_name,
)
from modelrollout.traffic import capabilities_of, routers_with
from modelrollout.traffic.base import Capability, RouterCapabilities

# Also the CRD's `pattern` (the Duration and BreachWhen types below carry it there).
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
# A cookie value (RFC 6265 cookie-octets): no blank, quote, comma, semicolon or backslash.
COOKIE_VALUE_PATTERN = r"^[!#-+\--:<-\[\]-~]+$"

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

# The pod volumes the operator writes itself (engine/runtimes.py): user volumes must not clash.
MODEL_VOLUME = "model"
SHM_VOLUME = "dshm"
HF_CACHE_VOLUME = "hf-cache"
OPERATOR_VOLUMES = (MODEL_VOLUME, SHM_VOLUME, HF_CACHE_VOLUME)
# Where hf:// models are downloaded (HF_HOME): an emptyDir outlives container restarts,
# so a restarted server does not download the model again.
HF_HOME = "/var/cache/huggingface"
SHM_PATH = "/dev/shm"
# Label and annotation keys with this prefix are the operator's (selector, revision, role).
OPERATOR_KEY_PREFIX = "modelrollout.dev/"

NAME_MAX = 63
# A popular model is served by hundreds of replicas; per tick the operator lists and, under
# the service router, labels each pod, so the bound stays at what one tick can write.
MAX_REPLICAS = 1000
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

# Shadow output comparison (strategy.shadow.comparison): the comparison proxy's series,
# which need a minimum sample count.
ComparisonBuiltin = Literal[
    "outputAgreement",
    "exactMatchRate",
    "lengthRatio",
    "emptyAnswerRate",
    "jsonValidity",
    "latencyRatio",
]
# The builtins that read the serving pods' own series (modelserve's or vLLM's).
ServingBuiltin = Literal["errorRate", "latencyP99", "ttftP99", "interTokenLatencyP99"]
BuiltinCheck = Literal[ServingBuiltin, ComparisonBuiltin]
COMPARISON_BUILTINS: tuple[str, ...] = get_args(ComparisonBuiltin)
DEFAULT_MIN_SAMPLES = 20
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


# The CRD's patterns for durations and conditions; the validators say what is wrong in words.
Duration = Annotated[
    str,
    Field(min_length=2, max_length=32, json_schema_extra={"pattern": DURATION_PATTERN}),
    AfterValidator(_check_duration),
]
BreachWhen = Annotated[
    str,
    Field(max_length=64, json_schema_extra={"pattern": BREACH_WHEN_PATTERN}),
    AfterValidator(_check_breach_when),
]
Quantity = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=QUANTITY_PATTERN, json_schema_extra=INT_OR_STRING),
    BeforeValidator(_quantity),
]


def _check_positive_quantity(text: str) -> str:
    if quantity_value(text) <= 0:
        raise ValueError(f"must be more than zero, got {text!r}")
    return text


# The extended resource of a GPU; with vllm its count is the tensor-parallel size.
GPU_RESOURCE = "nvidia.com/gpu"
# The /dev/shm of a serving pod: tensor-parallel workers (NCCL) and torch dataloaders use it.
DEFAULT_SHM_SIZE = "2Gi"
Quantities = Annotated[
    dict[str, Quantity],
    Field(
        max_length=16,
        json_schema_extra=validations(
            rule(
                'self.all(k, k in ["cpu", "memory", "ephemeral-storage"]'
                ' || k.startsWith("hugepages-") || k.matches('
                f'r"^{_DNS_SUBDOMAIN}/[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?$"))',
                "resource names are cpu, memory, ephemeral-storage, hugepages-SIZE or qualified "
                "names such as nvidia.com/gpu",
            ),
            rule(
                f'self.all(k, string(self[k]).matches(r"{QUANTITY_PATTERN}"))',
                "quantities are written like 1, 500m or 2Gi, never negative",
            ),
            rule(
                "self.all(k, !k.contains('/') || string(self[k]).matches('^[0-9]+$'))",
                "extended resources such as nvidia.com/gpu count whole units",
            ),
        ),
    ),
    AfterValidator(_check_resource_names),
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
    # A field's docstring is its description in the CRD and docs/reference.md (models/crd.py).
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
        use_attribute_docstrings=True,
    )


class ModelCard(SpecModel):
    """A model's card, declared: none of it is checked against the weights."""

    license: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """The model's license, e.g. apache-2.0, llama3.2."""
    parameters: Annotated[int, Field(ge=1)] | None = None
    """Number of parameters."""
    context_length: Annotated[int, Field(ge=1)] | None = None
    """Context length in tokens."""
    quantization: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    """How the weights are quantized (awq, gptq, int8, fp8 ...)."""
    weights_digest: (
        Annotated[str, Field(max_length=80, pattern=r"^sha256:[0-9a-f]{64}$")] | None
    ) = None
    """A digest of the weights, sha256:<64 hex>, as the team's model registry records it."""


class ModelSource(SpecModel):
    name: Annotated[Name, Field(pattern=MODEL_NAME_PATTERN)]
    """The OpenAI "model" name clients send; the server is started with it as its served model
    name."""
    uri: Annotated[
        str,
        # The API server's share of _check_model_uri: no control or formatting characters.
        Field(min_length=1, max_length=1024, json_schema_extra={"pattern": r"^[^\p{Cc}\p{Cf}]+$"}),
        AfterValidator(_check_model_uri),
    ]
    """Where the model is: pvc://CLAIM/PATH (the claim is mounted read-only at /models/CLAIM),
    hf://ORG/NAME@REVISION (loaded from the hub, revision optional), file:///PATH or a plain path
    inside the image."""
    attention_heads: Annotated[int, Field(ge=1, le=65536)] | None = None
    """The model's number of attention heads (num_attention_heads in its config.json). Optional:
    the operator cannot read the model, so with vllm it checks the tensor-parallel size against
    it only when given (vLLM refuses a size that does not divide the heads, at pod start)."""
    naming: Literal["zoo"] | None = None
    """Opt in to a naming convention that the URI must follow. zoo: its last three path parts
    (for hf://, ORG/NAME@REVISION) are ORG/NAME/VERSION[-QUANT], lowercase, e.g.
    pvc://models/meta/llama-3.2-3b/v1.4-awq; the parts go into the revision's model record."""
    card: ModelCard | None = None
    """What the model is, as its owner declares it, for the revision's model record where the
    server cannot report it (engine vllm) or to be kept beside what it reports."""


class Resources(SpecModel):
    limits: Quantities = {}
    """Resource limits of the serving container, e.g. nvidia.com/gpu: 1. With vllm the GPU count
    (limits first, then requests) sets the tensor-parallel size."""
    requests: Quantities = {}
    """Resource requests of the serving container (cpu, memory, nvidia.com/gpu ...)."""


# A Pod's nodeSelector: label keys checked by the CRD and by the operator alike.
NodeSelector = Annotated[
    dict[str, LabelValue],
    Field(
        max_length=32,
        json_schema_extra=validations(
            rule(
                f'self.all(k, k.matches(r"{QUALIFIED_NAME_PATTERN}"))',
                "nodeSelector keys are label keys: [prefix/]name, the name at most 63 characters",
            )
        ),
    ),
    AfterValidator(_check_label_keys),
]


class Toleration(SpecModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "(has(self.key) && self.key != '') || "
                "(has(self.operator) && self.operator == 'Exists')",
                "a toleration without key needs operator Exists (it matches every taint)",
            ),
            rule(
                "!has(self.operator) || self.operator != 'Exists' || "
                "!has(self.value) || self.value == ''",
                "a toleration's value must be empty with operator Exists",
                ".value",
            ),
            rule(
                "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "a toleration's tolerationSeconds needs effect NoExecute",
                ".tolerationSeconds",
            ),
        )
    )

    key: QualifiedName | None = None
    """The taint key to match; empty with operator Exists matches every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists matches any value of the key; Equal matches value."""
    value: LabelValue | None = None
    """The taint value to match with operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect to match; empty matches every effect."""
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None
    """With effect NoExecute: how long a pod stays on the node once the taint appears; unset: for
    ever."""


ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=CONFIGMAP_NAME_PATTERN)]
ObjectKey = Annotated[str, Field(min_length=1, max_length=253, pattern=CONFIGMAP_KEY_PATTERN)]
# A pod field an env var may read (the downward API's fieldRef), as the API server allows them.
FIELD_PATH_PATTERN = (
    r"^(metadata\.(name|namespace|uid|labels\['[^']+'\]|annotations\['[^']+'\])"
    r"|spec\.(nodeName|serviceAccountName)|status\.(hostIP|hostIPs|podIP|podIPs))$"
)


class EnvKeySelector(SpecModel):
    name: ObjectName
    """Name of the object, in the rollout's namespace."""
    key: ObjectKey
    """Key in the object's data."""
    optional: bool | None = None
    """Whether the pod starts without the object or key (the variable is then unset)."""


class EnvFieldSelector(SpecModel):
    field_path: Annotated[str, Field(min_length=1, max_length=512, pattern=FIELD_PATH_PATTERN)]
    """The pod field, e.g. metadata.name or status.podIP."""
    api_version: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    """Version of the schema field_path is written in; default v1."""


class EnvVarSource(SpecModel):
    """Where a variable's value comes from, as a container's env[].valueFrom: exactly one source."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef)]"
                ".filter(s, s).size() == 1",
                "runtime.env[].valueFrom: exactly one of secretKeyRef, configMapKeyRef, fieldRef",
            )
        )
    )

    secret_key_ref: EnvKeySelector | None = None
    """A key of a Secret: the way to pass a token (HF_TOKEN) without writing it in the spec."""
    config_map_key_ref: EnvKeySelector | None = None
    """A key of a ConfigMap."""
    field_ref: EnvFieldSelector | None = None
    """A field of the pod (downward API)."""

    @model_validator(mode="after")
    def _one_source(self) -> EnvVarSource:
        sources = (self.secret_key_ref, self.config_map_key_ref, self.field_ref)
        if sum(source is not None for source in sources) != 1:
            raise ValueError("exactly one of secretKeyRef, configMapKeyRef, fieldRef")
        return self

    def size(self) -> int:
        """Characters of the references (they count towards the env size bound)."""
        selector = self.secret_key_ref or self.config_map_key_ref
        if selector is not None:
            return len(selector.name) + len(selector.key)
        return len(self.field_ref.field_path) if self.field_ref is not None else 0


class EnvVar(SpecModel):
    """A variable of the serving container: a literal value or one read from valueFrom."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.valueFrom) || !has(self.value) || self.value == ''",
                "runtime.env[]: value and valueFrom are exclusive",
            )
        )
    )

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=ENV_NAME_PATTERN)]
    """Name of the variable."""
    value: Annotated[str, Field(max_length=32768)] = ""
    """Value of the variable, written in the spec (status.history keeps only its sha256). A secret
    belongs in a Secret, read with valueFrom.secretKeyRef."""
    value_from: EnvVarSource | None = None
    """Where the value comes from instead of value: a Secret or ConfigMap key, or a pod field."""

    @model_validator(mode="after")
    def _value_or_source(self) -> EnvVar:
        if self.value and self.value_from is not None:
            raise ValueError("value and valueFrom are exclusive")
        return self

    def size(self) -> int:
        source = self.value_from.size() if self.value_from is not None else 0
        return len(self.name) + len(self.value) + source


class EnvObjectRef(SpecModel):
    name: ObjectName
    """Name of the object, in the rollout's namespace."""
    optional: bool | None = None
    """Whether the pod starts without the object."""


class EnvFromSource(SpecModel):
    """Every key of a Secret or ConfigMap as variables, as a container's envFrom[]."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "has(self.secretRef) != has(self.configMapRef)",
                "runtime.envFrom[]: exactly one of secretRef, configMapRef",
            )
        )
    )

    prefix: Annotated[str, Field(min_length=1, max_length=253, pattern=ENV_NAME_PATTERN)] | None = (
        None
    )
    """Prepended to every key to make the variable's name."""
    secret_ref: EnvObjectRef | None = None
    """A Secret whose keys become variables."""
    config_map_ref: EnvObjectRef | None = None
    """A ConfigMap whose keys become variables."""

    @model_validator(mode="after")
    def _one_source(self) -> EnvFromSource:
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError("exactly one of secretRef, configMapRef")
        return self


class LocalObjectReference(SpecModel):
    name: ObjectName
    """Name of the object, in the rollout's namespace."""


def _check_env_size(env: list[EnvVar]) -> list[EnvVar]:
    if sum(var.size() for var in env) > MAX_ENV_LENGTH:
        raise ValueError(
            f"names, values and references: at most {MAX_ENV_LENGTH} characters in all"
        )
    return env


class Runtime(SpecModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.minStableReplicas) || "
                "self.minStableReplicas <= (has(self.replicas) ? self.replicas : 1)",
                "runtime.minStableReplicas must not exceed runtime.replicas",
                ".minStableReplicas",
            )
        )
    )

    engine: Literal["vllm", "torch"]
    """The serving engine: vllm (vLLM's OpenAI server) or torch (the project's modelserve server).
    Both export vLLM's metric names, so the same checks work for either."""
    image: Annotated[str, Field(min_length=1, max_length=512, pattern=IMAGE_PATTERN)]
    """Container image of the serving engine."""
    args: Annotated[
        list[Annotated[str, Field(max_length=4096)]],
        Field(
            max_length=64,
            json_schema_extra=validations(
                rule(
                    f"self.map(a, size(a)).sum() <= {MAX_ARGS_LENGTH}",
                    f"runtime.args: at most {MAX_ARGS_LENGTH} characters in all",
                )
            ),
        ),
        AfterValidator(_check_args_size),
    ] = []
    """Extra arguments appended to the engine's command line, after those the operator sets (model,
    served model name, port; with vllm also the tensor-parallel size)."""
    replicas: Annotated[int, Field(ge=1, le=MAX_REPLICAS)] = 1
    """Pods of the stable revision. A canary gets replicas times its weight, rounded up, and at
    least one pod."""
    resources: Resources = Resources()
    """Compute resources of the serving container, as in a Pod."""
    node_selector: NodeSelector = {}
    """Node labels the serving pods must match, as a Pod's nodeSelector."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = []
    """Taints the serving pods tolerate, as a Pod's tolerations (GPU nodes usually carry the taint
    nvidia.com/gpu)."""
    startup_timeout: Duration = "15m"
    """How long a pod may take to load the model and answer its health check before it is restarted
    (the budget of its startup probe). Model loads take minutes."""
    capacity: Literal["surge", "shift"] = "surge"
    """Where canary pods come from. surge: beside all of stable's; before creating any, the operator
    counts free nvidia.com/gpu per eligible node and, if the whole new revision does not fit,
    creates nothing (phase Pending, condition InsufficientGPUCapacity with the numbers) until it
    does. shift: stable gives up one replica per canary replica, down to minStableReplicas, for
    clusters with no spare GPU (canary strategy; blue-green always needs both colors)."""
    min_stable_replicas: Annotated[int, Field(ge=0, le=MAX_REPLICAS)] | None = None
    """With capacity shift: the fewest pods the stable revision keeps while a canary runs (unset:
    1). Must not exceed replicas."""
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    """Port the server listens on in the pod (named http); the operator's Services and routes send
    traffic to it."""
    env: Annotated[
        list[EnvVar],
        Field(
            max_length=64,
            json_schema_extra=validations(
                rule(
                    "self.map(e, size(e.name) + (has(e.value) ? size(e.value) : 0)"
                    " + (!has(e.valueFrom) ? 0"
                    " : has(e.valueFrom.secretKeyRef)"
                    " ? size(e.valueFrom.secretKeyRef.name) + size(e.valueFrom.secretKeyRef.key)"
                    " : has(e.valueFrom.configMapKeyRef)"
                    " ? size(e.valueFrom.configMapKeyRef.name)"
                    " + size(e.valueFrom.configMapKeyRef.key)"
                    " : has(e.valueFrom.fieldRef) ? size(e.valueFrom.fieldRef.fieldPath) : 0)"
                    f").sum() <= {MAX_ENV_LENGTH}",
                    f"runtime.env: names, values and references of at most {MAX_ENV_LENGTH}"
                    " characters in all",
                )
            ),
        ),
        AfterValidator(_check_env_size),
    ] = []
    """Environment variables of the serving container, as a container's env: a literal value or
    valueFrom a Secret, a ConfigMap or a pod field."""
    env_from: Annotated[list[EnvFromSource], Field(max_length=16)] = []
    """Secrets and ConfigMaps whose every key becomes a variable, as a container's envFrom."""
    shm_size: Annotated[Quantity, AfterValidator(_check_positive_quantity)] = DEFAULT_SHM_SIZE
    """Size of the serving container's /dev/shm (a memory-backed emptyDir; its use counts against
    the pod's memory), a Kubernetes quantity. Tensor-parallel workers exchange tensors through it;
    raise it for large tensor-parallel models."""
    termination_grace_period: Duration = "60s"
    """How long a stopping pod has to finish its in-flight requests before it is killed (the pod's
    terminationGracePeriodSeconds). It first sleeps 5s in preStop, so that endpoints and gateways
    stop sending it requests, then the server drains for the rest less 5s (vLLM's
    --shutdown-timeout, modelserve's --drain-timeout): requests it accepted finish."""
    image_pull_secrets: Annotated[list[LocalObjectReference], Field(max_length=16)] = []
    """Secrets holding registry credentials for the serving image, as a Pod's imagePullSecrets.
    Like every field of the pod template, changing it makes a new revision (rolled out by the
    strategy)."""
    service_account_name: ObjectName | None = None
    """The ServiceAccount the serving pods run as (unset: the namespace's default)."""
    priority_class_name: ObjectName | None = None
    """The PriorityClass of the serving pods, as a Pod's priorityClassName."""
    runtime_class_name: ObjectName | None = None
    """The RuntimeClass of the serving pods (e.g. nvidia, for the NVIDIA container runtime)."""
    affinity: Annotated[dict[str, Any], Field(json_schema_extra=FREE_FORM)] | None = None
    """Node and pod (anti-)affinity of the serving pods, as a Pod's affinity. Checked by the API
    server when the revision's Deployment is created (a refusal is reported as InvalidSpec naming
    this field). GPU capacity planning does not model it: it counts only nodeSelector and
    tolerations, and the scheduler reports pods it then cannot place."""
    topology_spread_constraints: Annotated[
        list[Annotated[dict[str, Any], Field(json_schema_extra=FREE_FORM)]], Field(max_length=8)
    ] = []
    """How the serving pods spread across zones or nodes, as a Pod's topologySpreadConstraints
    (its labelSelector may select modelrollout.dev/revision). Checked by the API server when the
    Deployment is created; not modelled by GPU capacity planning."""
    security_context: Annotated[dict[str, Any], Field(json_schema_extra=FREE_FORM)] | None = None
    """The pod's securityContext (runAsUser, fsGroup, seccompProfile ...). Checked by the API
    server when the Deployment is created."""
    container_security_context: (
        Annotated[dict[str, Any], Field(json_schema_extra=FREE_FORM)] | None
    ) = None
    """The serving container's securityContext (runAsNonRoot, capabilities,
    allowPrivilegeEscalation ...). Checked by the API server when the Deployment is created."""
    pod_labels: Annotated[
        dict[str, LabelValue],
        Field(
            max_length=32,
            json_schema_extra=validations(
                rule(
                    f'self.all(k, k.matches(r"{QUALIFIED_NAME_PATTERN}"))',
                    "runtime.podLabels keys are label keys: [prefix/]name, "
                    "the name at most 63 characters",
                ),
                rule(
                    f'self.all(k, !k.startsWith("{OPERATOR_KEY_PREFIX}"))',
                    f"runtime.podLabels: keys {OPERATOR_KEY_PREFIX}* are the operator's",
                ),
            ),
        ),
        AfterValidator(_check_label_keys),
    ] = {}
    """Extra labels of the serving pods (cost centre, team, mesh injection). Keys
    modelrollout.dev/* are the operator's (its selector and roles) and are refused."""
    pod_annotations: Annotated[
        # At most 256 KiB in all, Kubernetes' bound on an object's annotations.
        dict[str, Annotated[str, Field(max_length=8192)]],
        Field(
            max_length=32,
            json_schema_extra=validations(
                rule(
                    f'self.all(k, k.matches(r"{QUALIFIED_NAME_PATTERN}"))',
                    "runtime.podAnnotations keys are [prefix/]name, the name at most 63 characters",
                ),
                rule(
                    f'self.all(k, !k.startsWith("{OPERATOR_KEY_PREFIX}"))',
                    f"runtime.podAnnotations: keys {OPERATOR_KEY_PREFIX}* are the operator's",
                ),
            ),
        ),
        AfterValidator(_check_label_keys),
    ] = {}
    """Extra annotations of the serving pods (e.g. prometheus.io/scrape, a mesh's settings). Keys
    modelrollout.dev/* are the operator's and are refused."""
    volumes: Annotated[
        list[Annotated[dict[str, Any], Field(json_schema_extra=FREE_FORM)]], Field(max_length=32)
    ] = []
    """Extra volumes of the serving pods, as a Pod's volumes (a model cache PVC, NFS, a CSI
    driver). Names model, dshm and hf-cache are the operator's and are refused; the API server
    checks the rest when the Deployment is created."""
    volume_mounts: Annotated[
        list[Annotated[dict[str, Any], Field(json_schema_extra=FREE_FORM)]],
        Field(max_length=32),
    ] = []
    """Where the serving container mounts runtime.volumes, as a container's volumeMounts (name,
    mountPath, readOnly, subPath). A mount names one of runtime.volumes; /dev/shm and the model's
    own mount path are the operator's."""


class ParentRef(SpecModel):
    group: Annotated[str, Field(max_length=253, pattern=GROUP_PATTERN)] | None = None
    """API group of the parent; Gateway API's default is gateway.networking.k8s.io."""
    kind: Annotated[str, Field(min_length=1, max_length=63, pattern=KIND_PATTERN)] | None = None
    """Kind of the parent; Gateway API's default is Gateway."""
    namespace: (
        Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)] | None
    ) = None
    """Namespace of the parent; default: the rollout's namespace."""
    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Name of the parent, usually a Gateway."""
    section_name: (
        Annotated[str, Field(min_length=1, max_length=253, pattern=SECTION_NAME_PATTERN)] | None
    ) = None
    """A listener of the parent to attach to; default: every listener."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """A port of the parent to attach to; default: every port."""


Hostname = Annotated[str, Field(min_length=1, max_length=253, pattern=HOSTNAME_PATTERN)]


class GatewayAPI(SpecModel):
    parent_refs: Annotated[list[ParentRef], Field(max_length=32)] = []
    """Gateways (or their listeners) the route attaches to, as an HTTPRoute's parentRefs; router
    gatewayAPI needs at least one."""
    hostnames: Annotated[list[Hostname], Field(max_length=16)] = []
    """Host names the route matches, as an HTTPRoute's hostnames; empty: those of the parent."""


class PortNumber(SpecModel):
    number: Annotated[int, Field(ge=1, le=65535)]
    """The port number."""


class EndpointPickerRef(SpecModel):
    """The Gateway API Inference Extension's endpointPickerRef, as an InferencePool has it."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "(has(self.kind) && self.kind != 'Service') || has(self.port)",
                "traffic.inferencePool.endpointPickerRef.port is required when kind is Service "
                "(the default)",
                ".port",
            )
        )
    )

    group: Annotated[str, Field(max_length=253, pattern=GROUP_PATTERN)] | None = None
    """API group of the endpoint picker's object; default: "" (the core group, a Service)."""
    kind: Annotated[str, Field(min_length=1, max_length=63, pattern=KIND_PATTERN)] | None = None
    """Kind of the endpoint picker's object; default: Service."""
    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Name of the endpoint picker's object (its Service) in the rollout's namespace."""
    port: PortNumber | None = None
    """The endpoint picker's port (the Service's port, not its target port); required for a
    Service."""
    failure_mode: Literal["FailOpen", "FailClose"] | None = None
    """What the gateway does while the endpoint picker does not answer: FailOpen sends the request
    to a pod it chooses itself, FailClose (the default) refuses it."""


class InferencePoolRouting(SpecModel):
    parent_refs: Annotated[list[ParentRef], Field(max_length=32)] = []
    """Inference gateways (or their listeners) the route attaches to, as an HTTPRoute's
    parentRefs: gateways whose implementation routes to InferencePools; router inferencePool needs
    at least one."""
    hostnames: Annotated[list[Hostname], Field(max_length=16)] = []
    """Host names the route matches, as an HTTPRoute's hostnames; empty: those of the parent."""
    endpoint_picker_ref: EndpointPickerRef | None = None
    """The endpoint picker (EPP) each revision's InferencePool names: the extension the gateway
    asks which of the pool's pods serves a request. Unset: the pools name none, which only some
    gateways accept."""


# The routers the API server accepts with traffic.sessionAffinity, from their capabilities.
_SESSION_AFFINITY = routers_with(Capability.SESSION_AFFINITY)


class SessionAffinity(SpecModel):
    """Keep each conversation on one revision, by a header every request of it carries. The
    router writes header-match rules (no gateway state): a session's bucket, the last hex digit(s)
    of its id, goes to the canary or to stable by the weight rounded to buckets, and a revision's
    answers carry `x-modelrollout-revision`, which pins a conversation that sends it back. See
    docs/session-affinity.md."""

    header: Annotated[str, Field(min_length=1, max_length=256, pattern=HEADER_NAME_PATTERN)] = (
        "x-session-id"
    )
    """The request header naming the session; its value must end in uniformly distributed hex
    digits (a UUID, or a hash of OpenAI's `user` field). Default: x-session-id."""
    buckets: Literal[16, 256] = 16
    """Session buckets: 16 (the id's last hex digit; the canary weight moves in steps of 6.25%)
    or 256 (its last two; steps of about 0.4%). Default: 16."""
    pin_revision: bool = True
    """Each revision's answers carry `x-modelrollout-revision: <revision>` and a request carrying
    it goes to that revision while it is stable or a canary above 0%: a client that sends it back
    never switches while weights move. Needs backendRef filters (ResponseHeaderModifier) in the
    gateway; false leaves the buckets alone (a session may then switch once, stable to canary).
    Default: true."""


class Traffic(SpecModel):
    """The router (traffic/__init__.py) and its settings: the section named like it."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.router) || self.router != 'gatewayAPI' || (has(self.gatewayAPI) && "
                "has(self.gatewayAPI.parentRefs) && size(self.gatewayAPI.parentRefs) > 0)",
                "traffic.router gatewayAPI needs traffic.gatewayAPI.parentRefs: "
                "at least one Gateway to attach to",
                ".gatewayAPI.parentRefs",
            ),
            rule(
                "!has(self.router) || self.router != 'inferencePool' || (has(self.inferencePool) "
                "&& has(self.inferencePool.parentRefs) && size(self.inferencePool.parentRefs) > 0)",
                "traffic.router inferencePool needs traffic.inferencePool.parentRefs: "
                "at least one inference gateway to attach to",
                ".inferencePool.parentRefs",
            ),
            rule(
                "!has(self.sessionAffinity) || (has(self.router) && self.router in "
                f"[{', '.join(repr(name) for name in _SESSION_AFFINITY)}])",
                "traffic.sessionAffinity needs a traffic.router with session affinity: "
                f"{', '.join(_SESSION_AFFINITY)}",
                ".sessionAffinity",
            ),
        )
    )

    router: Literal["service", "gatewayAPI", "inferencePool"] = "service"
    """service: one Service over the pods of every revision, the weight approximated by the canary's
    share of ready pods (works on any cluster); gatewayAPI: an HTTPRoute owned by the operator
    with exact weights (needed for shadow); inferencePool: one InferencePool per revision and an
    HTTPRoute weighting them exactly (Gateway API Inference Extension; needs an inference
    gateway)."""
    gateway_api: GatewayAPI | None = Field(default=None, alias="gatewayAPI")
    """The HTTPRoute the operator creates with router gatewayAPI."""
    inference_pool: InferencePoolRouting | None = None
    """The InferencePools and the HTTPRoute the operator creates with router inferencePool."""
    session_affinity: SessionAffinity | None = None
    """Keep each session (a header's value) on one revision while weights move; needs a router
    with session affinity (gatewayAPI). Unset: every request is split by weight alone."""

    def router_settings(self) -> dict[str, Any]:
        """The chosen router's section as written (camelCase); {} for a router without one."""
        settings: dict[str, Any] = self.model_dump(by_alias=True, exclude_none=True).get(
            self.router, {}
        )
        return settings


class PauseStep(SpecModel):
    duration: Duration | None = None
    """How long to hold; time paused by the user does not count. Unset: until promoted."""


class AnalysisStep(SpecModel):
    duration: Duration
    """How long to hold at least."""


class SuiteSource(SpecModel):
    config_map_name: Annotated[
        str, Field(min_length=1, max_length=253, pattern=CONFIGMAP_NAME_PATTERN)
    ]
    """The ConfigMap in the rollout's namespace holding the suite; it is mounted into the Job's pod
    at /suite."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=CONFIGMAP_KEY_PATTERN)] = (
        "suite.yaml"
    )
    """The ConfigMap key holding the suite; default: suite.yaml."""


class EvaluationStep(SpecModel):
    """Quality gates (`modelserve eval --suite`) run by a Job against canary and stable."""

    suite: SuiteSource
    """Where the gate suite (YAML, see modelserve eval --suite) is."""
    timeout: Duration = "10m"
    """How long the evaluation Job may run (its activeDeadlineSeconds; default: 10m); past it the
    rollout pauses with reason EvaluationError."""
    image: Annotated[str, Field(min_length=1, max_length=512, pattern=IMAGE_PATTERN)] | None = None
    """The image running modelserve eval. Unset: with engine torch, runtime.image; with vllm, whose
    images have no modelserve, the operator's evaluation image (the chart's evaluation.image)."""
    node_selector: NodeSelector = {}
    """Node labels the evaluation Job's pod must match (its nodeSelector). It needs no GPU: unset,
    the scheduler places it on any node whose taints it tolerates."""
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = []
    """Taints the evaluation Job's pod tolerates, as a Pod's tolerations."""


class SegmentHeader(SpecModel):
    name: Annotated[str, Field(min_length=1, max_length=256, pattern=HEADER_NAME_PATTERN)]
    """The request header to match, e.g. x-tenant."""
    value: Annotated[str, Field(min_length=1, max_length=1024)]
    """The value it must have (type Exact) or a regular expression it must match
    (type RegularExpression, RE2 syntax, searched anywhere in the value unless anchored)."""
    type: Literal["Exact", "RegularExpression"] = "Exact"
    """Exact (the default) or RegularExpression, as a Gateway API header match."""


class SegmentCookie(SpecModel):
    name: Annotated[str, Field(min_length=1, max_length=256, pattern=HEADER_NAME_PATTERN)]
    """The cookie's name."""
    value: Annotated[str, Field(min_length=1, max_length=1024, pattern=COOKIE_VALUE_PATTERN)]
    """The value it must have, exactly."""


class HashRange(SpecModel):
    header: Annotated[str, Field(min_length=1, max_length=256, pattern=HEADER_NAME_PATTERN)]
    """The header carrying a user's hash (a user id's hex digest, a UUID): its last hex digit(s)
    are its bucket, as traffic.sessionAffinity's."""
    buckets: Literal[16, 256] = 16
    """16 (the last hex digit) or 256 (the last two). Default: 16."""
    from_: Annotated[int, Field(ge=0, le=255, alias="from")]
    """The first bucket of the range, from 0."""
    to: Annotated[int, Field(ge=0, le=255)]
    """The last bucket of the range (inclusive), below buckets."""


class Segment(SpecModel):
    """Which requests go to the candidate: those matching every condition set here (AND)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "(has(self.headers) && size(self.headers) > 0) || has(self.cookie) || "
                "has(self.hashRange)",
                "a segment sets at least one of headers, cookie, hashRange",
            )
        )
    )

    headers: Annotated[list[SegmentHeader], Field(max_length=MAX_HEADERS)] = []
    """Headers every request of the segment carries, e.g. {name: x-tenant, value: beta}."""
    cookie: SegmentCookie | None = None
    """A cookie every request of the segment carries (matched in the Cookie header)."""
    hash_range: HashRange | None = None
    """A range of buckets of a hashed header: users whose bucket is from..to."""


class ExperimentStep(SpecModel):
    """An A/B experiment: the segment's requests go to the candidate (group B) beside the weight
    set so far, the others to stable (group A); at the end both groups are compared and the
    verdict (status.experiment, Event ExperimentVerdict) continues the rollout or rolls back."""

    duration: Duration
    """How long the segment is routed to the candidate before the groups are compared."""
    segment: Segment
    """The requests sent to the candidate, by header, cookie or hash range."""
    min_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 20
    """Requests each group must have answered within the experiment before a verdict: with
    fewer the step keeps running (no data is never a pass). Default: 20."""


class CanaryStep(SpecModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "(has(self.setWeight) ? 1 : 0) + (has(self.pause) ? 1 : 0) + "
                "(has(self.analysis) ? 1 : 0) + (has(self.evaluation) ? 1 : 0) + "
                "(has(self.experiment) ? 1 : 0) == 1",
                "each canary step sets exactly one of setWeight, pause, analysis, evaluation, "
                "experiment",
            )
        )
    )

    set_weight: Percent | None = None
    """Send this percent of traffic to the canary. Once the canary has traffic, raising its weight
    waits for a healthy analysis."""
    pause: PauseStep | None = None
    """Hold the current weight: for duration, or without one until the user promotes (annotation
    modelrollout.dev/promote)."""
    analysis: AnalysisStep | None = None
    """Hold the current weight while the checks run; the step ends once duration has passed and the
    analysis is healthy."""
    evaluation: EvaluationStep | None = None
    """Run the quality gates of a suite (modelserve eval) as a Job against the canary and stable; a
    failed gate rolls back, an evaluation that cannot judge pauses."""
    experiment: ExperimentStep | None = None
    """An A/B experiment: route a segment of requests (header, cookie, hash range) to the canary
    for duration, then compare it with stable's requests on the analysis' builtin checks; a breach
    rolls back. Needs a router with request matching (gatewayAPI). See docs/ab-testing.md."""

    @property
    def kind(self) -> Literal["setWeight", "pause", "analysis", "evaluation", "experiment"]:
        if self.set_weight is not None:
            return "setWeight"
        if self.pause is not None:
            return "pause"
        if self.experiment is not None:
            return "experiment"
        return "analysis" if self.analysis is not None else "evaluation"


class RollbackWindow(SpecModel):
    duration: Duration
    """How long after a promotion the previous stable revision stays up without traffic, so that
    `kubectl modelrollout rollback` moves all traffic back to it in one write, with no model
    load. A new revision rolled out meanwhile ends the window at once."""
    replica_percent: Annotated[int, Field(ge=1, le=100)] = 100
    """The share of runtime.replicas the previous revision keeps during the window, rounded up, at
    least one pod. A rollback sends it all traffic at once, then scales it back to
    runtime.replicas: below 100 it serves everything with fewer pods until they load."""


class CanaryStrategy(SpecModel):
    steps: Annotated[list[CanaryStep], Field(min_length=1, max_length=MAX_STEPS)]
    """The steps, in order; each sets exactly one of setWeight, pause, analysis, evaluation,
    experiment."""
    abort_scale_down_delay: Duration = "30s"
    """How long the pods of a rolled-back or aborted canary are kept, without traffic, for a retry
    or inspection (router gatewayAPI; with router service a kept pod would still get traffic, so
    it goes at once)."""
    rollback_window: RollbackWindow | None = None
    """Keep the previous stable revision warm after a promotion, for a rollback without a model
    load (status.previousRevision until status.previousScaleDownAt); unset: it goes at once."""


class PostPromotionAnalysis(SpecModel):
    duration: Duration
    """How long the analysis runs after the switch."""


class BlueGreenStrategy(SpecModel):
    auto_promotion_after: Duration | None = None
    """Switch traffic this long after the preview became fully ready (status.previewReadyAt), once
    its checks are healthy; unset: wait for the user to promote."""
    scale_down_delay: Duration = "30s"
    """How long the old revision keeps its pods after the switch, for a quick switch back."""
    post_promotion_analysis: PostPromotionAnalysis | None = None
    """Keep the analysis running after the switch; a breach switches traffic back."""
    pre_promotion_evaluation: EvaluationStep | None = None
    """Run quality gates (modelserve eval) against the preview before the switch, as a canary
    evaluation step; a failed gate rolls back."""


class ShadowComparison(SpecModel):
    window: Duration = "60s"
    """How long a sampled request's stable answer waits in the proxy's memory for the candidate's;
    a comparison not done by then is dropped (counted, never stored)."""
    max_pending: Annotated[int, Field(ge=1, le=10000)] = 256
    """At most this many comparisons wait at once; a sampled request beyond it is not copied."""


class ShadowStrategy(SpecModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.canarySteps) || self.then == 'canary'",
                "shadow: canarySteps is only for then: canary",
            )
        )
    )

    mirror_percent: Annotated[int, Field(ge=1, le=100)]
    """Percent of requests copied to the new revision."""
    duration: Duration
    """How long to mirror and analyse."""
    then: Literal["promote", "canary", "stop"]
    """What follows a healthy shadow run: promote (all traffic to the new revision), canary
    (canarySteps, by default setWeight 10, analysis, setWeight 50, analysis, each analysis as long
    as duration) or stop (tear the new revision down, stay on stable)."""
    # One step fewer than a canary's: the shadow's own analysis comes first.
    canary_steps: (
        Annotated[list[CanaryStep], Field(min_length=1, max_length=MAX_STEPS - 1)] | None
    ) = None
    """With then: canary, the canary steps that follow the shadow, as strategy.canary.steps."""
    comparison: ShadowComparison | None = None
    """Compare the candidate's answers with stable's: the operator puts a proxy
    (`<name>-shadow-compare`) in front of stable for the shadow; it answers every request from
    stable and sends mirrorPercent of them to the candidate as well, compares the answers and
    exports the measures the outputAgreement, exactMatchRate, lengthRatio, emptyAnswerRate,
    jsonValidity and latencyRatio builtins read. Works with any router, mirroring or not."""


class Strategy(SpecModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "(has(self.canary) ? 1 : 0) + (has(self.blueGreen) ? 1 : 0) + "
                "(has(self.shadow) ? 1 : 0) == 1",
                "strategy: set exactly one of canary, blueGreen, shadow",
            )
        )
    )

    canary: CanaryStrategy | None = None
    """Move traffic to the new revision in steps while analysis runs; after the last step it takes
    all traffic and becomes stable."""
    blue_green: BlueGreenStrategy | None = None
    """Bring the new revision up beside stable without traffic, then switch all traffic to it at
    once."""
    shadow: ShadowStrategy | None = None
    """Copy a share of live requests to the new revision (its answers are dropped) and analyse it;
    needs router gatewayAPI."""


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

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "has(self.value) != has(self.secretKeyRef)",
                "username sets exactly one of value or secretKeyRef",
            )
        )
    )

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

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "has(self.bearerToken) != has(self.basicAuth)",
                "auth sets exactly one of bearerToken or basicAuth",
            )
        )
    )

    bearer_token: Annotated[
        SecretValue | None,
        Field(description="Sent as `Authorization: Bearer <token>`; the token from a Secret."),
    ] = None
    basic_auth: Annotated[
        BasicAuth | None, Field(description="HTTP basic auth; the password from a Secret.")
    ] = None


class CertificateSource(SpecModel):
    """PEM certificates from one of a Secret key or a ConfigMap key."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "has(self.secretKeyRef) != has(self.configMapKeyRef)",
                "ca sets exactly one of secretKeyRef or configMapKeyRef",
            )
        )
    )

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

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "has(self.value) != has(self.secretKeyRef)",
                "a header sets exactly one of value or secretKeyRef",
            )
        )
    )

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

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.auth) || !has(self.headers) || "
                "self.headers.all(h, h.name.lowerAscii() != 'authorization')",
                "the Authorization header is set by auth: set it in one place",
                ".headers",
            )
        )
    )

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
        Field(
            max_length=MAX_HEADERS,
            description="Extra HTTP headers sent with each request (X-Scope-OrgID of Thanos or "
            "Mimir, a managed service's key); names are unique, whatever their case.",
            json_schema_extra=validations(
                rule(
                    "self.all(a, self.exists_one(b, b.name.lowerAscii() == a.name.lowerAscii()))",
                    "header names are unique (whatever their case)",
                )
            ),
        ),
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
    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "has(self.query) != has(self.builtin)",
                "a check sets exactly one of query or builtin",
            ),
            rule(
                "!has(self.compareTo) || has(self.builtin)",
                "compareTo works with builtin checks only",
                ".compareTo",
            ),
            rule(
                "!has(self.minSamples) || (has(self.builtin) && self.builtin in "
                f"[{', '.join(repr(name) for name in COMPARISON_BUILTINS)}])",
                "minSamples works with the comparison builtins only",
                ".minSamples",
            ),
        )
    )

    # No ':' in check names: alerts appear in status.checks as `alert:<alertname>`.
    name: CheckName
    """Names the check in status.checks and Events; unique within checks."""
    builtin: BuiltinCheck | None = None
    """A built-in query on vLLM's metric names for the canary over window: errorRate (share of
    failed requests, 0 to 1), latencyP99, ttftP99, interTokenLatencyP99 (seconds). With
    strategy.shadow.comparison, the comparison's measures over window: outputAgreement (mean
    token-level agreement, 0 to 1), exactMatchRate (share of greedy or seeded answers identical to
    stable's), lengthRatio (candidate answer length / stable's), emptyAnswerRate (share of empty or
    refusing candidate answers), jsonValidity (share of valid JSON answers where JSON was asked),
    latencyRatio (candidate latency / stable's). Set this or query."""
    query: Annotated[str, Field(min_length=1, max_length=8192)] | None = None
    """A PromQL query returning one value. It may use {{namespace}}, {{rollout}},
    {{canary.revision}}, {{stable.revision}}, {{model}} (escaped for a label matcher); any other
    variable makes the spec invalid. Set this or builtin."""
    compare_to: Literal["stable"] | None = None
    """stable: the value is the canary's builtin value divided by the stable revision's (1 when both
    are 0), e.g. breachWhen "> 1.2" for 20% worse than stable. Builtin checks only."""
    window: Duration = "1m"
    """The range of a builtin check's rates and quantiles; a query writes its own."""
    min_samples: Annotated[int, Field(ge=1, le=1000000)] | None = None
    """Comparison builtins only: the comparisons within window needed before the check has a
    value (fewer is no data, never a pass). Unset: 20."""
    breach_when: BreachWhen
    """When the value breaches: an operator (> >= < <= == !=) and a number, e.g. "> 0.01" or "<= 5".
    """
    for_: Duration = Field(default="0s", alias="for")
    """How long the value must breach at every evaluation before the check is breached, as in a
    Prometheus alerting rule; 0s: at once."""
    action: Action = "rollback"
    """What a breach does: rollback (all traffic back on stable at once) or pause (hold until the
    user resumes or aborts)."""

    @property
    def threshold(self) -> Threshold:
        return Threshold.parse(self.breach_when)


class Alert(SpecModel):
    alertname: Annotated[str, Field(min_length=1, max_length=253)]
    """The alert's name (label alertname of the ALERTS series)."""
    match_labels: Annotated[dict[str, ShortText], Field(max_length=16)] = {}
    """Labels the firing alert must carry; keys are Prometheus label names, values may use
    {{namespace}}, {{rollout}}, {{canary.revision}}, {{stable.revision}}, {{model}}."""
    action: Action = "rollback"
    """What the alert firing does: rollback (all traffic back on stable at once) or pause (hold
    until the user resumes or aborts)."""


class WhenMetricsUnavailable(SpecModel):
    action: Action = "pause"
    """What to do once a check has had no data for after: pause or rollback."""
    after: Duration = "60s"
    """How long a check may have no data before action is taken."""


class PromptsSource(SpecModel):
    config_map_name: Annotated[
        str, Field(min_length=1, max_length=253, pattern=CONFIGMAP_NAME_PATTERN)
    ]
    """The ConfigMap in the rollout's namespace holding the prompts; it is mounted into the load
    Job's pod at /prompts."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=CONFIGMAP_KEY_PATTERN)] = (
        "prompts.txt"
    )
    """The ConfigMap key holding the prompts, one per line (blank lines skipped); default:
    prompts.txt."""


class AnalysisLoad(SpecModel):
    """Requests the operator sends the candidate while it is analysed, so that its checks have
    data when users send it none (a blue-green preview, a shadow's candidate, a canary before its
    first setWeight), as Flagger's load tester does."""

    rate: Annotated[int, Field(ge=1, le=100)] = 2
    """Requests per second (open loop), each a completion, greedy."""
    duration: Duration = "30m"
    """How long one candidate gets load at most: the bound of the Job that sends it (it ends
    sooner when the candidate is promoted, rolled back or replaced)."""
    max_tokens: Annotated[int, Field(ge=1, le=4096)] = 16
    """max_tokens of each request."""
    prompts: PromptsSource | None = None
    """Where the prompts are; unset: modelserve loadgen's built-in mix."""
    image: Annotated[str, Field(min_length=1, max_length=512, pattern=IMAGE_PATTERN)] | None = None
    """The image running modelserve loadgen. Unset: with engine torch, runtime.image; with vllm,
    the operator's evaluation image (the chart's evaluation.image)."""


class Analysis(SpecModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "has(self.provider) || has(self.prometheus) || "
                "((!has(self.checks) || size(self.checks) == 0) && "
                "(!has(self.alerts) || size(self.alerts) == 0))",
                "analysis.prometheus (or analysis.provider) is required when there are checks "
                "or alerts",
                ".prometheus",
            ),
            rule(
                "!(has(self.provider) && has(self.prometheus))",
                "set either analysis.provider or analysis.prometheus (its older form), not both",
                ".provider",
            ),
        )
    )

    provider: MetricProviderSpec | None = None
    """Where metrics come from, by type (prometheus: a Prometheus-compatible HTTP API such as
    Prometheus, Thanos, Mimir or a managed service); required when there are checks or alerts.
    Credentials are read from Secrets in the rollout's namespace, never written here."""
    prometheus: PrometheusSource | None = None
    """The older form of provider with type prometheus (address and timeout only); set one of
    provider or prometheus."""
    interval: Duration = "15s"
    """Time between two evaluations of the checks and alerts."""
    checks: Annotated[
        list[Check], Field(max_length=MAX_CHECKS, json_schema_extra=list_map("name"))
    ] = []
    """Metrics conditions that must not hold for the canary; names are unique."""
    alerts: Annotated[
        list[Alert], Field(max_length=MAX_ALERTS, json_schema_extra=list_map("alertname"))
    ] = []
    """Prometheus alerts that must not fire; alertnames are unique. A firing alert shows in
    status.checks as alert:ALERTNAME."""
    when_metrics_unavailable: WhenMetricsUnavailable = WhenMetricsUnavailable()
    """What happens while a check has no data (missing series, failed query, Prometheus down): the
    rollout never moves forward on no data."""
    load: AnalysisLoad | None = None
    """Synthetic requests to the candidate while it is analysed (a Job running modelserve loadgen
    against the candidate's own Service); unset: none, the checks read user traffic only."""

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


# The routers the API server accepts under a shadow, from their declared capabilities.
_MIRRORING = routers_with(Capability.REQUEST_MIRRORING)
# The routers the API server accepts with an experiment step, from their declared capabilities.
_MATCHING = routers_with(Capability.REQUEST_MATCHING)
_COMPARING = routers_with(Capability.COMPARISON_PROXY)


class NotificationSink(SpecModel):
    """One place a rollout's events are sent. Its URL is read from a Secret: a webhook URL is a
    credential."""

    name: SinkName
    """Names the sink in Events and metrics; unique within sinks."""
    type: SinkType
    """What the URL speaks: webhook (JSON of the versioned schema in docs/notifications.md), slack
    (a Slack-compatible incoming webhook), teams (a Microsoft Teams workflow webhook, an Adaptive
    Card), alertmanager (Alertmanager's base URL; alerts are posted to /api/v2/alerts)."""
    url_secret_ref: SecretKeyRef
    """The Secret key holding the sink's URL, in the rollout's namespace. Read when a notification
    is sent, so a rotated URL needs no restart."""
    events: Annotated[
        list[NotificationEvent],
        Field(
            max_length=len(NOTIFICATION_EVENTS), json_schema_extra={"x-kubernetes-list-type": "set"}
        ),
    ] = []
    """Which events this sink receives: Started, StepAdvanced, Paused, Breach, RolledBack, Promoted,
    AnalysisUnavailable; empty: all of them."""
    template: NotificationTemplate | None = None
    """The message text, a string.Template: $kind, $severity, $namespace, $rollout, $phase,
    $message, $reason, $revision, $stable, $canary, $model, $step, $steps, $weight, $check, $value,
    $threshold, $time. Unset: "[$namespace/$rollout] $kind: $message"."""


class Notifications(SpecModel):
    """Notifications on the rollout's events; when spec.notifications is unset, the namespace's
    default (Secret modelrollout-notifications, key notifications.yaml) applies, if it exists."""

    sinks: Annotated[
        list[NotificationSink], Field(max_length=MAX_SINKS, json_schema_extra=list_map("name"))
    ] = []
    """Where the events are sent; empty: nowhere (and not to the namespace's default)."""
    analysis_unavailable_after: Duration = "2m"
    """An AnalysisUnavailable notification is sent once a check has had no data for this long
    (once per such stretch)."""


class DisruptionBudget(SpecModel):
    """The PodDisruptionBudget kept for each revision, so that a node drain cannot take the stable
    or the canary to zero mid-rollout."""

    enabled: bool = True
    """Whether each revision has a PodDisruptionBudget (`<name>-<revision>`): one pod evicted at a
    time, and none of a revision's only pod while a stable and a canary both run. Turn it off where
    a budget of your own (or a policy engine's) already selects these pods: the eviction API
    refuses to evict a pod that two budgets select."""


class ModelRolloutSpec(SpecModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(self.strategy.shadow) || (has(self.strategy.shadow.comparison) ? "
                "(!has(self.traffic) || !has(self.traffic.router) || "
                f"self.traffic.router in [{', '.join(repr(name) for name in _COMPARING)}]) : "
                "(has(self.traffic) && has(self.traffic.router) && "
                f"self.traffic.router in [{', '.join(repr(name) for name in _MIRRORING)}]))",
                "strategy.shadow needs a traffic.router with request mirroring: "
                f"{', '.join(_MIRRORING)}; with strategy.shadow.comparison, one of "
                f"{', '.join(_COMPARING)}",
                ".strategy.shadow",
            ),
            rule(
                "!has(self.strategy.canary) || "
                "!self.strategy.canary.steps.exists(s, has(s.experiment)) || "
                "(has(self.traffic) && has(self.traffic.router) && "
                f"self.traffic.router in [{', '.join(repr(name) for name in _MATCHING)}])",
                "an experiment step needs a traffic.router with request matching: "
                f"{', '.join(_MATCHING)}",
                ".strategy.canary.steps",
            ),
        )
    )

    model: ModelSource
    """Which model to serve. Changing anything under model or runtime makes a new revision, rolled
    out by the strategy."""
    runtime: Runtime
    """How the model is served: engine, image and pods. Changing anything under model or runtime
    makes a new revision; fields left at their defaults do not count, so writing a default
    explicitly is no change."""
    traffic: Traffic = Traffic()
    """How requests reach the revisions. Changing it makes no new revision."""
    strategy: Strategy
    """How a new revision takes over: exactly one of canary, blueGreen, shadow."""
    analysis: Analysis = Analysis()
    """Prometheus checks and alerts, evaluated while the canary has traffic; a breach rolls back or
    pauses. No data is never a pass."""
    progress_deadline: Duration = "20m"
    """How long the canary's pods may take to become ready before the rollout rolls back; also each
    Deployment's progressDeadlineSeconds."""
    revision_history_limit: Annotated[int, Field(ge=0, le=100)] = 5
    """How many entries status.history keeps, newest first (at least one)."""
    disruption_budget: DisruptionBudget = DisruptionBudget()
    """What node drains (evictions) may take of each revision. Changing it makes no new
    revision."""
    notifications: Notifications | None = None
    """Where the rollout's events (started, step advanced, paused, breach, rolled back, promoted,
    analysis unavailable) are sent. Unset: the namespace's default, if any. Changing it makes no
    new revision."""

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


def router_capability_errors(
    spec: ModelRolloutSpec, capabilities: RouterCapabilities
) -> Iterator[tuple[str, str]]:
    """A strategy the rollout's router cannot carry out, by what it lacks (traffic/base.py)."""
    needs: tuple[tuple[str, object, Capability], ...] = (
        (
            "spec.strategy.shadow",
            spec.strategy.shadow
            if spec.strategy.shadow is not None and spec.strategy.shadow.comparison is None
            else None,
            Capability.REQUEST_MIRRORING,
        ),
        (
            # The comparison proxy copies requests itself: the router only puts it in front.
            "spec.strategy.shadow.comparison",
            spec.strategy.shadow.comparison if spec.strategy.shadow is not None else None,
            Capability.COMPARISON_PROXY,
        ),
        ("spec.strategy.blueGreen", spec.strategy.blue_green, Capability.PREVIEW_ROUTE),
        (
            "spec.traffic.sessionAffinity",
            spec.traffic.session_affinity,
            Capability.SESSION_AFFINITY,
        ),
    )
    if spec.strategy.canary is not None:
        needs += tuple(
            (f"spec.strategy.canary.steps[{index}].experiment", step.experiment,
             Capability.REQUEST_MATCHING)
            for index, step in enumerate(spec.strategy.canary.steps)
        )  # fmt: skip
    for field_path, strategy, capability in needs:
        if strategy is not None and capability not in capabilities:
            yield (
                field_path,
                f"needs a router with {capability.value}; traffic.router "
                f"{spec.traffic.router} has none (routers with it: "
                f"{', '.join(routers_with(capability))})",
            )


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
        yield from _step_errors("spec.strategy.canary.steps", spec.strategy.canary.steps)
        window = spec.strategy.canary.rollback_window
        if window is not None and parse_duration(window.duration) < 1:
            yield (
                "spec.strategy.canary.rollbackWindow.duration",
                "must be at least 1s (leave rollbackWindow out for no window)",
            )
    shadow = spec.strategy.shadow
    if shadow is not None and shadow.canary_steps is not None:
        if shadow.then != "canary":
            yield "spec.strategy.shadow.canarySteps", "is only for then: canary"
        yield from _step_errors("spec.strategy.shadow.canarySteps", shadow.canary_steps)
        for index, step in enumerate(shadow.canary_steps):
            if step.experiment is not None:
                yield (
                    f"spec.strategy.shadow.canarySteps[{index}].experiment",
                    "is for strategy.canary only (a shadow's candidate is judged on mirrored "
                    "requests)",
                )
    comparison = shadow.comparison if shadow is not None else None
    comparing = comparison is not None
    if comparison is not None and parse_duration(comparison.window) < 1:
        yield "spec.strategy.shadow.comparison.window", "must be at least 1s"
    for index, check in enumerate(spec.analysis.checks):
        if check.builtin in COMPARISON_BUILTINS and not comparing:
            yield (
                f"spec.analysis.checks[{index}].builtin",
                f"{check.builtin} reads the shadow comparison: it needs strategy.shadow.comparison",
            )
        if check.builtin in COMPARISON_BUILTINS and check.compare_to is not None:
            yield (
                f"spec.analysis.checks[{index}].compareTo",
                f"{check.builtin} already compares the candidate with stable",
            )
    if spec.strategy.blue_green is not None and spec.strategy.blue_green.pre_promotion_evaluation:
        yield from _evaluation_errors(
            "spec.strategy.blueGreen.prePromotionEvaluation",
            spec.strategy.blue_green.pre_promotion_evaluation,
        )
    yield from router_capability_errors(spec, capabilities_of(spec.traffic.router))
    if spec.traffic.session_affinity is not None and spec.strategy.blue_green is not None:
        yield (
            "spec.traffic.sessionAffinity",
            "is for canary weights; blueGreen switches every request at once (leave it out)",
        )
    if spec.traffic.router == "gatewayAPI" and (
        spec.traffic.gateway_api is None or not spec.traffic.gateway_api.parent_refs
    ):
        yield (
            "spec.traffic.gatewayAPI.parentRefs",
            "router gatewayAPI needs at least one parentRef (the Gateway to attach to)",
        )
    if spec.traffic.gateway_api is not None:
        yield from _parent_ref_errors(
            "spec.traffic.gatewayAPI.parentRefs", spec.traffic.gateway_api.parent_refs
        )
    yield from _inference_pool_errors(spec)
    yield from _analysis_errors(spec.analysis)
    if spec.model.naming == "zoo":
        try:
            parse_zoo_name(spec.model.uri)
        except ModelURIError as error:
            yield "spec.model.uri", f"does not follow spec.model.naming zoo: {error}"
    if spec.runtime.min_stable_replicas is not None and (
        spec.runtime.min_stable_replicas > spec.runtime.replicas
    ):
        yield "spec.runtime.minStableReplicas", "must not exceed runtime.replicas"
    yield from _toleration_errors("spec.runtime.tolerations", spec.runtime.tolerations)
    yield from _pod_field_errors(spec)
    yield from _resource_errors(spec.runtime.resources)
    if spec.runtime.engine == "vllm":
        yield from _tensor_parallel_errors(spec)
    if parse_duration(spec.progress_deadline) < 1:
        # It is also each Deployment's progressDeadlineSeconds, which must be above 0.
        yield "spec.progressDeadline", "must be at least 1s"


def _step_errors(path: str, steps: Sequence[CanaryStep]) -> Iterator[tuple[str, str]]:
    for index, step in enumerate(steps):
        kinds = [
            step.set_weight is not None,
            step.pause is not None,
            step.analysis is not None,
            step.evaluation is not None,
            step.experiment is not None,
        ]
        if sum(kinds) != 1:
            yield (
                f"{path}[{index}]",
                "a step sets exactly one of setWeight, pause, analysis, evaluation, experiment",
            )
        if step.evaluation is not None:
            yield from _evaluation_errors(f"{path}[{index}].evaluation", step.evaluation)
        if step.experiment is not None:
            yield from _experiment_errors(f"{path}[{index}].experiment", step.experiment)


def _experiment_errors(path: str, experiment: ExperimentStep) -> Iterator[tuple[str, str]]:
    segment = experiment.segment
    if not segment.headers and segment.cookie is None and segment.hash_range is None:
        yield f"{path}.segment", "set at least one of headers, cookie, hashRange"
    for index, header in enumerate(segment.headers):
        if header.type == "RegularExpression":
            try:
                re.compile(header.value)
            except re.error as error:
                yield f"{path}.segment.headers[{index}].value", f"not a regular expression: {error}"
    hash_range = segment.hash_range
    if hash_range is not None and not hash_range.from_ <= hash_range.to < hash_range.buckets:
        yield (
            f"{path}.segment.hashRange",
            f"needs from <= to < buckets ({hash_range.buckets}); got from {hash_range.from_}, "
            f"to {hash_range.to}",
        )
    if parse_duration(experiment.duration) < 1:
        yield f"{path}.duration", "must be at least 1s"


def _evaluation_errors(path: str, evaluation: EvaluationStep) -> Iterator[tuple[str, str]]:
    # It becomes the Job's activeDeadlineSeconds, which must be above 0.
    if evaluation.suite.key in (".", ".."):
        yield f"{path}.suite.key", "must not be . or .. (it is a file name under /suite)"
    if parse_duration(evaluation.timeout) < 1:
        yield f"{path}.timeout", "must be at least 1s"
    yield from _toleration_errors(f"{path}.tolerations", evaluation.tolerations)


def _toleration_errors(field: str, tolerations: Sequence[Toleration]) -> Iterator[tuple[str, str]]:
    """What Kubernetes' Pod validation would refuse (the CRD's rules say the same)."""
    for index, toleration in enumerate(tolerations):
        path = f"{field}[{index}]"
        if not toleration.key and toleration.operator != "Exists":
            yield path, "a toleration without key needs operator Exists (it matches every taint)"
        if toleration.operator == "Exists" and toleration.value:
            yield f"{path}.value", "must be empty with operator Exists"
        if toleration.toleration_seconds is not None and toleration.effect != "NoExecute":
            yield f"{path}.tolerationSeconds", "needs effect NoExecute"


def _pod_field_errors(spec: ModelRolloutSpec) -> Iterator[tuple[str, str]]:
    """What would clash with what the operator writes into the pod, or what the Deployment's
    validation would refuse with a less clear message (names, not the free-form contents)."""
    runtime = spec.runtime
    for field, keys in (
        ("podLabels", runtime.pod_labels),
        ("podAnnotations", runtime.pod_annotations),
    ):
        for key in keys:
            if key.startswith(OPERATOR_KEY_PREFIX):
                yield (
                    f"spec.runtime.{field}.{key}",
                    f"keys {OPERATOR_KEY_PREFIX}* are the operator's (its selector and roles)",
                )
    volume_names: set[str] = set()
    for index, volume in enumerate(runtime.volumes):
        path = f"spec.runtime.volumes[{index}].name"
        name = volume.get("name")
        if not isinstance(name, str) or not re.fullmatch(DNS_LABEL_PATTERN, name):
            yield path, "a volume needs a name: a DNS label (lowercase, digits, -), at most 63"
            continue
        if name in OPERATOR_VOLUMES:
            yield path, f"{name!r} is the operator's own volume ({', '.join(OPERATOR_VOLUMES)})"
        elif name in volume_names:
            yield path, f"{name!r} is used by another volume"
        volume_names.add(name)
    reserved_paths = {SHM_PATH, HF_HOME}
    model_path = _model_mount_path(spec.model.uri)
    if model_path is not None:
        reserved_paths.add(model_path)
    mount_paths: set[str] = set()
    for index, mount in enumerate(runtime.volume_mounts):
        path = f"spec.runtime.volumeMounts[{index}]"
        name = mount.get("name")
        if name not in volume_names:
            yield f"{path}.name", "must name one of runtime.volumes"
        mount_path = mount.get("mountPath")
        if not isinstance(mount_path, str) or not mount_path.startswith("/"):
            yield f"{path}.mountPath", "an absolute path is required"
        elif mount_path.rstrip("/") in reserved_paths:
            yield f"{path}.mountPath", f"{mount_path} is where the operator mounts its own volume"
        elif mount_path in mount_paths:
            yield f"{path}.mountPath", f"{mount_path} is mounted by another volumeMount"
        else:
            mount_paths.add(mount_path)


def _model_mount_path(uri: str) -> str | None:
    source = parse_model_uri(uri)
    if isinstance(source, PVCModel):
        return f"{DEFAULT_PVC_MOUNT_ROOT.rstrip('/')}/{source.claim}"
    return None


def _resource_errors(resources: Resources) -> Iterator[tuple[str, str]]:
    """Requests within limits; extended resources (nvidia.com/gpu) cannot be overcommitted."""
    for name, request in resources.requests.items():
        path = f"spec.runtime.resources.requests.{name}"
        limit = resources.limits.get(name)
        if "/" in name and (limit is None or quantity_value(request) != quantity_value(limit)):
            yield path, f"must equal limits.{name}: an extended resource cannot be overcommitted"
        elif limit is not None and quantity_value(request) > quantity_value(limit):
            yield path, f"{request} exceeds limits.{name} ({limit})"


# vLLM's flag and its alias; the last one given wins, as with argparse.
_TENSOR_PARALLEL_FLAGS = ("--tensor-parallel-size", "-tp")


def _gpus(resources: Resources) -> int:
    """GPUs the serving container gets (limits first, then requests), as the pod builder reads."""
    for quantities in (resources.limits, resources.requests):
        if GPU_RESOURCE in quantities:
            return int(quantity_value(quantities[GPU_RESOURCE]))
    return 0


def _tensor_parallel_in_args(args: Sequence[str]) -> tuple[int, str] | None:
    """(index, value) of the last tensor-parallel size the user's args pass to vLLM."""
    found = None
    for index, arg in enumerate(args):
        flag, equals, value = arg.partition("=")
        if flag in _TENSOR_PARALLEL_FLAGS:
            if equals:
                found = (index, value)
            elif index + 1 < len(args):
                found = (index + 1, args[index + 1])
    return found


def _tensor_parallel_errors(spec: ModelRolloutSpec) -> Iterator[tuple[str, str]]:
    """The tensor-parallel size vLLM gets: from the GPUs, or the user's args; it must fit both."""
    gpus = _gpus(spec.runtime.resources)
    size, source = max(1, gpus), f"the {GPU_RESOURCE} count"
    passed = _tensor_parallel_in_args(spec.runtime.args)
    if passed is not None:
        index, value = passed
        path = f"spec.runtime.args[{index}]"
        if not value.isdigit() or int(value) < 1:
            yield path, f"the tensor-parallel size must be a whole number above 0, got {value!r}"
            return
        if int(value) > max(1, gpus):
            yield (
                path,
                f"tensor-parallel size {value} needs {value} GPUs: runtime.resources gives "
                f"{gpus} {GPU_RESOURCE}",
            )
            return
        size, source = int(value), "runtime.args"
    heads = spec.model.attention_heads
    if heads is not None and heads % size:
        yield (
            "spec.model.attentionHeads",
            f"{heads} attention heads do not divide over tensor-parallel size {size} (from "
            f"{source}): vLLM needs the heads divisible by it",
        )


def _inference_pool_errors(spec: ModelRolloutSpec) -> Iterator[tuple[str, str]]:
    routing = spec.traffic.inference_pool
    if spec.traffic.router == "inferencePool" and (routing is None or not routing.parent_refs):
        yield (
            "spec.traffic.inferencePool.parentRefs",
            "router inferencePool needs at least one parentRef (the inference gateway to "
            "attach to)",
        )
    if routing is None:
        return
    yield from _parent_ref_errors("spec.traffic.inferencePool.parentRefs", routing.parent_refs)
    picker = routing.endpoint_picker_ref
    if picker is not None and picker.kind in (None, "Service") and picker.port is None:
        yield (
            "spec.traffic.inferencePool.endpointPickerRef.port",
            "is required when kind is Service (the default): the endpoint picker Service's port",
        )


def _parent_ref_errors(path: str, parent_refs: Sequence[ParentRef]) -> Iterator[tuple[str, str]]:
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
                f"{path}[{index}]",
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
    # It becomes the load Job's --duration and (with a margin) its activeDeadlineSeconds.
    if analysis.load is not None and parse_duration(analysis.load.duration) < 1:
        yield "spec.analysis.load.duration", "must be at least 1s"
    prompts = analysis.load.prompts if analysis.load is not None else None
    if prompts is not None and prompts.key in (".", ".."):
        yield "spec.analysis.load.prompts.key", "must not be . or .. (a file name under /prompts)"
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
        if check.min_samples is not None and check.builtin not in COMPARISON_BUILTINS:
            yield f"{path}.minSamples", "minSamples works with the comparison builtins only"
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
