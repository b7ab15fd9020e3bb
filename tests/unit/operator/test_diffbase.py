"""The operator's kopf diff base: kopf's own essence, built without copying the status."""

from __future__ import annotations

import kopf
import pytest

from modelrollout.handlers.rollout import SpecDiffBaseStorage
from modelrollout.kube.labels import ANNOTATION_PREFIX

pytestmark = pytest.mark.unit


def rollout_body() -> dict[str, object]:
    return {
        "apiVersion": "modelrollout.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {
            "name": "chat",
            "namespace": "ml",
            "uid": "u-1",
            "resourceVersion": "42",
            "labels": {"team": "search"},
            "annotations": {
                "owner": "ml-platform",
                f"{ANNOTATION_PREFIX}/last-handled-configuration": "{}",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
            },
        },
        "spec": {"model": {"name": "chat", "uri": "s3://m/v2"}, "runtime": {"replicas": 2}},
        "status": {"phase": "Progressing", "history": [{"revision": "abc"}] * 20},
    }


def test_the_essence_is_kopfs_own_and_shares_nothing_with_the_body() -> None:
    raw = rollout_body()
    kopfs = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    ).build(body=kopf.Body(raw))
    ours = SpecDiffBaseStorage(prefix=ANNOTATION_PREFIX, key="last-handled-configuration").build(
        body=kopf.Body(raw)
    )
    assert ours == kopfs
    assert ours == {
        "metadata": {"labels": {"team": "search"}, "annotations": {"owner": "ml-platform"}},
        "spec": {"model": {"name": "chat", "uri": "s3://m/v2"}, "runtime": {"replicas": 2}},
    }
    # A deep copy still: a later change of the body does not reach the essence.
    raw["spec"]["runtime"]["replicas"] = 3  # type: ignore[index]
    assert ours["spec"]["runtime"]["replicas"] == 2
    assert raw["status"] == rollout_body()["status"]
