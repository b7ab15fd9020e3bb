"""The API server itself refuses bad ModelRollouts, with a message naming the field.

Runs against the real kube-apiserver of the local cluster (or any
KUBECONFIG) with the CRD from crds/ installed by the `kube_api_client`
fixture. What the API server cannot judge is the operator's job (condition
InvalidSpec, see tests/unit/operator/test_spec.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelrollout.models import ModelRolloutStatus, Weights
from modelrollout.models.status import ExperimentCheck, ExperimentGroup, ExperimentReport
from tests.unit.operator.builders import example_spec

pytestmark = pytest.mark.cluster

GROUP, VERSION, PLURAL = "modelrollout.dev", "v1alpha1", "modelrollouts"
SHADOW = {"mirrorPercent": 10, "duration": "10m", "then": "promote"}
TOKEN = {"secretKeyRef": {"name": "prometheus", "key": "token"}}
PROVIDER = {
    "type": "prometheus",
    "address": "https://prometheus.example.com",
    "auth": {"bearerToken": TOKEN},
    "tls": {"ca": {"configMapKeyRef": {"name": "prometheus-ca", "key": "ca.crt"}}},
    "headers": [{"name": "X-Scope-OrgID", "value": "tenant-a"}],
}


def manifest(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRollout",
        "metadata": {"name": f"chat-{uuid.uuid4().hex[:6]}"},
        "spec": spec,
    }


def create(api_client: client.ApiClient, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest(spec), field_validation="Strict"
    )
    return created


def refusal(api_client: client.ApiClient, namespace: str, spec: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as raised:
        create(api_client, namespace, spec)
    assert raised.value.status == 422 or raised.value.status == 400, raised.value.body
    message: str = json.loads(raised.value.body)["message"]
    return message


def _path(spec: dict[str, Any], path: str) -> tuple[Any, str]:
    *parents, last = path.split(".")
    node: Any = spec
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    return node, last


def setting(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        node, last = _path(spec, path)
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def removing(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(spec: dict[str, Any]) -> None:
        node, last = _path(spec, path)
        del node[last]

    return mutate


def provider(**change: Any) -> Callable[[dict[str, Any]], None]:
    """analysis.provider (PROVIDER with `change`) in place of analysis.prometheus."""

    def mutate(spec: dict[str, Any]) -> None:
        del spec["analysis"]["prometheus"]
        spec["analysis"]["provider"] = {**PROVIDER, **change}

    return mutate


def gateway_without_parents(spec: dict[str, Any]) -> None:
    spec["traffic"] = {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": []}}


BETA = {"headers": [{"name": "x-tenant", "value": "beta"}]}


def experiment(
    segment: dict[str, Any], router: str = "gatewayAPI"
) -> Callable[[dict[str, Any]], None]:
    """An experiment step first, behind `router` (the example's gatewayAPI settings kept)."""

    def mutate(spec: dict[str, Any]) -> None:
        spec["traffic"]["router"] = router
        spec["strategy"]["canary"]["steps"][0] = {
            "experiment": {"duration": "10m", "segment": segment}
        }

    return mutate


# (mutation of the valid example, texts the API server's message must contain)
ENV_REFERENCES = [
    {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}},
    {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k", "optional": True}}},
    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
]
ENV_FROM = [{"prefix": "HF_", "secretRef": {"name": "hf"}}, {"configMapRef": {"name": "c"}}]
LONG_REF = {"secretKeyRef": {"name": "s" * 253, "key": "k" * 253}}
# Names and values 64770 characters, under the bound; two references of 507 pass it.
ENV_OVER_BOUND_BY_REFERENCES = [
    {"name": "A", "value": "x" * 32768},
    {"name": "B", "value": "x" * 32000},
    {"name": "C", "valueFrom": LONG_REF},
    {"name": "D", "valueFrom": LONG_REF},
]

INVALID: list[tuple[str, Callable[[dict[str, Any]], None], list[str]]] = [
    (
        "env value and valueFrom both",
        setting("runtime.env", [{"name": "A", "value": "v", **ENV_REFERENCES[0]}]),
        ["spec.runtime.env[0]", "value and valueFrom are exclusive"],
    ),
    (
        "env valueFrom with two sources",
        setting(
            "runtime.env",
            [
                {
                    "name": "A",
                    "valueFrom": {
                        **ENV_REFERENCES[0]["valueFrom"],
                        **ENV_REFERENCES[2]["valueFrom"],
                    },
                }
            ],
        ),
        ["spec.runtime.env[0].valueFrom", "exactly one of secretKeyRef, configMapKeyRef, fieldRef"],
    ),
    (
        "env secretKeyRef to an invalid name",
        setting(
            "runtime.env",
            [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "Hf", "key": "t"}}}],
        ),
        ["spec.runtime.env[0].valueFrom.secretKeyRef.name"],
    ),
    (
        "env over the size bound by its references",
        setting("runtime.env", ENV_OVER_BOUND_BY_REFERENCES),
        ["spec.runtime.env", "names, values and references of at most 65536 characters"],
    ),
    (
        "envFrom with both a Secret and a ConfigMap",
        setting("runtime.envFrom", [{"secretRef": {"name": "a"}, "configMapRef": {"name": "b"}}]),
        ["spec.runtime.envFrom[0]", "exactly one of secretRef, configMapRef"],
    ),
    ("no model uri", removing("model.uri"), ["spec.model.uri", "Required"]),
    ("unknown engine", setting("runtime.engine", "tgi"), ["spec.runtime.engine", "vllm"]),
    ("zero replicas", setting("runtime.replicas", 0), ["spec.runtime.replicas"]),
    ("too many replicas", setting("runtime.replicas", 1001), ["spec.runtime.replicas"]),
    (
        "weight over 100",
        setting("strategy.canary.steps.0.setWeight", 101),
        ["spec.strategy.canary.steps[0].setWeight"],
    ),
    (
        "negative weight",
        setting("strategy.canary.steps.2.setWeight", -5),
        ["spec.strategy.canary.steps[2].setWeight"],
    ),
    ("no steps", setting("strategy.canary.steps", []), ["spec.strategy.canary.steps"]),
    (
        "two kinds in one step",
        setting("strategy.canary.steps.1", {"setWeight": 10, "pause": {}}),
        ["spec.strategy.canary.steps[1]", "exactly one of setWeight, pause, analysis"],
    ),
    (
        "empty step",
        setting("strategy.canary.steps.1", {}),
        ["spec.strategy.canary.steps[1]", "exactly one of setWeight, pause, analysis"],
    ),
    (
        "two strategies",
        setting("strategy.blueGreen", {}),
        ["spec.strategy", "exactly one of canary, blueGreen, shadow"],
    ),
    (
        "shadow on the service router",
        setting("strategy", {"shadow": SHADOW}),
        ["spec.strategy.shadow", "gatewayAPI"],
    ),
    (
        "session affinity on the service router",
        setting("traffic.sessionAffinity", {}),
        ["spec.traffic.sessionAffinity", "session affinity: gatewayAPI"],
    ),
    (
        "session affinity with 32 buckets",
        setting("traffic.sessionAffinity", {"buckets": 32}),
        ["spec.traffic.sessionAffinity.buckets", "16", "256"],
    ),
    (
        "an experiment on the service router",
        experiment(BETA, router="service"),
        ["spec.strategy.canary.steps", "request matching: gatewayAPI"],
    ),
    (
        "an experiment segment without a condition",
        experiment({}),
        ["spec.strategy.canary.steps[0].experiment.segment", "at least one of headers"],
    ),
    (
        "an experiment cookie value with a semicolon",
        experiment({"cookie": {"name": "ab", "value": "b;c"}}),
        ["spec.strategy.canary.steps[0].experiment.segment.cookie.value"],
    ),
    (
        "a step with an experiment and a weight",
        setting(
            "strategy.canary.steps.0",
            {"setWeight": 5, "experiment": {"duration": "1m", "segment": BETA}},
        ),
        ["exactly one of setWeight, pause, analysis, evaluation, experiment"],
    ),
    (
        "gatewayAPI without parentRefs",
        gateway_without_parents,
        ["spec.traffic.gatewayAPI.parentRefs", "at least one Gateway"],
    ),
    (
        "breachWhen without an operator",
        setting("analysis.checks.0.breachWhen", "0.01"),
        ["spec.analysis.checks[0].breachWhen"],
    ),
    (
        "breachWhen with words",
        setting("analysis.checks.1.breachWhen", "> fast"),
        ["spec.analysis.checks[1].breachWhen"],
    ),
    (
        "duration in words",
        setting("progressDeadline", "twenty minutes"),
        ["spec.progressDeadline"],
    ),
    (
        "pause duration with a space",
        setting("strategy.canary.steps.1.pause.duration", "5 m"),
        ["spec.strategy.canary.steps[1].pause.duration"],
    ),
    (
        "query and builtin",
        setting("analysis.checks.0.query", "up"),
        ["spec.analysis.checks[0]", "exactly one of query or builtin"],
    ),
    (
        "neither query nor builtin",
        removing("analysis.checks.1.query"),
        ["spec.analysis.checks[1]", "exactly one of query or builtin"],
    ),
    (
        "unknown builtin",
        setting("analysis.checks.0.builtin", "gpuTemperature"),
        ["spec.analysis.checks[0].builtin", "errorRate"],
    ),
    (
        "duplicate check names",
        setting("analysis.checks.1.name", "error-rate"),
        ["spec.analysis.checks[1]", "Duplicate value"],
    ),
    (
        "compareTo on a query",
        setting("analysis.checks.1.compareTo", "stable"),
        ["spec.analysis.checks[1].compareTo", "builtin checks only"],
    ),
    (
        "unknown action",
        setting("analysis.checks.0.action", "ignore"),
        ["spec.analysis.checks[0].action", "rollback"],
    ),
    (
        "checks without prometheus",
        removing("analysis.prometheus"),
        ["spec.analysis.prometheus", "required when there are checks or alerts"],
    ),
    (
        "minStableReplicas over replicas",
        setting("runtime.minStableReplicas", 5),
        ["spec.runtime.minStableReplicas", "must not exceed"],
    ),
    ("unknown field", setting("runtime.gpus", 2), ["spec.runtime.gpus", "unknown field"]),
    (
        "provider and prometheus both",
        setting("analysis.provider", PROVIDER),
        ["spec.analysis.provider", "analysis.provider or analysis.prometheus", "not both"],
    ),
    (
        "bearer token and basic auth both",
        provider(
            auth={
                "bearerToken": TOKEN,
                "basicAuth": {"username": {"value": "u"}, "password": TOKEN},
            }
        ),
        ["spec.analysis.provider.auth", "exactly one of bearerToken or basicAuth"],
    ),
    (
        "an inline bearer token",
        provider(auth={"bearerToken": {"value": "inline"}}),
        ["spec.analysis.provider.auth.bearerToken"],
    ),
    (
        "header without a value",
        provider(headers=[{"name": "X-Scope-OrgID"}]),
        ["spec.analysis.provider.headers[0]", "exactly one of value or secretKeyRef"],
    ),
    (
        "header twice",
        provider(headers=[{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}]),
        ["spec.analysis.provider.headers", "unique"],
    ),
    (
        "Authorization header beside auth",
        provider(headers=[{"name": "Authorization", "value": "Bearer x"}]),
        ["spec.analysis.provider.headers", "set by auth"],
    ),
    (
        "CA from both a Secret and a ConfigMap",
        provider(
            tls={
                "ca": {
                    "secretKeyRef": TOKEN["secretKeyRef"],
                    "configMapKeyRef": TOKEN["secretKeyRef"],
                }
            }
        ),
        ["spec.analysis.provider.tls.ca", "exactly one of secretKeyRef or configMapKeyRef"],
    ),
    (
        "unknown provider type",
        provider(type="datadog"),
        ["spec.analysis.provider.type", "prometheus"],
    ),
    (
        "check name too long",
        setting("analysis.checks.0.name", "x" * 64),
        ["spec.analysis.checks[0].name"],
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [pytest.param(m, e, id=name) for name, m, e in INVALID]
)
def test_invalid_rollout_is_refused_naming_the_field(
    kube_api_client: client.ApiClient,
    namespace: str,
    mutate: Callable[[dict[str, Any]], None],
    expected: list[str],
) -> None:
    spec = example_spec()
    mutate(spec)
    message = refusal(kube_api_client, namespace, spec)
    for text in expected:
        assert text in message, message


def test_valid_rollout_is_accepted_and_keeps_what_the_user_wrote(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    created = create(kube_api_client, namespace, example_spec())
    # No defaults are written into spec: GitOps tools see exactly what they applied.
    assert created["spec"] == example_spec()


def test_the_provider_form_is_accepted_as_written(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    spec = example_spec()
    provider()(spec)
    assert create(kube_api_client, namespace, spec)["spec"] == spec


def test_env_references_are_accepted_as_written(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    spec = example_spec()
    spec["runtime"]["env"] = ENV_REFERENCES
    spec["runtime"]["envFrom"] = ENV_FROM
    assert create(kube_api_client, namespace, spec)["spec"] == spec


def test_operator_status_is_accepted_and_shown_in_columns(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    created = create(kube_api_client, namespace, example_spec())
    name = created["metadata"]["name"]
    status = ModelRolloutStatus(
        phase="Progressing",
        stable_revision="aaaa000001",
        canary_revision="bbbb000002",
        current_step=2,
        weights=Weights(stable=75, canary=25),
    ).with_condition(
        "Progressing", "True", "StepStarted", "step 3/5", datetime.now(UTC).replace(microsecond=0)
    )
    objects = client.CustomObjectsApi(kube_api_client)
    objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status.to_patch()}
    )
    stored = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert ModelRolloutStatus.model_validate(stored["status"]) == status

    response = kube_api_client.call_api(
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}",
        "GET",
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        auth_settings=["BearerToken"],
        response_type="object",
        _return_http_data_only=True,
    )
    columns = [c["name"] for c in response["columnDefinitions"]]
    assert columns == ["Name", "Phase", "Stable", "Canary", "Weight", "Step", "Age"]
    cells = response["rows"][0]["cells"]
    assert cells[1:6] == ["Progressing", "aaaa000001", "bbbb000002", 25, 2]


def test_an_experiment_and_its_report_are_accepted_as_written(
    kube_api_client: client.ApiClient, namespace: str
) -> None:
    spec = example_spec()
    experiment({**BETA, "cookie": {"name": "ab", "value": "b"},
                "hashRange": {"header": "x-user-hash", "from": 0, "to": 3}})(spec)  # fmt: skip
    created = create(kube_api_client, namespace, spec)
    assert created["spec"] == spec
    report = ExperimentReport(
        revision="bbbb000002",
        step=0,
        window_seconds=600,
        measured_at=datetime.now(UTC).replace(microsecond=0),
        groups=(
            ExperimentGroup(name="A", revision="aaaa000001", requests=900, error_rate=0.0),
            ExperimentGroup(name="B", revision="bbbb000002", requests=300, error_rate=0.2),
        ),
        error_rate_difference=0.2,
        checks=(ExperimentCheck(name="error-rate", value=0.2, threshold="> 0.01", breached=True),),
        decision="Rollback",
        reason="B breaches error-rate 0.2 (breach when > 0.01)",
    )
    status = ModelRolloutStatus(phase="RolledBack", stable_revision="aaaa000001", experiment=report)
    objects = client.CustomObjectsApi(kube_api_client)
    name = created["metadata"]["name"]
    objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status.to_patch()}
    )
    stored = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert ModelRolloutStatus.model_validate(stored["status"]).experiment == report


def test_short_name_mro_is_served(kube_api_client: client.ApiClient) -> None:
    resources = client.CustomObjectsApi(kube_api_client).get_api_resources(GROUP, VERSION)
    by_name = {r.name: r for r in resources.resources}
    assert by_name[PLURAL].short_names == ["mro"]
    assert "modelrollouts/status" in by_name
