"""The chart on the real cluster: it applies, installs, and its RBAC is enough and no more.

The operator runs out of cluster (no container runtime here) but as the
chart's ServiceAccount, with a token for it: a rollout that completes proves
the Role grants enough; refused calls prove it grants no more.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modelrollout.kube.api import LEASES, KubeApi
from modelrollout.kube.labels import GROUP, PLURAL, VERSION
from modelrollout_dev import toolchain
from modelrollout_dev.identity import service_account_token, token_kubeconfig
from modelrollout_dev.operator_process import OperatorProcess
from tests.conftest import ClusterUnderTest
from tests.e2e.conftest import TEST_TICK_INTERVAL
from tests.support.dashboard import Dashboard
from tests.support.helm import CHART, helm, render_text, values_file
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, rollout_manifest

pytestmark = pytest.mark.e2e

CRD_NAME = f"{PLURAL}.{GROUP}"


def _kubectl(kubeconfig: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(toolchain.expected_binaries().kubectl), "--kubeconfig", kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _status_code(call: Any) -> int:
    try:
        call()
    except ApiException as error:
        return int(error.status)
    return 200


def test_rendered_chart_passes_server_side_dry_run(
    cluster_under_test: ClusterUnderTest, kube_api_client: client.ApiClient, tmp_path: Path
) -> None:
    for values in (
        {"grafana": {"dashboard": {"enabled": True}}},
        {"watchNamespaces": ["default", "kube-system"]},
        {"dashboard": {"enabled": True, "actions": True}},
        {"dashboard": {"enabled": True, "namespace": "kube-system"}},
    ):
        manifests = render_text(tmp_path, values, namespace="default")
        result = _kubectl(
            cluster_under_test.kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=manifests
        )
        assert result.returncode == 0, result.stderr
        assert "deployment.apps/mr-modelrollout created (server dry run)" in result.stdout


def test_helm_install_rbac_is_enough_for_a_rollout_and_no_more(
    cluster_under_test: ClusterUnderTest,
    kube_api_client: client.ApiClient,
    namespace: str,
    rollouts: Rollouts,
    tmp_path: Path,
) -> None:
    kubeconfig = cluster_under_test.kubeconfig
    release = f"mr-{uuid.uuid4().hex[:6]}"
    values = {"watchNamespaces": [namespace], "replicaCount": 1}
    # The test session installed the CRD already; the chart adopts it.
    installed = helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--take-ownership",
        "--wait",
        "--timeout",
        "120s",
        "--values",
        str(values_file(values, tmp_path)),
        kubeconfig=kubeconfig,
    )
    assert installed.returncode == 0, installed.stderr
    try:
        extensions = client.ApiextensionsV1Api(kube_api_client)
        crd = extensions.read_custom_resource_definition(CRD_NAME)
        assert crd.metadata.annotations["meta.helm.sh/release-name"] == release
        rbac = client.RbacAuthorizationV1Api(kube_api_client)
        service_account = f"{release}-modelrollout"
        role = rbac.read_namespaced_role(service_account, namespace)
        assert role.rules, "the chart's Role has rules"

        token = service_account_token(kube_api_client, namespace, service_account)
        operator_kubeconfig = token_kubeconfig(kubeconfig, token, tmp_path / "operator.kubeconfig")
        operator = OperatorProcess(
            operator_kubeconfig,
            namespace,
            tmp_path,
            tick_interval=TEST_TICK_INTERVAL,
            extra_env={
                "MODELROLLOUT_LEADER_ELECTION": "on",
                "POD_NAMESPACE": namespace,
                "POD_NAME": "operator-under-test",
            },
        )
        steps = [{"setWeight": 50}, {"pause": {"duration": "1s"}}]
        with operator:
            manifest = rollout_manifest("chat", "file:///models/v1", steps)
            rollouts.create(manifest)
            rollouts.wait_phase("chat", {"Succeeded"}, 60)
            rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": "file:///models/v2"}})
            status = rollouts.wait_phase("chat", {"Succeeded"}, 90)
            log = operator.log_tail(400)
            lease = KubeApi(kube_api_client).get(LEASES, namespace, "modelrollout-operator")
            assert lease is not None and lease["spec"]["holderIdentity"] == "operator-under-test"
        assert status["history"][0]["outcome"] == "Promoted", status
        assert "403" not in log and "Forbidden" not in log, log
        # A clean shutdown hands the Lease over at once.
        released = KubeApi(kube_api_client).get(LEASES, namespace, "modelrollout-operator")
        assert released is not None and released["spec"]["holderIdentity"] == ""

        as_operator = config.new_client_from_config(config_file=operator_kubeconfig)
        core = client.CoreV1Api(as_operator)
        custom = client.CustomObjectsApi(as_operator)
        assert _status_code(lambda: core.list_namespaced_secret("kube-system")) == 403
        assert _status_code(lambda: core.list_namespaced_secret(namespace)) == 403
        # Secrets are read by name where a rollout names one, in watched namespaces only.
        assert _status_code(lambda: core.read_namespaced_secret("any", "kube-system")) == 403
        assert _status_code(lambda: custom.list_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL
        )) == 403  # fmt: skip
        assert _status_code(lambda: custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "chat"
        )) == 403  # fmt: skip
        assert _status_code(lambda: custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL
        )) == 200  # fmt: skip
    finally:
        uninstalled = helm("uninstall", release, "--namespace", namespace, kubeconfig=kubeconfig)
    assert uninstalled.returncode == 0, uninstalled.stderr
    # crds.keep: uninstalling the operator never deletes the CRD, so no rollout is lost.
    wait_until(
        lambda: _status_code(lambda: client.RbacAuthorizationV1Api(
            kube_api_client
        ).read_namespaced_role(f"{release}-modelrollout", namespace)) == 404,
        30,
        "the release's Role to be deleted",
    )  # fmt: skip
    assert client.ApiextensionsV1Api(kube_api_client).read_custom_resource_definition(CRD_NAME)
    assert rollouts.get("chat")["status"]["phase"] == "Succeeded"


def test_the_charts_dashboard_serves_read_only_as_its_service_account(
    cluster_under_test: ClusterUnderTest,
    kube_api_client: client.ApiClient,
    namespace: str,
    rollouts: Rollouts,
    tmp_path: Path,
) -> None:
    """The chart's dashboard objects on the real API server, and the pod's own command run here
    with its ServiceAccount's token (the local cluster runs no container for the operator's
    image): it serves the rollouts, refuses commands itself, and its RBAC allows no patch."""
    kubeconfig = cluster_under_test.kubeconfig
    release = f"mr-{uuid.uuid4().hex[:6]}"
    values = {
        "watchNamespaces": [namespace],
        "replicaCount": 1,
        "crds": {"install": False},
        "dashboard": {"enabled": True, "namespace": namespace},
    }

    def install(command: str, changes: dict[str, Any]) -> None:
        done = helm(
            command,
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--wait",
            "--timeout",
            "120s",
            "--values",
            str(values_file({**values, **changes}, tmp_path)),
            kubeconfig=kubeconfig,
        )
        assert done.returncode == 0, done.stderr

    install("install", {})
    try:
        rollouts.create(rollout_manifest("chat", "file:///models/v1", [{"setWeight": 50}]))
        name = f"{release}-modelrollout-dashboard"
        deployment = client.AppsV1Api(kube_api_client).read_namespaced_deployment(name, namespace)
        (container,) = deployment.spec.template.spec.containers
        assert "--read-only" in container.command and "--address=0.0.0.0" in container.command
        service = client.CoreV1Api(kube_api_client).read_namespaced_service(name, namespace)
        assert service.spec.type == "ClusterIP"

        token = service_account_token(kube_api_client, namespace, name)
        as_dashboard = token_kubeconfig(kubeconfig, token, tmp_path / "dashboard.kubeconfig")
        with Dashboard(
            as_dashboard, namespace, tmp_path / "dashboard.log", arguments=container.command[1:]
        ) as board:
            rows = board.get("/api/rollouts")["rows"]
            assert [row["name"] for row in rows] == ["chat"]
            assert board.get("/api/stats")["kinds"]["events"]["last_error"] is None
            assert board.get("/api/config")["actions"] is False
            refused = board.command(namespace, "chat", "promote")
            assert refused.status_code == 403 and "read-only" in refused.json()["detail"]
        assert "modelrollout.dev/promote" not in (
            rollouts.get("chat")["metadata"].get("annotations") or {}
        )

        custom = client.CustomObjectsApi(config.new_client_from_config(config_file=as_dashboard))
        core = client.CoreV1Api(config.new_client_from_config(config_file=as_dashboard))
        annotate = {"metadata": {"annotations": {"example.com/by-dashboard": "1"}}}

        def patch() -> Any:
            return custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "chat", annotate
            )

        assert _status_code(patch) == 403
        assert _status_code(lambda: core.list_namespaced_secret(namespace)) == 403
        # No right to any Secret by default (dashboard.providerReferences.enabled false).
        assert _status_code(lambda: core.read_namespaced_secret("any", namespace)) == 403
        assert _status_code(lambda: core.list_namespaced_event(namespace)) == 200
        # dashboard.actions: true grants patch (the server then sends the commands).
        install(
            "upgrade", {"dashboard": {"enabled": True, "namespace": namespace, "actions": True}}
        )
        assert _status_code(patch) == 200
    finally:
        uninstalled = helm("uninstall", release, "--namespace", namespace, kubeconfig=kubeconfig)
    assert uninstalled.returncode == 0, uninstalled.stderr
