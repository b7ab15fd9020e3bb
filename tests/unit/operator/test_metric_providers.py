"""Metric providers by type: config parsing, the registry, headers, auth and TLS from Secrets."""

from __future__ import annotations

import base64
import logging
import threading
import typing
from pathlib import Path
from typing import Any

import pytest

from modelrollout.analysis import http
from modelrollout.analysis.assessment import check_events
from modelrollout.analysis.prometheus import PrometheusProvider
from modelrollout.analysis.provider import UnconfiguredProvider, UnresolvedReference
from modelrollout.analysis.registry import PROVIDERS, provider_for
from modelrollout.analysis.runner import evaluate
from modelrollout.kube.api import CONFIGMAPS, SECRETS, KubeApiError, Resource
from modelrollout.kube.cache import CachedKubeApi
from modelrollout.kube.references import KubeReferences
from modelrollout.models import InvalidSpecError, parse_spec
from modelrollout.models.spec import (
    Analysis,
    ConfigMapKeyRef,
    MetricProviderSpec,
    PrometheusProviderSpec,
    SecretKeyRef,
)
from tests.unit.operator.builders import ANALYSIS_CONTEXT, CANARY_AT_5, T0, example_spec

pytestmark = pytest.mark.unit

PLANTED = "s3cr3t-planted-value"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
PROVIDER = {
    "type": "prometheus",
    "address": "https://prometheus.example.com:9090",
    "timeout": "3s",
    "auth": {"bearerToken": {"secretKeyRef": {"name": "prometheus", "key": "token"}}},
    "tls": {"ca": {"configMapKeyRef": {"name": "prometheus-ca", "key": "ca.crt"}}},
    "headers": [
        {"name": "X-Scope-OrgID", "value": "tenant-a"},
        {"name": "X-Api-Key", "secretKeyRef": {"name": "prometheus", "key": "api-key"}},
    ],
}


def spec_with(provider: dict[str, Any] | None, prometheus: bool = False) -> dict[str, Any]:
    spec = example_spec()
    if not prometheus:
        del spec["analysis"]["prometheus"]
    if provider is not None:
        spec["analysis"]["provider"] = provider
    return spec


def invalid(spec: dict[str, Any]) -> InvalidSpecError:
    with pytest.raises(InvalidSpecError) as raised:
        parse_spec(spec)
    return raised.value


class FakeReferences:
    """Secret and ConfigMap keys from dicts, as KubeReferences reads them from the cluster."""

    def __init__(self, secrets: dict[tuple[str, str], str], config_maps: Any = None) -> None:
        self.secrets = secrets
        self.config_maps: dict[tuple[str, str], str] = config_maps or {}

    def secret(self, ref: SecretKeyRef, field_path: str) -> str:
        if (ref.name, ref.key) not in self.secrets:
            raise UnresolvedReference(field_path, f"Secret ml/{ref.name} not found")
        return self.secrets[ref.name, ref.key]

    def config_map(self, ref: ConfigMapKeyRef, field_path: str) -> str:
        if (ref.name, ref.key) not in self.config_maps:
            raise UnresolvedReference(field_path, f"ConfigMap ml/{ref.name} not found")
        return self.config_maps[ref.name, ref.key]


REFERENCES = FakeReferences(
    {("prometheus", "token"): f"{PLANTED}\n", ("prometheus", "api-key"): "key-1"},
    {("prometheus-ca", "ca.crt"): CA_PEM},
)
# The operator's bound on requests in flight, shared by its providers.
SLOTS = threading.BoundedSemaphore(8)


# --- config parsing -------------------------------------------------------------------


def test_the_provider_form_is_parsed_with_auth_tls_and_headers() -> None:
    provider = parse_spec(spec_with(PROVIDER)).analysis.metric_provider
    assert provider is not None and provider.type == "prometheus"
    assert provider.address == "https://prometheus.example.com:9090"
    assert provider.auth is not None and provider.auth.bearer_token is not None
    assert provider.auth.bearer_token.secret_key_ref == SecretKeyRef(name="prometheus", key="token")
    assert [h.name for h in provider.headers] == ["X-Scope-OrgID", "X-Api-Key"]
    assert provider.tls is not None and not provider.tls.insecure_skip_verify


def test_the_older_prometheus_form_maps_to_a_prometheus_provider() -> None:
    analysis = parse_spec(example_spec()).analysis
    assert analysis.provider is None
    assert analysis.metric_provider == PrometheusProviderSpec(
        type="prometheus", address="http://prometheus.monitoring:9090", timeout="5s"
    )
    assert analysis.provider_path == "spec.analysis.prometheus"


def test_both_forms_at_once_are_refused_naming_both_fields() -> None:
    error = invalid(spec_with(PROVIDER, prometheus=True))
    assert error.field_path == "spec.analysis.provider"
    assert "provider or prometheus" in error.message and "not both" in error.message


def test_checks_without_any_provider_are_refused() -> None:
    error = invalid(spec_with(None))
    assert error.field_path == "spec.analysis.prometheus"
    assert "analysis.provider" in error.message


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"type": "datadog"}, "spec.analysis.provider.type", "prometheus"),
        ({"timeout": "0s"}, "spec.analysis.provider.timeout", "above 0"),
        ({"address": "ftp://x"}, "spec.analysis.provider.address", "pattern"),
        (
            {
                "auth": {
                    "bearerToken": {"secretKeyRef": {"name": "a", "key": "b"}},
                    "basicAuth": {
                        "username": {"value": "u"},
                        "password": {"secretKeyRef": {"name": "a", "key": "p"}},
                    },
                }
            },
            "spec.analysis.provider.auth",
            "exactly one of bearerToken, basicAuth",
        ),
        ({"auth": {}}, "spec.analysis.provider.auth", "exactly one of"),
        (
            {
                "auth": {
                    "basicAuth": {
                        "username": {},
                        "password": {"secretKeyRef": {"name": "a", "key": "p"}},
                    }
                }
            },
            "spec.analysis.provider.auth.basicAuth.username",
            "exactly one of value, secretKeyRef",
        ),
        (
            {
                "auth": {
                    "bearerToken": {
                        "secretKeyRef": {"name": "a", "key": "t"},
                        "value": "an inline token is never accepted",
                    }
                }
            },
            "spec.analysis.provider.auth.bearerToken.value",
            "unknown field",
        ),
        (
            {"tls": {"ca": {}}},
            "spec.analysis.provider.tls.ca",
            "exactly one of secretKeyRef, configMapKeyRef",
        ),
        (
            {"headers": [{"name": "X-Scope-OrgID"}]},
            "spec.analysis.provider.headers[0]",
            "exactly one of value, secretKeyRef",
        ),
        (
            {"headers": [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}]},
            "spec.analysis.provider.headers[1].name",
            "duplicate",
        ),
        (
            {"headers": [{"name": "Bad Header", "value": "1"}]},
            "spec.analysis.provider.headers[0].name",
            "pattern",
        ),
        (
            {"headers": [{"name": "authorization", "value": "Bearer x"}]},
            "spec.analysis.provider.headers[0].name",
            "set by auth",
        ),
        (
            {"auth": {"bearerToken": {"secretKeyRef": {"name": "Not_A_Name", "key": "t"}}}},
            "spec.analysis.provider.auth.bearerToken.secretKeyRef.name",
            "pattern",
        ),
    ],
)
def test_bad_provider_configs_are_refused_naming_the_field(
    change: dict[str, Any], path: str, message: str
) -> None:
    error = invalid(spec_with({**PROVIDER, **change}))
    assert error.field_path == path
    assert message in error.message


def test_an_authorization_header_without_auth_is_accepted() -> None:
    provider = {"type": "prometheus", "address": "http://p:9090"}
    headers = [{"name": "Authorization", "secretKeyRef": {"name": "p", "key": "header"}}]
    parse_spec(spec_with({**provider, "headers": headers}))


# --- the registry ---------------------------------------------------------------------


def test_each_registered_type_is_its_config_models_type() -> None:
    for kind, provider_class in PROVIDERS.items():
        (declared,) = typing.get_args(provider_class.config_model.model_fields["type"].annotation)
        assert declared == kind


def test_the_spec_accepts_the_config_model_of_every_registered_provider() -> None:
    accepted = set(typing.get_args(MetricProviderSpec)) or {MetricProviderSpec}
    assert {provider.config_model for provider in PROVIDERS.values()} == accepted
    assert Analysis.model_fields["provider"].annotation == MetricProviderSpec | None


def test_the_core_picks_the_provider_by_type() -> None:
    old = provider_for(parse_spec(example_spec()).analysis, REFERENCES, SLOTS)
    new = provider_for(parse_spec(spec_with(PROVIDER)).analysis, REFERENCES, SLOTS)
    assert isinstance(old, PrometheusProvider) and isinstance(new, PrometheusProvider)
    without_checks = example_spec()
    without_checks["analysis"] = {}
    unconfigured = provider_for(parse_spec(without_checks).analysis, REFERENCES, SLOTS)
    assert isinstance(unconfigured, UnconfiguredProvider)
    assert not unconfigured.is_online() and "spec.analysis.provider" in (
        unconfigured.offline_reason()
    )


# --- headers, auth and TLS built from references ---------------------------------------


def settings(provider: dict[str, Any], references: FakeReferences) -> http.HttpSettings:
    config = PrometheusProviderSpec.model_validate(provider)
    return http.http_settings(
        config.auth, config.tls, config.headers, references, "spec.analysis.provider"
    )


@pytest.fixture(autouse=True)
def ca_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "ca"
    monkeypatch.setattr(http, "CA_DIRECTORY", directory)
    return directory


def test_bearer_token_and_headers_are_built_from_secrets_and_values(ca_directory: Path) -> None:
    built = settings(PROVIDER, REFERENCES)
    assert built.headers == {
        "X-Scope-OrgID": "tenant-a",
        "X-Api-Key": "key-1",
        # The Secret's trailing newline (kubectl create secret --from-file) is trimmed.
        "Authorization": f"Bearer {PLANTED}",
    }
    assert built.basic_auth is None
    assert isinstance(built.verify, str) and Path(built.verify).read_text() == CA_PEM
    assert Path(built.verify).parent == ca_directory
    # The same CA is one file, whatever the number of ticks that read it.
    assert settings(PROVIDER, REFERENCES).verify == built.verify
    assert len(list(ca_directory.iterdir())) == 1


def test_basic_auth_takes_a_plain_or_secret_username_and_a_secret_password() -> None:
    password = {"secretKeyRef": {"name": "prometheus", "key": "password"}}
    references = FakeReferences(
        {("prometheus", "password"): "pw\n", ("prometheus", "user"): "reader"}
    )
    plain = {"username": {"value": "alice"}, "password": password}
    built = settings(
        {**PROVIDER, "auth": {"basicAuth": plain}, "headers": [], "tls": None}, references
    )
    assert built.basic_auth == ("alice", "pw")
    assert "Authorization" not in built.headers and built.verify is True
    from_secret = {
        "username": {"secretKeyRef": {"name": "prometheus", "key": "user"}},
        "password": password,
    }
    built = settings(
        {**PROVIDER, "auth": {"basicAuth": from_secret}, "headers": [], "tls": None}, references
    )
    assert built.basic_auth == ("reader", "pw")


def test_insecure_skip_verify_turns_verification_off() -> None:
    built = settings({**PROVIDER, "tls": {"insecureSkipVerify": True}}, REFERENCES)
    assert built.verify is False


@pytest.mark.parametrize(
    ("references", "field"),
    [
        (
            FakeReferences({("prometheus", "api-key"): "k"}, REFERENCES.config_maps),
            "spec.analysis.provider.auth.bearerToken.secretKeyRef",
        ),
        (
            FakeReferences({("prometheus", "token"): "t"}, REFERENCES.config_maps),
            "spec.analysis.provider.headers[1].secretKeyRef",
        ),
        (
            FakeReferences(REFERENCES.secrets, {}),
            "spec.analysis.provider.tls.ca.configMapKeyRef",
        ),
        (
            FakeReferences(REFERENCES.secrets, {("prometheus-ca", "ca.crt"): "not a cert"}),
            "spec.analysis.provider.tls.ca.configMapKeyRef",
        ),
    ],
)
def test_an_unreadable_reference_names_its_field(references: FakeReferences, field: str) -> None:
    with pytest.raises(UnresolvedReference) as raised:
        settings(PROVIDER, references)
    assert raised.value.field_path == field
    assert str(raised.value).startswith(f"{field}: ")


def test_a_secret_value_that_would_break_a_header_is_refused_without_showing_it() -> None:
    references = FakeReferences(
        {("prometheus", "token"): f"{PLANTED}\r\nX-Injected: 1", ("prometheus", "api-key"): "k"},
        REFERENCES.config_maps,
    )
    with pytest.raises(UnresolvedReference) as raised:
        settings(PROVIDER, references)
    assert raised.value.field_path == "spec.analysis.provider.auth.bearerToken.secretKeyRef"
    assert PLANTED not in str(raised.value)


# --- reading references from the API ---------------------------------------------------


class FakeApi:
    """get() of KubeApi on a dict of objects; an entry that is an exception is raised."""

    def __init__(self, objects: dict[tuple[Resource, str], Any]) -> None:
        self.objects = objects
        self.reads: list[tuple[Resource, str, str]] = []

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append((resource, namespace, name))
        found = self.objects.get((resource, name))
        if isinstance(found, Exception):
            raise found
        return typing.cast("dict[str, Any] | None", found)


def kube_references(objects: dict[tuple[Resource, str], Any]) -> KubeReferences:
    return KubeReferences(typing.cast("Any", FakeApi(objects)), "ml")


def test_secret_keys_are_decoded_and_configmap_keys_read_by_name() -> None:
    token = base64.b64encode(PLANTED.encode()).decode()
    references = kube_references(
        {
            (SECRETS, "prometheus"): {"data": {"token": token}},
            (CONFIGMAPS, "prometheus-ca"): {"data": {"ca.crt": CA_PEM}},
        }
    )
    assert references.secret(SecretKeyRef(name="prometheus", key="token"), "f") == PLANTED
    assert references.config_map(ConfigMapKeyRef(name="prometheus-ca", key="ca.crt"), "f") == CA_PEM


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        ({}, "Secret ml/prometheus not found"),
        ({(SECRETS, "prometheus"): {"data": {"other": "eA=="}}}, "has no key 'token'"),
        ({(SECRETS, "prometheus"): {"data": {"token": "//8="}}}, "is not text"),
        (
            {(SECRETS, "prometheus"): KubeApiError(403, "Forbidden", "secrets is forbidden")},
            "may not read Secret ml/prometheus (403)",
        ),
        ({(SECRETS, "prometheus"): ConnectionError("refused")}, "failed: ConnectionError"),
    ],
)
def test_an_unreadable_secret_is_an_unresolved_reference(
    objects: dict[tuple[Resource, str], Any], message: str
) -> None:
    field = "spec.analysis.provider.auth.bearerToken.secretKeyRef"
    with pytest.raises(UnresolvedReference) as raised:
        kube_references(objects).secret(SecretKeyRef(name="prometheus", key="token"), field)
    assert raised.value.field_path == field and message in str(raised.value)


def test_the_cache_keeps_no_informer_for_secrets_or_configmaps() -> None:
    """A Secret is read with one GET by name: no list or watch the chart does not grant."""
    api = CachedKubeApi(object())
    assert api.informer(SECRETS, "ml") is None and api.informer(CONFIGMAPS, "ml") is None


# --- a rollout's analysis with a reference that cannot be read --------------------------


def test_a_missing_secret_makes_the_analysis_unavailable_naming_the_field_not_the_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    spec = parse_spec(spec_with(PROVIDER))
    references = FakeReferences({("prometheus", "token"): PLANTED}, REFERENCES.config_maps)
    checks, verdict = evaluate(
        spec, CANARY_AT_5, provider_for(spec.analysis, references, SLOTS), ANALYSIS_CONTEXT, T0
    )
    assert verdict.kind == "unavailable"
    assert {check.state for check in checks} == {"Unavailable"}
    for check in checks:
        assert check.message.startswith("spec.analysis.provider.headers[1].secretKeyRef: ")
        assert "not found" in check.message
    everything = [
        *(check.model_dump_json() for check in checks),
        *(" ".join(event) for event in check_events((), checks)),
        caplog.text,
    ]
    assert not [text for text in everything if PLANTED in text]


def test_a_ca_that_cannot_be_written_is_an_unresolved_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setattr(http, "CA_DIRECTORY", blocked / "ca")
    with pytest.raises(UnresolvedReference) as raised:
        settings(PROVIDER, REFERENCES)
    assert raised.value.field_path == "spec.analysis.provider.tls.ca.configMapKeyRef"
    assert "cannot be written" in str(raised.value)
