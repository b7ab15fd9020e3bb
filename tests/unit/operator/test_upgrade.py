"""A newer operator takes over rollouts that release d31736c left mid-flight.

Each fixture (tests/fixtures/release-d31736c, written by that release's own
Reconciler) is loaded into the in-memory API server with its children; this
release's Reconciler then ticks it. What a user would see must not jump: the
first tick moves no weight and scales nothing, announces no step again, keeps
the phase and the step; the step advances only when its timer is due, by one;
history's literal env values become hashes in one status write; and the
rollout then ends as it would have under the old operator.

The stored status is checked against this release's CRD schema (the generated
crds/ file) by `schema_violations`, a walk over the structural openAPI subset
the CRD uses (types, properties, enums, bounds, required): jsonschema is not
in the environment, and the walk also names any field the API server would
prune, which a JSON-schema validator would let through.
"""

from __future__ import annotations

import copy
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrollout.kube.api import DEPLOYMENTS, HTTPROUTES, MODELROLLOUTS, SERVICES, Resource
from modelrollout.kube.events import EVENTS
from modelrollout.kube.labels import SPEC_REVISION_ANNOTATION
from modelrollout.models import ModelRolloutStatus
from tests.unit.operator.test_reconciler_ticks import NAME, NAMESPACE, Cluster

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "release-d31736c"
CRD = ROOT / "crds" / "modelrollouts.modelrollout.dev.yaml"
RESOURCES = {
    "ModelRollout": MODELROLLOUTS,
    "Deployment": DEPLOYMENTS,
    "Service": SERVICES,
    "HTTPRoute": HTTPROUTES,
}
WRITTEN_AT = re.compile(r"Reconciler at (\S+)")


def fixture_objects(name: str) -> list[dict[str, Any]]:
    return [obj for obj in yaml.safe_load_all((FIXTURES / f"{name}.yaml").read_text()) if obj]


def written_at(name: str) -> datetime:
    match = WRITTEN_AT.search((FIXTURES / f"{name}.yaml").read_text().splitlines()[0])
    assert match is not None
    return datetime.fromisoformat(match.group(1))


def status_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    return schema


def schema_violations(value: Any, schema: dict[str, Any], path: str = "status") -> list[str]:
    """Where `value` breaks the CRD's structural schema, or holds a field it would prune."""
    if value is None:
        return [] if schema.get("nullable") else [f"{path}: null"]
    kinds = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "integer": int,
        "number": (int, float),
    }
    expected = schema.get("type")
    if expected and not isinstance(value, kinds[expected]):
        return [f"{path}: {value!r} is not {expected}"]
    found: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        found.append(f"{path}: {value} < {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        found.append(f"{path}: {value} > {schema['maximum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        found += [
            f"{path}.{key}: missing" for key in schema.get("required", []) if key not in value
        ]
        for key, item in value.items():
            if key in properties:
                found += schema_violations(item, properties[key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                found += schema_violations(item, schema["additionalProperties"], f"{path}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                found.append(f"{path}.{key}: unknown, would be pruned")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += schema_violations(item, schema["items"], f"{path}[{index}]")
    return found


def with_generation(cluster: Cluster, rollout: dict[str, Any]) -> dict[str, Any]:
    """`rollout` created, then its spec written until its generation is the fixture's.

    Each spec write bumps the generation by one, as when the old operator's user
    applied each new model; the last write is the fixture's spec.
    """
    wanted = rollout["metadata"].pop("generation", 1)
    spec = rollout["spec"]
    name = rollout["metadata"]["name"]
    earlier = [
        {**spec, "model": {**spec["model"], "uri": f"pvc://models/earlier/{generation}"}}
        for generation in range(1, wanted)
    ]
    created = cluster.api.create(
        MODELROLLOUTS, NAMESPACE, {**rollout, "spec": earlier[0] if earlier else spec}
    )
    for later in [*earlier[1:], spec][: wanted - 1]:
        created = cluster.api.merge_patch(MODELROLLOUTS, NAMESPACE, name, {"spec": later})
    assert created["metadata"]["generation"] == wanted
    return created


def loaded(name: str) -> Cluster:
    """The fixture's objects on the fake API server, statuses written through /status.

    The children's owner references name the rollout's uid on the new server (the
    fixture's uid was the old server's), and the rollout's generation is the one it had
    (`with_generation`): status.observedGeneration is compared with it.
    """
    cluster = Cluster()
    cluster.now = written_at(name)
    uids: dict[str, str] = {}
    for obj in fixture_objects(name):
        resource = RESOURCES[obj["kind"]]
        for owner in obj["metadata"].get("ownerReferences", []):
            owner["uid"] = uids[owner["name"]]
        status = obj.pop("status", None)
        if resource == MODELROLLOUTS:
            created = with_generation(cluster, obj)
        else:
            created = cluster.api.create(resource, NAMESPACE, obj)
        uids[created["metadata"]["name"]] = created["metadata"]["uid"]
        if status is not None:
            cluster.api.merge_patch(
                resource,
                NAMESPACE,
                created["metadata"]["name"],
                {"status": status},
                subresource="status",
            )
    # The EndpointSlices the cluster's controllers had published for the ready pods.
    cluster.settle()
    return cluster


def traffic_and_scale(cluster: Cluster) -> dict[str, Any]:
    """What moves traffic or pods: the route's and Services' specs, each Deployment's replicas."""
    seen: dict[str, Any] = {}
    for resource in (HTTPROUTES, SERVICES):
        for obj in cluster.api.list(resource, NAMESPACE):
            seen[f"{resource.plural}/{obj['metadata']['name']}"] = obj["spec"]
    for deployment in cluster.api.list(DEPLOYMENTS, NAMESPACE):
        seen[f"deployments/{deployment['metadata']['name']}"] = deployment["spec"]["replicas"]
    return seen


def history_values(status: dict[str, Any]) -> list[str]:
    return [
        var["value"]
        for entry in status.get("history", [])
        for var in ((entry.get("spec") or {}).get("runtime") or {}).get("env", [])
        if "value" in var
    ]


def status_writes(writes: list[Any], resource: Resource = MODELROLLOUTS) -> list[Any]:
    return [w for w in writes if w.resource == resource and w.subresource == "status"]


FIXTURE_NAMES = sorted(path.stem for path in FIXTURES.glob("*.yaml"))
# How each fixture's rollout ends under the old operator, given healthy metrics.
ENDS_IN = {
    "bluegreen-preview-up": "Succeeded",
    "canary-pause-at-25": "Succeeded",
    "canary-paused-by-breach": "Paused",  # a breach pause waits for `resume`
    "canary-promoting": "Succeeded",
    "canary-rolled-back": "RolledBack",
    "shadow-mirroring": "Succeeded",
}


def test_every_fixture_has_an_expected_end() -> None:
    assert sorted(ENDS_IN) == FIXTURE_NAMES


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_the_old_status_validates_against_the_new_crd(name: str) -> None:
    (rollout,) = [obj for obj in fixture_objects(name) if obj["kind"] == "ModelRollout"]
    assert schema_violations(rollout["status"], status_schema()) == []
    ModelRolloutStatus.model_validate(rollout["status"])


# Fixtures whose next step was not yet due when the old operator stopped.
MID_STEP = [name for name in FIXTURE_NAMES if name != "canary-promoting"]


@pytest.mark.parametrize("name", MID_STEP)
def test_the_first_tick_moves_nothing_and_repeats_no_step(name: str) -> None:
    cluster = loaded(name)
    before = copy.deepcopy(cluster.body()["status"])
    assert history_values(before), "the old release stored literal env values in history"
    traffic_before = traffic_and_scale(cluster)

    writes = cluster.tick()
    cluster.settle()

    after = cluster.body()["status"]
    assert traffic_and_scale(cluster) == traffic_before
    assert after["phase"] == before["phase"]
    assert after.get("currentStep") == before.get("currentStep")
    assert after.get("stepStartedAt") == before.get("stepStartedAt")
    assert after["weights"] == before["weights"]
    assert [w for w in writes if w.resource == EVENTS] == []
    # The values are gone from history in one status write; the entries are otherwise kept.
    assert history_values(after) == []
    assert len(status_writes(writes)) == 1
    assert [h["revision"] for h in after["history"]] == [h["revision"] for h in before["history"]]
    assert schema_violations(after, status_schema()) == []

    quiet = cluster.tick()
    assert status_writes(quiet) == []
    assert traffic_and_scale(cluster) == traffic_before


def test_a_promotion_in_flight_completes_once_as_the_old_operator_would() -> None:
    """Promoting lasts one tick: the old operator's next tick (generate.py, run on) made
    it Succeeded, left only the new revision on the route, deleted the old Deployment."""
    cluster = loaded("canary-promoting")
    before = cluster.status
    assert before.phase == "Promoting"
    new = f"{NAME}-{before.canary_revision}"
    assert cluster.api.get(DEPLOYMENTS, NAMESPACE, new)["spec"]["replicas"] == 2

    writes = cluster.tick()
    cluster.settle()

    after = cluster.body()["status"]
    assert after["phase"] == "Succeeded"
    assert after["stableRevision"] == before.canary_revision
    assert history_values(after) == []
    assert len(status_writes(writes)) == 1
    assert [w.body["reason"] for w in writes if w.resource == EVENTS] == ["Promoted"]
    assert cluster.route_weights() == {new: 100}
    assert [d["metadata"]["name"] for d in cluster.api.list(DEPLOYMENTS, NAMESPACE)] == [new]
    assert cluster.api.get(DEPLOYMENTS, NAMESPACE, new)["spec"]["replicas"] == 2
    assert schema_violations(after, status_schema()) == []

    later = cluster.tick(15)
    assert status_writes(later) == []
    assert [w for w in later if w.resource == EVENTS] == []


def steps_walked(cluster: Cluster, ends_in: str) -> list[tuple[str, int | None, float]]:
    """Tick every 15 s until `ends_in` holds (or a minute after, for a terminal phase):
    each (phase, currentStep, seconds since takeover) the status passed through."""
    start = cluster.now
    walked: list[tuple[str, int | None, float]] = []
    for _ in range(200):
        cluster.tick(15)
        cluster.settle()
        status = cluster.status
        if not walked or walked[-1][:2] != (status.phase, status.current_step):
            walked.append(
                (status.phase, status.current_step, (cluster.now - start).total_seconds())
            )
        if status.phase == ends_in and (cluster.now - start) >= timedelta(minutes=1):
            return walked
    raise AssertionError(f"never reached {ends_in}: {walked}")


def test_a_canary_mid_pause_waits_out_its_timer_then_finishes() -> None:
    cluster = loaded("canary-pause-at-25")
    before = cluster.status
    assert (before.phase, before.current_step) == ("Progressing", 1)
    assert before.step_started_at is not None
    due = (before.step_started_at + timedelta(minutes=10) - cluster.now).total_seconds()
    walked = steps_walked(cluster, "Succeeded")
    assert [(phase, step) for phase, step, _ in walked] == [
        ("Progressing", 1),
        # setWeight 50 is done in the tick that writes it (exact weights): on to the pause.
        ("Progressing", 3),
        ("Promoting", 4),
        ("Succeeded", None),
    ]
    advanced_at = walked[1][2]
    assert due <= advanced_at < due + 15 + 1


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_each_rollout_ends_as_it_would_have(name: str) -> None:
    cluster = loaded(name)
    phase = cluster.status.phase
    walked = steps_walked(cluster, ENDS_IN[name])
    assert walked[0][0] in (phase, ENDS_IN[name])
    assert walked[-1][0] == ENDS_IN[name]
    steps = [step for _, step, _ in walked if step is not None]
    assert steps == sorted(steps), "no step went back"
    if ENDS_IN[name] == "Succeeded":
        route_or_service = traffic_and_scale(cluster)
        assert route_or_service, "children still there"


def test_the_schema_walk_names_what_the_api_server_would_reject_or_prune() -> None:
    (rollout,) = [o for o in fixture_objects("canary-pause-at-25") if o["kind"] == "ModelRollout"]
    status = copy.deepcopy(rollout["status"])
    status["phase"] = "Failed"
    status["weights"]["canary"] = 101
    status["weights"]["retired"] = 1
    assert schema_violations(status, status_schema()) == [
        "status.phase: 'Failed' not in " + str(status_schema()["properties"]["phase"]["enum"]),
        "status.weights.canary: 101 > 100",
        "status.weights.retired: unknown, would be pruned",
    ]


def test_scaling_a_canary_the_old_operator_started_moves_no_step_and_starts_no_revision() -> None:
    """The old release hashed replicas into a revision; after the takeover its canary is
    marked as the spec's revision, so `kubectl scale` (or an HPA) resizes it in place."""
    cluster = loaded("canary-pause-at-25")
    before = cluster.status
    canary = f"{NAME}-{before.canary_revision}"
    cluster.tick()
    cluster.settle()
    marked = cluster.api.get(DEPLOYMENTS, NAMESPACE, canary)
    assert marked is not None
    assert SPEC_REVISION_ANNOTATION in marked["metadata"]["annotations"]

    cluster.api.merge_patch(MODELROLLOUTS, NAMESPACE, NAME, {"spec": {"runtime": {"replicas": 8}}})
    cluster.tick(1)
    cluster.settle()
    after = cluster.status
    assert (after.phase, after.current_step, after.weights) == (
        before.phase,
        before.current_step,
        before.weights,
    )
    assert (after.stable_revision, after.canary_revision) == (
        before.stable_revision,
        before.canary_revision,
    )
    # Stable gets the new count; the canary its share of it at 25%, rounded up.
    assert {
        d["metadata"]["name"]: d["spec"]["replicas"]
        for d in cluster.api.list(DEPLOYMENTS, NAMESPACE)
    } == {
        f"{NAME}-{before.stable_revision}": 8,
        canary: 2,
    }
