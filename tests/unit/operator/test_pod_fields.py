"""The pod fields platform teams require: passed into the pod as written, refused where they
would clash with what the operator writes, and a Deployment the API server refuses reported as
InvalidSpec naming the field (not a retry loop)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelrollout.engine.children import refused_deployment
from modelrollout.engine.podspec import build_pod_metadata, build_pod_spec
from modelrollout.engine.revision import revision_of
from modelrollout.kube.api import DEPLOYMENTS, KubeApiError, Resource
from modelrollout.kube.labels import REVISION_LABEL, ROLE_LABEL, ROLLOUT_LABEL
from modelrollout.kube.workloads import RolloutRef, build_deployment
from modelrollout.models import InvalidSpecError, parse_spec
from tests.support.fake_kube import FakeKubeApi
from tests.unit.operator.builders import example_spec
from tests.unit.operator.test_reconciler_ticks import Cluster, canary_spec

pytestmark = pytest.mark.unit

AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]}
            ]
        }
    }
}
SPREAD = {
    "maxSkew": 1,
    "topologyKey": "topology.kubernetes.io/zone",
    "whenUnsatisfiable": "ScheduleAnyway",
    "labelSelector": {"matchLabels": {"team": "ml"}},
}
PLATFORM_FIELDS: dict[str, Any] = {
    "imagePullSecrets": [{"name": "registry"}],
    "serviceAccountName": "llm-server",
    "priorityClassName": "inference-high",
    "runtimeClassName": "nvidia",
    "affinity": AFFINITY,
    "topologySpreadConstraints": [SPREAD],
    "securityContext": {"runAsUser": 1000, "fsGroup": 1000},
    "containerSecurityContext": {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    },
    "podLabels": {"team": "ml", "cost-centre": "4711"},
    "podAnnotations": {"prometheus.io/scrape": "true"},
    "volumes": [
        {"name": "cache", "persistentVolumeClaim": {"claimName": "model-cache"}},
        {"name": "nfs", "nfs": {"server": "nfs.example", "path": "/exports/models"}},
    ],
    "volumeMounts": [
        {"name": "cache", "mountPath": "/cache"},
        {"name": "nfs", "mountPath": "/nfs", "readOnly": True},
    ],
}


def spec_with(**runtime: Any) -> dict[str, Any]:
    body = example_spec()
    body["runtime"].update(copy.deepcopy(runtime))
    return body


def test_every_platform_field_reaches_the_pod_as_written() -> None:
    spec = parse_spec(spec_with(**PLATFORM_FIELDS))
    pod = build_pod_spec(spec)
    container = pod["containers"][0]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["serviceAccountName"] == "llm-server"
    assert pod["priorityClassName"] == "inference-high"
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["affinity"] == AFFINITY
    assert pod["topologySpreadConstraints"] == [SPREAD]
    assert pod["securityContext"] == {"runAsUser": 1000, "fsGroup": 1000}
    assert container["securityContext"] == PLATFORM_FIELDS["containerSecurityContext"]
    # The operator's own volumes stay, the user's come after them.
    assert [v["name"] for v in pod["volumes"]] == ["dshm", "model", "cache", "nfs"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["cache"] == {"name": "cache", "mountPath": "/cache"}
    assert mounts["nfs"]["readOnly"] is True
    assert mounts["dshm"]["mountPath"] == "/dev/shm"


def test_unset_fields_leave_the_pod_as_before() -> None:
    pod = build_pod_spec(parse_spec(example_spec()))
    for key in (
        "imagePullSecrets",
        "serviceAccountName",
        "priorityClassName",
        "runtimeClassName",
        "affinity",
        "topologySpreadConstraints",
        "securityContext",
    ):
        assert key not in pod
    assert "securityContext" not in pod["containers"][0]
    assert build_pod_metadata(parse_spec(example_spec())) == {}


def test_pod_labels_and_annotations_join_the_operators_without_replacing_them() -> None:
    spec = parse_spec(spec_with(**PLATFORM_FIELDS))
    deployment = build_deployment(
        RolloutRef("ml", "chat", "uid-1"),
        "abc123",
        "stable",
        2,
        build_pod_spec(spec),
        600,
        build_pod_metadata(spec),
    )
    template = deployment["spec"]["template"]["metadata"]
    assert template["labels"] == {
        "team": "ml",
        "cost-centre": "4711",
        ROLLOUT_LABEL: "chat",
        REVISION_LABEL: "abc123",
        ROLE_LABEL: "stable",
    }
    assert template["annotations"] == {"prometheus.io/scrape": "true"}
    assert deployment["spec"]["selector"]["matchLabels"] == {
        ROLLOUT_LABEL: "chat",
        REVISION_LABEL: "abc123",
    }


def test_a_pod_field_change_makes_a_new_revision_and_unset_ones_keep_the_old() -> None:
    base = revision_of(parse_spec(example_spec()))
    assert revision_of(parse_spec(spec_with(volumes=[], podLabels={}))) == base
    assert revision_of(parse_spec(spec_with(runtimeClassName="nvidia"))) != base
    assert revision_of(parse_spec(spec_with(podLabels={"team": "ml"}))) != base


@pytest.mark.parametrize(
    ("runtime", "field_path", "words"),
    [
        (
            {"podLabels": {f"{ROLE_LABEL}": "stable"}},
            f"spec.runtime.podLabels.{ROLE_LABEL}",
            "operator's",
        ),
        (
            {"podLabels": {REVISION_LABEL: "x"}},
            f"spec.runtime.podLabels.{REVISION_LABEL}",
            "selector",
        ),
        (
            {"podAnnotations": {"modelrollout.dev/promote": "now"}},
            "spec.runtime.podAnnotations.modelrollout.dev/promote",
            "operator's",
        ),
        ({"podLabels": {"bad key!": "x"}}, "spec.runtime.podLabels", "label key"),
        ({"podLabels": {"team": "not a value"}}, "spec.runtime.podLabels.team", ""),
        (
            {"volumes": [{"name": "dshm", "emptyDir": {}}]},
            "spec.runtime.volumes[0].name",
            "operator's own volume",
        ),
        (
            {"volumes": [{"name": "model", "emptyDir": {}}]},
            "spec.runtime.volumes[0].name",
            "operator's own volume",
        ),
        (
            {"volumes": [{"name": "hf-cache", "emptyDir": {}}]},
            "spec.runtime.volumes[0].name",
            "operator's own volume",
        ),
        ({"volumes": [{"emptyDir": {}}]}, "spec.runtime.volumes[0].name", "needs a name"),
        (
            {"volumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]},
            "spec.runtime.volumes[1].name",
            "another volume",
        ),
        (
            {"volumeMounts": [{"name": "nowhere", "mountPath": "/x"}]},
            "spec.runtime.volumeMounts[0].name",
            "runtime.volumes",
        ),
        (
            {
                "volumes": [{"name": "cache", "emptyDir": {}}],
                "volumeMounts": [{"name": "cache", "mountPath": "/dev/shm"}],
            },
            "spec.runtime.volumeMounts[0].mountPath",
            "operator mounts",
        ),
        (
            # example_spec's model is pvc://models/...: mounted at /models/models.
            {
                "volumes": [{"name": "cache", "emptyDir": {}}],
                "volumeMounts": [{"name": "cache", "mountPath": "/models/models/"}],
            },
            "spec.runtime.volumeMounts[0].mountPath",
            "operator mounts",
        ),
        (
            {
                "volumes": [{"name": "cache", "emptyDir": {}}],
                "volumeMounts": [{"name": "cache", "mountPath": "relative"}],
            },
            "spec.runtime.volumeMounts[0].mountPath",
            "absolute",
        ),
        ({"serviceAccountName": "Not_A_Name"}, "spec.runtime.serviceAccountName", ""),
        ({"imagePullSecrets": [{}]}, "spec.runtime.imagePullSecrets[0].name", ""),
        ({"affinity": "anywhere"}, "spec.runtime.affinity", ""),
    ],
)
def test_a_clash_with_the_operator_is_refused_naming_the_field(
    runtime: dict[str, Any], field_path: str, words: str
) -> None:
    with pytest.raises(InvalidSpecError) as raised:
        parse_spec(spec_with(**runtime))
    assert raised.value.field_path == field_path
    assert words in raised.value.message


def test_the_example_model_is_mounted_where_the_clash_test_says() -> None:
    pod = build_pod_spec(parse_spec(example_spec()))
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["model"] == "/models/models"


@pytest.mark.parametrize(
    ("message", "field_path"),
    [
        (
            'Deployment.apps "chat-abc" is invalid: spec.template.spec.affinity.nodeAffinity'
            ".requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
            '.matchExpressions[0].operator: Invalid value: "Near"',
            "spec.runtime.affinity",
        ),
        (
            'Deployment.apps "chat-abc" is invalid: '
            "spec.template.spec.containers[0].securityContext.runAsUser: Invalid value: -1",
            "spec.runtime.containerSecurityContext",
        ),
        (
            'Deployment.apps "chat-abc" is invalid: spec.template.spec.securityContext.fsGroup:',
            "spec.runtime.securityContext",
        ),
        (
            'Deployment.apps "chat-abc" is invalid: spec.template.spec.volumes[3].nfs.server:',
            "spec.runtime.volumes",
        ),
        ('Deployment.apps "chat-abc" is invalid: spec.replicas: weird', "spec.runtime"),
    ],
)
def test_a_refused_deployment_names_the_runtime_field(message: str, field_path: str) -> None:
    error = refused_deployment(message)
    assert error.field_path == field_path
    assert message in error.message


class RefusesAffinity(FakeKubeApi):
    """An API server that refuses a Deployment with an affinity, as a real one would a bad one."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def create(self, resource: Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        if resource == DEPLOYMENTS and "affinity" in body["spec"]["template"]["spec"]:
            self.refused += 1
            raise KubeApiError(
                422,
                "Unprocessable Entity",
                f'Deployment.apps "{body["metadata"]["name"]}" is invalid: '
                "spec.template.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnored"
                "DuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator: "
                'Unsupported value: "Near"',
            )
        return super().create(resource, namespace, body)


def test_a_deployment_the_api_server_refuses_is_invalid_spec_once_not_a_retry_loop() -> None:
    cluster = Cluster(api=RefusesAffinity())
    spec = canary_spec()
    spec["runtime"]["affinity"] = AFFINITY
    cluster.apply(spec)
    cluster.tick()  # no exception: the refusal is the spec's error
    invalid = cluster.status.condition("InvalidSpec")
    assert invalid is not None and invalid.status == "True"
    assert invalid.message.startswith("spec.runtime.affinity: the API server refused")
    assert "Unsupported value" in invalid.message
    assert cluster.event_reasons()[-1] == "InvalidSpec"
    # Later ticks of the same spec neither retry the create nor write anything.
    writes = cluster.tick(60)
    assert writes == []
    assert cluster.api.refused == 1
    assert cluster.event_reasons().count("InvalidSpec") == 1
    # Fixing the spec creates the Deployment and clears the condition.
    spec["runtime"]["affinity"] = None  # a merge patch's null removes it
    cluster.apply(spec)
    cluster.tick()
    assert len(cluster.deployments()) == 1
    cleared = cluster.status.condition("InvalidSpec")
    assert cleared is None or cleared.status == "False"
