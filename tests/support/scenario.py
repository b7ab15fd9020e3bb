"""E2E tests as scripts a reader can follow: given a rollout, when a user acts, then what they see.

After Argo Rollouts' e2e fixtures (test/fixtures/{given,when,then}.go), a
test reads one sentence a line:

    scenario.given().rollout(v1).ready()
    scenario.when().update_model("file:///models/v2")
    status = scenario.then().expect_phase("Succeeded", within=90).status

A scenario watches its namespace's ModelRollouts, Deployments, Pods and
HTTPRoutes from before its first step (tests/support/status_watch.py), so it
holds every version the API server wrote, never a sample. Every expectation waits on
those watches: it looks again as each version arrives, and `within` only
bounds a stuck run. An expectation after an action looks at the versions
written after that action's own write, so a version still in flight from
before it never meets it.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from modelrollout.engine.revision import revision_of
from modelrollout.kube.labels import GROUP, REVISION_LABEL, ROLE_LABEL, ROLLOUT_LABEL
from modelrollout.models import parse_spec
from tests.support.rollouts import Rollouts
from tests.support.status_watch import ObjectWatch, State, StatusWatch

Body = dict[str, Any]
GATEWAY_API = "gateway.networking.k8s.io"
# A rollout's Deployments at one moment: revision -> (replicas asked for, pods Ready).
Replicas = dict[str, tuple[int, int]]


def revision(manifest: Body) -> str:
    return revision_of(parse_spec(manifest["spec"]))


class Scenario:
    """One ModelRollout's story in a test namespace, and every version of what it owns."""

    def __init__(self, rollouts: Rollouts, tick_interval: float) -> None:
        self.rollouts = rollouts
        self.tick_interval = tick_interval
        api_client = rollouts.apps.api_client
        self.statuses = StatusWatch(api_client, rollouts.namespace)
        self.deployment_watch = ObjectWatch(
            rollouts.apps.list_namespaced_deployment, rollouts.namespace
        )
        self.pod_watch = ObjectWatch(rollouts.core.list_namespaced_pod, rollouts.namespace)
        self.route_watch = ObjectWatch(
            rollouts.custom.list_namespaced_custom_object,
            GATEWAY_API,
            "v1",
            rollouts.namespace,
            "httproutes",
        )
        self.name = ""
        self.manifest: Body = {}
        # The revision `given` made stable, and the one the latest spec change asks for.
        self.stable_revision = ""
        self.new_revision = ""
        # resourceVersion of the last action's write, and of the first `when` action's.
        self._action_version = ""
        self._story_version = ""
        # Where in the Deployment watch the first `when` action happened.
        self._story_deployments = 0

    @contextmanager
    def recording(self) -> Iterator[Scenario]:
        watches = (self.statuses, self.deployment_watch, self.pod_watch, self.route_watch)
        with ExitStack() as stack:
            for watched in watches:
                stack.enter_context(watched)
            # Runs first on the way out: all asked to end at once, their streams end together.
            for watched in watches:
                stack.callback(watched.stop)
            yield self

    def given(self) -> Given:
        return Given(self)

    def when(self) -> When:
        return When(self)

    def then(self) -> Then:
        return Then(self)

    # -- what was recorded -------------------------------------------------------

    def _versions_after(self, resource_version: str) -> list[Body] | None:
        """The rollout's versions written after `resource_version`; None until that one arrived."""
        versions = self.statuses.versions(self.name)
        if not resource_version:
            return versions
        for index, body in enumerate(versions):
            if body["metadata"]["resourceVersion"] == resource_version:
                return versions[index + 1 :]
        return None

    def states(self) -> list[State]:
        """Every distinct (phase, step, canary weight) since the first `when` action."""
        versions = self._versions_after(self._story_version) or []
        states: list[State] = []
        for body in versions:
            status = body.get("status") or {}
            state = (
                status.get("phase", ""),
                status.get("currentStep"),
                int((status.get("weights") or {}).get("canary", 0)),
            )
            if not states or states[-1] != state:
                states.append(state)
        return states

    def story_statuses(self) -> list[Body]:
        """Every version of the rollout's status since the first `when` action."""
        versions = self._versions_after(self._story_version) or []
        return [body.get("status") or {} for body in versions]

    def replicas_timeline(self) -> list[Replicas]:
        """The rollout's Deployments as they stood at the first `when` action, then after
        each change to any of them."""
        events = self.deployment_watch.events[:]
        standing: dict[str, Body] = {}
        timeline: list[Replicas] = []
        for index, (kind, body) in enumerate(events):
            labels = body["metadata"].get("labels") or {}
            if labels.get(ROLLOUT_LABEL) == self.name:
                if kind == "DELETED":
                    standing.pop(labels[REVISION_LABEL], None)
                else:
                    standing[labels[REVISION_LABEL]] = body
            if index + 1 >= self._story_deployments:
                snapshot = {rev: _replicas(d) for rev, d in standing.items()}
                if not timeline or timeline[-1] != snapshot:
                    timeline.append(snapshot)
        return timeline

    def pods_created(self, revision_name: str) -> list[Body]:
        """Every pod of a revision, as first seen, in the order they were created."""
        events = self.pod_watch.events[:]
        seen: dict[str, Body] = {}
        for kind, body in events:
            labels = body["metadata"].get("labels") or {}
            if kind == "ADDED" and labels.get(REVISION_LABEL) == revision_name:
                seen.setdefault(body["metadata"]["uid"], body)
        return list(seen.values())

    def pods_deleted(self, revision_name: str) -> list[Body]:
        events = self.pod_watch.events[:]
        return [
            body
            for kind, body in events
            if kind == "DELETED"
            and (body["metadata"].get("labels") or {}).get(REVISION_LABEL) == revision_name
        ]

    # -- acting --------------------------------------------------------------------

    def _acted(self, written: Body) -> None:
        self._action_version = written["metadata"]["resourceVersion"]

    def _story_begins(self) -> None:
        if not self._story_version:
            self._story_deployments = len(self.deployment_watch.events)

    def _spec_changed(self, written: Body) -> None:
        self._story_begins()
        self._acted(written)
        self._story_version = self._story_version or self._action_version
        self.manifest = {**self.manifest, "spec": written["spec"]}
        self.new_revision = revision(self.manifest)

    def _failure(self, what: str, error: AssertionError) -> AssertionError:
        status = (self.statuses.current.get(self.name) or {}).get("status") or {}
        keys = ("phase", "currentStep", "weights", "message", "checks")
        brief = {key: status.get(key) for key in keys}
        return AssertionError(f"{error}; states since the change: {self.states()}; now: {brief}")


def _replicas(deployment: Body) -> tuple[int, int]:
    return (
        int(deployment["spec"].get("replicas") or 0),
        int((deployment.get("status") or {}).get("readyReplicas") or 0),
    )


class Given:
    """The state a test starts from."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def rollout(
        self, manifest: Body, within: float = 60, write: Callable[[Body], Body] | None = None
    ) -> Given:
        """A rollout created from `manifest` and Succeeded: its revision is stable.

        `write` creates it (an Argo CD sync, say) and returns it as written; by default a
        plain create.
        """
        scenario = self.scenario
        scenario.name = manifest["metadata"]["name"]
        scenario.manifest = copy.deepcopy(manifest)
        scenario._acted((write or scenario.rollouts.create)(manifest))
        status = Then(scenario).expect_phase("Succeeded", within=within).status
        assert status["stableRevision"] == revision(manifest)
        scenario.stable_revision = scenario.new_revision = str(status["stableRevision"])
        return self

    def ready(self, within: float = 60) -> Given:
        """Every replica of the stable revision Ready."""
        Then(self.scenario).expect_replicas(
            self.scenario.stable_revision,
            self.scenario.manifest["spec"]["runtime"]["replicas"],
            ready=True,
            within=within,
        )
        return self

    def when(self) -> When:
        return When(self.scenario)


class When:
    """What the user does: spec changes and commands, each one write."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def update_spec(self, spec_patch: Body) -> When:
        scenario = self.scenario
        scenario._spec_changed(scenario.rollouts.patch_spec(scenario.name, spec_patch))
        return self

    def apply(self, manifest: Body, write: Callable[[Body], Body]) -> When:
        """A new `manifest` written by `write` (an Argo CD sync of a commit, say), which
        returns the rollout as written."""
        scenario = self.scenario
        scenario._spec_changed(write(manifest))
        return self

    def update_model(self, uri: str) -> When:
        return self.update_spec({"model": {**self.scenario.manifest["spec"]["model"], "uri": uri}})

    def update_runtime(self, **fields: Any) -> When:
        return self.update_spec({"runtime": fields})

    def promote(self) -> When:
        """`kubectl modelrollout promote`: a command annotation, the spec unchanged."""
        scenario = self.scenario
        promote = {f"{GROUP}/promote": uuid.uuid4().hex}
        scenario._acted(scenario.rollouts.annotate(scenario.name, promote))
        return self

    def abort(self) -> When:
        """`kubectl modelrollout abort`: back to the stable revision, the spec unchanged."""
        scenario = self.scenario
        abort = {f"{GROUP}/abort": uuid.uuid4().hex}
        scenario._acted(scenario.rollouts.annotate(scenario.name, abort))
        return self

    def ticks_pass(self, ticks: int) -> When:
        """Let the operator tick `ticks` times: a window for what must NOT happen.

        Only for absences: what must happen is waited for by an expectation.
        """
        time.sleep(ticks * self.scenario.tick_interval)
        return self

    def then(self) -> Then:
        return Then(self.scenario)


class Then:
    """What the user sees, each expectation waited for on the watches."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        # What met the last expectation.
        self.status: Body = {}
        self.condition: Body = {}
        self.deployments: dict[str, Body] = {}
        self.pods: list[Body] = []
        self.route: Body = {}

    def expect_status(self, what: str, met: Callable[[Body], bool], within: float) -> Then:
        """A status written after the last action, by an operator that saw the latest spec."""
        scenario = self.scenario

        def reached() -> Body | None:
            versions = scenario._versions_after(scenario._action_version)
            for body in versions or []:
                status: Body = body.get("status") or {}
                seen_spec = status.get("observedGeneration") == body["metadata"]["generation"]
                if seen_spec and met(status):
                    return status
            return None

        try:
            self.status = scenario.statuses.wait_for(reached, within, f"{scenario.name}: {what}")
        except AssertionError as error:
            raise scenario._failure(what, error) from None
        return self

    def expect_phase(self, *phases: str, within: float) -> Then:
        return self.expect_status(
            f"phase {' or '.join(phases)}", lambda status: status.get("phase") in phases, within
        )

    def expect_condition(self, kind: str, within: float) -> Then:
        """A condition of that type True in a status written after the last action."""

        def true_condition(status: Body) -> Body | None:
            return next(
                (
                    c
                    for c in status.get("conditions") or []
                    if c["type"] == kind and c["status"] == "True"
                ),
                None,
            )

        self.expect_status(f"condition {kind}", lambda s: true_condition(s) is not None, within)
        self.condition = true_condition(self.status) or {}
        return self

    def expect_deployments(self, revisions: set[str], within: float) -> Then:
        """The rollout's Deployments are those of exactly these revisions."""
        watched = self.scenario.deployment_watch

        def exactly() -> dict[str, Body] | None:
            found = self._owned(watched.current.values())
            return found if set(found) == revisions else None

        self.deployments = watched.wait_for(
            exactly, within, f"Deployments of exactly {sorted(revisions)}"
        )
        return self

    def expect_replicas(
        self, revision_name: str, replicas: int, *, ready: bool, within: float
    ) -> Then:
        """A revision's Deployment asks for `replicas` (and has them Ready, with `ready`)."""
        watched = self.scenario.deployment_watch

        def reached() -> dict[str, Body] | None:
            found = self._owned(watched.current.values())
            deployment = found.get(revision_name)
            if deployment is None or _replicas(deployment)[0] != replicas:
                return None
            return found if not ready or _replicas(deployment)[1] == replicas else None

        what = f"{revision_name} at {replicas} replicas{' Ready' if ready else ''}"
        self.deployments = watched.wait_for(reached, within, what)
        return self

    def expect_pods(
        self, revision_name: str, what: str, met: Callable[[list[Body]], bool], within: float
    ) -> Then:
        """The pods of a revision as they are now meet `met`."""
        watched = self.scenario.pod_watch

        def reached() -> list[Body] | None:
            pods = [
                pod
                for pod in watched.current.values()
                if (pod["metadata"].get("labels") or {}).get(REVISION_LABEL) == revision_name
            ]
            return pods if met(pods) else None

        self.pods = watched.wait_for(reached, within, f"pods of {revision_name}: {what}")
        return self

    def expect_route(self, name: str, backends: list[tuple[str, int]], within: float) -> Then:
        """The HTTPRoute `name` sends to exactly these (backend, weight)s."""
        watched = self.scenario.route_watch
        self.route = watched.wait_for(
            lambda: (
                (route := watched.current.get(name)) and route_backends(route) == backends and route
            ),
            within,
            f"route {name} to send to {backends}",
        )
        return self

    def _owned(self, deployments: Any) -> dict[str, Body]:
        return {
            d["metadata"]["labels"][REVISION_LABEL]: d
            for d in deployments
            if (d["metadata"].get("labels") or {}).get(ROLLOUT_LABEL) == self.scenario.name
        }

    def when(self) -> When:
        return When(self.scenario)


def route_backends(route: Body) -> list[tuple[str, int]]:
    """An HTTPRoute's (backend, weight)s, as its first rule sends them."""
    return [(ref["name"], ref["weight"]) for ref in route["spec"]["rules"][0]["backendRefs"]]


def role(body: Body) -> str:
    return str((body["metadata"].get("labels") or {}).get(ROLE_LABEL, ""))
