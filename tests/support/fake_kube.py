"""An API server in memory behind the `KubeApi` interface, for tests without a cluster.

The Reconciler, the routers and the watch-fed cache all talk to the cluster
through `KubeApi` (plain dicts, one call per method), so this fake
implements exactly that interface, with the API server's rules that the
operator's correctness depends on:

- resourceVersions: one counter for every object, as etcd's revision; a
  replace (or a merge patch naming `metadata.resourceVersion`) with a
  stale one fails with 409 Conflict, as does creating an existing name;
  a missing object is 404, an invalid name 422, all as `KubeApiError`.
- generation: 1 on create, +1 when anything but metadata and status
  changes (on every kind here; the API server keeps it for most). Status
  is written only through the status subresource, which changes nothing
  else (a CRD with `subresources.status`, and Deployments, Pods,
  Services... alike). A write that changes nothing is not stored and
  wakes no watch, as the API server skips it.
- JSON merge patch (RFC 7386): objects merged, null deletes, lists replaced.
- label selectors on list and watch (=, ==, !=, in, notin, exists, !exists);
  field selectors on cluster lists as the watch-fed cache evaluates them.
- watches from a resourceVersion: ADDED/MODIFIED/DELETED in order, an
  object entering or leaving a label selector seen as ADDED or DELETED; no
  bookmarks, and the history is kept whole, so never 410 Gone.
- owner references: an object all of whose owners are gone is deleted, as
  the garbage collector does (here at once, in the same call); propagation
  Orphan strips the references instead. Finalizers are not modelled.

Every write request is recorded in `writes`, in order, whether or not it
changed anything, so a test can assert what a tick wrote and in which order.
"""

from __future__ import annotations

import copy
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelrollout.kube.api import (
    DEPLOYMENTS,
    HTTPROUTES,
    JOBS,
    MODELROLLOUTS,
    NODES,
    POD_DISRUPTION_BUDGETS,
    PODS,
    SERVICES,
    KubeApi,
    KubeApiError,
    Resource,
)
from modelrollout.kube.cache import field_selector_matches

# Resources whose status is written only through `/status` (everything else here has none).
STATUS_SUBRESOURCE: frozenset[Resource] = frozenset(
    {DEPLOYMENTS, PODS, SERVICES, JOBS, NODES, HTTPROUTES, MODELROLLOUTS, POD_DISRUPTION_BUDGETS}
)
CLUSTER_SCOPED: frozenset[Resource] = frozenset({NODES})
# batch/v1 Jobs orphan their pods when a delete names no propagation policy.
ORPHANING_BY_DEFAULT: frozenset[Resource] = frozenset({JOBS})

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SELECTOR_TERM = re.compile(
    r"^\s*(?P<not>!)?\s*(?P<key>[A-Za-z0-9./_-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9._-]*)"
    r"|\s(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?\s*$"
)


@dataclass(frozen=True)
class Write:
    """One write request as the API server received it."""

    verb: str  # create, patch, replace, delete
    resource: Resource
    namespace: str
    name: str
    body: Any = None  # the object, the patch, or the propagation policy
    subresource: str | None = None

    @property
    def target(self) -> str:
        """`plural/name`, with `/status` for a status write: what a test asserts on."""
        suffix = f"/{self.subresource}" if self.subresource else ""
        return f"{self.resource.plural}/{self.name}{suffix}"


@dataclass(frozen=True)
class _Change:
    version: int
    resource: Resource
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    previous: dict[str, Any] | None


def _qualified(resource: Resource) -> str:
    return f"{resource.plural}.{resource.group}" if resource.group else resource.plural


def _not_found(resource: Resource, name: str) -> KubeApiError:
    return KubeApiError(404, "Not Found", f'{_qualified(resource)} "{name}" not found')


def _conflict(resource: Resource, name: str) -> KubeApiError:
    return KubeApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(resource)} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again",
    )


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch of `target` (not changed) by `patch`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge(merged.get(key), value)
    return merged


def _selector_terms(selector: str) -> list[str]:
    """Split on the commas that separate terms, not those inside `in (a,b)`."""
    terms, depth, start = [], 0, 0
    for index, char in enumerate(selector):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(selector[start:index])
            start = index + 1
    terms.append(selector[start:])
    return [term for term in terms if term.strip()]


def selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Whether `labels` pass a label selector; a malformed one is 400, as on the server."""
    for term in _selector_terms(selector or ""):
        found = _SELECTOR_TERM.match(term)
        if found is None or (found["not"] and (found["op"] or found["set"])):
            raise KubeApiError(400, "Bad Request", f"unable to parse requirement: {term!r}")
        key, present = found["key"], found["key"] in labels
        if found["not"]:
            matches = not present
        elif found["op"] in ("=", "=="):
            matches = present and labels[key] == found["value"]
        elif found["op"] == "!=":
            matches = labels.get(key) != found["value"]
        elif found["set"]:
            values = {value.strip() for value in found["values"].split(",")}
            matches = (present and labels[key] in values) == (found["set"] == "in")
        else:
            matches = present
        if not matches:
            return False
    return True


def _check_owners(kind: str, name: str, metadata: dict[str, Any]) -> None:
    controllers = [ref for ref in metadata.get("ownerReferences") or [] if ref.get("controller")]
    if len(controllers) > 1:
        raise KubeApiError(
            422,
            "Unprocessable Entity",
            f'{kind} "{name}" is invalid: metadata.ownerReferences: Only one reference can '
            "have Controller set to true",
        )


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = obj["metadata"].get("labels") or {}
    return labels


def _without_metadata_and_status(obj: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if key not in ("metadata", "status")}


class FakeKubeApi(KubeApi):
    """`KubeApi` on dicts in memory; thread-safe, as the cache's watch threads need."""

    def __init__(self) -> None:
        super().__init__(None)  # type: ignore[arg-type]  # no API client: nothing goes out
        self._objects: dict[tuple[Resource, str, str], dict[str, Any]] = {}
        self._version = 1  # as etcd's first revision: "0" means "any version" to a watch
        self._changes: list[_Change] = []
        self._changed = threading.Condition()
        self._watches_stopped = False
        self.writes: list[Write] = []

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        raise AssertionError(f"FakeKubeApi serves the KubeApi methods, not {method} {path}")

    def stop_watches(self) -> None:
        """End every watch, now and later (real ones end at a timeout or a dropped connection)."""
        with self._changed:
            self._watches_stopped = True
            self._changed.notify_all()

    # -- reads -----------------------------------------------------------------

    def serves(self, resource: Resource) -> bool:
        return True

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        with self._changed:
            obj = self._objects.get(self._key(resource, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list_with_version(
        self, resource: Resource, namespace: str, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        with self._changed:
            items = [
                copy.deepcopy(obj)
                for (kind, obj_namespace, _), obj in sorted(
                    self._objects.items(), key=lambda item: item[0][1:]
                )
                if kind == resource
                and namespace in ("", obj_namespace)
                and selector_matches(label_selector, _labels(obj))
            ]
            return items, str(self._version)

    def list(
        self, resource: Resource, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        return self.list_with_version(resource, namespace, label_selector)[0]

    def list_cluster(
        self, resource: Resource, field_selector: str | None = None
    ) -> list[dict[str, Any]]:
        items, _ = self.list_with_version(resource, "")
        return [item for item in items if field_selector_matches(field_selector, item)]

    def watch(
        self,
        resource: Resource,
        namespace: str,
        label_selector: str,
        resource_version: str,
        timeout_seconds: int,
    ) -> Iterator[dict[str, Any]]:
        """Changes after `resource_version` until `timeout_seconds` pass or `stop_watches()`.

        "" (or "0") starts with an ADDED for every object there is now, as the
        API server does.
        """
        deadline = time.monotonic() + timeout_seconds
        with self._changed:
            if resource_version in ("", "0"):
                items, resource_version = self.list_with_version(
                    resource, namespace, label_selector
                )
                pending = [{"type": "ADDED", "object": item} for item in items]
            else:
                pending = []
        seen = int(resource_version)
        while True:
            yield from pending
            with self._changed:
                while not self._watches_stopped and self._version <= seen:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._changed.wait(left)
                if self._watches_stopped:
                    return
                changes = [change for change in self._changes if change.version > seen]
                seen = self._version
            pending = [
                event
                for change in changes
                if change.resource == resource
                and namespace in ("", change.obj["metadata"].get("namespace", ""))
                for event in self._seen_through(change, label_selector)
            ]

    @staticmethod
    def _seen_through(change: _Change, selector: str) -> list[dict[str, Any]]:
        """The event a watch with `selector` sends for `change` (none, or one)."""
        now = selector_matches(selector, _labels(change.obj))
        before = change.previous is not None and selector_matches(
            selector, _labels(change.previous)
        )
        if change.type == "MODIFIED" and now != before:
            kind = "ADDED" if now else "DELETED"
        elif (change.type == "DELETED" and before) or (change.type != "DELETED" and now):
            kind = change.type
        else:
            return []
        return [{"type": kind, "object": copy.deepcopy(change.obj)}]

    # -- writes ----------------------------------------------------------------

    def create(self, resource: Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        metadata = body.get("metadata") or {}
        name = str(metadata.get("name") or "")
        with self._changed:
            self.writes.append(Write("create", resource, namespace, name, copy.deepcopy(body)))
            kind = body.get("kind", resource.plural)
            if not name:
                raise KubeApiError(422, "Unprocessable Entity", f"{kind}: metadata.name: Required")
            if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
                raise KubeApiError(
                    422,
                    "Unprocessable Entity",
                    f'{kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": '
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                    "characters, '-' or '.'",
                )
            _check_owners(kind, name, metadata)
            if metadata.get("namespace", namespace) != namespace:
                raise KubeApiError(
                    400,
                    "Bad Request",
                    "the namespace of the provided object does not match the namespace "
                    "sent on the request",
                )
            key = self._key(resource, namespace, name)
            if key in self._objects:
                raise KubeApiError(
                    409, "Conflict", f'{_qualified(resource)} "{name}" already exists'
                )
            obj = copy.deepcopy(body)
            if resource in STATUS_SUBRESOURCE:
                obj.pop("status", None)
            obj.setdefault(
                "apiVersion",
                f"{resource.group}/{resource.version}" if resource.group else resource.version,
            )
            obj["metadata"] = {
                **obj.get("metadata", {}),
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            if resource not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = namespace
            stored = self._store(resource, key, obj, None)
            self._collect_garbage()
            return copy.deepcopy(stored)

    def merge_patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        with self._changed:
            self.writes.append(
                Write("patch", resource, namespace, name, copy.deepcopy(patch), subresource)
            )
            current = self._current(resource, namespace, name, subresource)
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                raise _conflict(resource, name)
            return self._update(resource, current, merge(current, patch), subresource)

    def replace(
        self, resource: Resource, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        with self._changed:
            self.writes.append(Write("replace", resource, namespace, name, copy.deepcopy(body)))
            current = self._current(resource, namespace, name, None)
            metadata = body.get("metadata") or {}
            if metadata.get("name", name) != name:
                raise KubeApiError(
                    400,
                    "Bad Request",
                    f"the name of the object ({metadata['name']}) does not match the name "
                    f"on the URL ({name})",
                )
            wanted = metadata.get("resourceVersion")
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                raise _conflict(resource, name)
            return self._update(resource, current, copy.deepcopy(body), None)

    def delete(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        propagation: str | None = None,
        grace_period_seconds: int | None = None,
        uid: str | None = None,
    ) -> None:
        # Deletion is immediate here: no kubelet, so a grace period changes nothing.
        with self._changed:
            self.writes.append(Write("delete", resource, namespace, name, propagation))
            key = self._key(resource, namespace, name)
            if key not in self._objects:
                return  # KubeApi.delete takes a 404 as done
            if uid is not None and self._objects[key]["metadata"].get("uid") != uid:
                raise _conflict(resource, name)
            orphan = propagation == "Orphan" or (
                propagation is None and resource in ORPHANING_BY_DEFAULT
            )
            self._remove(key, orphan)
            self._collect_garbage()

    # -- the server's side -----------------------------------------------------

    @staticmethod
    def _key(resource: Resource, namespace: str, name: str) -> tuple[Resource, str, str]:
        return resource, "" if resource in CLUSTER_SCOPED else namespace, name

    @classmethod
    def _key_of(cls, resource: Resource, obj: dict[str, Any]) -> tuple[Resource, str, str]:
        metadata = obj["metadata"]
        return cls._key(resource, metadata.get("namespace", ""), metadata["name"])

    def _current(
        self, resource: Resource, namespace: str, name: str, subresource: str | None
    ) -> dict[str, Any]:
        obj = self._objects.get(self._key(resource, namespace, name))
        if obj is None or subresource not in (None, "status"):
            raise _not_found(resource, name)
        if subresource == "status" and resource not in STATUS_SUBRESOURCE:
            raise KubeApiError(404, "Not Found", "the server could not find the requested resource")
        return obj

    def _update(
        self,
        resource: Resource,
        current: dict[str, Any],
        wanted: dict[str, Any],
        subresource: str | None,
    ) -> dict[str, Any]:
        if subresource == "status":
            updated = {**current, "status": wanted.get("status")}
            if updated["status"] is None:
                del updated["status"]
        else:
            updated = {key: value for key, value in wanted.items() if key != "status"}
            if resource not in STATUS_SUBRESOURCE and "status" in wanted:
                updated["status"] = wanted["status"]
            elif "status" in current:
                updated["status"] = current["status"]
        kept = ("name", "namespace", "uid", "creationTimestamp", "generation", "resourceVersion")
        updated["metadata"] = {
            **updated.get("metadata", {}),
            **{key: current["metadata"][key] for key in kept if key in current["metadata"]},
        }
        _check_owners(
            updated.get("kind", resource.plural), updated["metadata"]["name"], updated["metadata"]
        )
        if updated == current:  # nothing changed: nothing stored, no watch event
            return copy.deepcopy(current)
        if _without_metadata_and_status(updated) != _without_metadata_and_status(current):
            updated["metadata"]["generation"] = current["metadata"]["generation"] + 1
        stored = self._store(resource, self._key_of(resource, current), updated, current)
        self._collect_garbage()
        return copy.deepcopy(stored)

    def _store(
        self,
        resource: Resource,
        key: tuple[Resource, str, str],
        obj: dict[str, Any],
        previous: dict[str, Any] | None,
    ) -> dict[str, Any]:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        self._objects[key] = obj
        self._record(resource, "ADDED" if previous is None else "MODIFIED", obj, previous)
        return obj

    def _record(
        self, resource: Resource, kind: str, obj: dict[str, Any], previous: dict[str, Any] | None
    ) -> None:
        self._changes.append(
            _Change(self._version, resource, kind, copy.deepcopy(obj), copy.deepcopy(previous))
        )
        self._changed.notify_all()

    def _remove(self, key: tuple[Resource, str, str], orphan: bool) -> None:
        obj = self._objects.pop(key)
        if orphan:
            uid = obj["metadata"]["uid"]
            for dependent_key, dependent in list(self._objects.items()):
                owners = dependent["metadata"].get("ownerReferences") or []
                if any(owner.get("uid") == uid for owner in owners):
                    self._set_owners(
                        dependent_key, [owner for owner in owners if owner.get("uid") != uid]
                    )
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        self._record(key[0], "DELETED", obj, obj)

    def _set_owners(self, key: tuple[Resource, str, str], owners: list[dict[str, Any]]) -> None:
        current = self._objects[key]
        updated = copy.deepcopy(current)
        if owners:
            updated["metadata"]["ownerReferences"] = owners
        else:
            del updated["metadata"]["ownerReferences"]
        self._store(key[0], key, updated, current)

    def _collect_garbage(self) -> None:
        """Delete what has lost all its owners; drop references to owners that are gone."""
        while True:
            uids = {obj["metadata"]["uid"] for obj in self._objects.values()}
            for key, obj in list(self._objects.items()):
                owners = obj["metadata"].get("ownerReferences") or []
                alive = [owner for owner in owners if owner.get("uid") in uids]
                if owners and not alive:
                    self._remove(key, orphan=False)
                    break
                if len(alive) < len(owners):
                    self._set_owners(key, alive)
                    break
            else:
                return
