"""A canary's rollback window, tick by tick on the in-memory API server.

After a promotion the previous stable keeps a share of its pods, without
traffic, until `rollbackWindow.duration` is up; `kubectl modelrollout
rollback` (an annotation) moves all traffic back to it in one route write, no
step walked and no pod started. The window's end is a timer of its own; a new
revision rolled out meanwhile ends it at once.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from modelrollout.engine.commands import annotation_for
from modelrollout.engine.timing import tick_period
from modelrollout.kube.api import DEPLOYMENTS, MODELROLLOUTS, PODS, SERVICES
from modelrollout.kube.labels import REVISION_LABEL, SERVING_LABEL
from modelrollout.kubectl.render import Rollout, refusal
from tests.unit.operator.builders import with_model_uri
from tests.unit.operator.test_reconciler_ticks import (
    NAME,
    NAMESPACE,
    V1,
    V2,
    V3,
    Cluster,
    canary_spec,
    child,
    revision,
    targets,
)

pytestmark = pytest.mark.unit

WINDOW = timedelta(minutes=10)
INTERVAL, RESYNC, SLOW = 2.0, 300.0, 10.0


def window_spec(router: str = "gatewayAPI") -> dict[str, Any]:
    spec = canary_spec(router)
    spec["runtime"]["replicas"] = 4
    spec["strategy"]["canary"]["rollbackWindow"] = {"duration": "10m", "replicaPercent": 25}
    return spec


def promoted(spec: dict[str, Any]) -> Cluster:
    """V1 was stable; V2 walked its steps and is promoted (settled, just now)."""
    cluster = Cluster()
    cluster.started(spec)
    cluster.run_until_phase("Succeeded")
    return cluster


def send(cluster: Cluster, command: str) -> None:
    """What `kubectl modelrollout <command>` writes: an annotation with a fresh nonce."""
    annotations = {annotation_for(command): uuid.uuid4().hex}
    cluster.api.merge_patch(
        MODELROLLOUTS, NAMESPACE, NAME, {"metadata": {"annotations": annotations}}
    )


def services(cluster: Cluster) -> list[str]:
    return sorted(s["metadata"]["name"] for s in cluster.api.list(SERVICES, NAMESPACE))


def cli_refusal(cluster: Cluster, command: str) -> str | None:
    return refusal(Rollout.of(cluster.body()), command, cluster.now)


def test_the_previous_stable_stays_warm_without_traffic_until_the_window_ends() -> None:
    spec = window_spec()
    cluster = promoted(spec)
    promoted_at = cluster.now
    old, new = child(V1, spec), child(V2, spec)
    status = cluster.status
    assert (status.stable_revision, status.previous_revision) == (
        revision(V2, spec),
        revision(V1, spec),
    )
    assert status.previous_model == V1
    assert status.previous_scale_down_at == promoted_at + WINDOW
    # 25% of 4 replicas kept, no traffic; its Service kept so a rollback needs no new endpoints.
    assert cluster.deployments() == {old: (1, "previous"), new: (4, "stable")}
    assert cluster.route_weights() == {new: 100}
    cluster.tick(15)
    cluster.settle()
    assert services(cluster) == [old, new]
    assert cli_refusal(cluster, "rollback") is None

    # The window's end is the rollout's next tick, not the next resync.
    decided = cluster.reconciler.last_decision(cluster.body()["metadata"]["uid"])
    assert decided is not None and decided.next_timer == promoted_at + WINDOW
    period = tick_period(cluster.body(), cluster.now, INTERVAL, RESYNC, SLOW, decided)
    assert period == INTERVAL  # Succeeded with a revision kept: not settled yet

    cluster.now = promoted_at + WINDOW - timedelta(seconds=15)
    cluster.tick(15)
    cluster.settle()
    status = cluster.status
    assert (status.previous_revision, status.previous_scale_down_at) == (None, None)
    assert cluster.deployments() == {new: (4, "stable")}
    cluster.tick(2)
    assert services(cluster) == [new]
    assert not [
        p for p in cluster.api.list(PODS, NAMESPACE) if p["metadata"]["name"].startswith(old)
    ]
    decided = cluster.reconciler.last_decision(cluster.body()["metadata"]["uid"])
    assert decided is not None
    assert tick_period(cluster.body(), cluster.now, INTERVAL, RESYNC, SLOW, decided) == RESYNC


def test_rollback_in_the_window_is_one_route_write_to_the_warm_revision() -> None:
    spec = window_spec()
    cluster = promoted(spec)
    old, new = child(V1, spec), child(V2, spec)
    cluster.tick(60)
    cluster.settle()
    old_pods = {p["metadata"]["name"] for p in cluster.api.list(PODS, NAMESPACE)} - {
        f"{new}-{i}" for i in range(4)
    }

    send(cluster, "rollback")
    writes = cluster.tick(1)
    # Traffic first, in one write; no pod had to start for it.
    assert targets(writes)[:2] == [f"patch httproutes/{NAME}", f"patch modelrollouts/{NAME}/status"]
    assert writes[0].body == {
        "spec": {"rules": [{"backendRefs": [
            {"name": old, "port": 8000, "weight": 100},
            {"name": new, "port": 8000, "weight": 0},
        ]}]}
    }  # fmt: skip
    assert cluster.route_weights() == {old: 100, new: 0}
    status = cluster.status
    assert status.phase == "RollingBack"
    assert (status.stable_revision, status.stable_model) == (revision(V1, spec), V1)
    assert (status.canary_revision, status.canary_model) == (revision(V2, spec), V2)
    assert (status.previous_revision, status.previous_scale_down_at) == (None, None)
    assert status.weights.canary == 0
    assert status.history[0].revision == revision(V2, spec)
    assert status.history[0].outcome == "RolledBack"
    assert "within the rollback window" in status.history[0].reason
    progressing = status.condition("Progressing")
    assert progressing is not None and progressing.reason == "RolledBackInWindow"
    assert cluster.event_reasons()[-1] == "RollingBack"
    # The warm revision goes back to full size, the demoted one to its abort delay's pod.
    assert cluster.deployments() == {old: (4, "stable"), new: (1, "canary")}

    cluster.settle()
    cluster.tick(1)
    assert cluster.status.phase == "RolledBack"
    assert old_pods <= {p["metadata"]["name"] for p in cluster.api.list(PODS, NAMESPACE)}
    assert cluster.route_weights() == {old: 100, new: 0}
    # The spec still names V2: the rollout holds there, as after an abort, until it changes.
    cluster.tick(60)
    cluster.settle()
    assert cluster.status.phase == "RolledBack"
    assert cluster.deployments() == {old: (4, "stable")}
    cluster.apply(spec)  # the spec set back to V1 (undo, or a revert in git)
    cluster.tick(1)
    assert (cluster.status.phase, cluster.status.stable_revision) == (
        "Succeeded",
        revision(V1, spec),
    )


def test_rollback_under_the_service_router_labels_the_warm_pods_before_the_others_leave() -> None:
    spec = window_spec(router="service")
    cluster = promoted(spec)
    old, new = revision(V1, spec), revision(V2, spec)

    def serving() -> dict[str, int]:
        counts: dict[str, int] = {}
        for pod in cluster.api.list(PODS, NAMESPACE):
            labels = pod["metadata"]["labels"]
            if labels.get(SERVING_LABEL) == "true":
                counts[labels[REVISION_LABEL]] = counts.get(labels[REVISION_LABEL], 0) + 1
        return counts

    assert serving() == {new: 4}
    send(cluster, "rollback")
    writes = cluster.tick(1)
    # (joins the Service) of each serving-label patch, in order: make before break.
    labelled = [
        w.body["metadata"]["labels"][SERVING_LABEL] == "true"
        for w in writes
        if w.resource == PODS and SERVING_LABEL in w.body["metadata"]["labels"]
    ]
    assert labelled == [True, False, False, False, False]
    assert serving() == {old: 1}
    cluster.settle()
    cluster.tick(1)
    cluster.settle()
    assert cluster.status.phase == "RolledBack"
    assert serving() == {old: 4}
    assert cluster.deployments() == {f"{NAME}-{old}": (4, "stable")}


def test_rollback_after_the_window_is_refused_and_changes_nothing() -> None:
    spec = window_spec()
    cluster = promoted(spec)
    old, new = child(V1, spec), child(V2, spec)
    cluster.now += WINDOW
    refused = cli_refusal(cluster, "rollback")
    assert refused is not None and "no warm revision" in refused and "ended at" in refused
    cluster.tick(0)
    cluster.settle()
    refused = cli_refusal(cluster, "rollback")
    assert refused is not None and "no warm revision" in refused and "`undo`" in refused

    send(cluster, "rollback")  # sent anyway (or raced the window's end)
    writes = cluster.tick(1)
    assert targets(writes) == [f"patch modelrollouts/{NAME}/status"]  # the nonce, handled
    status = cluster.status
    assert (status.phase, status.stable_revision) == ("Succeeded", revision(V2, spec))
    assert "rollback" in status.handled_commands
    assert cluster.route_weights() == {new: 100}
    assert cluster.deployments() == {new: (4, "stable")}
    assert old not in services(cluster)


def test_a_kept_revision_without_ready_pods_is_not_rolled_back_to() -> None:
    spec = window_spec()
    cluster = promoted(spec)
    new = child(V2, spec)
    old = child(V1, spec)
    # Its pod lost (a node drained), its replacement still loading the model.
    cluster.api.delete(PODS, NAMESPACE, f"{old}-0")
    cluster.settle(loading=True)
    send(cluster, "rollback")
    writes = cluster.tick(1)
    assert f"patch httproutes/{NAME}" not in targets(writes)
    assert cluster.route_weights() == {new: 100}
    assert cluster.status.stable_revision == revision(V2, spec)
    assert cluster.event_reasons()[-1] == "RollbackRefused"


def test_a_new_revision_during_the_window_releases_the_kept_one() -> None:
    spec = window_spec()
    cluster = promoted(spec)
    old, v2, v3 = child(V1, spec), child(V2, spec), child(V3, spec)
    cluster.apply(with_model_uri(spec, V3))
    cluster.tick(1)
    status = cluster.status
    assert (status.phase, status.stable_revision, status.canary_revision) == (
        "Progressing",
        revision(V2, spec),
        revision(V3, spec),
    )
    assert (status.previous_revision, status.previous_scale_down_at) == (None, None)
    assert old not in cluster.deployments()
    assert set(cluster.deployments()) == {v2, v3}
    refused = cli_refusal(cluster, "rollback")
    assert refused is not None and "`abort`" in refused
    # The new canary, promoted in turn, keeps V2 warm for a window of its own.
    cluster.settle()
    cluster.run_until_phase("Succeeded")
    assert cluster.status.previous_revision == revision(V2, spec)
    assert cluster.deployments() == {v2: (1, "previous"), v3: (4, "stable")}


def test_a_rollback_window_of_zero_is_refused_naming_the_field() -> None:
    spec = window_spec()
    spec["strategy"]["canary"]["rollbackWindow"]["duration"] = "0s"
    cluster = Cluster()
    cluster.apply(spec)
    cluster.tick()
    invalid = cluster.status.condition("InvalidSpec")
    assert invalid is not None and invalid.status == "True"
    assert invalid.message.startswith("spec.strategy.canary.rollbackWindow.duration: ")
    assert cluster.api.list(DEPLOYMENTS, NAMESPACE) == []


def test_blue_green_rolls_back_to_its_previous_color_within_scale_down_delay() -> None:
    spec = canary_spec(router="service")
    spec["strategy"] = {"blueGreen": {"scaleDownDelay": "10m"}}
    cluster = Cluster()
    cluster.started(spec)
    cluster.tick(1)
    cluster.settle()
    send(cluster, "promote")
    cluster.run_until_phase("Succeeded")
    blue, green = revision(V1, spec), revision(V2, spec)
    service = cluster.api.get(SERVICES, NAMESPACE, NAME)
    assert service is not None and service["spec"]["selector"][REVISION_LABEL] == green

    send(cluster, "rollback")
    writes = cluster.tick(1)
    # One selector write, first: the previous color is at full size and Ready.
    assert targets(writes)[0] == f"patch services/{NAME}"
    service = cluster.api.get(SERVICES, NAMESPACE, NAME)
    assert service is not None and service["spec"]["selector"][REVISION_LABEL] == blue
    assert (cluster.status.stable_revision, cluster.status.canary_revision) == (blue, green)
    cluster.settle()
    cluster.tick(1)
    assert cluster.status.phase == "RolledBack"
