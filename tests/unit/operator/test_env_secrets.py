"""Env values and references: the serving container gets them as written; a
literal value never reaches status, Events or the operator's logs."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from modelrollout.engine.podspec import build_pod_spec
from modelrollout.engine.redaction import value_hash
from modelrollout.kube.api import DEPLOYMENTS, MODELROLLOUTS
from modelrollout.kube.events import EVENTS
from modelrollout.models import parse_spec
from tests.unit.operator.builders import example_spec, with_model_uri
from tests.unit.operator.test_reconciler_ticks import (
    FIRING,
    NAME,
    NAMESPACE,
    V1,
    V2,
    V3,
    Cluster,
    canary_spec,
    child,
    revision,
)

pytestmark = pytest.mark.unit

PLANTED = "hf_PLANTED_0123456789abcdef"
SECRET_REF = {"secretKeyRef": {"name": "hf-token", "key": "token"}}


def with_env(spec: dict[str, Any]) -> dict[str, Any]:
    runtime = {
        **spec["runtime"],
        "env": [
            {"name": "HF_TOKEN", "value": PLANTED},
            {"name": "GATED_TOKEN", "valueFrom": SECRET_REF},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "envFrom": [{"prefix": "APP_", "configMapRef": {"name": "settings", "optional": True}}],
    }
    return {**spec, "runtime": runtime}


def test_the_serving_container_gets_values_and_references_as_written() -> None:
    container = build_pod_spec(parse_spec(with_env(example_spec())))["containers"][0]
    assert container["env"] == [
        {"name": "GATED_TOKEN", "valueFrom": SECRET_REF},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "HF_TOKEN", "value": PLANTED},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "value": "120"},
    ]
    assert container["envFrom"] == [
        {"prefix": "APP_", "configMapRef": {"name": "settings", "optional": True}}
    ]
    assert "envFrom" not in build_pod_spec(parse_spec(example_spec()))["containers"][0]


def places_holding(value: str, cluster: Cluster) -> set[str]:
    """Where in the objects the fake API stores `value` appears: kind/name and top-level field."""
    found = set()
    for resource in (MODELROLLOUTS, DEPLOYMENTS, EVENTS):
        for obj in cluster.api.list(resource, NAMESPACE):
            for section, content in obj.items():
                if value in json.dumps(content):
                    found.add(f"{obj.get('kind', resource)}/{section}")
    return found


def test_a_planted_env_value_reaches_only_the_spec_and_pods_through_canary_and_rollback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    cluster = Cluster()
    spec = with_env(canary_spec())
    cluster.started(spec)
    cluster.provider.answers["ALERTS"] = FIRING
    cluster.run_until_phase("RolledBack")
    cluster.provider.answers.pop("ALERTS")
    cluster.apply(with_model_uri(spec, V3))
    cluster.run_until_phase("Succeeded")

    history = cluster.status.history
    assert [entry.outcome for entry in history][:2] == ["Promoted", "RolledBack"]
    stored = history[0].spec
    assert stored is not None
    assert stored["runtime"]["env"][0] == {"name": "HF_TOKEN", "valueHash": value_hash(PLANTED)}
    assert stored["runtime"]["env"][1:] == spec["runtime"]["env"][1:]  # references as written
    assert stored["runtime"]["envFrom"] == spec["runtime"]["envFrom"]
    assert cluster.event_reasons()  # Events were posted, and none holds it
    # The spec the user wrote and the pod template the kubelet needs; nowhere else.
    assert places_holding(PLANTED, cluster) == {"ModelRollout/spec", "Deployment/spec"}
    assert caplog.records  # the operator logged, and no line holds it
    assert PLANTED not in caplog.text


def test_the_first_tick_redacts_values_an_older_operator_stored_and_keeps_the_revision() -> None:
    cluster = Cluster()
    spec = with_env(canary_spec())
    cluster.started(spec)
    cluster.run_until_phase("Succeeded")
    cluster.run_until(lambda _: cluster.tick(60) == [], "nothing left to do")
    stable = revision(V2, spec)
    assert cluster.status.stable_revision == stable
    # What an operator before redaction wrote: the literal value in history.
    legacy = cluster.status.to_patch()
    for entry in legacy["history"]:
        for var in entry["spec"]["runtime"]["env"]:
            if var.pop("valueHash", None) is not None:
                var["value"] = PLANTED
    cluster.api.merge_patch(
        MODELROLLOUTS, NAMESPACE, NAME, {"status": legacy}, subresource="status"
    )
    assert PLANTED in json.dumps(cluster.body()["status"])
    deployments = cluster.api.list(DEPLOYMENTS, NAMESPACE)

    writes = cluster.tick(1)

    assert [f"{w.verb} {w.target}" for w in writes] == [f"patch modelrollouts/{NAME}/status"]
    assert PLANTED not in json.dumps(cluster.body()["status"])
    assert cluster.status.stable_revision == stable
    assert cluster.api.list(DEPLOYMENTS, NAMESPACE) == deployments
    assert cluster.deployments() == {child(V2, spec): (2, "stable")}
    assert cluster.tick(15) == []
    assert revision(V1, spec) != stable
