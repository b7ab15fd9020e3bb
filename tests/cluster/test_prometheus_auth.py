"""A metric provider behind auth, configured from real Secrets and ConfigMaps.

A second Prometheus (Debian's binary, as the cluster's) is started with a
`--web.config.file` that serves TLS with a CA this test makes (openssl) and
requires basic auth; it scrapes a real gauge. The provider, built from a
rollout spec whose credentials and CA live in the real API server, reads
the gauge; a wrong password, an unknown CA or a missing Secret makes it
unavailable with a message naming the cause, and never the secret value.
Prometheus has no bearer auth of its own: that path runs against a small
HTTP server that checks the Authorization and tenant headers.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from kubernetes import client

from modelrollout.analysis.assessment import check_events
from modelrollout.analysis.provider import MetricProvider
from modelrollout.analysis.registry import provider_for
from modelrollout.analysis.runner import evaluate
from modelrollout.kube.cache import CachedKubeApi
from modelrollout.kube.references import KubeReferences
from modelrollout.models import parse_spec
from modelrollout_dev.prometheus import prometheus_binary
from tests.cluster.test_dashboard import STEPS, write_status
from tests.conftest import ClusterUnderTest
from tests.support.dashboard import Dashboard
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest
from tests.unit.operator.builders import ANALYSIS_CONTEXT, CANARY_AT_5, T0, example_spec

with warnings.catch_warnings():
    # Prometheus accepts bcrypt hashes only; the standard library's crypt makes them here
    # (deprecated, and still in Python 3.11/3.12 this project runs on).
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

pytestmark = pytest.mark.cluster

USERNAME = "reader"
PASSWORD = "correct-horse-battery"
PLANTED = f"planted-{uuid.uuid4().hex}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> Path:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "1", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.crt"


def make_server_certificate(directory: Path, ca: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by the CA `ca`."""
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "server.ext",
        cwd=directory,
    )  # fmt: skip
    return directory / "server.crt", directory / "server.key"


@dataclass(frozen=True)
class SecuredPrometheus:
    url: str
    ca: Path
    other_ca: Path
    marker: float


@pytest.fixture
def secured_prometheus(
    tmp_path: Path, metrics_server: tuple[str, str]
) -> Iterator[SecuredPrometheus]:
    """A Prometheus serving TLS (our CA) with basic auth, scraping the marker gauge."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI makes this test's CA: install Debian's openssl")
    address, marker = metrics_server
    ca = make_ca(tmp_path, "test-ca")
    other_ca = make_ca(tmp_path, "other-ca")
    cert, key = make_server_certificate(tmp_path, "test-ca")
    password_hash = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))
    web_config = {
        "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
        "basic_auth_users": {USERNAME: password_hash},
    }
    (tmp_path / "web.yml").write_text(json.dumps(web_config))
    scrape = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "marker", "static_configs": [{"targets": [address]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(scrape))
    port = _free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--web.config.file={tmp_path / 'web.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"https://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError((tmp_path / "prometheus.log").read_text()[-2000:])
            try:
                answer = requests.get(
                    f"{url}/-/ready", verify=str(ca), auth=(USERNAME, PASSWORD), timeout=2
                )
            except requests.RequestException:
                return False
            return answer.ok

        wait_until(ready, 60, "the secured Prometheus to be ready")
        yield SecuredPrometheus(url, ca, other_ca, float(marker))
    finally:
        process.terminate()
        process.wait(timeout=30)


def create_secret(api_client: client.ApiClient, namespace: str, name: str, data: Any) -> None:
    client.CoreV1Api(api_client).create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data=data)
    )


def create_config_map(api_client: client.ApiClient, namespace: str, name: str, data: Any) -> None:
    client.CoreV1Api(api_client).create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data=data)
    )


def provider_of(
    api_client: client.ApiClient, namespace: str, provider: dict[str, Any]
) -> MetricProvider:
    """The provider the operator builds for a rollout in `namespace` with this config."""
    spec = example_spec()
    del spec["analysis"]["prometheus"]
    spec["analysis"]["provider"] = {"type": "prometheus", "timeout": "3s", **provider}
    analysis = parse_spec(spec).analysis
    return provider_for(
        analysis, KubeReferences(CachedKubeApi(api_client), namespace), threading.Semaphore(8)
    )


def basic_auth(password_secret: str = "prometheus-auth") -> dict[str, Any]:
    return {
        "basicAuth": {
            "username": {"value": USERNAME},
            "password": {"secretKeyRef": {"name": password_secret, "key": "password"}},
        }
    }


CA_FROM_CONFIG_MAP = {"ca": {"configMapKeyRef": {"name": "prometheus-ca", "key": "ca.crt"}}}


def test_basic_auth_over_tls_with_our_ca_reads_the_real_series(
    kube_api_client: client.ApiClient, namespace: str, secured_prometheus: SecuredPrometheus
) -> None:
    create_secret(kube_api_client, namespace, "prometheus-auth", {"password": f"{PASSWORD}\n"})
    create_config_map(
        kube_api_client, namespace, "prometheus-ca", {"ca.crt": secured_prometheus.ca.read_text()}
    )
    metrics = provider_of(
        kube_api_client,
        namespace,
        {"address": secured_prometheus.url, "auth": basic_auth(), "tls": CA_FROM_CONFIG_MAP},
    )
    assert metrics.is_online(), metrics.offline_reason()
    value = wait_until(
        lambda: metrics.query('smoke_marker{job="marker"}').value, 30, "the marker's scrape"
    )
    assert value == secured_prometheus.marker
    # The same, with the user name and the CA from a Secret.
    create_secret(
        kube_api_client,
        namespace,
        "prometheus-client",
        {"user": USERNAME, "ca.crt": secured_prometheus.ca.read_text()},
    )
    from_secrets = provider_of(
        kube_api_client,
        namespace,
        {
            "address": secured_prometheus.url,
            "auth": {
                "basicAuth": {
                    "username": {"secretKeyRef": {"name": "prometheus-client", "key": "user"}},
                    "password": {"secretKeyRef": {"name": "prometheus-auth", "key": "password"}},
                }
            },
            "tls": {"ca": {"secretKeyRef": {"name": "prometheus-client", "key": "ca.crt"}}},
        },
    )
    assert from_secrets.query('smoke_marker{job="marker"}').value == secured_prometheus.marker


def test_a_wrong_password_is_unavailable_and_the_value_is_never_shown(
    kube_api_client: client.ApiClient,
    namespace: str,
    secured_prometheus: SecuredPrometheus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    create_secret(kube_api_client, namespace, "prometheus-auth", {"password": PLANTED})
    create_config_map(
        kube_api_client, namespace, "prometheus-ca", {"ca.crt": secured_prometheus.ca.read_text()}
    )
    config = {"address": secured_prometheus.url, "auth": basic_auth(), "tls": CA_FROM_CONFIG_MAP}
    metrics = provider_of(kube_api_client, namespace, config)
    assert not metrics.is_online()
    assert "401" in metrics.offline_reason()
    assert "spec.analysis.provider.auth" in metrics.offline_reason()
    refused = metrics.query("vector(1)")
    assert refused.value is None and refused.error is not None and "401" in refused.error

    spec = example_spec()
    del spec["analysis"]["prometheus"]
    spec["analysis"]["provider"] = {"type": "prometheus", **config}
    rollout = parse_spec(spec)
    checks, verdict = evaluate(
        rollout, CANARY_AT_5, provider_of(kube_api_client, namespace, config), ANALYSIS_CONTEXT, T0
    )
    assert verdict.kind == "unavailable"
    assert {check.state for check in checks} == {"Unavailable"}
    assert all("401" in check.message for check in checks), checks
    shown = [
        metrics.offline_reason(),
        refused.error,
        *(check.model_dump_json() for check in checks),
        *(" ".join(event) for event in check_events((), checks)),
        caplog.text,
    ]
    assert [text for text in shown if PLANTED in text] == []


# insecureSkipVerify does what it says; urllib3 warns about it, as it should.
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_an_unknown_ca_is_unavailable_with_a_tls_message_unless_verification_is_off(
    kube_api_client: client.ApiClient, namespace: str, secured_prometheus: SecuredPrometheus
) -> None:
    create_secret(kube_api_client, namespace, "prometheus-auth", {"password": PASSWORD})
    create_config_map(
        kube_api_client,
        namespace,
        "prometheus-ca",
        {"ca.crt": secured_prometheus.other_ca.read_text()},
    )
    address = secured_prometheus.url
    for tls in (CA_FROM_CONFIG_MAP, None):  # another CA; the system's CAs
        metrics = provider_of(
            kube_api_client, namespace, {"address": address, "auth": basic_auth(), "tls": tls}
        )
        assert not metrics.is_online()
        reason = metrics.offline_reason()
        assert "TLS certificate was not accepted (spec.analysis.provider.tls)" in reason
        assert "CERTIFICATE_VERIFY_FAILED" in reason
    unverified = provider_of(
        kube_api_client,
        namespace,
        {"address": address, "auth": basic_auth(), "tls": {"insecureSkipVerify": True}},
    )
    assert unverified.is_online(), unverified.offline_reason()


def test_a_missing_secret_or_key_is_unavailable_naming_the_field(
    kube_api_client: client.ApiClient, namespace: str, secured_prometheus: SecuredPrometheus
) -> None:
    field = "spec.analysis.provider.auth.basicAuth.password.secretKeyRef"
    config = {"address": secured_prometheus.url, "auth": basic_auth()}
    missing = provider_of(kube_api_client, namespace, config)
    assert not missing.is_online()
    assert missing.offline_reason() == (
        f"{field}: Secret {namespace}/prometheus-auth not found"
    )  # fmt: skip
    create_secret(kube_api_client, namespace, "prometheus-auth", {"other": "x"})
    without_key = provider_of(kube_api_client, namespace, config)
    assert not without_key.is_online()
    assert without_key.offline_reason() == (
        f"{field}: Secret {namespace}/prometheus-auth has no key 'password'"
    )
    result = without_key.query("vector(1)")
    assert result.value is None and result.error == without_key.offline_reason()


class _BearerHandler(BaseHTTPRequestHandler):
    """A Prometheus-like API answering 42 only with the expected token and tenant."""

    token = ""
    seen: list[dict[str, str]]

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers.items()))
        authorized = self.headers.get("Authorization") == f"Bearer {self.token}"
        if not authorized or self.headers.get("X-Scope-OrgID") != "tenant-a":
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b"unauthorized")
            return
        body = {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": {}, "value": [time.time(), "42"]}],
            },
        }
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


@pytest.fixture
def bearer_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_BearerHandler,), {"token": PLANTED, "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_bearer_token_and_tenant_headers_from_secrets_reach_the_server(
    kube_api_client: client.ApiClient,
    namespace: str,
    bearer_server: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = bearer_server
    # Written the way `kubectl create secret --from-file` writes a token: with a newline.
    create_secret(
        kube_api_client, namespace, "tenant", {"token": f"{PLANTED}\n", "api-key": "key-1"}
    )
    config = {
        "address": url,
        "auth": {"bearerToken": {"secretKeyRef": {"name": "tenant", "key": "token"}}},
        "headers": [
            {"name": "X-Scope-OrgID", "value": "tenant-a"},
            {"name": "X-Api-Key", "secretKeyRef": {"name": "tenant", "key": "api-key"}},
        ],
    }
    metrics = provider_of(kube_api_client, namespace, config)
    assert metrics.is_online(), metrics.offline_reason()
    assert metrics.query("vector(42)").value == 42.0
    assert seen[-1]["Authorization"] == f"Bearer {PLANTED}"
    assert seen[-1]["X-Api-Key"] == "key-1" and seen[-1]["X-Scope-OrgID"] == "tenant-a"

    wrong_tenant = {**config, "headers": [{"name": "X-Scope-OrgID", "value": "tenant-b"}]}
    refused = provider_of(kube_api_client, namespace, wrong_tenant)
    assert not refused.is_online()
    assert refused.offline_reason().startswith("metric provider answered 401")
    assert PLANTED not in refused.offline_reason()


def test_the_dashboards_plots_query_with_the_rollouts_provider_auth(
    kube_api_client: client.ApiClient,
    cluster_under_test: ClusterUnderTest,
    namespace: str,
    secured_prometheus: SecuredPrometheus,
    tmp_path: Path,
) -> None:
    """`kubectl modelrollout dashboard`'s range queries against the real Prometheus behind
    basic auth and TLS, with the credentials and CA the rollout's provider names."""
    create_secret(kube_api_client, namespace, "prometheus-auth", {"password": f"{PASSWORD}\n"})
    create_secret(kube_api_client, namespace, "wrong-auth", {"password": PLANTED})
    create_config_map(
        kube_api_client, namespace, "prometheus-ca", {"ca.crt": secured_prometheus.ca.read_text()}
    )
    rollouts = Rollouts(kube_api_client, namespace)
    for name, secret in (("chat", "prometheus-auth"), ("wrong", "wrong-auth")):
        analysis = {
            "provider": {
                "type": "prometheus",
                "address": secured_prometheus.url,
                "timeout": "3s",
                "auth": basic_auth(secret),
                "tls": CA_FROM_CONFIG_MAP,
            },
            "interval": "1s",
            "checks": [
                {"name": "marker", "query": 'smoke_marker{job="marker"}', "breachWhen": "< 0"}
            ],
        }
        rollouts.create(rollout_manifest(name, "hf://acme/chat@v2", STEPS, analysis=analysis))
        write_status(rollouts, name, step=0, canary_weight=25)
    with Dashboard(cluster_under_test.kubeconfig, namespace, tmp_path / "dashboard.log") as board:

        def plotted() -> list[float] | None:
            answer = httpx.get(
                f"{board.url}/api/rollouts/{namespace}/chat/checks/marker/series", timeout=10
            )
            assert answer.status_code == 200, answer.text
            values = [v for v in answer.json()["values"] if v is not None]
            return values or None

        values = wait_until(plotted, 30, "the marker's samples on the plot")
        assert set(values) == {secured_prometheus.marker}

        refused = httpx.get(
            f"{board.url}/api/rollouts/{namespace}/wrong/checks/marker/series", timeout=10
        )
        assert refused.status_code == 503
        detail = refused.json()["detail"]
        assert "answered 401" in detail and "spec.analysis.provider.auth" in detail
        assert PLANTED not in detail and PLANTED not in (tmp_path / "dashboard.log").read_text()
