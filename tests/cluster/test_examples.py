"""Every manifest in examples/ is accepted by the API server exactly as written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from modelrollout.kube.labels import GROUP, PLURAL, VERSION
from modelrollout.models import parse_spec
from tests.support.kube import REPO_ROOT

pytestmark = pytest.mark.cluster

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_accepted_by_the_api_server_and_the_operator(
    path: Path, kube_api_client: client.ApiClient, namespace: str
) -> None:
    manifest: dict[str, Any] = yaml.safe_load(path.read_text())
    manifest["metadata"]["namespace"] = namespace
    stored = client.CustomObjectsApi(kube_api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest, dry_run="All"
    )
    # The API server neither refuses nor rewrites the spec: no drift for GitOps.
    assert stored["spec"] == manifest["spec"]
    parse_spec(stored["spec"])
