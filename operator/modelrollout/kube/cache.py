"""A watch-fed cache of the objects the operator owns: a tick reads memory, not the API.

Without it a tick lists or gets each child (Deployments, Services, the
HTTPRoute, EndpointSlices, Jobs, PodDisruptionBudgets): six or seven reads per rollout per tick,
which at hundreds of rollouts is the control plane's whole time. As
controller-runtime's informers do, one list + watch per (resource,
namespace), filtered by the server to `app.kubernetes.io/managed-by=
modelrollout`, keeps those objects in memory (EndpointSlices carry their
Service's labels). Reads are answered from it once it has synced; a `get` it
cannot answer goes to the API (the object may exist without our label), so a
miss is never taken for an absence. Writes go to the API and their responses
into the cache at once, so the next tick does not redo what this one did.
A change seen on a watch wakes the rollout that owns the object when it
changes what the operator reads (`_slim`): a budget's status the disruption
controller rewrites at every pod change, or a version that changes nothing
kept, is stored without a tick.

Informers start on first use in a namespace, so the operator needs no more
than the namespaced permissions it already has. Nodes and Pods (what GPU
capacity planning reads, and the pods behind a revision) are cached across
all namespaces where the operator may watch them; where it may not (403),
those reads keep going to the API.
"""

from __future__ import annotations

import logging
import pickle
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from modelrollout.kube.api import (
    DEPLOYMENTS,
    ENDPOINT_SLICES,
    HTTPROUTES,
    INFERENCE_POOLS,
    JOBS,
    NODES,
    POD_DISRUPTION_BUDGETS,
    PODS,
    SERVICES,
    KubeApi,
    KubeApiError,
    Resource,
)
from modelrollout.kube.labels import (
    EVALUATION_LABEL,
    KIND,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ROLLOUT_LABEL,
)

CACHED_RESOURCES: tuple[Resource, ...] = (
    DEPLOYMENTS,
    SERVICES,
    HTTPROUTES,
    ENDPOINT_SLICES,
    JOBS,
    POD_DISRUPTION_BUDGETS,
    INFERENCE_POOLS,
)
# Watched in every namespace, every object (pods carry no managed-by label).
CLUSTER_CACHED_RESOURCES: tuple[Resource, ...] = (NODES, PODS)
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# Labels a tick selects by: reads by them look up an index instead of scanning
# every object of a namespace (thousands at a thousand rollouts).
INDEXED_LABELS = (ROLLOUT_LABEL, SERVICE_NAME_LABEL)
WATCH_TIMEOUT_SECONDS = 300
MAX_BACKOFF_SECONDS = 30.0

logger = logging.getLogger("modelrollout")

# (namespace, rollout name) of a changed object's owner.
ChangeSink = Callable[[str, str], None]


def owning_rollout(obj: dict[str, Any]) -> str | None:
    """The ModelRollout an object belongs to: its owner, or the label naming it."""
    metadata = obj.get("metadata", {})
    for owner in metadata.get("ownerReferences") or []:
        if owner.get("kind") == KIND:
            name: str = owner["name"]
            return name
    labels = metadata.get("labels") or {}
    rollout: str | None = labels.get(ROLLOUT_LABEL) or labels.get(EVALUATION_LABEL)
    return rollout


def is_newer(candidate: str, current: str) -> bool:
    """Whether resourceVersion `candidate` is at least `current`.

    resourceVersions are opaque to clients, but etcd's are increasing integers;
    anything else is taken as newer, which at worst shows a change twice.
    """
    try:
        return int(candidate) >= int(current)
    except ValueError:
        return True


def parse_equality_selector(selector: str | None) -> dict[str, str] | None:
    """`k=v,k2=v2` as a dict; None for a selector with any other operator."""
    if not selector:
        return {}
    wanted: dict[str, str] = {}
    for term in selector.split(","):
        key, sep, value = term.partition("=")
        if not sep or key.endswith("!") or value.startswith("=") or " " in term:
            return None
        wanted[key.strip()] = value.strip()
    return wanted


def field_selector_matches(selector: str | None, obj: dict[str, Any]) -> bool:
    """Whether `obj` passes a field selector of `path=value` / `path!=value` terms."""
    for term in (selector or "").split(","):
        if not term:
            continue
        negated = "!=" in term
        path, value = term.split("!=" if negated else "=", 1)
        current: Any = obj
        for key in path.split("."):
            current = current.get(key) if isinstance(current, dict) else None
        if (str(current or "") == value) == negated:
            return False
    return True


_POD_METADATA = ("name", "namespace", "uid", "resourceVersion", "labels", "deletionTimestamp")


def _frozen(obj: dict[str, Any]) -> bytes:
    """An API object (plain JSON data) pickled, to be copied from by `_thawed`."""
    return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)


def _thawed(frozen: bytes) -> dict[str, Any]:
    """A new deep copy of the object `frozen` holds.

    Unpickling copies such data about four times faster than copy.deepcopy,
    which dispatches and memoizes per node, and the pickle is made once per
    version of an object, not once per read: the copies a tick reads were the
    largest share of its CPU.
    """
    copied: dict[str, Any] = pickle.loads(frozen)
    return copied


def _slim(obj: dict[str, Any], resource: Resource) -> dict[str, Any]:
    """What the operator reads of an object; the rest is not kept in memory.

    managedFields is often half an object's size and nothing here reads it,
    nor a PodDisruptionBudget's status (the operator writes its spec only).
    Of a pod (there are thousands, cluster-wide) only what capacity planning,
    the unschedulable check, relabeling, the evaluation step and the
    model-record fetch read: labels, node, resources, ports, phase, pod IP,
    conditions and the containers' terminated states (an evaluation Job's
    result is its container's termination message).
    """
    metadata = obj.get("metadata", {})
    metadata.pop("managedFields", None)
    if resource == POD_DISRUPTION_BUDGETS:
        obj.pop("status", None)
        return obj
    if obj.get("kind") != "Pod" and "containers" not in obj.get("spec", {}):
        return obj
    spec, status = obj.get("spec", {}), obj.get("status", {})
    return {
        "kind": "Pod",
        "metadata": {key: metadata[key] for key in _POD_METADATA if key in metadata},
        "spec": {
            "nodeName": spec.get("nodeName"),
            "containers": [
                {
                    "name": c.get("name"),
                    "resources": c.get("resources") or {},
                    "ports": c.get("ports") or [],
                }
                for c in spec.get("containers") or []
            ],
        },
        "status": {
            "phase": status.get("phase"),
            "podIP": status.get("podIP"),
            "conditions": status.get("conditions") or [],
            "containerStatuses": [
                {"name": c.get("name"), "state": {"terminated": c["state"]["terminated"]}}
                for c in status.get("containerStatuses") or []
                if (c.get("state") or {}).get("terminated")
            ],
        },
    }


def _same_content(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether two slimmed versions of an object differ in nothing but resourceVersion."""

    def unversioned(obj: dict[str, Any]) -> dict[str, Any]:
        return {**obj, "metadata": {**obj["metadata"], "resourceVersion": None}}

    return unversioned(old) == unversioned(new)


# What one object adds to a running total, and under which key (None: nothing).
Tally = Callable[[dict[str, Any]], tuple[str, int] | None]


class Informer:
    """One resource's managed objects in one namespace, kept current by a watch."""

    def __init__(
        self,
        api: KubeApi,
        resource: Resource,
        namespace: str,
        on_change: ChangeSink,
        selector: str = MANAGED_SELECTOR,
        tally: Tally | None = None,
    ) -> None:
        self._api = api
        self.resource = resource
        self.namespace = namespace  # "" for every namespace
        self.selector = selector
        self._on_change = on_change
        self._objects: dict[str, dict[str, Any]] = {}
        # The pickle of each object read by copy (_frozen), made at its first such read.
        self._frozen: dict[str, bytes] = {}
        # (label, value) -> keys of the objects carrying it, for INDEXED_LABELS.
        self._index: dict[tuple[str, str], set[str]] = {}
        # Per-key sums of `tally` over the stored objects, changed with each store.
        self._tally = tally
        self._totals: dict[str, int] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, daemon=True, name=f"watch-{resource.plural}-{namespace}"
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """The thread ends when its current watch does; it is a daemon either way."""
        self._stopped.set()

    def _frozen_copy(self, key: str) -> bytes:
        """The pickle of the object stored under `key`, made once per version; locked."""
        frozen = self._frozen.get(key)
        if frozen is None:
            frozen = self._frozen[key] = _frozen(self._objects[key])
        return frozen

    def get(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        key = f"{self.namespace if namespace is None else namespace}/{name}"
        with self._lock:
            if key not in self._objects:
                return None
            frozen = self._frozen_copy(key)
        return _thawed(frozen)

    def matching(
        self,
        labels: dict[str, str],
        namespace: str | None = None,
        field_selector: str | None = None,
        copies: bool = True,
    ) -> list[dict[str, Any]]:
        """Objects with all of `labels` (and in `namespace`, passing `field_selector`).

        `copies=False` hands out the cached objects themselves, for readers that
        never change them: copying thousands of pods costs more than the rest
        of a tick. Cached objects are replaced, never changed in place, so such
        a reader still sees one consistent version of each.
        """
        with self._lock:
            indexed = next(((k, v) for k, v in labels.items() if k in INDEXED_LABELS), None)
            candidates = (
                list(self._index.get(indexed, ())) if indexed is not None else self._objects
            )
            found = [
                key
                for key in candidates
                for obj in [self._objects[key]]
                if all(
                    (obj["metadata"].get("labels") or {}).get(label) == value
                    for label, value in labels.items()
                )
                and (namespace is None or obj["metadata"].get("namespace") == namespace)
                and field_selector_matches(field_selector, obj)
            ]
            if not copies:
                return [self._objects[key] for key in found]
            frozen = [self._frozen_copy(key) for key in found]
        return [_thawed(each) for each in frozen]

    def totals(self) -> dict[str, int]:
        """A copy of the running totals of the tally (empty without one)."""
        with self._lock:
            return dict(self._totals)

    def _count(self, obj: dict[str, Any], sign: int) -> None:
        """Add (sign 1) or take back (sign -1) an object's share of the totals; locked."""
        entry = self._tally(obj) if self._tally is not None else None
        if entry is None:
            return
        key, amount = entry
        total = self._totals.get(key, 0) + sign * amount
        if total:
            self._totals[key] = total
        else:
            self._totals.pop(key, None)

    def _store(self, key: str, obj: dict[str, Any] | None) -> None:
        """Put (or with None, drop) an object and keep the label index and totals in step;
        locked."""
        old = self._objects.pop(key, None)
        self._frozen.pop(key, None)
        if old is not None:
            self._count(old, -1)
            for entry in self._index_entries(old):
                keys = self._index.get(entry)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._index[entry]
        if obj is not None:
            self._objects[key] = obj
            self._count(obj, 1)
            for entry in self._index_entries(obj):
                self._index.setdefault(entry, set()).add(key)

    @staticmethod
    def _index_entries(obj: dict[str, Any]) -> list[tuple[str, str]]:
        labels = obj["metadata"].get("labels") or {}
        return [(label, labels[label]) for label in INDEXED_LABELS if label in labels]

    @staticmethod
    def _key(obj: dict[str, Any]) -> str:
        metadata = obj["metadata"]
        return f"{metadata.get('namespace', '')}/{metadata['name']}"

    def upsert(self, obj: dict[str, Any]) -> bool:
        """Store `obj` unless the cache holds a newer version; True if what is kept changed."""
        name = self._key(obj)
        version = str(obj["metadata"].get("resourceVersion", ""))
        with self._lock:
            current = self._objects.get(name)
            if current is not None:
                current_version = str(current["metadata"].get("resourceVersion", ""))
                if current_version == version or not is_newer(version, current_version):
                    return False
            slim = _slim(obj, self.resource)
            self._store(name, slim)
            return current is None or not _same_content(current, slim)

    def remove(self, name: str, namespace: str | None = None) -> bool:
        with self._lock:
            key = f"{self.namespace if namespace is None else namespace}/{name}"
            if key not in self._objects:
                return False
            self._store(key, None)
            return True

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        """One watch event: store or drop the object, and wake its rollout if it changed."""
        if event_type == "DELETED":
            changed = self.remove(obj["metadata"]["name"], obj["metadata"].get("namespace", ""))
        else:
            changed = self.upsert(obj)
        if changed:
            self._notify(obj)

    def replace_all(self, items: list[dict[str, Any]]) -> None:
        """A fresh list: the cache becomes exactly it; what changed or vanished wakes."""
        fresh = {self._key(item): _slim(item, self.resource) for item in items}
        with self._lock:
            previous = self._objects
            self._objects, self._index, self._frozen, self._totals = {}, {}, {}, {}
            for key, obj in fresh.items():
                self._store(key, obj)
        for name, obj in fresh.items():
            old = previous.get(name)
            if old is None or not _same_content(old, obj):
                self._notify(obj)
        for name, old in previous.items():
            if name not in fresh:
                self._notify(old)

    def _notify(self, obj: dict[str, Any]) -> None:
        rollout = owning_rollout(obj)
        if rollout is not None:
            self._on_change(obj["metadata"].get("namespace", self.namespace), rollout)

    def _run(self) -> None:
        resource_version = ""
        backoff = 1.0
        while not self._stopped.is_set():
            try:
                if not resource_version:
                    items, resource_version = self._api.list_with_version(
                        self.resource, self.namespace, self.selector
                    )
                    self.replace_all(items)
                    self.synced.set()
                resource_version = self._watch(resource_version)
                backoff = 1.0
            except KubeApiError as error:
                if error.status == 410:  # the version is compacted away: list again
                    resource_version = ""
                    continue
                if error.status == 403:  # not ours to watch: reads keep going to the API
                    logger.info("not caching %s: %s", self.resource.plural, error.message)
                    return
                backoff = self._wait_after_failure(error, backoff)
            except Exception as error:  # a dropped connection or a restarting API server
                backoff = self._wait_after_failure(error, backoff)

    def _watch(self, resource_version: str) -> str:
        """Follow the watch until it ends; the version to continue from ("" to relist)."""
        timeout = random.randint(WATCH_TIMEOUT_SECONDS // 2, WATCH_TIMEOUT_SECONDS)
        for event in self._api.watch(
            self.resource, self.namespace, self.selector, resource_version, timeout
        ):
            event_type, obj = event.get("type", ""), event.get("object") or {}
            if event_type == "ERROR":
                if obj.get("code") == 410:
                    return ""
                raise KubeApiError(int(obj.get("code") or 0), "WatchError", str(obj))
            resource_version = obj["metadata"]["resourceVersion"]
            if event_type != "BOOKMARK":
                self.apply(event_type, obj)
            if self._stopped.is_set():
                break
        return resource_version

    def _wait_after_failure(self, error: Exception, backoff: float) -> float:
        logger.warning(
            "watch of %s in %s failed (%s); retrying in %.0fs",
            self.resource.plural,
            self.namespace,
            error,
            backoff,
        )
        self._stopped.wait(backoff)
        return min(backoff * 2, MAX_BACKOFF_SECONDS)


class CachedKubeApi(KubeApi):
    """KubeApi whose reads of owned children come from informers; writes pass through."""

    def __init__(
        self,
        api_client: Any,
        on_change: ChangeSink | None = None,
        tallies: Mapping[Resource, Tally] | None = None,
    ) -> None:
        super().__init__(api_client)
        self._on_change: ChangeSink = on_change or (lambda namespace, name: None)
        # Running totals kept by a cluster-wide informer, e.g. GPUs held per node by pods.
        self._tallies = dict(tallies or {})
        self._informers: dict[tuple[Resource, str], Informer] = {}
        self._informers_guard = threading.Lock()

    def set_change_sink(self, on_change: ChangeSink) -> None:
        self._on_change = on_change

    def _notify(self, namespace: str, name: str) -> None:
        self._on_change(namespace, name)

    def informer(self, resource: Resource, namespace: str) -> Informer | None:
        """The started informer of a cached resource (None for an uncached one).

        Nodes and Pods have one informer for every namespace, whatever `namespace` says.
        """
        if resource in CLUSTER_CACHED_RESOURCES:
            namespace, selector = "", ""
        elif resource in CACHED_RESOURCES:
            selector = MANAGED_SELECTOR
        else:
            return None
        key = (resource, namespace)
        with self._informers_guard:
            informer = self._informers.get(key)
            if informer is None:
                informer = Informer(
                    self, resource, namespace, self._notify, selector, self._tallies.get(resource)
                )
                self._informers[key] = informer
                informer.start()
        return informer

    def _synced(self, resource: Resource, namespace: str) -> Informer | None:
        informer = self.informer(resource, namespace)
        return informer if informer is not None and informer.synced.is_set() else None

    def stop(self) -> None:
        with self._informers_guard:
            for informer in self._informers.values():
                informer.stop()

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        informer = self._synced(resource, namespace)
        if informer is not None:
            cached = informer.get(name, namespace)
            if cached is not None:
                return cached
        return super().get(resource, namespace, name)

    def list_cluster(
        self, resource: Resource, field_selector: str | None = None
    ) -> list[dict[str, Any]]:
        informer = self._synced(resource, "") if resource in CLUSTER_CACHED_RESOURCES else None
        if informer is None:
            return super().list_cluster(resource, field_selector)
        # Read-only callers (capacity planning): no copies of every pod in the cluster.
        return informer.matching({}, field_selector=field_selector, copies=False)

    def get_owned(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        # The informer selects every object the operator labels as its own, so an object
        # it does not hold does not exist: no GET for it at every tick.
        informer = self._synced(resource, namespace)
        if informer is None:
            return super().get(resource, namespace, name)
        return informer.get(name, namespace)

    def tally(self, resource: Resource) -> dict[str, int] | None:
        if resource not in self._tallies:
            return None
        informer = self._synced(resource, "")
        return None if informer is None else informer.totals()

    def list_read_only(
        self, resource: Resource, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        informer = self._synced(resource, namespace)
        wanted = parse_equality_selector(label_selector)
        if informer is None or wanted is None:
            return super().list_read_only(resource, namespace, label_selector)
        return informer.matching(wanted, namespace, copies=False)

    def list(
        self, resource: Resource, namespace: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        informer = self._synced(resource, namespace)
        wanted = parse_equality_selector(label_selector)
        if informer is None or wanted is None:
            return super().list(resource, namespace, label_selector)
        return informer.matching(wanted, namespace)

    def _written(self, resource: Resource, namespace: str, obj: dict[str, Any]) -> None:
        informer = self._synced(resource, namespace)
        labels = obj.get("metadata", {}).get("labels") or {}
        if informer is not None and (
            informer.selector == "" or labels.get(MANAGED_BY_LABEL) == MANAGED_BY
        ):
            # A copy, the caller keeping `obj`; without managedFields, which the cache
            # drops anyway and which is often half of the object to copy.
            metadata = {k: v for k, v in obj.get("metadata", {}).items() if k != "managedFields"}
            informer.upsert(_thawed(_frozen({**obj, "metadata": metadata})))

    def create(self, resource: Resource, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        created = super().create(resource, namespace, body)
        self._written(resource, namespace, created)
        return created

    def merge_patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        patched = super().merge_patch(resource, namespace, name, patch, subresource)
        if subresource is None:
            self._written(resource, namespace, patched)
        return patched

    def replace(
        self, resource: Resource, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        replaced = super().replace(resource, namespace, name, body)
        self._written(resource, namespace, replaced)
        return replaced

    def delete(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        propagation: str | None = None,
        grace_period_seconds: int | None = None,
        uid: str | None = None,
    ) -> None:
        super().delete(resource, namespace, name, propagation, grace_period_seconds, uid)
        informer = self._synced(resource, namespace)
        if informer is not None:
            informer.remove(name, namespace)
