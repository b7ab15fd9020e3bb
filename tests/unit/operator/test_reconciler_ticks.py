"""The Reconciler tick by tick on an in-memory API server: what it writes, in which order.

No cluster: `FakeKubeApi` stands in for the API server (conflicts, generation,
watches, owner references), `Cluster.settle` for the controllers that make
Deployments ready and Services' EndpointSlices, a table for Prometheus and a
variable for the clock. Each test reads the API objects a user would look at
(the rollout's status, Deployments, Services, the HTTPRoute, Events) and the
writes the fake recorded during one tick.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest

from modelrollout.analysis.provider import QueryResult
from modelrollout.engine.reconciler import Reconciler
from modelrollout.engine.revision import revision_of
from modelrollout.kube.api import (
    DEPLOYMENTS,
    ENDPOINT_SLICES,
    HTTPROUTES,
    MODELROLLOUTS,
    POD_DISRUPTION_BUDGETS,
    PODS,
    SERVICES,
    is_ready,
    label_pod,
)
from modelrollout.kube.cache import MANAGED_SELECTOR, SERVICE_NAME_LABEL, Informer
from modelrollout.kube.events import EVENTS, EventRecorder
from modelrollout.kube.labels import (
    GROUP,
    KIND,
    REVISION_LABEL,
    ROLE_LABEL,
    ROLLOUT_LABEL,
    SERVING_LABEL,
    VERSION,
)
from modelrollout.kubectl.render import Rollout, render_get, render_history
from modelrollout.models import ModelRolloutStatus, parse_spec
from tests.support.fake_kube import FakeKubeApi, Write
from tests.unit.operator.builders import (
    HEALTHY_ANSWERS,
    T0,
    FakeProvider,
    example_spec,
    with_model_uri,
)

pytestmark = pytest.mark.unit

NAMESPACE = "ml"
NAME = "chat"
V1 = example_spec()["model"]["uri"]
V2 = "pvc://models/llama-3.2-3b/v2"
V3 = "pvc://models/llama-3.2-3b/v3"
FIRING = QueryResult(1.0)


def canary_spec(router: str = "gatewayAPI") -> dict[str, Any]:
    spec = example_spec()
    spec["runtime"]["resources"] = {}  # no GPUs: capacity planning has nothing to say
    spec["traffic"]["router"] = router
    spec["strategy"]["canary"]["steps"] = [
        {"setWeight": 20},
        {"pause": {"duration": "1m"}},
        {"setWeight": 50},
        {"analysis": {"duration": "2m"}},
    ]
    return spec


def blue_green_spec() -> dict[str, Any]:
    spec = canary_spec(router="service")
    spec["strategy"] = {"blueGreen": {"autoPromotionAfter": "30s", "scaleDownDelay": "60s"}}
    return spec


@dataclass
class Cluster:
    """One ModelRollout on the fake API server, its operator's Reconciler and the controllers."""

    api: FakeKubeApi = field(default_factory=FakeKubeApi)
    now: datetime = T0
    provider: FakeProvider = field(default_factory=lambda: FakeProvider(dict(HEALTHY_ANSWERS)))

    def __post_init__(self) -> None:
        self.reconciler = self.replica()
        # The operator's recorder: a repeated Event is a count on the first one.
        self.events = EventRecorder(self.api, clock=lambda: self.now)
        # What the latest tick was handed: the body from before that tick's writes.
        self.last_body: dict[str, Any] = {}

    def replica(self) -> Reconciler:
        """A Reconciler as one operator replica has it, on this cluster's clock and metrics."""
        return Reconciler(
            self.api, clock=lambda: self.now, provider_factory=lambda spec: self.provider
        )

    def apply(self, spec: dict[str, Any]) -> None:
        if self.api.get(MODELROLLOUTS, NAMESPACE, NAME) is None:
            manifest = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "metadata": {"name": NAME},
            }
            self.api.create(MODELROLLOUTS, NAMESPACE, {**manifest, "spec": spec})
        else:
            self.api.merge_patch(MODELROLLOUTS, NAMESPACE, NAME, {"spec": spec})

    def body(self) -> dict[str, Any]:
        body = self.api.get(MODELROLLOUTS, NAMESPACE, NAME)
        assert body is not None
        return body

    @property
    def status(self) -> ModelRolloutStatus:
        return ModelRolloutStatus.model_validate(self.body().get("status") or {})

    def tick(
        self,
        after: float = 0,
        body: dict[str, Any] | None = None,
        reconciler: Reconciler | None = None,
    ) -> list[Write]:
        """`after` seconds later, one tick on `body` (the stored one by default); its writes."""
        self.now += timedelta(seconds=after)
        body = body or self.body()
        self.last_body = body
        self.api.writes.clear()
        (reconciler or self.reconciler).tick(body, partial(self.events.post, body))
        return list(self.api.writes)

    def settle(self, loading: bool = False) -> None:
        """What the controllers do between ticks: every pod Ready, every endpoint published.

        `loading`: the pods this settle creates are not Ready yet (their model loads);
        the next settle makes them Ready.
        """
        deployments = self.api.list(DEPLOYMENTS, NAMESPACE)
        self._settle_pods(deployments, loading)
        for deployment in deployments:
            replicas = deployment["spec"]["replicas"]
            name = deployment["metadata"]["name"]
            pods = [self.api.get(PODS, NAMESPACE, f"{name}-{i}") for i in range(replicas)]
            ready_pods = sum(1 for pod in pods if pod is not None and is_ready(pod))
            ready = {"replicas": replicas, "readyReplicas": ready_pods, "updatedReplicas": replicas}
            if deployment.get("status") != ready:
                name = deployment["metadata"]["name"]
                self.api.merge_patch(
                    DEPLOYMENTS, NAMESPACE, name, {"status": ready}, subresource="status"
                )
        for service in self.api.list(SERVICES, NAMESPACE):
            self._publish_endpoints(service, deployments)

    def _settle_pods(self, deployments: list[dict[str, Any]], loading: bool) -> None:
        """Each Deployment's pods, `<deployment>-<i>`, Ready unless `loading` created them;
        labels set in place are kept."""
        wanted: set[str] = set()
        for deployment in deployments:
            name = deployment["metadata"]["name"]
            template = deployment["spec"]["template"]
            for index in range(deployment["spec"]["replicas"]):
                pod_name = f"{name}-{index}"
                wanted.add(pod_name)
                existing = self.api.get(PODS, NAMESPACE, pod_name)
                if existing is None:
                    pod = {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": pod_name,
                                     "labels": dict(template["metadata"]["labels"])},
                        "spec": template["spec"],
                    }  # fmt: skip
                    self.api.create(PODS, NAMESPACE, pod)
                if existing is None or not is_ready(existing):
                    ready = "False" if existing is None and loading else "True"
                    conditions = [{"type": "Ready", "status": ready}]
                    status = {"phase": "Running", "conditions": conditions}
                    self.api.merge_patch(
                        PODS, NAMESPACE, pod_name, {"status": status}, subresource="status"
                    )
        for pod in self.api.list(PODS, NAMESPACE):
            if pod["metadata"]["name"] not in wanted and ROLLOUT_LABEL in pod["metadata"]["labels"]:
                self.api.delete(PODS, NAMESPACE, pod["metadata"]["name"])

    def _publish_endpoints(
        self, service: dict[str, Any], deployments: list[dict[str, Any]]
    ) -> None:
        selector = service["spec"]["selector"]
        ready = sum(
            1
            for pod in self.api.list(PODS, NAMESPACE)
            if selector.items() <= pod["metadata"]["labels"].items()
        )
        name = service["metadata"]["name"]
        endpoint_slice = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-slice",
                "labels": {**service["metadata"]["labels"], SERVICE_NAME_LABEL: name},
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Service",
                        "name": name,
                        "uid": service["metadata"]["uid"],
                    }
                ],
            },
            "endpoints": [{"conditions": {"ready": True}} for _ in range(ready)],
        }
        current = self.api.get(ENDPOINT_SLICES, NAMESPACE, f"{name}-slice")
        if current is None:
            self.api.create(ENDPOINT_SLICES, NAMESPACE, endpoint_slice)
        elif current["endpoints"] != endpoint_slice["endpoints"]:
            self.api.replace(ENDPOINT_SLICES, NAMESPACE, f"{name}-slice", endpoint_slice)

    def run_until(
        self, reached: Callable[[ModelRolloutStatus], bool], what: str, every: float = 15
    ) -> list[Write]:
        """Tick every `every` seconds, settling between ticks; the writes of the last tick."""
        for _ in range(200):
            writes = self.tick(every)
            self.settle()
            if reached(self.status):
                return writes
        raise AssertionError(f"never reached {what}; stuck in {self.status}")

    def run_until_phase(self, phase: str) -> None:
        self.run_until(lambda status: status.phase == phase, phase)

    def run_until_step(self, step: int) -> None:
        self.run_until(lambda status: status.current_step == step, f"step {step}")

    def run_until_checked_at_step(self, step: int, every: float = 15) -> None:
        """Until step `step` runs and its checks have a reading of the canary's traffic:
        a weight step starts the next one in the tick it sets the weight, before any."""
        self.run_until(
            lambda status: (
                status.current_step == step
                and all(check.state == "Passing" for check in status.checks)
            ),
            f"step {step}, checks passing",
            every,
        )

    def started(self, spec: dict[str, Any], new_model: str = V2) -> None:
        """The first revision stable and ready, then a new one applied (not yet ticked)."""
        self.apply(spec)
        self.tick()
        self.settle()
        self.tick()
        self.apply(with_model_uri(spec, new_model))

    # -- what a user looks at ---------------------------------------------------

    def route_weights(self) -> dict[str, int]:
        route = self.api.get(HTTPROUTES, NAMESPACE, NAME)
        assert route is not None
        return {ref["name"]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}

    def deployments(self) -> dict[str, tuple[int, str]]:
        """Each Deployment's (replicas, role)."""
        return {
            d["metadata"]["name"]: (d["spec"]["replicas"], d["metadata"]["labels"][ROLE_LABEL])
            for d in self.api.list(DEPLOYMENTS, NAMESPACE)
        }

    def budgets(self) -> dict[str, int]:
        """Each PodDisruptionBudget's maxUnavailable: how many pods a drain may evict at once."""
        return {
            b["metadata"]["name"]: b["spec"]["maxUnavailable"]
            for b in self.api.list(POD_DISRUPTION_BUDGETS, NAMESPACE)
        }

    def event_reasons(self) -> list[str]:
        # Names are random: the order is the order of creation, i.e. of resourceVersions.
        events = sorted(
            self.api.list(EVENTS, NAMESPACE), key=lambda e: int(e["metadata"]["resourceVersion"])
        )
        return [event["reason"] for event in events]


def revision(model: str, spec: dict[str, Any]) -> str:
    return revision_of(parse_spec(with_model_uri(spec, model)))


def child(model: str, spec: dict[str, Any]) -> str:
    return f"{NAME}-{revision(model, spec)}"


def targets(writes: list[Write]) -> list[str]:
    """What a tick wrote, in order, Events left out."""
    return [f"{w.verb} {w.target}" for w in writes if w.resource != EVENTS]


def test_a_canary_walks_its_steps_to_succeeded() -> None:
    cluster = Cluster()
    spec = canary_spec()
    cluster.started(spec)
    old, new = child(V1, spec), child(V2, spec)
    canary = revision(V2, spec)
    walked: list[tuple[str, int | None, dict[str, int]]] = []
    # What `kubectl describe` lists: each tick's Events, as (type, reason, message).
    told: list[list[tuple[str, str, str]]] = []
    for _ in range(100):
        writes = cluster.tick(15)
        cluster.settle()
        state = (cluster.status.phase, cluster.status.current_step, cluster.route_weights())
        if not walked or walked[-1] != state:
            walked.append(state)
        events = [(w.body["type"], w.body["reason"], w.body["message"]) for w in writes
                  if w.resource == EVENTS]  # fmt: skip
        if events:
            told.append(events)
        if state[0] == "Succeeded":
            break
    # A weight step is done in the tick that writes its weight (exact weights): the
    # state in between (the weight set, the step not yet done) is never written.
    assert walked == [
        ("Progressing", 0, {old: 100}),
        ("Progressing", 1, {old: 80, new: 20}),
        ("Progressing", 3, {old: 50, new: 50}),
        # The canary runs 1 of its 2 pods at 50%: promotion scales it up first.
        ("Promoting", 4, {old: 0, new: 100}),
        ("Succeeded", None, {new: 100}),
    ]
    assert cluster.status.stable_revision == canary
    assert cluster.deployments() == {new: (2, "stable")}
    # The old revision's Service goes once the route no longer names it: the next tick.
    assert targets(cluster.tick(15)) == [f"delete services/{old}"]
    assert [s["metadata"]["name"] for s in cluster.api.list(SERVICES, NAMESPACE)] == [new]
    # One Event per tick that did something, naming all it did.
    assert told == [
        [("Normal", "CanaryStarted", f"rolling out {canary} ({V2}): step 1/4 setWeight 20")],
        [("Normal", "StepStarted", f"canary {canary}: 20%; step 2/4 pause 1m")],
        [
            (
                "Normal",
                "CheckPassing",
                "check error-rate is Passing (0.001; breachWhen > 0.01); "
                "check p99-latency is Passing (0.05; breachWhen > 0.1); "
                "check alert:ModelHighErrorRate is Passing (0; breachWhen firing)",
            )
        ],
        [("Normal", "StepStarted", "step 3/4 setWeight 50; step 4/4 analysis for 2m")],
        [("Normal", "Promoting", f"promoting {canary}: all steps completed")],
        [("Normal", "Promoted", f"revision {canary} ({V2}) is stable")],
    ]
    # The status still records each step as it went: the history and the conditions.
    assert [(e.revision, e.outcome) for e in cluster.status.history] == [
        (canary, "Promoted"),
        (revision(V1, spec), "Promoted"),
    ]
    progressing = cluster.status.condition("Progressing")
    assert progressing is not None and progressing.reason == "RolloutComplete"


def test_a_canary_already_at_full_size_is_promoted_in_one_tick() -> None:
    """The last step's weight runs the canary at full size, all Ready: the tick that ends
    the steps promotes it, the route straight to it alone before the old pods go, and
    one Event says both that promotion started and that it is done."""
    cluster = Cluster()
    spec = canary_spec()
    spec["runtime"]["replicas"] = 1  # one canary pod at any weight: already full size
    cluster.started(spec)
    old, new = child(V1, spec), child(V2, spec)
    canary = revision(V2, spec)
    cluster.run_until_step(3)
    assert cluster.route_weights() == {old: 50, new: 50}
    promotion = cluster.run_until(lambda status: status.phase != "Progressing", "promotion")
    status = cluster.status
    assert (status.phase, status.stable_revision, status.canary_revision) == (
        "Succeeded",
        canary,
        None,
    )
    assert status.history[0].outcome == "Promoted"
    progressing = status.condition("Progressing")
    assert progressing is not None and progressing.reason == "RolloutComplete"
    assert [(w.body["type"], w.body["reason"], w.body["message"]) for w in promotion
            if w.resource == EVENTS] == [
        ("Normal", "Promoted",
         f"promoting {canary}: all steps completed; revision {canary} ({V2}) is stable"),
    ]  # fmt: skip
    written = targets(promotion)
    # One status write; the route to the new revision alone, before the old one's pods go.
    assert written.count(f"patch modelrollouts/{NAME}/status") == 1
    assert written.index(f"patch httproutes/{NAME}") < written.index(f"delete deployments/{old}")
    assert cluster.route_weights() == {new: 100}
    assert cluster.deployments() == {new: (1, "stable")}
    # `kubectl modelrollout get` and `history`: every step's Event, the promotion recorded.
    shown = render_get(
        Rollout.of(cluster.body()), [], cluster.api.list(EVENTS, NAMESPACE), cluster.now
    )
    events_shown = [line.split()[1:] for line in shown.split("Events:\n")[1].splitlines()[1:]]
    assert [" ".join(columns) for columns in events_shown] == [
        f"Normal StableRevision first revision {revision(V1, spec)} is stable",
        f"Normal CanaryStarted rolling out {canary} ({V2}): step 1/4 setWeight 20",
        f"Normal StepStarted canary {canary}: 20%; step 2/4 pause 1m",
        "Normal CheckPassing check error-rate is Passing (0.001; breachWhen > 0.01); "
        "check p99-latency is Passing (0.05; breachWhen > 0.1); "
        "check alert:ModelHighErrorRate is Passing (0; breachWhen firing)",
        "Normal StepStarted step 3/4 setWeight 50; step 4/4 analysis for 2m",
        f"Normal Promoted promoting {canary}: all steps completed; "
        f"revision {canary} ({V2}) is stable",
    ]
    history = render_history(Rollout.of(cluster.body()))
    assert f"{canary}" in history and "Promoted" in history and "all steps completed" in history


def test_a_breach_writes_weight_zero_before_anything_else() -> None:
    cluster = Cluster()
    spec = canary_spec()
    cluster.started(spec)
    old, new = child(V1, spec), child(V2, spec)
    cluster.run_until_step(3)
    assert cluster.route_weights() == {old: 50, new: 50}

    cluster.provider.answers["ALERTS"] = FIRING
    writes = cluster.tick(15)
    assert targets(writes)[:2] == [f"patch httproutes/{NAME}", f"patch modelrollouts/{NAME}/status"]
    assert writes[0].body == {
        "spec": {"rules": [{"backendRefs": [
            {"name": old, "port": 8000, "weight": 100},
            {"name": new, "port": 8000, "weight": 0},
        ]}]}
    }  # fmt: skip
    assert cluster.status.phase == "RollingBack"
    # One Event for the tick, a Warning: the rollback, and the breach that caused it.
    (told,) = [w.body for w in writes if w.resource == EVENTS]
    assert (told["type"], told["reason"]) == ("Warning", "RollingBack")
    assert told["message"].startswith("check alert:ModelHighErrorRate is Breached")
    assert f"canary {revision(V2, spec)}: " in told["message"]

    cluster.run_until_phase("RolledBack")
    assert cluster.route_weights() == {old: 100, new: 0}
    # The canary's pods stay for abortScaleDownDelay (30s), then go.
    assert cluster.deployments()[new][0] > 0
    cluster.tick(30)
    assert cluster.deployments() == {old: (2, "stable")}


def test_a_stale_body_is_read_again_and_keeps_what_another_replica_wrote() -> None:
    cluster = Cluster()
    spec = canary_spec()
    cluster.started(spec)
    cluster.run_until_checked_at_step(1)
    before_our_write = cluster.last_body
    # Our own write seen late: kopf hands the body from before it. Deciding on it
    # would start the pause again; the tick reads the rollout afresh instead.
    assert cluster.tick(1, body=before_our_write) == []

    # Another replica, leading meanwhile, moved the rollout on; then ours gets a stale body.
    other = cluster.replica()
    cluster.tick(60, reconciler=other)
    moved = cluster.status
    assert (moved.current_step, moved.weights.canary) == (3, 50)
    cluster.settle()
    cluster.tick(120, body=before_our_write)
    # On from where the other replica left it: its analysis step done, promotion.
    assert cluster.status.phase == "Promoting"
    assert cluster.status.weights.canary == 100
    started = [e for e in cluster.api.list(EVENTS, NAMESPACE) if e["reason"] == "StepStarted"]
    assert sorted(e["message"] for e in started) == [
        f"canary {revision(V2, spec)}: 20%; step 2/4 pause 1m",
        "step 3/4 setWeight 50; step 4/4 analysis for 2m",
    ]
    assert all(e["count"] == 1 for e in started)


def test_a_spec_change_mid_canary_replaces_the_canary() -> None:
    cluster = Cluster()
    spec = canary_spec()
    cluster.started(spec)
    old, v2, v3 = (
        child(V1, spec),
        child(V2, spec),
        child(V3, spec),
    )
    cluster.run_until_step(3)
    assert cluster.body()["metadata"]["generation"] == 2

    cluster.apply(with_model_uri(spec, V3))
    assert cluster.body()["metadata"]["generation"] == 3
    cluster.tick(1)
    status = cluster.status
    assert (status.phase, status.canary_revision, status.current_step) == (
        "Progressing",
        revision(V3, spec),
        0,
    )
    assert status.observed_generation == 3
    assert v2 not in cluster.deployments() and v3 in cluster.deployments()
    cluster.settle()
    cluster.run_until_phase("Succeeded")
    assert cluster.status.stable_revision == revision(V3, spec)
    assert cluster.deployments() == {v3: (2, "stable")}
    assert old not in cluster.route_weights()


def test_a_deleted_deployment_wakes_its_rollout_and_is_recreated() -> None:
    cluster = Cluster()
    spec = canary_spec(router="service")
    cluster.apply(spec)
    cluster.tick()
    cluster.settle()
    cluster.tick(15)
    stable = child(V1, spec)
    before = cluster.api.get(DEPLOYMENTS, NAMESPACE, stable)
    assert before is not None
    woken: queue.Queue[tuple[str, str]] = queue.Queue()
    # The operator's watch-fed cache, on the fake's watch: what wakes a rollout.
    informer = Informer(
        cluster.api, DEPLOYMENTS, NAMESPACE, lambda *owner: woken.put(owner), MANAGED_SELECTOR
    )
    informer.start()
    try:
        assert informer.synced.wait(10)
        while not woken.empty():
            woken.get()
        cluster.api.delete(DEPLOYMENTS, NAMESPACE, stable)
        assert woken.get(timeout=10) == (NAMESPACE, NAME)
    finally:
        informer.stop()
        cluster.api.stop_watches()

    # The status says so first (no stable pod ready), then the Deployment is back.
    assert targets(cluster.tick(1)) == [
        f"patch modelrollouts/{NAME}/status",
        f"create deployments/{stable}",
    ]
    available = cluster.status.condition("Available")
    assert available is not None and available.reason == "NoStablePods"
    after = cluster.api.get(DEPLOYMENTS, NAMESPACE, stable)
    assert after is not None and after["metadata"]["uid"] != before["metadata"]["uid"]
    assert after["spec"] == before["spec"]
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert after["metadata"]["ownerReferences"] == before["metadata"]["ownerReferences"]
    cluster.settle()
    cluster.tick(1)
    available = cluster.status.condition("Available")
    assert available is not None and available.status == "True"


def test_a_blue_green_switch_is_one_selector_write() -> None:
    cluster = Cluster()
    spec = blue_green_spec()
    cluster.started(spec)
    blue, green = revision(V1, spec), revision(V2, spec)

    def selects(service: str) -> str:
        found = cluster.api.get(SERVICES, NAMESPACE, service)
        assert found is not None
        selected: str = found["spec"]["selector"][REVISION_LABEL]
        return selected

    cluster.tick(1)
    cluster.settle()
    assert (selects(NAME), selects(f"{NAME}-preview")) == (blue, green)
    assert cluster.deployments() == {
        f"{NAME}-{blue}": (2, "stable"),
        f"{NAME}-{green}": (2, "canary"),
    }
    switch = cluster.run_until(lambda status: status.weights.canary == 100, "the switch")
    assert selects(NAME) == green
    assert [w.body for w in switch if w.resource == SERVICES] == [
        {"spec": {"selector": {"modelrollout.dev/rollout": NAME, REVISION_LABEL: green}}}
    ]
    cluster.run_until_phase("Succeeded")
    assert selects(NAME) == green
    # The previous color stays at full size for scaleDownDelay, to switch back at once.
    assert cluster.deployments()[f"{NAME}-{blue}"][0] == 2
    cluster.tick(60)
    assert f"{NAME}-{blue}" not in cluster.deployments()


def test_a_blue_green_service_names_its_color_before_any_update() -> None:
    cluster = Cluster()
    spec = blue_green_spec()
    cluster.apply(spec)
    cluster.tick()
    service = cluster.api.get(SERVICES, NAMESPACE, NAME)
    assert service is not None
    # Not the whole rollout: that would take in a preview's pods as soon as they are Ready.
    assert service["spec"]["selector"][REVISION_LABEL] == revision(V1, spec)


def test_a_tick_with_nothing_to_do_writes_nothing() -> None:
    cluster = Cluster()
    spec = canary_spec()
    cluster.apply(spec)
    cluster.tick()
    cluster.settle()
    cluster.tick(15)
    assert cluster.tick(15) == []  # settled: Succeeded, everything in place

    cluster.apply(with_model_uri(spec, V2))
    cluster.run_until_checked_at_step(1)
    # In the 1m pause, with the checks' readings unchanged and written within a minute.
    assert cluster.tick(1) == []


def test_deleting_the_rollout_deletes_what_it_owns() -> None:
    cluster = Cluster()
    spec = canary_spec()
    cluster.started(spec)
    cluster.tick(15)
    cluster.settle()
    cluster.tick(15)
    body = cluster.body()
    assert cluster.api.list(HTTPROUTES, NAMESPACE) and cluster.api.list(ENDPOINT_SLICES, NAMESPACE)
    cluster.api.delete(MODELROLLOUTS, NAMESPACE, NAME)
    cluster.reconciler.forget(body["metadata"]["uid"], NAMESPACE, NAME)
    for resource in (DEPLOYMENTS, SERVICES, HTTPROUTES, ENDPOINT_SLICES, POD_DISRUPTION_BUDGETS):
        assert cluster.api.list(resource, NAMESPACE) == [], resource.plural


def test_under_the_service_router_a_canary_serves_only_once_its_weight_is_above_zero() -> None:
    cluster = Cluster()
    spec = canary_spec(router="service")
    # An evaluation-like wait before the first setWeight: the canary is up and Ready.
    spec["strategy"]["canary"]["steps"] = [
        {"pause": {"duration": "1m"}},
        {"setWeight": 50},
        {"pause": {"duration": "1m"}},
    ]
    cluster.started(spec)
    old, new = child(V1, spec), child(V2, spec)

    def serving() -> dict[str, list[str]]:
        """Each revision's pods that the rollout's Service selects."""
        service = cluster.api.get(SERVICES, NAMESPACE, NAME)
        assert service is not None
        selector = service["spec"]["selector"]
        chosen: dict[str, list[str]] = {}
        for pod in cluster.api.list(PODS, NAMESPACE):
            if selector.items() <= pod["metadata"]["labels"].items():
                revision = pod["metadata"]["labels"][REVISION_LABEL]
                chosen.setdefault(revision, []).append(pod["metadata"]["name"])
        return chosen

    cluster.tick(1)
    cluster.settle()
    cluster.tick(1)
    cluster.settle()
    assert cluster.deployments()[new][0] == 1  # warming up, Ready
    assert serving() == {revision(V1, spec): [f"{old}-0", f"{old}-1"]}
    assert cluster.status.weights.canary == 0
    routed = cluster.status.condition("TrafficRouted")
    assert routed is not None and "2 Ready pods" in routed.message

    cluster.run_until_step(1)
    cluster.run_until(lambda s: s.weights.canary == 50, "setWeight 50")
    cluster.tick(1)
    assert set(serving()) == {revision(V1, spec), revision(V2, spec)}

    cluster.run_until_phase("Promoting")
    cluster.tick(1)
    cluster.settle()
    # Promoting sends everything to the new revision, all its pods Ready: stable's pods leave.
    assert set(serving()) == {revision(V2, spec)}
    assert all(
        pod["metadata"]["labels"].get(SERVING_LABEL) == "true"
        for pod in cluster.api.list(PODS, NAMESPACE)
        if pod["metadata"]["labels"][REVISION_LABEL] == revision(V2, spec)
    )


def test_traffic_moving_at_once_labels_the_new_pods_before_the_old_ones_leave() -> None:
    """Promotion straight from weight 0: the Service is never left selecting no pod."""
    cluster = Cluster()
    spec = canary_spec(router="service")
    spec["strategy"]["canary"]["steps"] = [{"pause": {"duration": "1m"}}]
    cluster.started(spec)
    label_patches: list[tuple[str, bool]] = []  # (revision, joins the Service), in order
    pod_revisions: dict[str, str] = {}
    for _ in range(40):
        pod_revisions.update(
            (pod["metadata"]["name"], pod["metadata"]["labels"][REVISION_LABEL])
            for pod in cluster.api.list(PODS, NAMESPACE)
        )
        for write in cluster.tick(15):
            labels = (write.body or {}).get("metadata", {}).get("labels", {})
            if write.resource == PODS and SERVING_LABEL in labels:
                label_patches.append((pod_revisions[write.name], labels[SERVING_LABEL] == "true"))
        cluster.settle()
        if cluster.status.phase == "Succeeded":
            break
    assert cluster.status.stable_revision == revision(V2, spec)
    joined = [
        i for i, (rev, joins) in enumerate(label_patches) if joins and rev == revision(V2, spec)
    ]
    left = [i for i, (rev, joins) in enumerate(label_patches) if not joins]
    assert joined and left, label_patches
    assert min(joined) < min(left), label_patches


def test_a_service_router_promotion_keeps_stable_serving_until_the_canary_is_all_ready() -> None:
    """Promotion from weight 0, the canary's new pods loading for a while: the Service keeps
    selecting as many Ready pods as stable had, and stable's pods go only once it is done."""
    cluster = Cluster()
    spec = canary_spec(router="service")
    spec["strategy"]["canary"]["steps"] = [{"pause": {"duration": "1m"}}]
    cluster.started(spec)
    old = child(V1, spec)

    def selected_ready_pods() -> list[str]:
        service = cluster.api.get(SERVICES, NAMESPACE, NAME)
        assert service is not None
        return [
            pod["metadata"]["name"]
            for pod in cluster.api.list(PODS, NAMESPACE)
            if service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
            and is_ready(pod)
        ]

    phases = []
    for _ in range(40):
        cluster.tick(15)
        cluster.settle(loading=True)
        phases.append(cluster.status.phase)
        assert len(selected_ready_pods()) >= 2, (cluster.status.phase, cluster.deployments())
        if cluster.status.phase == "Succeeded":
            break
        assert cluster.deployments()[old] == (2, "stable"), cluster.status.phase
    assert cluster.status.stable_revision == revision(V2, spec)
    assert "Promoting" in phases
    assert old not in cluster.deployments()
    assert sorted(selected_ready_pods()) == [f"{child(V2, spec)}-0", f"{child(V2, spec)}-1"]


def test_scaling_mid_canary_resizes_both_revisions_at_the_current_weight() -> None:
    """What `kubectl scale` and an HPA do through the scale subresource: no new revision."""
    cluster = Cluster()
    spec = canary_spec()
    cluster.started(spec)
    cluster.run_until_step(1)  # the 1m pause at 20%
    old, new = child(V1, spec), child(V2, spec)
    before = cluster.status
    assert cluster.deployments() == {old: (2, "stable"), new: (1, "canary")}

    cluster.api.merge_patch(MODELROLLOUTS, NAMESPACE, NAME, {"spec": {"runtime": {"replicas": 10}}})
    cluster.tick(1)
    cluster.settle()
    assert cluster.deployments() == {old: (10, "stable"), new: (2, "canary")}
    after = cluster.status
    assert (after.canary_revision, after.current_step, after.weights) == (
        before.canary_revision,
        before.current_step,
        before.weights,
    )
    cluster.tick(1)
    # The scale subresource's status: stable's pods, and the selector an HPA averages over.
    assert (cluster.status.replicas, cluster.status.selector) == (
        10,
        f"{REVISION_LABEL}={revision(V1, spec)},{ROLLOUT_LABEL}={NAME}",
    )

    cluster.api.merge_patch(MODELROLLOUTS, NAMESPACE, NAME, {"spec": {"runtime": {"replicas": 3}}})
    cluster.run_until_phase("Succeeded")
    assert cluster.deployments() == {new: (3, "stable")}


def test_a_pod_recreated_after_promotion_is_labelled_with_its_revisions_role() -> None:
    """The template keeps the role a revision was created with (changing it would restart
    every pod): a pod the ReplicaSet recreates gets its current role in place."""
    cluster = Cluster()
    spec = canary_spec()
    cluster.started(spec)
    cluster.run_until_phase("Succeeded")
    new = child(V2, spec)
    assert cluster.deployments() == {new: (2, "stable")}

    def roles() -> dict[str, str]:
        return {
            p["metadata"]["name"]: p["metadata"]["labels"][ROLE_LABEL]
            for p in cluster.api.list(PODS, NAMESPACE)
        }

    assert roles() == {f"{new}-0": "stable", f"{new}-1": "stable"}
    cluster.api.delete(PODS, NAMESPACE, f"{new}-0")
    cluster.settle()  # recreated from the template
    assert roles()[f"{new}-0"] == "canary"
    cluster.tick(1)
    assert roles() == {f"{new}-0": "stable", f"{new}-1": "stable"}


def test_a_deployment_resized_by_someone_else_is_set_back_with_a_warning() -> None:
    """An HPA aimed at a revision's Deployment fights the operator: it is told, once per
    resize, and pointed at the ModelRollout's scale subresource."""
    cluster = Cluster()
    spec = canary_spec()
    cluster.apply(spec)
    cluster.tick()
    cluster.settle()
    stable = child(V1, spec)

    def warnings(writes: list[Write]) -> list[str]:
        return [
            w.body["message"]
            for w in writes
            if w.resource == EVENTS and w.body["reason"] == "ScaledOutsideRollout"
        ]

    # The operator's own resize (the rollout scaled) warns of nothing.
    cluster.api.merge_patch(MODELROLLOUTS, NAMESPACE, NAME, {"spec": {"runtime": {"replicas": 3}}})
    assert warnings(cluster.tick(1)) == []
    assert cluster.deployments() == {stable: (3, "stable")}
    # Someone else's resize is set back, with a warning naming both counts.
    cluster.api.merge_patch(DEPLOYMENTS, NAMESPACE, stable, {"spec": {"replicas": 7}})
    writes = cluster.tick(1)
    assert cluster.deployments() == {stable: (3, "stable")}
    (message,) = warnings(writes)
    assert f"Deployment {stable} was resized to 7" in message
    assert "set it back to 3" in message
    assert warnings(cluster.tick(1)) == []


def test_each_revision_has_a_disruption_budget_that_follows_its_replicas() -> None:
    cluster = Cluster()
    spec = canary_spec()
    cluster.apply(spec)
    cluster.tick()
    old, new = child(V1, spec), child(V2, spec)
    budget = cluster.api.get(POD_DISRUPTION_BUDGETS, NAMESPACE, old)
    assert budget is not None
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {ROLLOUT_LABEL: NAME, REVISION_LABEL: revision(V1, spec)}},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    assert [owner["kind"] for owner in budget["metadata"]["ownerReferences"]] == [KIND]
    cluster.settle()
    cluster.tick(15)

    # At 20% the canary has one pod: a drain may not take it while the canary runs.
    cluster.apply(with_model_uri(spec, V2))
    cluster.tick(1)
    assert cluster.deployments() == {old: (2, "stable"), new: (1, "canary")}
    assert cluster.budgets() == {old: 1, new: 0}
    cluster.settle()

    # Promotion scales the canary to two: its budget lets one pod go, in the same tick.
    promoting = cluster.run_until(lambda status: status.phase == "Promoting", "Promoting")
    assert cluster.deployments()[new] == (2, "canary")
    assert [w.body for w in promoting if w.resource == POD_DISRUPTION_BUDGETS] == [
        {"spec": {"maxUnavailable": 1, "minAvailable": None,
                  "unhealthyPodEvictionPolicy": "AlwaysAllow"}}
    ]  # fmt: skip
    assert cluster.budgets() == {old: 1, new: 1}

    # The old revision's budget goes with its Deployment.
    cluster.run_until_phase("Succeeded")
    assert cluster.deployments() == {new: (2, "stable")}
    assert cluster.budgets() == {new: 1}


def test_a_lone_pod_is_kept_from_eviction_only_while_stable_and_canary_both_run() -> None:
    cluster = Cluster()
    spec = canary_spec()
    spec["runtime"]["replicas"] = 1
    cluster.apply(spec)
    cluster.tick()
    cluster.settle()
    cluster.tick(15)
    old, new = child(V1, spec), child(V2, spec)
    # Nothing rolling: one replica is evictable, as any single-replica workload's.
    assert cluster.budgets() == {old: 1}

    cluster.apply(with_model_uri(spec, V2))
    cluster.tick(1)
    cluster.settle()
    assert cluster.budgets() == {old: 0, new: 0}

    cluster.provider.answers["ALERTS"] = FIRING
    cluster.run_until_phase("RolledBack")
    # The aborted canary's pod stays for abortScaleDownDelay, then its budget goes with it.
    assert cluster.deployments() == {old: (1, "stable"), new: (1, "canary")}
    cluster.tick(30)
    assert cluster.deployments() == {old: (1, "stable")}
    assert cluster.budgets() == {old: 1}
    assert cluster.tick(15) == []


def test_turning_disruption_budgets_off_deletes_them_and_makes_no_new_revision() -> None:
    cluster = Cluster()
    spec = canary_spec()
    cluster.apply(spec)
    cluster.tick()
    cluster.settle()
    cluster.tick(15)
    stable = child(V1, spec)
    assert cluster.budgets() == {stable: 1}

    cluster.apply({**spec, "disruptionBudget": {"enabled": False}})
    assert targets(cluster.tick(1)) == [
        f"patch modelrollouts/{NAME}/status",
        f"delete poddisruptionbudgets/{stable}",
    ]
    assert cluster.budgets() == {}
    assert cluster.deployments() == {stable: (2, "stable")}
    assert cluster.tick(15) == []


def test_a_pod_deleted_since_the_cache_listed_it_is_not_a_failed_label_patch() -> None:
    """The watch cache hears of a deletion a moment after it happens: labelling that pod
    answers 404, which leaves nothing to label rather than failing the tick."""
    api = FakeKubeApi()
    label_pod(api, "ml", "chat-gone-pod", {"modelrollout.dev/serving": "true"})
    assert [w.verb for w in api.writes] == ["patch"]


def bench_spec() -> dict[str, Any]:
    """bench/scale.py's rollout: one replica, gatewayAPI, weight 20, pause, weight 50, pause."""
    spec = canary_spec()
    spec["runtime"]["replicas"] = 1
    spec["strategy"]["canary"]["steps"] = [
        {"setWeight": 20},
        {"pause": {"duration": "30s"}},
        {"setWeight": 50},
        {"pause": {"duration": "30s"}},
    ]
    spec["analysis"]["interval"] = "10s"
    spec["analysis"]["checks"] = [
        {"name": "error-ratio", "query": "max(bench_error_ratio)", "breachWhen": "> 0.05"}
    ]
    spec["analysis"]["alerts"] = []
    return spec


def write_kind(write: Write) -> str:
    """`verb plural[/subresource]`: how the API server's audit log tells writes apart."""
    suffix = f"/{write.subresource}" if write.subresource else ""
    return f"{write.verb} {write.resource.plural}{suffix}"


def test_a_canary_rollout_makes_the_writes_each_of_its_steps_needs_and_no_more() -> None:
    """The mutating calls of bench/scale.py's rollout, by kind, as its audit log counts them:
    a tick every 2 s, pods Ready one tick after they are created."""
    cluster = Cluster()
    cluster.provider.answers["bench_error_ratio"] = QueryResult(0.0)
    spec = bench_spec()
    cluster.started(spec)
    counted: dict[str, int] = {}
    for _ in range(100):
        writes = cluster.tick(2)
        cluster.settle(loading=True)
        for write in writes:
            counted[write_kind(write)] = counted.get(write_kind(write), 0) + 1
        if cluster.status.phase == "Succeeded" and not writes:
            break
    assert cluster.status.stable_revision == revision(V2, spec)
    assert counted == {
        # The start; weight 20 and the pause; the check's first reading; weight 50 and the
        # pause; promotion (the canary's one pod is all it will have, Ready).
        "patch modelrollouts/status": 5,
        # One per tick that writes status: CanaryStarted, StepStarted (weight 20 set, the
        # pause started), CheckPassing, StepStarted (setWeight 50, the pause), Promoted.
        "create events": 5,
        # Weight 20, weight 50, the new revision alone.
        "patch httproutes": 3,
        # The canary's budget; the lone stable pod's budget to 0 while both run, the promoted
        # one's back to 1 once alone; the old revision's deleted.
        "create poddisruptionbudgets": 1,
        "patch poddisruptionbudgets": 2,
        "delete poddisruptionbudgets": 1,
        # The canary's Deployment and Service; promotion relabels its Deployment and pod
        # (never its template) and deletes the old revision's.
        "create deployments": 1,
        "patch deployments": 1,
        "patch pods": 1,
        "delete deployments": 1,
        "create services": 1,
        "delete services": 1,
    }


def test_ticks_at_a_pause_write_nothing() -> None:
    cluster = Cluster()
    cluster.provider.answers["bench_error_ratio"] = QueryResult(0.0)
    spec = bench_spec()
    cluster.started(spec)
    cluster.run_until_checked_at_step(1, every=1)
    # 28 s of the 30 s pause, the check evaluated every 10 s, its reading unchanged.
    assert [cluster.tick(1) for _ in range(28)] == [[]] * 28
    assert cluster.status.current_step == 1


def test_a_deployment_resized_again_and_again_is_one_warning_with_a_count() -> None:
    cluster = Cluster()
    spec = canary_spec()
    cluster.apply(spec)
    cluster.tick()
    cluster.settle()
    stable = child(V1, spec)
    for _ in range(3):
        cluster.api.merge_patch(DEPLOYMENTS, NAMESPACE, stable, {"spec": {"replicas": 7}})
        cluster.tick(10)
    (warning,) = [
        e for e in cluster.api.list(EVENTS, NAMESPACE) if e["reason"] == "ScaledOutsideRollout"
    ]
    assert warning["count"] == 3
    assert (warning["firstTimestamp"], warning["lastTimestamp"]) == (
        "2026-01-01T12:00:10Z",
        "2026-01-01T12:00:30Z",
    )
