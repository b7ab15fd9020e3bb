"""The API server, with this release's CRD, keeps rollouts as release d31736c wrote them.

An upgrade replaces the CRD under objects the previous operator wrote; nothing
rewrites them. Each fixture's ModelRollout (tests/fixtures/release-d31736c) is
created, its status written through the status subresource, both with
fieldValidation=Strict (an unknown field is refused, not silently pruned), and
what the API server stores must be the fixture's spec and status unchanged.
The children are core and Gateway API objects whose schemas this project does
not own: tests/unit/operator/test_upgrade.py takes them over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

pytestmark = pytest.mark.cluster

GROUP, VERSION, PLURAL = "modelrollout.dev", "v1alpha1", "modelrollouts"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "release-d31736c"


def rollout(path: Path) -> dict[str, Any]:
    (found,) = [
        obj for obj in yaml.safe_load_all(path.read_text()) if obj and obj["kind"] == "ModelRollout"
    ]
    return dict(found)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.yaml")), ids=lambda path: path.stem)
def test_the_old_rollout_is_stored_unchanged(
    kube_api_client: client.ApiClient, namespace: str, path: Path
) -> None:
    old = rollout(path)
    objects = client.CustomObjectsApi(kube_api_client)
    manifest = {
        "apiVersion": old["apiVersion"],
        "kind": old["kind"],
        "metadata": {"name": old["metadata"]["name"]},
        "spec": old["spec"],
    }
    objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest, field_validation="Strict"
    )
    objects.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        old["metadata"]["name"],
        {"status": old["status"]},
        field_validation="Strict",
    )
    stored = objects.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, old["metadata"]["name"]
    )
    assert stored["spec"] == old["spec"]
    assert stored["status"] == old["status"]
