"""A corpus of invalid and hostile ModelRollouts, and who must refuse each one.

Every case changes one thing in the valid example spec (tests/unit/operator/builders.py)
and says where it must be refused:

- "api": the API server refuses it at `kubectl apply` time (schema, CEL rules,
  strict decoding), with a message naming `field`;
- "operator": the API server stores it (only the operator can judge it) and
  the operator gives it condition InvalidSpec naming `field`, creating and
  changing nothing.

parse_spec refuses every case with a spec of its own (not the name or YAML
text) too, naming the same field: an operator in front of an older CRD still
changes nothing running. Used by tests/cluster/test_bad_input_corpus.py,
tests/e2e/test_bad_input_operator.py and tests/unit/operator/test_spec_fuzz.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from tests.unit.operator.builders import example_spec

Outcome = Literal["api", "operator"]
# The case's spec, made from a copy of the valid one (changed in place or replaced).
Mutation = Callable[[dict[str, Any]], Any]
VALID_NAME = "chat"

HOSTILE_LABEL_VALUES = (
    '"} or vector(1) #',
    'x"} or vector(1)) or count(ALERTS{a="',
    "\\",
    'a\\"b',
    "line\nbreak",
    "\u202eevil",
    "zero\u200bwidth",
    "\U0001f680",
    "{}",
    "'`",
)
"""Label values that would end or re-open a PromQL selector if pasted in unescaped."""


@dataclass(frozen=True)
class BadInput:
    name: str
    mutate: Mutation
    outcome: Outcome
    # The field the refusal names: the API server's message and InvalidSpec's
    # field path (which may name a field inside it, e.g. `[1].name` for `[1]`).
    field: str
    # More text the refusal must contain.
    says: str = ""
    rollout_name: str = VALID_NAME
    # Rewrites the manifest's YAML text, for what JSON cannot say (duplicate keys).
    yaml_edit: Callable[[str], str] | None = None
    # None: refused with 422 (validation) or 400 (strict decoding), naming the
    # field. A status: refused with it before there are fields (a body over the
    # API server's limit, YAML that does not decode), so only `says` counts.
    http_status: int | None = None

    def spec(self, base: dict[str, Any] | None = None) -> Any:
        """This case's spec: the mutation applied to a copy of `base` (the example)."""
        return self.mutate(copy.deepcopy(base if base is not None else example_spec()))

    @property
    def judged_by_parse_spec(self) -> bool:
        """Whether the case is in the spec itself (not in the name or the YAML text)."""
        return self.rollout_name == VALID_NAME and self.yaml_edit is None


def names_field(path: str, field: str) -> bool:
    """Whether a refusal's field path `path` names `field` (or a field inside it)."""
    return path == field or path.startswith((f"{field}.", f"{field}["))


def _node(spec: dict[str, Any], parents: list[str]) -> Any:
    node: Any = spec
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    return node


def setting(path: str, value: Any) -> Mutation:
    """Set the field at a dotted `path` (list indexes as numbers)."""

    def mutate(spec: dict[str, Any]) -> Any:
        *parents, last = path.split(".")
        node = _node(spec, parents)
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return spec

    return mutate


def inference_pool_traffic(section: dict[str, Any]) -> dict[str, Any]:
    """traffic for router inferencePool: one inference gateway, and `section` over it."""
    return {
        "router": "inferencePool",
        "inferencePool": {"parentRefs": [{"name": "igw"}], **section},
    }


def appending(path: str, make: Callable[[dict[str, Any]], Any]) -> Mutation:
    """Append `make(spec)` to the list at `path`."""

    def mutate(spec: dict[str, Any]) -> Any:
        *parents, last = path.split(".")
        _node(spec, parents)[last].append(make(spec))
        return spec

    return mutate


def duplicating(key: str, value: str) -> Callable[[str], str]:
    """Repeat the first `key: ...` line of the manifest's YAML with `value` (YAML allows it)."""

    def edit(text: str) -> str:
        lines = text.split("\n")
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{key}:"))
        indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
        lines.insert(index + 1, f"{indent}{key}: {value}")
        return "\n".join(lines)

    return edit


def _query(template: str) -> Mutation:
    return setting("analysis.checks.1.query", template)


SHADOW = {"mirrorPercent": 10, "duration": "10m", "then": "promote"}
LATENCY = 'vllm:e2e_request_latency_seconds_count{namespace="{{namespace}}"}'

CASES: list[BadInput] = [
    # -- wrong types ------------------------------------------------------
    BadInput("spec is a list", lambda s: [s], "api", "spec"),
    BadInput("model is a string", setting("model", "chat"), "api", "spec.model"),
    BadInput(
        "replicas is a string", setting("runtime.replicas", "2"), "api", "spec.runtime.replicas"
    ),
    BadInput(
        "replicas is a boolean", setting("runtime.replicas", True), "api", "spec.runtime.replicas"
    ),
    BadInput(
        "replicas is a fraction", setting("runtime.replicas", 2.5), "api", "spec.runtime.replicas"
    ),
    BadInput("engine is a boolean", setting("runtime.engine", True), "api", "spec.runtime.engine"),
    BadInput(
        "args is a string",
        setting("runtime.args", "--max-model-len=8192"),
        "api",
        "spec.runtime.args",
    ),
    BadInput(
        "steps is an object",
        setting("strategy.canary.steps", {"setWeight": 5}),
        "api",
        "spec.strategy.canary.steps",
    ),
    BadInput(
        "setWeight is a percent string",
        setting("strategy.canary.steps.0.setWeight", "50%"),
        "api",
        "spec.strategy.canary.steps[0].setWeight",
    ),
    BadInput(
        "breachWhen is a number",
        setting("analysis.checks.0.breachWhen", 0.01),
        "api",
        "spec.analysis.checks[0].breachWhen",
    ),
    BadInput(
        "matchLabels value is a number",
        setting("analysis.alerts.0.matchLabels.revision", 1),
        "api",
        "spec.analysis.alerts[0].matchLabels.revision",
    ),
    BadInput(
        "unknown field", setting("runtime.gpus", 2), "api", "spec.runtime.gpus", "unknown field"
    ),
    # -- nulls (the API server drops a null optional field; these are required) --
    BadInput("model uri is null", setting("model.uri", None), "api", "spec.model.uri"),
    BadInput("runtime is null", setting("runtime", None), "api", "spec.runtime"),
    BadInput("null among args", setting("runtime.args", [None]), "api", "spec.runtime.args[0]"),
    BadInput(
        "setWeight is null: an empty step",
        setting("strategy.canary.steps.0", {"setWeight": None}),
        "api",
        "spec.strategy.canary.steps[0]",
        "exactly one of setWeight, pause, analysis",
    ),
    BadInput(
        "canary is null: no strategy",
        setting("strategy", {"canary": None}),
        "api",
        "spec.strategy",
        "exactly one of canary, blueGreen, shadow",
    ),
    # -- huge values --------------------------------------------------------
    BadInput("replicas 10^9", setting("runtime.replicas", 10**9), "api", "spec.runtime.replicas"),
    BadInput("replicas 2^63", setting("runtime.replicas", 2**63), "api", "spec.runtime.replicas"),
    BadInput("negative replicas", setting("runtime.replicas", -1), "api", "spec.runtime.replicas"),
    BadInput(
        "a 10 MB model uri",
        setting("model.uri", "pvc://models/" + "x" * 10_000_000),
        "api",
        "spec.model.uri",
        "Request entity too large",
        http_status=413,
    ),
    BadInput("a 2 MB model name", setting("model.name", "x" * 2_000_000), "api", "spec.model.name"),
    BadInput(
        "10000 steps",
        setting("strategy.canary.steps", [{"setWeight": 50}] * 10_000),
        "api",
        "spec.strategy.canary.steps",
        "Too many",
    ),
    BadInput(
        "100 checks",
        setting(
            "analysis.checks",
            [{"name": f"c{i}", "builtin": "errorRate", "breachWhen": "> 1"} for i in range(100)],
        ),
        "api",
        "spec.analysis.checks",
        "Too many",
    ),
    BadInput(
        "2 MB of environment",
        setting("runtime.env", [{"name": f"V{i}", "value": "x" * 32768} for i in range(64)]),
        "api",
        "spec.runtime.env",
        "65536 characters",
    ),
    BadInput(
        "256 KB of args",
        setting("runtime.args", ["x" * 4096] * 64),
        "api",
        "spec.runtime.args",
        "65536 characters",
    ),
    BadInput(
        "setWeight 101",
        setting("strategy.canary.steps.0.setWeight", 101),
        "api",
        "spec.strategy.canary.steps[0].setWeight",
    ),
    BadInput(
        "setWeight 2^31",
        setting("strategy.canary.steps.2.setWeight", 2**31),
        "api",
        "spec.strategy.canary.steps[2].setWeight",
    ),
    BadInput("port 70000", setting("runtime.port", 70000), "api", "spec.runtime.port"),
    BadInput(
        "revisionHistoryLimit 10^6",
        setting("revisionHistoryLimit", 10**6),
        "api",
        "spec.revisionHistoryLimit",
    ),
    # -- durations --------------------------------------------------------------
    BadInput("duration 1e9h", setting("progressDeadline", "1e9h"), "api", "spec.progressDeadline"),
    BadInput(
        "negative pause",
        setting("strategy.canary.steps.1.pause.duration", "-5m"),
        "api",
        "spec.strategy.canary.steps[1].pause.duration",
    ),
    BadInput(
        "fractional interval", setting("analysis.interval", "1.5h"), "api", "spec.analysis.interval"
    ),
    BadInput(
        "ISO 8601 duration",
        setting("runtime.startupTimeout", "PT15M"),
        "api",
        "spec.runtime.startupTimeout",
    ),
    BadInput(
        "duration without unit",
        setting("analysis.checks.0.for", "30"),
        "api",
        "spec.analysis.checks[0].for",
    ),
    BadInput(
        "progressDeadline of a hundred thousand years",
        setting("progressDeadline", "999999999h"),
        "operator",
        "spec.progressDeadline",
        "at most 8760h",
    ),
    BadInput(
        "startupTimeout beyond int32 probe thresholds",
        setting("runtime.startupTimeout", "99999999999h"),
        "operator",
        "spec.runtime.startupTimeout",
        "at most 8760h",
    ),
    BadInput(
        "terminationGracePeriod beyond int32",
        setting("runtime.terminationGracePeriod", "99999999999h"),
        "operator",
        "spec.runtime.terminationGracePeriod",
        "at most 8760h",
    ),
    BadInput(
        "pause of a million hours",
        setting("strategy.canary.steps.1.pause.duration", "1000000h"),
        "operator",
        "spec.strategy.canary.steps[1].pause.duration",
    ),
    BadInput(
        "abortScaleDownDelay beyond a year",
        setting("strategy.canary.abortScaleDownDelay", "9000h"),
        "operator",
        "spec.strategy.canary.abortScaleDownDelay",
    ),
    BadInput(
        "rollbackWindow of 0s",
        setting("strategy.canary.rollbackWindow", {"duration": "0s"}),
        "operator",
        "spec.strategy.canary.rollbackWindow.duration",
        "at least 1s",
    ),
    BadInput(
        "rollbackWindow keeping 0% of the replicas",
        setting("strategy.canary.rollbackWindow", {"duration": "30m", "replicaPercent": 0}),
        "api",
        "spec.strategy.canary.rollbackWindow.replicaPercent",
    ),
    BadInput(
        "check window of 10^11 hours",
        setting("analysis.checks.0.window", "99999999999h"),
        "operator",
        "spec.analysis.checks[0].window",
    ),
    BadInput(
        "Prometheus timeout overflowing a socket",
        setting("analysis.prometheus.timeout", "99999999999h"),
        "operator",
        "spec.analysis.prometheus.timeout",
    ),
    BadInput(
        "Prometheus timeout 0s",
        setting("analysis.prometheus.timeout", "0s"),
        "operator",
        "spec.analysis.prometheus.timeout",
        "above 0",
    ),
    BadInput(
        "progressDeadline 0s",
        setting("progressDeadline", "0s"),
        "operator",
        "spec.progressDeadline",
        "at least 1s",
    ),
    BadInput(
        "progressDeadline 500ms",
        setting("progressDeadline", "500ms"),
        "operator",
        "spec.progressDeadline",
        "at least 1s",
    ),
    # -- strategy ---------------------------------------------------------------
    BadInput(
        "empty strategy",
        setting("strategy", {}),
        "api",
        "spec.strategy",
        "exactly one of canary, blueGreen, shadow",
    ),
    BadInput(
        "canary and shadow",
        setting("strategy.shadow", SHADOW),
        "api",
        "spec.strategy",
        "exactly one of canary, blueGreen, shadow",
    ),
    BadInput(
        "a step mixing setWeight and analysis",
        setting("strategy.canary.steps.2", {"setWeight": 25, "analysis": {"duration": "1m"}}),
        "api",
        "spec.strategy.canary.steps[2]",
        "exactly one of setWeight, pause, analysis",
    ),
    BadInput("no steps", setting("strategy.canary.steps", []), "api", "spec.strategy.canary.steps"),
    BadInput(
        "shadow on the service router",
        setting("strategy", {"shadow": SHADOW}),
        "api",
        "spec.strategy.shadow",
        "gatewayAPI",
    ),
    # -- checks, alerts, queries ---------------------------------------------
    BadInput(
        "minSamples on a check that reads no comparison",
        setting("analysis.checks.0.minSamples", 5),
        "api",
        "spec.analysis.checks[0].minSamples",
        "comparison builtins only",
    ),
    BadInput(
        "a comparison builtin without strategy.shadow.comparison",
        setting(
            "analysis.checks.0",
            {"name": "agreement", "builtin": "outputAgreement", "breachWhen": "< 0.9"},
        ),
        "operator",
        "spec.analysis.checks[0].builtin",
        "strategy.shadow.comparison",
    ),
    BadInput(
        "breachWhen NaN",
        setting("analysis.checks.0.breachWhen", "> NaN"),
        "api",
        "spec.analysis.checks[0].breachWhen",
    ),
    BadInput(
        "breachWhen Infinity",
        setting("analysis.checks.0.breachWhen", "< Infinity"),
        "api",
        "spec.analysis.checks[0].breachWhen",
    ),
    BadInput(
        "breachWhen with an exponent",
        setting("analysis.checks.1.breachWhen", "> 1e9"),
        "api",
        "spec.analysis.checks[1].breachWhen",
    ),
    BadInput(
        "check name with an emoji",
        setting("analysis.checks.0.name", "error-rate-\U0001f525"),
        "api",
        "spec.analysis.checks[0].name",
    ),
    BadInput(
        "check name with a zero-width space",
        setting("analysis.checks.0.name", "error\u200brate"),
        "api",
        "spec.analysis.checks[0].name",
    ),
    BadInput(
        "check name with a right-to-left override",
        setting("analysis.checks.1.name", "p99\u202eycnetal"),
        "api",
        "spec.analysis.checks[1].name",
    ),
    BadInput(
        "duplicate check names",
        setting("analysis.checks.1.name", "error-rate"),
        "api",
        "spec.analysis.checks[1]",
    ),
    BadInput(
        "duplicate alertnames",
        appending("analysis.alerts", lambda s: copy.deepcopy(s["analysis"]["alerts"][0])),
        "api",
        "spec.analysis.alerts[1]",
    ),
    BadInput(
        "Prometheus address without a host",
        setting("analysis.prometheus.address", "http://"),
        "api",
        "spec.analysis.prometheus.address",
    ),
    BadInput(
        "Prometheus address with a space",
        setting("analysis.prometheus.address", "http://prometheus monitoring:9090"),
        "api",
        "spec.analysis.prometheus.address",
    ),
    BadInput(
        "Prometheus address with a broken IPv6 host",
        setting("analysis.prometheus.address", "http://[::1:9090"),
        "operator",
        "spec.analysis.prometheus.address",
    ),
    BadInput(
        "Prometheus port out of range",
        setting("analysis.prometheus.address", "http://prometheus:99999"),
        "operator",
        "spec.analysis.prometheus.address",
    ),
    BadInput(
        "unknown template variable",
        _query('rate(x{pod="{{pod}}"}[1m])'),
        "operator",
        "spec.analysis.checks[1].query",
        "{{pod}}",
    ),
    BadInput(
        "empty template variable",
        _query('rate(x{pod="{{}}"}[1m])'),
        "operator",
        "spec.analysis.checks[1].query",
        "unknown template variable",
    ),
    BadInput(
        "variable outside any string",
        _query(f"sum(rate({LATENCY}[1m])) / {{{{model}}}}"),
        "operator",
        "spec.analysis.checks[1].query",
        "double-quoted",
    ),
    BadInput(
        "variable in a single-quoted string",
        _query("sum(rate(x{model='{{model}}'}[1m]))"),
        "operator",
        "spec.analysis.checks[1].query",
        "double-quoted",
    ),
    BadInput(
        "variable in a backquoted string",
        _query("sum(rate(x{model=`{{model}}`}[1m]))"),
        "operator",
        "spec.analysis.checks[1].query",
        "double-quoted",
    ),
    BadInput(
        "variable in a comment",
        _query(f"sum(rate({LATENCY}[1m])) # {{{{model}}}}"),
        "operator",
        "spec.analysis.checks[1].query",
        "double-quoted",
    ),
    BadInput(
        "matchLabels key that is no label name",
        setting("analysis.alerts.0.matchLabels", {'x"} or vector(1) #': "v"}),
        "operator",
        "spec.analysis.alerts[0].matchLabels",
        "not a Prometheus label name",
    ),
    BadInput(
        "unknown variable in matchLabels",
        setting("analysis.alerts.0.matchLabels.revision", "{{canary.rev}}"),
        "operator",
        "spec.analysis.alerts[0].matchLabels.revision",
        "{{canary.rev}}",
    ),
    # -- names and unicode --------------------------------------------------------
    BadInput(
        "name one character too long for NAME-REVISION",
        lambda s: s,
        "api",
        "metadata.name",
        "at most 52 characters",
        rollout_name="a" * 53,
    ),
    BadInput(
        "name of 253 characters",
        lambda s: s,
        "api",
        "metadata.name",
        "at most 52 characters",
        rollout_name="a" * 253,
    ),
    BadInput(
        "name with a dot",
        lambda s: s,
        "api",
        "metadata.name",
        "DNS label",
        rollout_name="chat.v2",
    ),
    BadInput(
        "name starting with a digit (no Service may have it)",
        lambda s: s,
        "api",
        "metadata.name",
        "starts with a letter",
        rollout_name="1chat",
    ),
    BadInput(
        "name with an emoji", lambda s: s, "api", "metadata.name", rollout_name="chat-\U0001f680"
    ),
    BadInput(
        "model name with an emoji",
        setting("model.name", "chat-\U0001f680"),
        "api",
        "spec.model.name",
    ),
    BadInput(
        "model name with a right-to-left override",
        setting("model.name", "ch\u202etahc"),
        "api",
        "spec.model.name",
    ),
    BadInput(
        "model name with a zero-width joiner",
        setting("model.name", "chat\u200dv2"),
        "api",
        "spec.model.name",
    ),
    BadInput(
        "model name breaking out of a selector",
        setting("model.name", 'chat"} or vector(1) #'),
        "api",
        "spec.model.name",
    ),
    BadInput(
        "model uri with a NUL", setting("model.uri", "/models/a\x00b"), "api", "spec.model.uri"
    ),
    BadInput(
        "model uri with a right-to-left override",
        setting("model.uri", "pvc://models/\u202e4fg-4tni"),
        "api",
        "spec.model.uri",
    ),
    BadInput(
        "model uri of an unsupported scheme",
        setting("model.uri", "s3://bucket/llama"),
        "operator",
        "spec.model.uri",
        "unsupported scheme",
    ),
    BadInput(
        "model uri naming an invalid claim",
        setting("model.uri", "pvc://Models_1/llama"),
        "operator",
        "spec.model.uri",
        "claim name",
    ),
    BadInput("blank model uri", setting("model.uri", "   "), "operator", "spec.model.uri"),
    BadInput(
        "model uri that looks like a scheme",
        setting("model.uri", "mailto:models@example.com"),
        "operator",
        "spec.model.uri",
    ),
    # -- what the pods, Services and routes would refuse --------------------------
    BadInput(
        "image with a trailing space",
        setting("runtime.image", "vllm/vllm-openai "),
        "api",
        "spec.runtime.image",
    ),
    BadInput(
        "image with a newline",
        setting("runtime.image", "vllm\nrm -rf /"),
        "api",
        "spec.runtime.image",
    ),
    BadInput(
        "environment variable name with =",
        setting("runtime.env", [{"name": "A=B", "value": "1"}]),
        "api",
        "spec.runtime.env[0].name",
    ),
    BadInput(
        "environment variable name with an emoji",
        setting("runtime.env", [{"name": "X\U0001f642", "value": "1"}]),
        "api",
        "spec.runtime.env[0].name",
    ),
    BadInput(
        "nodeSelector value with a space",
        setting("runtime.nodeSelector", {"pool": "a b"}),
        "api",
        "spec.runtime.nodeSelector.pool",
    ),
    BadInput(
        "nodeSelector value of 64 characters",
        setting("runtime.nodeSelector", {"pool": "a" * 64}),
        "api",
        "spec.runtime.nodeSelector.pool",
    ),
    BadInput(
        "nodeSelector key that is no label key",
        setting("runtime.nodeSelector", {"gpu type": "a100"}),
        "api",
        "spec.runtime.nodeSelector",
    ),
    BadInput(
        "nodeSelector key with a 254-character prefix",
        setting("runtime.nodeSelector", {"a" * 254 + "/pool": "a100"}),
        "operator",
        "spec.runtime.nodeSelector",
        "label key",
    ),
    BadInput(
        "toleration without key or operator",
        setting("runtime.tolerations", [{}]),
        "api",
        "spec.runtime.tolerations[0]",
        "operator Exists",
    ),
    BadInput(
        "toleration Exists with a value",
        setting("runtime.tolerations", [{"key": "gpu", "operator": "Exists", "value": "x"}]),
        "api",
        "spec.runtime.tolerations[0].value",
    ),
    BadInput(
        "tolerationSeconds without NoExecute",
        setting("runtime.tolerations", [{"operator": "Exists", "tolerationSeconds": 5}]),
        "api",
        "spec.runtime.tolerations[0].tolerationSeconds",
    ),
    BadInput(
        "half a GPU",
        setting("runtime.resources.limits", {"nvidia.com/gpu": "0.5"}),
        "api",
        "spec.runtime.resources.limits",
        "whole units",
    ),
    BadInput(
        "minus one GPU",
        setting("runtime.resources.limits", {"nvidia.com/gpu": -1}),
        "api",
        "spec.runtime.resources.limits",
    ),
    BadInput(
        "quantity 1.2.3",
        setting("runtime.resources.limits.cpu", "1.2.3"),
        "api",
        "spec.runtime.resources.limits.cpu",
    ),
    BadInput(
        "resource name that is not qualified",
        setting("runtime.resources.limits.gpu", 1),
        "api",
        "spec.runtime.resources.limits",
        "resource names",
    ),
    BadInput(
        "cpu requests over limits",
        setting("runtime.resources", {"limits": {"cpu": "1"}, "requests": {"cpu": "1500m"}}),
        "operator",
        "spec.runtime.resources.requests.cpu",
        "exceeds limits.cpu",
    ),
    BadInput(
        "GPU requested without a limit",
        setting("runtime.resources", {"requests": {"nvidia.com/gpu": 1}}),
        "operator",
        "spec.runtime.resources.requests.nvidia.com/gpu",
        "overcommitted",
    ),
    BadInput(
        "hostname with spaces",
        setting("traffic.gatewayAPI.hostnames", ["Chat Example Com"]),
        "api",
        "spec.traffic.gatewayAPI.hostnames[0]",
    ),
    BadInput(
        "parentRef namespace that is no DNS label",
        setting("traffic.gatewayAPI.parentRefs.0.namespace", "Infra_GW"),
        "api",
        "spec.traffic.gatewayAPI.parentRefs[0].namespace",
    ),
    BadInput(
        "parentRef with an empty kind",
        setting("traffic.gatewayAPI.parentRefs.0.kind", ""),
        "api",
        "spec.traffic.gatewayAPI.parentRefs[0].kind",
    ),
    BadInput(
        "the same Gateway twice",
        setting("traffic.gatewayAPI.parentRefs", [{"name": "gw"}, {"name": "gw"}]),
        "operator",
        "spec.traffic.gatewayAPI.parentRefs[1]",
        "referenced twice",
    ),
    BadInput(
        "router inferencePool without an inference gateway",
        setting("traffic", {"router": "inferencePool"}),
        "api",
        "spec.traffic.inferencePool.parentRefs",
        "at least one",
    ),
    BadInput(
        "an endpoint picker Service without its port",
        setting("traffic", inference_pool_traffic({"endpointPickerRef": {"name": "epp"}})),
        "api",
        "spec.traffic.inferencePool.endpointPickerRef.port",
        "required when kind is Service",
    ),
    BadInput(
        "an endpoint picker failure mode that does not exist",
        setting(
            "traffic",
            inference_pool_traffic(
                {
                    "endpointPickerRef": {
                        "name": "e",
                        "port": {"number": 9002},
                        "failureMode": "Open",
                    }
                }
            ),
        ),
        "api",
        "spec.traffic.inferencePool.endpointPickerRef.failureMode",
    ),
    BadInput(
        "the same inference gateway twice",
        setting(
            "traffic", inference_pool_traffic({"parentRefs": [{"name": "gw"}, {"name": "gw"}]})
        ),
        "operator",
        "spec.traffic.inferencePool.parentRefs[1]",
        "referenced twice",
    ),
    # -- duplicate keys: YAML allows them, strict decoding refuses them ------------
    BadInput(
        "replicas given twice",
        lambda s: s,
        "api",
        "spec.runtime.replicas",
        'key "replicas" already set',
        yaml_edit=duplicating("replicas", "64"),
        http_status=400,
    ),
    BadInput(
        "uri given twice",
        lambda s: s,
        "api",
        "spec.model.uri",
        'key "uri" already set',
        yaml_edit=duplicating("uri", "s3://elsewhere/model"),
        http_status=400,
    ),
]
"""At least 50 cases; names are unique (they are test ids)."""

OPERATOR_CASES = [case for case in CASES if case.outcome == "operator"]
API_CASES = [case for case in CASES if case.outcome == "api"]
