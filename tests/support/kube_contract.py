"""What the operator relies on the API server for, as checks any `KubeApi` must pass.

The unit suite runs them against `FakeKubeApi`, the cluster suite against the
real API server, so the fake the reconciler's unit tests use is shown to
behave as the real one for the operations the operator makes. Each check
gets an API and an empty namespace. Garbage collection is asynchronous on a
real cluster: the checks wait for its effects on a watch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelrollout.kube.api import MODELROLLOUTS, SERVICES, KubeApi, KubeApiError, Resource
from modelrollout.kube.workloads import RolloutRef
from tests.support.rollouts import rollout_manifest

CONFIG_MAPS = Resource("", "v1", "configmaps")
WATCH_TIMEOUT_SECONDS = 60

Check = Callable[[KubeApi, str], None]


def _metadata(
    name: str, labels: dict[str, str] | None, owners: list[RolloutRef] | None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels or {}}
    if owners:
        # One controller at most: the first owner.
        metadata["ownerReferences"] = [
            {**owner.owner_reference(), "controller": index == 0}
            for index, owner in enumerate(owners)
        ]
    return metadata


def config_map(
    name: str,
    labels: dict[str, str] | None = None,
    owners: list[RolloutRef] | None = None,
    data: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata = _metadata(name, labels, owners)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data or {}}


def service(
    name: str,
    labels: dict[str, str] | None = None,
    ports: tuple[int, ...] = (80,),
    owners: list[RolloutRef] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, labels, owners),
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": f"p{port}", "port": port} for port in ports],
        },
    }


def api_error(call: Callable[[], object]) -> KubeApiError:
    try:
        call()
    except KubeApiError as error:
        return error
    raise AssertionError("the call succeeded; the API server refuses it")


def create_rollout(api: KubeApi, namespace: str, name: str) -> RolloutRef:
    created = api.create(
        MODELROLLOUTS, namespace, rollout_manifest(name, "file:///m1", [{"setWeight": 50}])
    )
    return RolloutRef(namespace, name, created["metadata"]["uid"])


def wait_for_event(
    api: KubeApi,
    resource: Resource,
    namespace: str,
    since: str,
    wanted: Callable[[str, dict[str, Any]], bool],
    what: str,
) -> dict[str, Any]:
    """The first object of an event after version `since` that `wanted(type, object)` accepts."""
    for event in api.watch(resource, namespace, "", since, WATCH_TIMEOUT_SECONDS):
        if event["type"] != "BOOKMARK" and wanted(event["type"], event["object"]):
            found: dict[str, Any] = event["object"]
            return found
    raise AssertionError(f"the watch ended without {what}")


def names(items: list[dict[str, Any]]) -> list[str]:
    return [item["metadata"]["name"] for item in items]


def check_create_get_and_their_errors(api: KubeApi, namespace: str) -> None:
    created = api.create(CONFIG_MAPS, namespace, config_map("one", data={"k": "v"}))
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    read = api.get(CONFIG_MAPS, namespace, "one")
    assert read is not None and read["data"] == {"k": "v"}
    assert read["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    exists = api_error(lambda: api.create(CONFIG_MAPS, namespace, config_map("one")))
    assert (exists.status, exists.reason) == (409, "Conflict")
    invalid = api_error(lambda: api.create(CONFIG_MAPS, namespace, config_map("Not_A_Name")))
    assert (invalid.status, invalid.reason) == (422, "Unprocessable Entity")
    assert api.get(CONFIG_MAPS, namespace, "missing") is None
    for write in (
        lambda: api.merge_patch(CONFIG_MAPS, namespace, "missing", {"data": {"k": "v"}}),
        lambda: api.replace(CONFIG_MAPS, namespace, "missing", config_map("missing")),
    ):
        missing = api_error(write)
        assert (missing.status, missing.reason) == (404, "Not Found")
    api.delete(CONFIG_MAPS, namespace, "missing")  # a 404 on delete is "already done"


def check_label_selectors_on_list(api: KubeApi, namespace: str) -> None:
    api.create(SERVICES, namespace, service("a", {"tier": "web", "track": "stable"}))
    api.create(SERVICES, namespace, service("b", {"tier": "web", "track": "canary"}))
    api.create(SERVICES, namespace, service("c", {"tier": "db"}))
    expected = {
        "": ["a", "b", "c"],
        "tier=web": ["a", "b"],
        "tier==web": ["a", "b"],
        "tier=web,track=canary": ["b"],
        "track!=canary": ["a", "c"],
        "track in (canary,stable)": ["a", "b"],
        "track notin (canary),tier": ["a", "c"],
        "track": ["a", "b"],
        "!track": ["c"],
    }
    for selector, listed in expected.items():
        assert names(api.list(SERVICES, namespace, selector)) == listed, selector
    items, version = api.list_with_version(SERVICES, namespace, "tier=db")
    assert names(items) == ["c"] and version
    malformed = api_error(lambda: api.list(SERVICES, namespace, "track in (canary"))
    assert malformed.status == 400


def check_merge_patch_semantics(api: KubeApi, namespace: str) -> None:
    created = api.create(SERVICES, namespace, service("s", {"a": "1", "b": "2"}, (80, 81)))
    patched = api.merge_patch(
        SERVICES,
        namespace,
        "s",
        {"metadata": {"labels": {"a": None, "c": "3"}}, "spec": {"ports": [{"port": 82}]}},
    )
    # Objects merge, null deletes a key, a list is replaced whole.
    assert patched["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert [port["port"] for port in patched["spec"]["ports"]] == [82]
    assert patched["spec"]["selector"] == {"app": "s"}
    assert patched["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    assert api.get(SERVICES, namespace, "s") == patched


def check_stale_resource_version_conflicts(api: KubeApi, namespace: str) -> None:
    first = api.create(CONFIG_MAPS, namespace, config_map("cas", data={"n": "1"}))
    moved = api.merge_patch(CONFIG_MAPS, namespace, "cas", {"data": {"n": "2"}})
    stale = {**first, "data": {"n": "3"}}
    conflict = api_error(lambda: api.replace(CONFIG_MAPS, namespace, "cas", stale))
    assert (conflict.status, conflict.reason) == (409, "Conflict")
    stale_patch = {"metadata": {"resourceVersion": first["metadata"]["resourceVersion"]}}
    conflict = api_error(lambda: api.merge_patch(CONFIG_MAPS, namespace, "cas", stale_patch))
    assert (conflict.status, conflict.reason) == (409, "Conflict")
    current = api.get(CONFIG_MAPS, namespace, "cas")
    assert current is not None and current["data"] == {"n": "2"}
    replaced = api.replace(CONFIG_MAPS, namespace, "cas", {**moved, "data": {"n": "4"}})
    assert replaced["data"] == {"n": "4"}
    assert replaced["metadata"]["resourceVersion"] != moved["metadata"]["resourceVersion"]
    # Without a resourceVersion a replace is unconditional.
    unversioned = config_map("cas", data={"n": "5"})
    assert api.replace(CONFIG_MAPS, namespace, "cas", unversioned)["data"] == {"n": "5"}


def check_generation_and_the_status_subresource(api: KubeApi, namespace: str) -> None:
    create_rollout(api, namespace, "chat")

    def stored() -> dict[str, Any]:
        body = api.get(MODELROLLOUTS, namespace, "chat")
        assert body is not None
        return body

    assert stored()["metadata"]["generation"] == 1
    status = {"status": {"phase": "Progressing", "currentStep": 1, "message": "at step 1"}}
    api.merge_patch(MODELROLLOUTS, namespace, "chat", status, subresource="status")
    assert stored()["status"] == status["status"]
    assert stored()["metadata"]["generation"] == 1  # status writes never bump it
    api.merge_patch(
        MODELROLLOUTS,
        namespace,
        "chat",
        {"status": {"currentStep": None, "phase": "Paused"}},
        subresource="status",
    )
    assert stored()["status"] == {"phase": "Paused", "message": "at step 1"}
    api.merge_patch(MODELROLLOUTS, namespace, "chat", {"spec": {"model": {"uri": "file:///m2"}}})
    assert stored()["metadata"]["generation"] == 2
    api.merge_patch(
        MODELROLLOUTS, namespace, "chat", {"metadata": {"annotations": {"note": "metadata only"}}}
    )
    assert stored()["metadata"]["generation"] == 2
    # The main resource ignores status; the status subresource ignores everything else.
    api.merge_patch(MODELROLLOUTS, namespace, "chat", {"status": {"message": "via main"}})
    api.merge_patch(
        MODELROLLOUTS,
        namespace,
        "chat",
        {"spec": {"model": {"uri": "file:///m3"}}, "status": {"message": "via status"}},
        subresource="status",
    )
    body = stored()
    assert body["spec"]["model"]["uri"] == "file:///m2"
    assert body["status"] == {"phase": "Paused", "message": "via status"}
    assert body["metadata"]["generation"] == 2
    # A write that changes nothing is no write: the version stays.
    same = api.merge_patch(MODELROLLOUTS, namespace, "chat", {"spec": body["spec"]})
    assert same["metadata"]["resourceVersion"] == body["metadata"]["resourceVersion"]


def check_owner_references_cascade(api: KubeApi, namespace: str) -> None:
    owner = create_rollout(api, namespace, "owner")
    kept_owner = create_rollout(api, namespace, "kept")
    orphaning = create_rollout(api, namespace, "orphaning")
    api.create(SERVICES, namespace, service("owned-svc", owners=[owner]))
    api.create(CONFIG_MAPS, namespace, config_map("owned", owners=[owner]))
    api.create(CONFIG_MAPS, namespace, config_map("shared", owners=[owner, kept_owner]))
    two_controllers = config_map("two-controllers", owners=[owner])
    two_controllers["metadata"]["ownerReferences"].append(kept_owner.owner_reference())
    refused = api_error(lambda: api.create(CONFIG_MAPS, namespace, two_controllers))
    assert (refused.status, refused.reason) == (422, "Unprocessable Entity")
    api.create(CONFIG_MAPS, namespace, config_map("orphan", owners=[orphaning]))
    _, since = api.list_with_version(CONFIG_MAPS, namespace)

    api.delete(MODELROLLOUTS, namespace, "owner")
    gone = wait_for_event(
        api,
        SERVICES,
        namespace,
        since,
        lambda kind, obj: kind == "DELETED" and obj["metadata"]["name"] == "owned-svc",
        "the owned Service deleted",
    )
    wait_for_event(
        api,
        CONFIG_MAPS,
        namespace,
        since,
        lambda kind, obj: kind == "DELETED" and obj["metadata"]["name"] == "owned",
        "the owned ConfigMap deleted",
    )
    assert api.get(SERVICES, namespace, gone["metadata"]["name"]) is None
    shared = wait_for_event(
        api,
        CONFIG_MAPS,
        namespace,
        since,
        lambda kind, obj: (
            obj["metadata"]["name"] == "shared"
            and len(obj["metadata"].get("ownerReferences") or []) == 1
        ),
        "the reference to the deleted owner dropped from the ConfigMap with two owners",
    )
    assert shared["metadata"]["ownerReferences"][0]["uid"] == kept_owner.uid

    api.delete(MODELROLLOUTS, namespace, "orphaning", propagation="Orphan")
    wait_for_event(
        api,
        MODELROLLOUTS,
        namespace,
        since,
        lambda kind, obj: kind == "DELETED" and obj["metadata"]["name"] == "orphaning",
        "the orphaning owner deleted",
    )
    orphan = api.get(CONFIG_MAPS, namespace, "orphan")
    assert orphan is not None and not orphan["metadata"].get("ownerReferences")


def check_watch_from_a_version(api: KubeApi, namespace: str) -> None:
    _, since = api.list_with_version(CONFIG_MAPS, namespace, "app=w")
    api.create(CONFIG_MAPS, namespace, config_map("w1", {"app": "w"}))
    api.create(CONFIG_MAPS, namespace, config_map("other", {"app": "x"}))
    api.merge_patch(CONFIG_MAPS, namespace, "w1", {"data": {"k": "v"}})
    api.merge_patch(CONFIG_MAPS, namespace, "other", {"data": {"k": "v"}})
    # Leaving the selector is a DELETED for this watch; entering it an ADDED.
    api.merge_patch(CONFIG_MAPS, namespace, "w1", {"metadata": {"labels": {"app": "x"}}})
    api.merge_patch(CONFIG_MAPS, namespace, "other", {"metadata": {"labels": {"app": "w"}}})
    api.delete(CONFIG_MAPS, namespace, "other")
    api.create(CONFIG_MAPS, namespace, config_map("end", {"app": "w"}))
    seen: list[tuple[str, str]] = []
    for event in api.watch(CONFIG_MAPS, namespace, "app=w", since, WATCH_TIMEOUT_SECONDS):
        if event["type"] == "BOOKMARK":
            continue
        seen.append((event["type"], event["object"]["metadata"]["name"]))
        if seen[-1] == ("ADDED", "end"):
            break
    assert seen == [
        ("ADDED", "w1"),
        ("MODIFIED", "w1"),
        ("DELETED", "w1"),
        ("ADDED", "other"),
        ("DELETED", "other"),
        ("ADDED", "end"),
    ]


CONTRACT: tuple[Check, ...] = (
    check_create_get_and_their_errors,
    check_label_selectors_on_list,
    check_merge_patch_semantics,
    check_stale_resource_version_conflicts,
    check_generation_and_the_status_subresource,
    check_owner_references_cascade,
    check_watch_from_a_version,
)
