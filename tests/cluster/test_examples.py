"""Every manifest in examples/ is accepted by the API server exactly as written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from modelrollout.kube.labels import GROUP, PLURAL, VERSION
from modelrollout.models import parse_spec
from modelserve.gates import load_suite
from tests.support.kube import REPO_ROOT

pytestmark = pytest.mark.cluster

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
DOCUMENTS = [
    (path, index, document)
    for path in EXAMPLES
    for index, document in enumerate(yaml.safe_load_all(path.read_text()))
]


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


def _evaluation_suites(spec: dict[str, Any]) -> list[dict[str, Any]]:
    strategy = spec["strategy"]
    steps = [
        *(strategy.get("canary") or {}).get("steps", []),
        *(strategy.get("shadow") or {}).get("canarySteps", []),
    ]
    evaluations = [s["evaluation"] for s in steps if "evaluation" in s]
    if pre := (strategy.get("blueGreen") or {}).get("prePromotionEvaluation"):
        evaluations.append(pre)
    return [e["suite"] for e in evaluations]


@pytest.mark.parametrize(
    ("path", "index", "manifest"),
    DOCUMENTS,
    ids=[f"{p.name}[{i}]" for p, i, _ in DOCUMENTS],
)
def test_example_is_accepted_by_the_api_server_and_the_operator(
    path: Path,
    index: int,
    manifest: dict[str, Any],
    kube_api_client: client.ApiClient,
    namespace: str,
) -> None:
    manifest["metadata"]["namespace"] = namespace
    if manifest["kind"] == "ConfigMap":
        stored_map = client.CoreV1Api(kube_api_client).create_namespaced_config_map(
            namespace, manifest, dry_run="All"
        )
        assert stored_map.data == manifest["data"]
        # A ConfigMap shipped beside the rollouts holds gate suites modelserve eval accepts.
        for text in manifest["data"].values():
            load_suite(text)
        return
    assert manifest["kind"] == "ModelRollout"
    stored = client.CustomObjectsApi(kube_api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest, dry_run="All"
    )
    # The API server neither refuses nor rewrites the spec: no drift for GitOps.
    assert stored["spec"] == manifest["spec"]
    parse_spec(stored["spec"])
    # A suite the rollout names ships in the same file, under the key it reads.
    shipped = {
        (d["metadata"]["name"], key)
        for p, _, d in DOCUMENTS
        if p == path and d["kind"] == "ConfigMap"
        for key in d["data"]
    }
    for suite in _evaluation_suites(manifest["spec"]):
        assert (suite["configMapName"], suite.get("key", "suite.yaml")) in shipped
