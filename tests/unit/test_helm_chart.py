"""The Helm chart, rendered and linted by the real helm: what an installer gets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.kubectl.cli import build_parser
from modelrollout.notify.policy import RetryPolicy
from modelrollout.settings import OperatorSettings
from tests.support.helm import CHART, KUBE_VERSION, REPO, helm, only, render, values_file

pytestmark = pytest.mark.chart

# Exactly what the operator does, per resource (tests/e2e/test_helm_install.py
# drives a rollout with these and nothing more).
EXPECTED_ROLLOUT_RULES = {
    ("modelrollout.dev", "modelrollouts"): {"get", "list", "watch"},
    ("modelrollout.dev", "modelrollouts/status"): {"get", "patch"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "services"): {"get", "list", "watch", "create", "patch"},
    ("", "pods"): {"list", "patch"},
    ("discovery.k8s.io", "endpointslices"): {"list", "watch"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "watch", "create", "patch"},
    # Router inferencePool: one per live revision, replaced when its spec drifts.
    ("inference.networking.k8s.io", "inferencepools"): {
        "get",
        "list",
        "watch",
        "create",
        "update",
        "delete",
    },
    # Quality-gate evaluation steps; the suite's ConfigMap is mounted, never read.
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
    # One per live revision, sized as its replicas change, deleted with it.
    ("policy", "poddisruptionbudgets"): {"list", "watch", "create", "patch", "delete"},
    ("", "events"): {"create"},
    # What a metric provider's config names (credentials, a CA): get by name, never a list.
    ("", "secrets"): {"get"},
    ("", "configmaps"): {"get"},
}


def _rules(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    rules: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                rules.setdefault((group, resource), set()).update(rule["verbs"])
    return rules


def test_the_charts_crds_are_exact_copies_of_crds_dir() -> None:
    source = {path.name: path.read_bytes() for path in (REPO / "crds").glob("*.yaml")}
    copies = {path.name: path.read_bytes() for path in (CHART / "files" / "crds").glob("*.yaml")}
    assert source.keys() == copies.keys() and source == copies, (
        "charts/modelrollout/files/crds/ drifted from crds/: run make crds"
    )


def test_helm_lint_strict_is_clean() -> None:
    result = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_the_rendered_crd_is_the_source_crd_kept_on_uninstall(tmp_path: Path) -> None:
    source = yaml.safe_load((REPO / "crds" / "modelrollouts.modelrollout.dev.yaml").read_text())
    rendered = only(render(tmp_path), "CustomResourceDefinition")
    assert rendered["spec"] == source["spec"]
    assert rendered["metadata"]["name"] == source["metadata"]["name"]
    assert rendered["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    not_kept = only(render(tmp_path, {"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (not_kept["metadata"].get("annotations") or {})
    kinds = {document["kind"] for document in render(tmp_path, {"crds": {"install": False}})}
    assert "CustomResourceDefinition" not in kinds


def test_the_operator_pod_is_hardened_and_probed_on_kopfs_liveness_endpoint(
    tmp_path: Path,
) -> None:
    deployment = only(render(tmp_path), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert "--liveness=http://0.0.0.0:8081/healthz" in container["command"]
    health_port = next(port for port in container["ports"] if port["name"] == "health")
    assert health_port["containerPort"] == 8081
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_the_alert_receiver_is_off_by_default(tmp_path: Path) -> None:
    documents = render(tmp_path)
    (container,) = only(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert not any(e["name"].startswith("MODELROLLOUT_ALERT_RECEIVER") for e in container["env"])
    assert not [d for d in documents if d["metadata"]["name"].endswith("-alerts")]


def test_notification_delivery_settings_reach_the_operator_as_settings_it_accepts(
    tmp_path: Path,
) -> None:
    values = {"notifications": {"queueSize": 50, "retryBudget": 120, "backoff": 0.5}}
    (container,) = only(render(tmp_path, values), "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    env = {e["name"]: e.get("value") for e in container["env"] if "value" in e}
    settings = OperatorSettings.from_env(
        {name: value for name, value in env.items() if name.startswith("MODELROLLOUT_NOTIFICATION")}
    )
    assert settings.notification_queue_size == 50
    assert settings.notification_policy() == RetryPolicy(0.5, 60.0, 120.0, 10.0)


def test_the_alert_receiver_has_a_service_port_and_its_token_from_a_secret(
    tmp_path: Path,
) -> None:
    values = {"alertReceiver": {"enabled": True, "tokenSecret": {"name": "am-token", "key": "t"}}}
    documents = render(tmp_path, values)
    pod = only(documents, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELROLLOUT_ALERT_RECEIVER_PORT"] == "9095"
    token_file = env["MODELROLLOUT_ALERT_RECEIVER_TOKEN_FILE"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "alert-receiver-token"]
    assert mount["readOnly"] is True and token_file == f"{mount['mountPath']}/t"
    (volume,) = [v for v in pod["volumes"] if v["name"] == "alert-receiver-token"]
    assert volume["secret"] == {"secretName": "am-token", "items": [{"key": "t", "path": "t"}]}
    port = next(p for p in container["ports"] if p["name"] == "alerts")
    service = _named(documents, "Service", "-alerts")
    assert service["spec"]["ports"] == [
        {"name": "alerts", "port": 9095, "targetPort": "alerts", "protocol": "TCP"}
    ]
    assert port["containerPort"] == 9095
    assert service["spec"]["selector"] == pod_selector(documents)


def pod_selector(documents: list[dict[str, Any]]) -> dict[str, str]:
    return dict(only(documents, "Deployment")["spec"]["selector"]["matchLabels"])


def _named(documents: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    (found,) = [
        d for d in documents if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)
    ]
    return found


CAPACITY_RULES = {("", "nodes"): {"list", "watch"}, ("", "pods"): {"list", "watch"}}


def test_cluster_mode_grants_only_what_the_operator_uses(tmp_path: Path) -> None:
    documents = render(tmp_path)
    rules = _rules(_named(documents, "ClusterRole", "-modelrollout"))
    assert rules == EXPECTED_ROLLOUT_RULES
    assert rules[("", "secrets")] == {"get"}, "Secrets are read by name only, never listed"
    assert all("*" not in verbs for verbs in rules.values())
    assert _rules(_named(documents, "ClusterRole", "-capacity")) == CAPACITY_RULES
    assert (
        "--all-namespaces"
        in only(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]["command"]
    )


def test_namespaced_mode_has_a_role_per_watched_namespace_and_no_cluster_role(
    tmp_path: Path,
) -> None:
    documents = render(tmp_path, {"watchNamespaces": ["ml", "research"]})
    # The only cluster-wide grant is capacity planning's read of nodes and pods.
    cluster_roles = [d for d in documents if d["kind"] == "ClusterRole"]
    assert [_rules(role) for role in cluster_roles] == [CAPACITY_RULES]
    without_capacity = render(
        tmp_path, {"watchNamespaces": ["ml"], "capacityPlanning": {"enabled": False}}
    )
    kinds = {document["kind"] for document in without_capacity}
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    rollout_roles = {
        document["metadata"]["namespace"]: _rules(document)
        for document in documents
        if document["kind"] == "Role"
        and not document["metadata"]["name"].endswith("-leader-election")
    }
    assert rollout_roles == {"ml": EXPECTED_ROLLOUT_RULES, "research": EXPECTED_ROLLOUT_RULES}
    command = only(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--namespace=ml" in command and "--namespace=research" in command
    assert "--all-namespaces" not in command


def test_ha_two_replicas_elect_a_leader_on_a_lease_and_have_a_disruption_budget(
    tmp_path: Path,
) -> None:
    documents = render(tmp_path)
    deployment = only(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    env = {
        item["name"]: item.get("value")
        for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MODELROLLOUT_LEADER_ELECTION"] == "on"
    assert only(documents, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    (lease_role,) = [
        document
        for document in documents
        if document["kind"] == "Role" and document["metadata"]["name"].endswith("-leader-election")
    ]
    assert lease_role["metadata"]["namespace"] == "modelrollout-system"
    assert _rules(lease_role) == {("coordination.k8s.io", "leases"): {"get", "create", "update"}}

    single = render(tmp_path, {"replicaCount": 1})
    assert "PodDisruptionBudget" not in {document["kind"] for document in single}


def test_evaluation_jobs_get_the_serving_image_of_the_chart_version(tmp_path: Path) -> None:
    def evaluation_image(values: dict[str, Any] | None = None) -> str:
        deployment = only(render(tmp_path, values or {}), "Deployment")
        env = {
            item["name"]: item.get("value")
            for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        return str(env["MODELROLLOUT_EVALUATION_IMAGE"])

    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert evaluation_image() == f"ghcr.io/modelrollout/serving:{app_version}"
    mirrored = {"evaluation": {"image": {"repository": "registry.local/serving", "tag": "7"}}}
    assert evaluation_image(mirrored) == "registry.local/serving:7"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"evaluation": {"image": {"repository": ""}}}, "/evaluation/image/repository"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
        ({"replicas": 3}, "replicas"),
        ({"operator": {"logLevel": "loud"}}, "/operator/logLevel"),
        ({"metrics": {"port": 70000}}, "/metrics/port"),
        ({"alertReceiver": {"enabled": True}}, "/alertReceiver/tokenSecret/name"),
    ],
)
def test_bad_values_are_refused_naming_the_field(
    tmp_path: Path, values: dict[str, Any], expected: str
) -> None:
    result = helm(
        "template",
        "mr",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        "--values",
        str(values_file(values, tmp_path)),
    )
    assert result.returncode != 0
    assert expected in result.stderr


def test_monitoring_objects_carry_the_shipped_rules_and_dashboard(tmp_path: Path) -> None:
    documents = render(
        tmp_path,
        {
            "metrics": {"serviceMonitor": {"enabled": True}},
            "prometheusRule": {"enabled": True},
            "grafana": {"dashboard": {"enabled": True}},
        },
    )
    monitor = only(documents, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    rules = yaml.safe_load((CHART / "files" / "alerts.rules.yaml").read_text())
    assert only(documents, "PrometheusRule")["spec"] == rules
    dashboard = only(documents, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    assert json.loads(dashboard["data"]["modelrollout.json"]) == shipped

    kinds = {document["kind"] for document in render(tmp_path)}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "ConfigMap"}


def _reference_rules(role: dict[str, Any]) -> dict[str, Any]:
    return {
        rule["resources"][0]: rule.get("resourceNames")
        for rule in role["rules"]
        if rule["resources"][0] in ("secrets", "configmaps")
    }


def test_provider_references_can_be_restricted_to_names_or_not_granted(tmp_path: Path) -> None:
    named = render(
        tmp_path,
        {
            "watchNamespaces": ["ml"],
            "rbac": {
                "providerReferences": {
                    "secretNames": ["prometheus-token"],
                    "configMapNames": ["prometheus-ca"],
                }
            },
        },
    )
    role = _named(named, "Role", "-modelrollout")
    assert _reference_rules(role) == {
        "secrets": ["prometheus-token"],
        "configmaps": ["prometheus-ca"],
    }
    assert _rules(role)[("", "secrets")] == {"get"}
    unrestricted = _named(render(tmp_path), "ClusterRole", "-modelrollout")
    assert _reference_rules(unrestricted) == {"secrets": None, "configmaps": None}
    none = render(tmp_path, {"rbac": {"providerReferences": {"enabled": False}}})
    rules = _rules(_named(none, "ClusterRole", "-modelrollout"))
    assert ("", "secrets") not in rules and ("", "configmaps") not in rules


def test_the_pod_monitor_relabels_serving_pods_as_the_shipped_scrape_job_does(
    tmp_path: Path,
) -> None:
    """One source, two spellings: files/model-pods.scrape.yaml (plain Prometheus, tested
    against real pods in tests/e2e/test_model_pod_discovery.py) and the PodMonitor."""
    documents = render(tmp_path, {"modelMetrics": {"podMonitor": {"enabled": True}}})
    monitor = only(documents, "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["selector"] == {
        "matchExpressions": [{"key": "modelrollout.dev/rollout", "operator": "Exists"}]
    }
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    scrape = yaml.safe_load((CHART / "files" / "model-pods.scrape.yaml").read_text())
    spelled = [
        {
            key: value
            for key, value in {
                "sourceLabels": rule.get("source_labels"),
                "targetLabel": rule.get("target_label"),
                "regex": rule.get("regex"),
                "action": rule.get("action", "replace"),
            }.items()
            if value is not None
        }
        for rule in scrape["relabel_configs"]
    ]
    assert endpoint["relabelings"] == spelled
    targets = {rule.get("targetLabel") for rule in endpoint["relabelings"]}
    assert {"namespace", "rollout", "revision", "role", "pod"} <= targets
    assert "PodMonitor" not in {document["kind"] for document in render(tmp_path)}


def _dashboard(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return _named(documents, kind, "-dashboard")


DASHBOARD_READ_RULES = {
    ("modelrollout.dev", "modelrollouts"): {"get", "list", "watch"},
    ("", "events"): {"list", "watch"},
}


def test_the_dashboard_is_off_by_default(tmp_path: Path) -> None:
    documents = render(tmp_path)
    assert not [d for d in documents if "dashboard" in d["metadata"]["name"]]


def test_the_dashboard_is_read_only_behind_a_cluster_ip_with_its_own_service_account(
    tmp_path: Path,
) -> None:
    documents = render(tmp_path, {"dashboard": {"enabled": True}})
    deployment = _dashboard(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[0] == "kubectl-modelrollout"
    # The plugin's own parser accepts what the pod runs.
    args = build_parser().parse_args(command[1:])
    assert args.command == "dashboard" and args.all_namespaces and args.read_only
    assert (args.address, args.port) == ("0.0.0.0", 3100)
    operator = _named(documents, "Deployment", "mr-modelrollout")
    # The operator's image, which installs the `dashboard` extra (docker/operator.Dockerfile).
    assert container["image"] == operator["spec"]["template"]["spec"]["containers"][0]["image"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/api/stats", "port": "http"}

    account = _dashboard(documents, "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"] == "mr-modelrollout-dashboard"
    assert _rules(_dashboard(documents, "ClusterRole")) == DASHBOARD_READ_RULES
    (subject,) = _dashboard(documents, "ClusterRoleBinding")["subjects"]
    assert subject["name"] == account["metadata"]["name"]

    service = _dashboard(documents, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # The operator's Services and disruption budget never select the dashboard's pod.
    assert service["spec"]["selector"] != operator["spec"]["selector"]["matchLabels"]
    assert not [d for d in documents if d["kind"] == "Ingress"]


def test_the_dashboard_reads_provider_secrets_only_when_granted(tmp_path: Path) -> None:
    """No right to any Secret by default; providerReferences grants get on those its
    plots' Prometheus auth reads (the listed names, or every one in scope)."""
    every = render(
        tmp_path, {"dashboard": {"enabled": True, "providerReferences": {"enabled": True}}}
    )
    assert _rules(_dashboard(every, "ClusterRole")) == {
        **DASHBOARD_READ_RULES,
        ("", "secrets"): {"get"},
        ("", "configmaps"): {"get"},
    }
    named = render(
        tmp_path,
        {
            "dashboard": {
                "enabled": True,
                "providerReferences": {"enabled": True, "secretNames": ["prom-auth"]},
            }
        },
    )
    secret_rules = [
        rule
        for rule in _dashboard(named, "ClusterRole")["rules"]
        if "secrets" in rule.get("resources", [])
    ]
    assert [rule.get("resourceNames") for rule in secret_rules] == [["prom-auth"]]


def test_dashboard_actions_add_patch_and_a_namespace_gets_a_role(tmp_path: Path) -> None:
    values = {
        "dashboard": {
            "enabled": True,
            "actions": True,
            "namespace": "ml",
            "providerReferences": {"enabled": False},
        }
    }
    documents = render(tmp_path, values)
    (container,) = _dashboard(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["command"][1:])
    assert not args.read_only and not args.all_namespaces and args.namespace == "ml"
    role = _dashboard(documents, "Role")
    assert role["metadata"]["namespace"] == "ml"
    assert _rules(role) == {
        ("modelrollout.dev", "modelrollouts"): {"get", "list", "watch", "patch"},
        ("", "events"): {"list", "watch"},
    }
    assert _dashboard(documents, "RoleBinding")["metadata"]["namespace"] == "ml"
    assert not [
        d for d in documents if d["kind"] == "ClusterRole" and "dashboard" in d["metadata"]["name"]
    ]
