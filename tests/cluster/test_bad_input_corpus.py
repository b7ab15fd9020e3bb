"""The bad-input corpus against the real API server and the real Prometheus.

Every "api" case of tests/support/bad_inputs.py is refused by the
kube-apiserver with the CRD from crds/ installed, naming the field; every
"operator" case is stored by it (a server-side dry run), since only the
operator can judge it (tests/e2e/test_bad_input_operator.py shows it does).
Hostile label values reach Prometheus as label values of one selector:
Prometheus' own parser (`/api/v1/format_query`) reads back exactly the
matchers the operator meant, and the query matches nothing.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import pytest
import requests
import urllib3
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from modelrollout.analysis.prometheus import PrometheusProvider, alert_query
from modelrollout.analysis.templates import render
from modelrollout.kube.labels import GROUP, PLURAL, VERSION
from modelrollout.models import Alert, PrometheusSource
from modelrollout_dev.prometheus import PrometheusHandle
from tests.support.bad_inputs import API_CASES, HOSTILE_LABEL_VALUES, OPERATOR_CASES, BadInput
from tests.unit.operator.builders import example_spec

pytestmark = pytest.mark.cluster


def manifest(name: str, spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelRollout",
        "metadata": {"name": name},
        "spec": spec,
    }


def create(
    api_client: client.ApiClient, namespace: str, case: BadInput, dry_run: bool
) -> dict[str, Any]:
    """Create the case's rollout the way `kubectl apply` does: strict field validation."""
    body = manifest(case.rollout_name, case.spec())
    if case.yaml_edit is None:
        created: dict[str, Any] = client.CustomObjectsApi(
            api_client
        ).create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            body,
            field_validation="Strict",
            dry_run="All" if dry_run else None,
        )
        return created
    text = case.yaml_edit(yaml.safe_dump(body, sort_keys=False))
    query = [("fieldValidation", "Strict")] + ([("dryRun", "All")] if dry_run else [])
    posted: dict[str, Any] = api_client.call_api(
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
        "POST",
        query_params=query,
        header_params={"Content-Type": "application/yaml", "Accept": "application/json"},
        body=text,
        auth_settings=["BearerToken"],
        response_type="object",
        _return_http_data_only=True,
    )
    return posted


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in API_CASES])
def test_api_server_refuses_naming_the_field(
    kube_api_client: client.ApiClient, namespace: str, case: BadInput
) -> None:
    try:
        create(kube_api_client, namespace, case, dry_run=False)
    except ApiException as error:
        message = (
            json.loads(error.body)["message"] if error.body.startswith("{") else str(error.body)
        )
        assert case.says in message, message
        if case.http_status is None:
            assert error.status in (400, 422), error.body
            assert case.field in message, message
        else:
            assert error.status == case.http_status, error.body
    except urllib3.exceptions.HTTPError:
        # The API server stops reading a body over its limit: it answers 413, or
        # closes the connection while the client is still sending. Stored: nothing.
        assert case.http_status == 413
    else:
        pytest.fail(f"the API server stored {case.name!r}")
    objects = client.CustomObjectsApi(kube_api_client)
    assert not objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in OPERATOR_CASES])
def test_api_server_stores_what_only_the_operator_can_judge(
    kube_api_client: client.ApiClient, namespace: str, case: BadInput
) -> None:
    created = create(kube_api_client, namespace, case, dry_run=True)
    assert created["spec"] == case.spec()


@pytest.mark.parametrize("name", ["a" * 52, "c", "chat-v2"])
def test_valid_rollouts_are_stored_as_written(
    kube_api_client: client.ApiClient, namespace: str, name: str
) -> None:
    # The corpus' base is valid, so each case is refused for its own change only;
    # 52 characters + "-" + a 10-character revision is a DNS label of 63.
    created = client.CustomObjectsApi(kube_api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest(name, example_spec()), dry_run="All"
    )
    assert (created["metadata"]["name"], created["spec"]) == (name, example_spec())


_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def _unquote(body: str) -> str:
    """A PromQL (Go) double-quoted string's value."""

    def one(match: re.Match[str]) -> str:
        escape = match.group(1)
        if escape[0] in "uUx":
            return chr(int(escape[1:], 16))
        return _SIMPLE_ESCAPES.get(escape, escape)

    return _ESCAPE.sub(one, body)


def parsed_by_prometheus(prometheus: PrometheusHandle, promql: str) -> tuple[str, list[str]]:
    """Prometheus' own reading of `promql`: its skeleton (strings as "") and the string values."""
    response = requests.get(
        f"{prometheus.url}/api/v1/format_query", params={"query": promql}, timeout=10
    )
    body = response.json()
    assert body["status"] == "success", (promql, body)
    formatted: str = body["data"]
    # format_query may break a long query over lines; outside strings that is only layout.
    skeleton = re.sub(r"\s+", "", _STRING.sub('""', formatted))
    return skeleton, [_unquote(m.group(1)) for m in _STRING.finditer(formatted)]


CONTEXT = {
    "namespace": "ml",
    "rollout": "chat",
    "canary.revision": "bbbb000002",
    "stable.revision": "aaaa000001",
}


@pytest.mark.parametrize("hostile", HOSTILE_LABEL_VALUES)
def test_hostile_label_values_reach_prometheus_as_values_of_one_selector(
    prometheus: PrometheusHandle, hostile: str
) -> None:
    provider = PrometheusProvider(
        PrometheusSource(address=prometheus.url).as_provider(), None, threading.Semaphore()
    )
    # An alert's matchLabels are label values whole, literal text included.
    alert = Alert(
        alertname=hostile,
        match_labels={"namespace": hostile, "revision": "{{canary.revision}}-" + hostile},
    )
    context = {**CONTEXT, "model": hostile}
    promql = alert_query(alert, context)
    skeleton, values = parsed_by_prometheus(prometheus, promql)
    assert skeleton == 'count(ALERTS{alertname="",alertstate="",namespace="",revision=""})'
    assert values == [hostile, "firing", hostile, f"bbbb000002-{hostile}"]
    assert provider.query(promql).empty, "the selector matched something: it was not one selector"

    # A variable in a check's query is escaped inside the string it stands in.
    promql = render('sum(up{job="x",model="{{model}}",namespace="{{namespace}}"})', context)
    skeleton, values = parsed_by_prometheus(prometheus, promql)
    assert skeleton == 'sum(up{job="",model="",namespace=""})'
    assert values == ["x", hostile, "ml"]
    assert provider.query(promql).empty
