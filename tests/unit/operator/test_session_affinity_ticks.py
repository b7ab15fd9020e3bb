"""Session affinity tick by tick: where each session bucket and each pin goes as a canary walks.

The route the reconciler writes is read as a gateway would: a request carrying
the pin header goes by its Exact match, else a session id by the first rule
whose RegularExpression matches it, else the weighted rule.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from modelrollout.kube.api import HTTPROUTES
from modelrollout.traffic.session_affinity import PIN_HEADER
from tests.unit.operator.test_reconciler_ticks import (
    FIRING,
    NAME,
    NAMESPACE,
    V1,
    V2,
    Cluster,
    canary_spec,
    child,
    revision,
    targets,
)

pytestmark = pytest.mark.unit


def affinity_spec() -> dict[str, Any]:
    spec = canary_spec()
    spec["traffic"]["sessionAffinity"] = {"header": "x-session-id", "buckets": 16}
    spec["strategy"]["canary"]["steps"] = [
        {"setWeight": 10},
        {"pause": {"duration": "1m"}},
        {"setWeight": 50},
        {"pause": {"duration": "1m"}},
        {"setWeight": 90},
        {"analysis": {"duration": "2m"}},
    ]
    return spec


def route_rules(cluster: Cluster) -> list[dict[str, Any]]:
    route = cluster.api.get(HTTPROUTES, NAMESPACE, NAME)
    assert route is not None
    rules: list[dict[str, Any]] = route["spec"]["rules"]
    return rules


def routed(cluster: Cluster, headers: dict[str, str]) -> str | None:
    """The Service a request with `headers` reaches by a header rule; None: the weighted rule."""
    for rule in route_rules(cluster):
        for match in rule.get("matches", []):
            if all(
                (value := headers.get(h["name"])) is not None
                and (
                    value == h["value"]
                    if h.get("type", "Exact") == "Exact"
                    else re.search(h["value"], value) is not None
                )
                for h in match["headers"]
            ):
                name: str = rule["backendRefs"][0]["name"]
                return name
    return None


def buckets_by_service(cluster: Cluster) -> dict[int, str | None]:
    return {b: routed(cluster, {"x-session-id": f"5e55{b:x}"}) for b in range(16)}


def test_buckets_move_only_to_the_canary_and_pins_hold_until_the_promotion() -> None:
    cluster = Cluster()
    spec = affinity_spec()
    cluster.started(spec)
    old, new = child(V1, spec), child(V2, spec)
    pin_old, pin_new = {PIN_HEADER: revision(V1, spec)}, {PIN_HEADER: revision(V2, spec)}
    seen: list[tuple[int, dict[int, str | None]]] = []
    for _ in range(100):
        if seen and cluster.status.phase == "Succeeded":
            break
        cluster.tick(15)
        cluster.settle()
        weight = cluster.status.weights.canary
        if weight and (not seen or seen[-1][0] != weight) and cluster.status.phase != "Promoting":
            seen.append((weight, buckets_by_service(cluster)))
            assert routed(cluster, pin_old) == old and routed(cluster, pin_new) == new
            # A steady tick rewrites nothing: the rules compare equal to what was written.
            assert f"patch httproutes/{NAME}" not in targets(cluster.tick(1))
    assert [w for w, _ in seen] == [10, 50, 90]
    canary_counts = [sum(1 for s in by.values() if s == new) for _, by in seen]
    assert canary_counts == [2, 8, 14]  # the weight rounded to sixteenths
    for (_, lower), (_, higher) in itertools.pairwise(seen):
        assert all(higher[b] == new for b, s in lower.items() if s == new)
    assert all(s in (old, new) for _, by in seen for s in by.values())
    # Promoted: one revision, no header rule; sessions pinned to the old one now reach the new.
    assert len(route_rules(cluster)) == 1
    assert routed(cluster, pin_old) is None and cluster.route_weights() == {new: 100}


def test_a_rollback_sends_every_session_back_to_stable_in_its_first_write() -> None:
    cluster = Cluster()
    spec = affinity_spec()
    cluster.started(spec)
    old, new = child(V1, spec), child(V2, spec)
    cluster.run_until_step(3)  # the pause after setWeight 50: weight steps end as they set it
    assert routed(cluster, {PIN_HEADER: revision(V2, spec)}) == new

    cluster.provider.answers["ALERTS"] = FIRING
    writes = cluster.tick(15)
    assert targets(writes)[0] == f"patch httproutes/{NAME}"
    assert [len(r.get("matches", [])) for r in writes[0].body["spec"]["rules"]] == [0]
    assert cluster.route_weights() == {old: 100, new: 0}
    assert routed(cluster, {PIN_HEADER: revision(V2, spec)}) is None
    assert set(buckets_by_service(cluster).values()) == {None}
