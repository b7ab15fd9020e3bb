"""Chaos, bounded in time: what a rollout depends on fails under it, and comes back.

- Prometheus is SIGKILLed during an analysis step and stays down for longer
  than `whenMetricsUnavailable.after` (action pause): the rollout pauses,
  says why in status and Events, never moves forward while blind, stays
  paused once Prometheus is back, and a `resume` continues it to promotion.
  (Prometheus gone with action rollback is test_canary_operator.py's.)
- The kube-apiserver, and only it (etcd, the controllers and the operator
  keep running), is SIGKILLed mid-canary and started again a few seconds
  later, in a cluster of this module's own so the session's is not shaken.
  The same operator process must ride it out and finish the rollout
  without skipping, repeating or overshooting a step.

Every status change is recorded from a watch (tests/support/status_watch.py).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from modelrollout.engine.revision import revision_of
from modelrollout.models import parse_spec
from modelrollout.models.durations import parse_duration
from modelrollout_dev import cluster, faults
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.prometheus import PrometheusHandle
from tests.e2e.conftest import TEST_TICK_INTERVAL
from tests.support.kube import apply_crd, create_namespace, project_crds, wait_until
from tests.support.rollouts import Rollouts, rollout_manifest, with_model
from tests.support.status_watch import State, StatusWatch, overshoots, steps_walked

pytestmark = [pytest.mark.e2e, pytest.mark.localharness]

# A step's start in an Event's message: one tick's Event names each thing it did, "; "
# between them (engine/step_event.py). "step N/M <step>" alone is a start; "step N/M
# <step>: ..." is news about a step already running (Paused, GatesPassed).
STEP_STARTED = re.compile(r"(?:^|; )step (\d+)/(\d+) [^:;]*(?=; |$)")


class Timeline:
    """A test's time bound, which every wait draws on, and when each milestone was reached."""

    def __init__(self, bound: float) -> None:
        self.bound = bound
        self.began = time.monotonic()
        self.marks: list[tuple[str, float]] = []

    def budget(self, at_most: float) -> float:
        """How long the next wait may take: `at_most`, within what is left of the bound."""
        left = self.bound - self.elapsed
        assert left > 0, f"over the bound of {self.bound:.0f}s: {self}"
        return min(at_most, left)

    def mark(self, what: str) -> None:
        self.marks.append((what, time.monotonic() - self.began))

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def __str__(self) -> str:
        return ", ".join(f"{what} at {at:.1f}s" for what, at in self.marks)


def revision(manifest: dict[str, Any]) -> str:
    return revision_of(parse_spec(manifest["spec"]))


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), None)


def steps_started(rollouts: Rollouts, name: str) -> list[int]:
    """The 0-based steps the StepStarted Events announce."""
    started = []
    for event in rollouts.events(name):
        # A tick's one Event takes the reason of the most important thing it did (a check's
        # Warning, a promotion): a step started with it is in its message all the same.
        for match in STEP_STARTED.finditer(event.message or ""):
            # A repeat of an Event is a count on it (kube/events.py): each one is a start.
            started += [int(match.group(1)) - 1] * (event.count or 1)
    return started


def assert_walked_every_step_once(
    recorded: StatusWatch, rollouts: Rollouts, name: str, steps: list[dict[str, Any]]
) -> None:
    """No step skipped or repeated, no weight above what the steps reached so far.

    The watch is the record; where it had to list afresh (410 after an API
    server restart) a state may be missing from it, so the StepStarted Events
    (one per step entered, the first step's is CanaryStarted) complete it.
    """
    states = recorded.seen[name]
    walked = steps_walked(states, steps)
    assert walked == sorted(set(walked)), f"a step repeated or went back: {states}"
    assert not overshoots(states, steps), f"a weight above its step's: {states}"
    if recorded.relists == 0:
        assert walked == list(range(len(steps))), states
    else:
        assert set(walked) <= set(range(len(steps))), states
    # Events of one second sort in no particular order: compare them as a set, and count.
    started = steps_started(rollouts, name)
    assert sorted(started) == list(range(1, len(steps))), f"StepStarted: {started}; {states}"


# -- Prometheus down for longer than whenMetricsUnavailable.after ---------------------------

UNAVAILABLE_AFTER = "3s"
PROMETHEUS_DOWN_SECONDS = 8.0
PROMETHEUS_STEPS: list[dict[str, Any]] = [
    {"setWeight": 30},
    {"analysis": {"duration": "10s"}},
    {"setWeight": 60},
    {"pause": {"duration": "1s"}},
]
PROMETHEUS_TEST_BOUND_SECONDS = 150


@dataclass
class RestartablePrometheus:
    """A Prometheus of this test's own, which it may kill and start again on the same port."""

    pid: int
    handle: PrometheusHandle

    def kill(self) -> faults.StoppedProcess:
        return faults.stop_process(self.pid)

    def start(self, stopped: faults.StoppedProcess) -> None:
        self.pid = stopped.start()
        self.handle.wait_ready(timeout=30)


@pytest.fixture
def own_prometheus(tmp_path: Path) -> Iterator[RestartablePrometheus]:
    pid, handle = cluster.start_prometheus(tmp_path)
    prometheus = RestartablePrometheus(pid, handle)
    try:
        yield prometheus
    finally:
        faults.kill(prometheus.pid)


def test_prometheus_down_longer_than_after_pauses_the_rollout_until_resumed_after_it_is_back(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    kube_api_client: client.ApiClient,
    namespace: str,
    own_prometheus: RestartablePrometheus,
) -> None:
    timeline = Timeline(PROMETHEUS_TEST_BOUND_SECONDS)
    analysis = {
        "prometheus": {"address": own_prometheus.handle.url, "timeout": "1s"},
        "interval": "1s",
        "checks": [{"name": "error-rate", "query": "vector(0)", "breachWhen": "> 0.01"}],
        "whenMetricsUnavailable": {"action": "pause", "after": UNAVAILABLE_AFTER},
    }
    v1 = rollout_manifest("chat", "file:///models/v1", PROMETHEUS_STEPS, analysis=analysis)
    v2 = with_model(v1, "file:///models/v2")
    new = revision(v2)
    rollouts.create(v1)
    rollouts.wait_phase("chat", {"Succeeded"}, timeline.budget(60))
    timeline.mark("v1 stable")

    def check(status: dict[str, Any]) -> dict[str, Any]:
        return next((c for c in status.get("checks", []) if c["name"] == "error-rate"), {})

    with StatusWatch(kube_api_client, namespace) as recorded:
        rollouts.patch_spec("chat", {"model": v2["spec"]["model"]})
        wait_until(
            lambda: (
                (status := rollouts.status("chat")).get("currentStep") == 1
                and check(status).get("state") == "Passing"
            ),
            timeline.budget(45),
            "the analysis step, its check passing against the live Prometheus",
        )

        recorded_before_kill = len(recorded.seen["chat"])
        timeline.mark("analysis passing: Prometheus killed")
        stopped = own_prometheus.kill()
        killed_at = time.monotonic()
        paused = rollouts.wait_phase("chat", {"Paused"}, timeline.budget(30))
        timeline.mark("paused")
        # What a user sees: why it paused, in status, conditions and an Event.
        assert paused["pauseReason"] == "MetricsUnavailable", paused
        assert f"metrics unavailable for {UNAVAILABLE_AFTER} or more" in paused["message"]
        assert (paused["currentStep"], paused["weights"]["canary"]) == (1, 30), paused
        assert check(paused)["state"] == "Unavailable", paused["checks"]
        paused_condition = condition(paused, "Paused")
        assert paused_condition is not None
        assert (paused_condition["status"], paused_condition["reason"]) == (
            "True",
            "MetricsUnavailable",
        )
        unavailable = condition(paused, "MetricsUnavailable")
        assert unavailable is not None and unavailable["status"] == "True", paused["conditions"]
        # Not before `after`: from the first evaluation without data to the pause.
        blind_for = timestamp(paused["pausedAt"]) - timestamp(check(paused)["unavailableSince"])
        assert blind_for >= parse_duration(UNAVAILABLE_AFTER), (paused["pausedAt"], check(paused))
        # The Event is posted just after the status write the watch saw: wait for it.
        wait_until(
            lambda: any(
                e.type == "Warning"
                and e.reason == "Paused"
                and "metrics unavailable" in (e.message or "")
                for e in rollouts.events("chat")
            ),
            10,
            "a Paused Warning Event naming metrics unavailable",
        )

        # Down for longer than `after`; nothing moves meanwhile.
        time.sleep(max(0.0, PROMETHEUS_DOWN_SECONDS - (time.monotonic() - killed_at)))
        down_for = time.monotonic() - killed_at
        own_prometheus.start(stopped)
        timeline.mark("Prometheus back")

        # Prometheus answers again: the check passes and the condition clears, but a pause
        # is the user's to end (as for a check's `action: pause`): it holds.
        def data_again() -> dict[str, Any] | None:
            status = rollouts.status("chat")
            cleared = condition(status, "MetricsUnavailable")
            return (
                status
                if check(status).get("state") == "Passing"
                and cleared is not None
                and cleared["status"] == "False"
                else None
            )

        wait_until(
            data_again,
            timeline.budget(30),
            "the check to pass again and MetricsUnavailable to clear",
        )
        timeline.mark("check passing again")
        time.sleep(3)
        held = rollouts.status("chat")
        assert (held["phase"], held["pauseReason"]) == ("Paused", "MetricsUnavailable"), held
        assert (held["currentStep"], held["weights"]["canary"]) == (1, 30), held
        # Every state from the kill until the resume (the watch may add one from just
        # before the kill: still at step 1, weight 30).
        blind_states: list[State] = recorded.seen["chat"][recorded_before_kill:]

        rollouts.annotate("chat", {"modelrollout.dev/resume": uuid.uuid4().hex})
        timeline.mark("resume sent")
        status = rollouts.wait_phase("chat", {"Succeeded"}, timeline.budget(60))
        timeline.mark("promoted")
        recorded.wait_for_phase("chat", "Succeeded", timeline.budget(30))

    print(f"prometheus down {down_for:.1f}s; states: {recorded.timeline('chat', timeline.began)}")
    # It never moved forward, let alone promoted, while blind or paused for it.
    assert blind_states, recorded.seen["chat"]
    assert {(step, weight) for _, step, weight in blind_states} == {(1, 30)}, blind_states
    assert {phase for phase, _, _ in blind_states} <= {"Progressing", "Paused"}, blind_states
    assert status["stableRevision"] == new
    history = [(h["revision"], h["outcome"]) for h in status["history"]]
    assert history[0] == (new, "Promoted"), history
    assert [h for h in history if h[0] == new] == [(new, "Promoted")], history
    assert any(e.reason == "Resumed" for e in rollouts.events("chat"))
    assert_walked_every_step_once(recorded, rollouts, "chat", PROMETHEUS_STEPS)

    print(f"prometheus outage test: {timeline}")
    assert timeline.elapsed < PROMETHEUS_TEST_BOUND_SECONDS


# -- kube-apiserver restarted mid-rollout ---------------------------------------------------

APISERVER_STEPS: list[dict[str, Any]] = [
    {"setWeight": 20},
    # The API server is killed as this starts: the pause runs out while it is away.
    {"pause": {"duration": "4s"}},
    {"setWeight": 40},
    # Only a promote command ends this: the operator must act on a change made after
    # the outage.
    {"pause": {}},
    {"setWeight": 60},
    {"pause": {"duration": "2s"}},
]
APISERVER_DOWN_SECONDS = 5.0
# The whole test, cluster start excluded; the waits below are bounded to fit in it.
APISERVER_TEST_BOUND_SECONDS = 180


@dataclass(frozen=True)
class FaultsCluster:
    state: cluster.ClusterState
    api_client: client.ApiClient


@pytest.fixture
def faults_cluster() -> Iterator[FaultsCluster]:
    """A small cluster of the test's own, as its API server gets killed.

    One per test, not per module: after each API server restart the controllers'
    watches back off (client-go, up to 30 s, reset only after 2 minutes of
    calm), so a second restart in the same cluster within minutes leaves
    kube-controller-manager acting up to ~40 s late (Deployment status,
    ReplicaSet scaling). A cluster starts in about 10 s.
    """
    name = f"faults-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    state = cluster.up(name, gpu_nodes=1, gpus_per_node=8, cpu_nodes=0)
    try:
        api_client = config.new_client_from_config(config_file=state.kubeconfig)
        for manifest in project_crds():
            apply_crd(api_client, manifest)
        yield FaultsCluster(state, api_client)
    finally:
        cluster.down(name)


@contextmanager
def operator_logged_on_failure(operator: OperatorProcess) -> Iterator[OperatorProcess]:
    operator.start()
    try:
        yield operator
    except BaseException:
        print(f"--- operator log ({operator.log_path}) ---\n{operator.log_tail(150)}")
        raise
    finally:
        operator.stop()


def children(rollouts: Rollouts, name: str) -> dict[str, Any]:
    """Deployments, ReplicaSets, pods and Services of a rollout, by name."""
    selector = f"modelrollout.dev/rollout={name}"
    namespace = rollouts.namespace
    return {
        "deployments": sorted(rollouts.deployments(name)),
        "replicasets": sorted(
            rs.metadata.name
            for rs in rollouts.apps.list_namespaced_replica_set(
                namespace, label_selector=selector
            ).items
        ),
        "pods": sorted(
            (p.metadata.labels.get("modelrollout.dev/revision"), p.metadata.uid)
            for p in rollouts.core.list_namespaced_pod(namespace, label_selector=selector).items
            if p.metadata.deletion_timestamp is None
        ),
        "services": sorted(
            s.metadata.name
            for s in rollouts.core.list_namespaced_service(namespace, label_selector=selector).items
        ),
    }


@pytest.mark.parametrize("router", ["gatewayAPI", "service"])
@pytest.mark.timeout(APISERVER_TEST_BOUND_SECONDS + 90)  # + its cluster's start and stop
def test_kube_apiserver_restarted_mid_rollout_the_operator_finishes_it_exactly_once(
    faults_cluster: FaultsCluster, tmp_path: Path, router: str
) -> None:
    timeline = Timeline(APISERVER_TEST_BOUND_SECONDS)
    name = faults_cluster.state.name
    namespace = f"apiserver-{router.lower()}-{uuid.uuid4().hex[:6]}"
    create_namespace(faults_cluster.api_client, namespace)
    rollouts = Rollouts(faults_cluster.api_client, namespace)
    operator = OperatorProcess(
        faults_cluster.state.kubeconfig, namespace, tmp_path, tick_interval=TEST_TICK_INTERVAL
    )
    v1 = rollout_manifest(
        "chat", "file:///models/v1", APISERVER_STEPS, replicas=1, gpus=0, router=router
    )
    v2 = with_model(v1, "file:///models/v2")
    old, new = revision(v1), revision(v2)

    with operator_logged_on_failure(operator):
        rollouts.create(v1)
        rollouts.wait_phase("chat", {"Succeeded"}, timeline.budget(60))
        timeline.mark("v1 stable")
        with StatusWatch(faults_cluster.api_client, namespace) as recorded:
            rollouts.patch_spec("chat", {"model": v2["spec"]["model"]})
            # The first step is applied (the canary has its weight) and the pause has begun:
            # its StepStarted Event is posted, so no write of the operator is in flight.
            wait_until(
                lambda: (
                    rollouts.status("chat").get("currentStep") == 1
                    and 1 in steps_started(rollouts, "chat")
                ),
                timeline.budget(60),
                "step 2 (the pause) to start",
            )
            before = rollouts.status("chat")
            assert (before["phase"], before["weights"]["canary"]) == ("Progressing", 20)
            canary_pods_before = {
                uid for rev, uid in children(rollouts, "chat")["pods"] if rev == new
            }
            assert canary_pods_before

            timeline.mark("step 2 started: API server killed")
            outage = faults.restart_kube_apiserver(
                name, APISERVER_DOWN_SECONDS, ready_timeout=timeline.budget(60)
            )
            timeline.mark("API server back and settled")
            print(
                f"kube-apiserver: down {outage.down_s:.1f}s, ready {outage.ready_s:.1f}s after "
                f"its start (pid {outage.new_pid}); restarted with it: {outage.restarted or 'none'}"
            )
            assert faults.process_alive(operator.pid), "the operator exited with the API server"

            # The pause ran out while the API server was away: the operator completes it once
            # and stops at the pause that waits for promote.
            paused = rollouts.wait_phase("chat", {"Paused"}, timeline.budget(60))
            timeline.mark("paused at step 4")
            assert (paused["currentStep"], paused["pauseReason"]) == (3, "PauseStep"), paused
            assert paused["weights"]["canary"] == 40
            # A watch is blind for a few seconds after an API server restart (the new
            # server's watch cache starts empty: the old version is 410 Gone) and may miss
            # the steps just walked; the Events cover those. From here on it sees all.
            wait_until(
                lambda: recorded.seen["chat"][-1:] == [("Paused", 3, 40)],
                timeline.budget(30),
                "the status watch to see the pause",
            )
            rollouts.annotate("chat", {"modelrollout.dev/promote": uuid.uuid4().hex})
            status = rollouts.wait_phase("chat", {"Succeeded"}, timeline.budget(60))
            timeline.mark("promoted")
            recorded.wait_for_phase("chat", "Succeeded", timeline.budget(30))
        # No restart of the operator: the same process rode the outage out.
        assert faults.process_alive(operator.pid), "the operator exited"

        assert status["stableRevision"] == new
        assert status.get("canaryRevision") is None
        assert status["weights"] == {"stable": 100, "canary": 0, "mirror": 0}
        promoted = [h["revision"] for h in status["history"] if h["outcome"] == "Promoted"]
        assert promoted == [new, old], status["history"]  # newest first, each exactly once
        assert_walked_every_step_once(recorded, rollouts, "chat", APISERVER_STEPS)
        walked = steps_walked(recorded.seen["chat"], APISERVER_STEPS)
        assert walked[-3:] == [3, 4, 5], recorded.seen["chat"]
        print(
            f"watch: {recorded.relists} relist(s), {recorded.stream_errors} broken stream(s); "
            f"states: {recorded.timeline('chat', timeline.began)}"
        )

        # The children are the new revision's, the canary's pods were never replaced
        # (one ReplicaSet: its template never changed), and the route sends it everything.
        def settled() -> dict[str, Any] | None:
            found = children(rollouts, "chat")
            return found if {rev for rev, _ in found["pods"]} == {new} else None

        found = wait_until(settled, timeline.budget(30), f"only revision {new}'s pods (old {old})")
        timeline.mark("old revision's pods gone")
        print(f"children: {found}")
        assert found["deployments"] == [new], found
        assert len(found["replicasets"]) == 1, found
        assert {uid for _, uid in found["pods"]} >= canary_pods_before, found
        assert len(found["pods"]) == 1, found
        deployment = rollouts.deployments("chat")[new]
        assert deployment.metadata.labels["modelrollout.dev/role"] == "stable"
        if router == "gatewayAPI":
            route = client.CustomObjectsApi(faults_cluster.api_client).get_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", namespace, "httproutes", "chat"
            )
            refs = route["spec"]["rules"][0]["backendRefs"]
            assert [(r["name"], r["weight"]) for r in refs] == [(f"chat-{new}", 100)]
            # The retired revision's Service goes once the route no longer names it.
            wait_until(
                lambda: children(rollouts, "chat")["services"] == [f"chat-{new}"],
                timeline.budget(30),
                f"only revision {new}'s Service (old {old})",
            )
        else:
            assert found["services"] == ["chat"], found
            service = rollouts.core.read_namespaced_service("chat", namespace)
            assert service.spec.selector == {
                "modelrollout.dev/rollout": "chat",
                "modelrollout.dev/serving": "true",
            }

    print(f"apiserver restart test ({router}): {timeline}")
    assert timeline.elapsed < APISERVER_TEST_BOUND_SECONDS
