"""Session affinity by header rules: the bucket sets at each weight and the route they make."""

from __future__ import annotations

import itertools
import re
import uuid
from dataclasses import replace
from typing import Any

import pytest

from modelrollout.kube.workloads import RolloutRef
from modelrollout.models.spec import InvalidSpecError, parse_spec, router_capability_errors
from modelrollout.traffic import capabilities_of
from modelrollout.traffic.base import Backends, Capability
from modelrollout.traffic.gatewayapi import _owned_routing, build_httproute, route_weights
from modelrollout.traffic.session_affinity import (
    PIN_HEADER,
    SessionAffinitySettings,
    bucket_of,
    canary_bucket_count,
    canary_buckets,
    suffix_regex,
)
from tests.unit.operator.builders import example_spec

pytestmark = pytest.mark.unit

AFFINITY = SessionAffinitySettings("x-session-id", 16)
BACKENDS = Backends(
    RolloutRef("ml", "chat", "uid-1"),
    "aaa111",
    "bbb222",
    8000,
    4,
    {"parentRefs": [{"name": "inference-gw"}]},
    session_affinity=AFFINITY,
)
WEIGHTS = [0, 1, 5, 10, 20, 25, 33, 50, 66, 75, 90, 99, 100]


@pytest.mark.parametrize(
    ("buckets", "weight", "count"),
    [
        (16, 0, 0),
        (16, 1, 1),  # at least one bucket above 0%
        (16, 10, 2),  # 1.6 rounds to 2: 12.5% of sessions
        (16, 50, 8),
        (16, 90, 14),  # 14.4: 87.5%
        (16, 99, 15),  # never all of them below 100%
        (16, 100, 16),
        (256, 10, 26),  # 25.6: 10.2%
        (256, 50, 128),
        (256, 90, 230),  # 230.4: 89.8%
    ],
)
def test_the_weight_is_rounded_to_buckets(buckets: int, weight: int, count: int) -> None:
    assert canary_bucket_count(buckets, weight) == count


@pytest.mark.parametrize("buckets", [16, 256])
def test_a_rising_weight_only_moves_buckets_from_stable_to_the_canary(buckets: int) -> None:
    for lower, higher in itertools.pairwise(WEIGHTS):
        assert canary_buckets(buckets, lower) <= canary_buckets(buckets, higher), (lower, higher)


def matching_buckets(regex: str, buckets: int) -> set[int]:
    """The buckets whose ids the regex matches, searched as Traefik does and whole as Envoy does."""
    found = set()
    for bucket in range(buckets):
        digits = f"{bucket:x}" if buckets == 16 else f"{bucket:02x}"
        for session_id in (
            f"9f3c{digits}",
            f"9F3C{digits.upper()}",
            str(uuid.uuid4())[:-2] + digits,
        ):
            searched = re.search(regex, session_id) is not None
            assert searched == (re.fullmatch(regex, session_id) is not None), (regex, session_id)
            if searched:
                found.add(bucket)
                assert bucket_of(session_id, buckets) == bucket
    return found


@pytest.mark.parametrize("buckets", [16, 256])
@pytest.mark.parametrize("weight", WEIGHTS[1:])
def test_the_rules_send_each_bucket_to_exactly_one_revision(buckets: int, weight: int) -> None:
    backends = replace(BACKENDS, session_affinity=SessionAffinitySettings("x-session-id", buckets))
    rules = build_httproute(backends, weight, canary_ready=True)["spec"]["rules"]
    by_revision: dict[str, set[int]] = {"chat-aaa111": set(), "chat-bbb222": set()}
    for rule in rules[3:]:
        (header,) = rule["matches"][0]["headers"]
        assert (header["name"], header["type"]) == ("x-session-id", "RegularExpression")
        (ref,) = rule["backendRefs"]
        by_revision[ref["name"]] |= matching_buckets(header["value"], buckets)
    assert by_revision["chat-bbb222"] == set(canary_buckets(buckets, weight))
    assert by_revision["chat-aaa111"] == set(range(buckets)) - set(canary_buckets(buckets, weight))


def test_an_id_without_a_hex_ending_has_no_bucket() -> None:
    assert bucket_of("conversation-xyz", 16) is None
    assert bucket_of("a", 256) is None
    assert re.search(suffix_regex(16, frozenset(range(16))), "conversation-xyz") is None


def headers_and_targets(route: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    return [
        (
            tuple(h["value"] for m in rule.get("matches", []) for h in m["headers"]),
            rule["backendRefs"][-1]["name"],
        )
        for rule in route["spec"]["rules"]
    ]


def test_pins_come_before_buckets_and_the_weighted_rule_stays_first() -> None:
    route = build_httproute(BACKENDS, 50, canary_ready=True)
    rules = route["spec"]["rules"]
    assert [len(rule.get("matches", [])) for rule in rules] == [0, 1, 1, 1, 1]
    assert [
        (h["name"], h["type"], h["value"], rule["backendRefs"][0]["name"])
        for rule in rules[1:3]
        for h in rule["matches"][0]["headers"]
    ] == [
        (PIN_HEADER, "Exact", "bbb222", "chat-bbb222"),
        (PIN_HEADER, "Exact", "aaa111", "chat-aaa111"),
    ]
    # The weighted rule is unchanged, so what the route reports is still its weights.
    assert route_weights(route, BACKENDS) == (50, 50)
    # Every answer names its revision, whichever rule sent it there.
    for rule in rules:
        for ref in rule["backendRefs"]:
            (pin,) = ref["filters"]
            assert pin["type"] == "ResponseHeaderModifier"
            assert pin["responseHeaderModifier"]["set"] == [
                {"name": PIN_HEADER, "value": ref["name"].removeprefix("chat-")}
            ]


def test_weight_zero_and_a_canary_not_ready_leave_only_the_weighted_rule() -> None:
    """A rollback's first write sets weight 0: sessions pinned to the canary go back to stable."""
    assert len(build_httproute(BACKENDS, 0, canary_ready=True)["spec"]["rules"]) == 1
    assert len(build_httproute(BACKENDS, 30, canary_ready=False)["spec"]["rules"]) == 1


def test_a_promotion_leaves_one_revision_and_no_affinity_rule() -> None:
    promoted = replace(BACKENDS, stable="bbb222", canary=None)
    assert headers_and_targets(build_httproute(promoted, 0, canary_ready=False)) == [
        ((), "chat-bbb222")
    ]


def test_at_100_the_canary_takes_every_bucket_and_stable_keeps_its_pinned_sessions() -> None:
    route = build_httproute(BACKENDS, 100, canary_ready=True)
    assert [target for _, target in headers_and_targets(route)] == [
        "chat-bbb222",
        "chat-bbb222",
        "chat-aaa111",
        "chat-bbb222",
    ]


def test_without_session_affinity_the_route_is_as_before() -> None:
    route = build_httproute(replace(BACKENDS, session_affinity=None), 50, canary_ready=True)
    assert route["spec"]["rules"] == [
        {
            "backendRefs": [
                {"name": "chat-aaa111", "port": 8000, "weight": 50},
                {"name": "chat-bbb222", "port": 8000, "weight": 50},
            ]
        }
    ]


def test_what_the_api_server_defaults_does_not_count_as_a_difference() -> None:
    written = build_httproute(BACKENDS, 50, canary_ready=True)["spec"]["rules"]
    stored = [
        {
            **rule,
            "matches": [
                {
                    "path": {"type": "PathPrefix", "value": "/"},
                    "headers": [dict(h) for m in rule.get("matches", []) for h in m["headers"]],
                }
            ],
            "backendRefs": [{"group": "", "kind": "Service", **ref} for ref in rule["backendRefs"]],
        }
        for rule in written
    ]
    assert _owned_routing(stored) == _owned_routing(written)
    moved = build_httproute(BACKENDS, 60, canary_ready=True)["spec"]["rules"]
    assert _owned_routing(moved) != _owned_routing(written)


def with_affinity(router: str = "gatewayAPI", **affinity: Any) -> dict[str, Any]:
    spec = example_spec()
    spec["traffic"] = {**spec["traffic"], "router": router, "sessionAffinity": affinity}
    return spec


def refusal(spec: dict[str, Any]) -> InvalidSpecError:
    with pytest.raises(InvalidSpecError) as refused:
        parse_spec(spec)
    return refused.value


def test_session_affinity_needs_a_router_that_has_it() -> None:
    refused = refusal(with_affinity("service"))
    assert refused.field_path == "spec.traffic.sessionAffinity"
    assert "needs a router with session affinity" in refused.message
    assert "gatewayAPI" in refused.message
    affinity = parse_spec(with_affinity(buckets=256)).traffic.session_affinity
    assert affinity is not None and (affinity.header, affinity.buckets) == ("x-session-id", 256)


@pytest.mark.parametrize(
    ("affinity", "field"),
    [
        ({"buckets": 32}, "spec.traffic.sessionAffinity.buckets"),
        ({"header": "x session"}, "spec.traffic.sessionAffinity.header"),
        ({"header": ""}, "spec.traffic.sessionAffinity.header"),
        ({"hash": "md5"}, "spec.traffic.sessionAffinity.hash"),
    ],
)
def test_a_bad_session_affinity_names_its_field(affinity: dict[str, Any], field: str) -> None:
    assert refusal(with_affinity(**affinity)).field_path == field


def test_session_affinity_is_refused_with_blue_green() -> None:
    spec = with_affinity()
    spec["strategy"] = {"blueGreen": {}}
    refused = refusal(spec)
    assert refused.field_path == "spec.traffic.sessionAffinity"
    assert "blueGreen" in refused.message


def test_a_router_without_the_capability_is_named() -> None:
    spec = parse_spec(with_affinity())
    (error,) = router_capability_errors(spec, frozenset())
    assert error[0] == "spec.traffic.sessionAffinity"
    assert Capability.SESSION_AFFINITY in capabilities_of("gatewayAPI")


def test_without_pins_the_buckets_alone_route_sessions_and_no_filter_is_written() -> None:
    """For gateways without backendRef filters: no revision header, no pin rule."""
    unpinned = replace(
        BACKENDS, session_affinity=SessionAffinitySettings("x-session-id", 16, False)
    )
    rules = build_httproute(unpinned, 50, canary_ready=True)["spec"]["rules"]
    assert [h["type"] for rule in rules[1:] for h in rule["matches"][0]["headers"]] == [
        "RegularExpression",
        "RegularExpression",
    ]
    assert all("filters" not in ref for rule in rules for ref in rule["backendRefs"])
    spec = with_affinity(pinRevision=False)
    affinity = parse_spec(spec).traffic.session_affinity
    assert affinity is not None and affinity.pin_revision is False
