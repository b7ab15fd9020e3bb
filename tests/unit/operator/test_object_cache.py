"""The watch-fed cache's bookkeeping: versions, selectors, owners, wake-ups (no API calls)."""

from __future__ import annotations

from typing import Any

import pytest

from modelrollout.engine.capacity import gpu_tally, gpus_by_node
from modelrollout.kube.api import DEPLOYMENTS, POD_DISRUPTION_BUDGETS, PODS, Resource
from modelrollout.kube.cache import (
    CachedKubeApi,
    Informer,
    field_selector_matches,
    is_newer,
    owning_rollout,
    parse_equality_selector,
)
from modelrollout.kube.labels import EVALUATION_LABEL, KIND, ROLLOUT_LABEL

pytestmark = pytest.mark.unit


def obj(name: str, version: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": version,
            "labels": {ROLLOUT_LABEL: "chat", **(labels or {})},
            "managedFields": [{"manager": "kube-controller-manager"}],
        },
        "spec": {"replicas": 1},
    }


def informer() -> tuple[Informer, list[tuple[str, str]]]:
    woken: list[tuple[str, str]] = []
    # The API is never called: the thread is not started.
    cache = Informer(None, DEPLOYMENTS, "ns", lambda ns, name: woken.append((ns, name)))  # type: ignore[arg-type]
    return cache, woken


def test_an_older_version_never_replaces_a_newer_one() -> None:
    cache, woken = informer()
    cache.apply("ADDED", obj("a", "10"))
    cache.apply("MODIFIED", obj("a", "9"))
    assert cache.get("a")["metadata"]["resourceVersion"] == "10"  # type: ignore[index]
    cache.apply("MODIFIED", obj("a", "10"))  # our own write seen again: no wake-up
    assert woken == [("ns", "chat")]


def test_reads_are_copies_without_managed_fields() -> None:
    cache, _ = informer()
    cache.apply("ADDED", obj("a", "1"))
    read = cache.get("a")
    assert read is not None and "managedFields" not in read["metadata"]
    read["spec"]["replicas"] = 5
    assert cache.get("a")["spec"]["replicas"] == 1  # type: ignore[index]


def test_copies_follow_each_new_version_and_a_relist() -> None:
    cache, _ = informer()
    cache.apply("ADDED", obj("a", "1"))
    first = cache.matching({ROLLOUT_LABEL: "chat"})
    again = cache.matching({ROLLOUT_LABEL: "chat"})
    assert first == again and first[0] is not again[0]
    first[0]["spec"]["replicas"] = 7  # a reader's change stays its own
    changed = obj("a", "2")
    changed["spec"]["replicas"] = 3
    cache.apply("MODIFIED", changed)
    assert cache.get("a")["spec"]["replicas"] == 3  # type: ignore[index]
    assert [o["spec"]["replicas"] for o in cache.matching({ROLLOUT_LABEL: "chat"})] == [3]
    relisted = obj("a", "3")
    relisted["spec"]["replicas"] = 4
    cache.replace_all([relisted])
    assert cache.get("a")["spec"]["replicas"] == 4  # type: ignore[index]
    cache.apply("DELETED", relisted)
    assert cache.get("a") is None and cache.matching({ROLLOUT_LABEL: "chat"}) == []


def test_deleted_objects_are_gone_and_wake_their_owner() -> None:
    cache, woken = informer()
    cache.apply("ADDED", obj("a", "1"))
    cache.apply("DELETED", obj("a", "2"))
    assert cache.get("a") is None
    assert woken == [("ns", "chat"), ("ns", "chat")]


def test_matching_filters_by_every_label() -> None:
    cache, _ = informer()
    cache.apply("ADDED", obj("a", "1", {"tier": "x"}))
    cache.apply("ADDED", obj("b", "1", {"tier": "y"}))
    assert [o["metadata"]["name"] for o in cache.matching({"tier": "y"})] == ["b"]
    assert len(cache.matching({ROLLOUT_LABEL: "chat"})) == 2
    assert cache.matching({ROLLOUT_LABEL: "other"}) == []


def test_a_relist_replaces_the_cache_and_wakes_only_what_changed_or_vanished() -> None:
    cache, woken = informer()
    cache.apply("ADDED", obj("same", "1"))
    cache.apply("ADDED", obj("gone", "1", {ROLLOUT_LABEL: "old"}))
    woken.clear()
    cache.replace_all([obj("same", "1"), obj("new", "5", {ROLLOUT_LABEL: "fresh"})])
    assert cache.get("gone") is None and cache.get("new") is not None
    assert sorted(woken) == [("ns", "fresh"), ("ns", "old")]


def test_a_version_that_changes_nothing_kept_is_stored_without_a_wake_up() -> None:
    """The Deployment controller, kwok and the disruption controller rewrite objects in ways
    a tick never reads; waking the rollout for each was a tick with nothing to do."""
    cache, woken = informer()
    cache.apply("ADDED", obj("a", "1"))
    woken.clear()
    cache.apply("MODIFIED", obj("a", "2"))  # only its resourceVersion (and managedFields) moved
    assert woken == [] and cache.get("a")["metadata"]["resourceVersion"] == "2"  # type: ignore[index]
    cache.replace_all([obj("a", "3")])  # a relist after a dropped watch: the same content
    assert woken == []
    labelled = obj("a", "4", {"tier": "x"})
    cache.apply("MODIFIED", labelled)
    assert woken == [("ns", "chat")]

    pods = Informer(None, PODS, "", lambda ns, name: woken.append((ns, name)), "")  # type: ignore[arg-type]
    pod = gpu_pod("p", "1", "a", 1, "Running")
    pod["metadata"]["labels"] = {ROLLOUT_LABEL: "chat"}
    pods.apply("ADDED", pod)
    woken.clear()
    heartbeat = gpu_pod("p", "2", "a", 1, "Running")
    heartbeat["metadata"]["labels"] = {ROLLOUT_LABEL: "chat"}
    heartbeat["status"]["hostIP"] = "10.0.0.2"  # not kept: nothing reads it
    pods.apply("MODIFIED", heartbeat)
    assert woken == []
    ready = gpu_pod("p", "3", "a", 1, "Running")
    ready["metadata"]["labels"] = {ROLLOUT_LABEL: "chat"}
    ready["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    pods.apply("MODIFIED", ready)
    assert woken == [("ns", "chat")]


def test_a_budgets_status_is_neither_kept_nor_a_reason_to_tick() -> None:
    woken: list[tuple[str, str]] = []

    def wake(namespace: str, name: str) -> None:
        woken.append((namespace, name))

    budgets = Informer(None, POD_DISRUPTION_BUDGETS, "ns", wake)  # type: ignore[arg-type]

    def budget(version: str, max_unavailable: int, healthy: int) -> dict[str, Any]:
        return {
            **obj("chat-r1", version),
            "spec": {"maxUnavailable": max_unavailable},
            "status": {"currentHealthy": healthy, "disruptionsAllowed": max_unavailable},
        }

    budgets.apply("ADDED", budget("1", 1, 0))
    budgets.apply("MODIFIED", budget("2", 1, 1))  # the disruption controller counted a pod
    assert woken == [("ns", "chat")]
    assert "status" not in budgets.get("chat-r1")  # type: ignore[operator]
    budgets.apply("MODIFIED", budget("3", 0, 1))  # someone edited the spec: the tick restores it
    assert woken == [("ns", "chat"), ("ns", "chat")]


def test_owning_rollout_prefers_the_owner_reference_then_labels() -> None:
    owned = {"metadata": {"ownerReferences": [{"kind": KIND, "name": "chat"}], "labels": {}}}
    assert owning_rollout(owned) == "chat"
    assert owning_rollout({"metadata": {"labels": {ROLLOUT_LABEL: "svc"}}}) == "svc"
    assert owning_rollout({"metadata": {"labels": {EVALUATION_LABEL: "job"}}}) == "job"
    other_owner = {"metadata": {"ownerReferences": [{"kind": "Service", "name": "x"}]}}
    assert owning_rollout(other_owner) is None


@pytest.mark.parametrize(
    ("selector", "parsed"),
    [
        (None, {}),
        ("a=b", {"a": "b"}),
        ("modelrollout.dev/rollout=chat,modelrollout.dev/revision=r1", {
            "modelrollout.dev/rollout": "chat", "modelrollout.dev/revision": "r1"}),
        ("a!=b", None),
        ("a==b", None),
        ("a in (b,c)", None),
        ("a", None),
    ],
)  # fmt: skip
def test_only_equality_selectors_are_answered_from_the_cache(
    selector: str | None, parsed: dict[str, str] | None
) -> None:
    assert parse_equality_selector(selector) == parsed


def test_resource_versions_compare_as_numbers_when_they_are() -> None:
    assert is_newer("10", "9") and not is_newer("9", "10") and is_newer("10", "10")
    assert is_newer("opaque", "10")


def test_a_cluster_wide_informer_keeps_namespaces_apart() -> None:
    woken: list[tuple[str, str]] = []
    pods = Informer(None, PODS, "", lambda ns, name: woken.append((ns, name)), selector="")  # type: ignore[arg-type]
    first, second = obj("p", "1"), obj("p", "2")
    second["metadata"]["namespace"] = "other"
    pods.apply("ADDED", first)
    pods.apply("ADDED", second)
    assert [p["metadata"]["namespace"] for p in pods.matching({}, namespace="other")] == ["other"]
    assert pods.get("p", "ns") is not None and pods.get("p", "missing") is None
    assert woken == [("ns", "chat"), ("other", "chat")]  # each owner in its own namespace


def test_field_selectors_are_evaluated_on_cached_objects() -> None:
    running = {"status": {"phase": "Running"}, "spec": {"nodeName": "gpu-0"}}
    done = {"status": {"phase": "Succeeded"}}
    live = "status.phase!=Succeeded,status.phase!=Failed"
    assert field_selector_matches(live, running) and not field_selector_matches(live, done)
    assert field_selector_matches("spec.nodeName=gpu-0", running)
    assert not field_selector_matches("spec.nodeName=gpu-1", running)
    assert field_selector_matches(None, done)


def test_cached_pods_keep_only_what_the_operator_reads() -> None:
    pods, _ = informer()
    pod = obj("p", "1")
    pod["spec"] = {
        "nodeName": "gpu-0",
        "containers": [
            {
                "name": "server",
                "image": "x",
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
                "ports": [{"name": "http", "containerPort": 8000}],
            }
        ],
        "volumes": [{"name": "big"}],
    }
    pod["status"] = {
        "phase": "Running",
        "conditions": [{"type": "Ready"}],
        "podIP": "10.0.0.1",
        "podIPs": [{"ip": "10.0.0.1"}],
    }
    pods.apply("ADDED", pod)
    kept = pods.get("p")
    assert kept == {
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "resourceVersion": "1",
            "labels": {ROLLOUT_LABEL: "chat"},
        },
        "spec": {
            "nodeName": "gpu-0",
            "containers": [
                {
                    "name": "server",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    "ports": [{"name": "http", "containerPort": 8000}],
                }
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.1",
            "conditions": [{"type": "Ready"}],
            "containerStatuses": [],
        },
    }


def test_the_label_index_follows_relabels_and_deletions() -> None:
    cache, _ = informer()
    cache.apply("ADDED", obj("a", "1"))
    moved = obj("a", "2")
    moved["metadata"]["labels"][ROLLOUT_LABEL] = "other"
    cache.apply("MODIFIED", moved)
    assert cache.matching({ROLLOUT_LABEL: "chat"}) == []
    assert [o["metadata"]["name"] for o in cache.matching({ROLLOUT_LABEL: "other"})] == ["a"]
    cache.apply("DELETED", obj("a", "3"))
    assert cache.matching({ROLLOUT_LABEL: "other"}) == []
    cache.replace_all([obj("b", "4")])
    assert [o["metadata"]["name"] for o in cache.matching({ROLLOUT_LABEL: "chat"})] == ["b"]


def gpu_pod(name: str, version: str, node: str | None, gpus: int, phase: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": version},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "server", "resources": {"limits": {"nvidia.com/gpu": gpus}}}],
        },
        "status": {"phase": phase},
    }


def test_the_gpu_tally_follows_binding_finishing_deletion_and_relists() -> None:
    """The GPUs held per node, as capacity planning reads them, equal a count of the pods
    the cache holds after every kind of change (so a canary's start never sums them)."""
    pods = Informer(None, PODS, "", lambda ns, name: None, "", gpu_tally)  # type: ignore[arg-type]

    def held_by_a_recount() -> dict[str, int]:
        return gpus_by_node(pods.matching({}, copies=False))

    pods.apply("ADDED", gpu_pod("pending", "1", None, 4, "Pending"))
    assert pods.totals() == {} == held_by_a_recount()
    pods.apply("MODIFIED", gpu_pod("pending", "2", "a", 4, "Pending"))  # bound by the scheduler
    pods.apply("ADDED", gpu_pod("b1", "3", "b", 2, "Running"))
    pods.apply("ADDED", gpu_pod("b2", "4", "b", 1, "Running"))
    assert pods.totals() == {"a": 4, "b": 3} == held_by_a_recount()
    pods.apply("MODIFIED", gpu_pod("b1", "5", "b", 2, "Succeeded"))  # finished: frees its GPUs
    pods.apply("MODIFIED", gpu_pod("b1", "4", "b", 2, "Running"))  # an older version: ignored
    assert pods.totals() == {"a": 4, "b": 1} == held_by_a_recount()
    pods.apply("DELETED", gpu_pod("b2", "6", "b", 1, "Running"))
    assert pods.totals() == {"a": 4} == held_by_a_recount()
    pods.replace_all([gpu_pod("c1", "7", "c", 8, "Running"), gpu_pod("b1", "5", "b", 2, "Failed")])
    assert pods.totals() == {"c": 8} == held_by_a_recount()


class OfflineCache(CachedKubeApi):
    """A cache whose Deployments informer the test feeds; a request to the API server fails."""

    def __init__(self) -> None:
        super().__init__(None)
        self.deployments = Informer(None, DEPLOYMENTS, "ns", lambda ns, name: None)  # type: ignore[arg-type]
        self.deployments.synced.set()

    def _synced(self, resource: Resource, namespace: str) -> Informer | None:
        return self.deployments if resource == DEPLOYMENTS else None

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"asked the API server: {args}")


def test_an_owned_object_the_cache_does_not_hold_is_absent_without_a_request() -> None:
    """A tick asking after an object of its own that does not exist (a shadow's comparison
    proxy, mostly) costs no GET; `get` still asks, for objects without our label."""
    api = OfflineCache()
    assert api.get_owned(DEPLOYMENTS, "ns", "chat-shadow-compare") is None
    api.deployments.apply("ADDED", obj("chat-shadow-compare", "3"))
    found = api.get_owned(DEPLOYMENTS, "ns", "chat-shadow-compare")
    assert found is not None and found["metadata"]["resourceVersion"] == "3"
    with pytest.raises(AssertionError, match="asked the API server"):
        api.get(DEPLOYMENTS, "ns", "not-ours")
