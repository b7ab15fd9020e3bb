"""Pure parts of the child objects and the traffic routers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from modelrollout.kube.labels import REVISION_LABEL, ROLE_LABEL, ROLLOUT_LABEL, revision_object_name
from modelrollout.kube.workloads import RolloutRef, build_deployment, build_revision_service
from modelrollout.traffic import router_for
from modelrollout.traffic.base import AchievedWeights, Backends, canary_replicas, routed_condition
from modelrollout.traffic.gatewayapi import build_httproute, build_preview_httproute, route_weights

pytestmark = pytest.mark.unit

ROLLOUT = RolloutRef("ml", "chat", "uid-1")
BACKENDS = Backends(
    ROLLOUT, "aaa111", "bbb222", 8000, 4, {"parentRefs": [{"name": "inference-gw"}]}
)


def test_deployment_selector_excludes_the_role_so_promotion_needs_no_restart() -> None:
    deployment = build_deployment(ROLLOUT, "aaa111", "canary", 2, {"containers": []}, 600)
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector == {ROLLOUT_LABEL: "chat", REVISION_LABEL: "aaa111"}
    assert deployment["spec"]["template"]["metadata"]["labels"][ROLE_LABEL] == "canary"
    assert deployment["metadata"]["name"] == "chat-aaa111"
    (owner,) = deployment["metadata"]["ownerReferences"]
    assert owner["kind"] == "ModelRollout" and owner["uid"] == "uid-1" and owner["controller"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_revision_service_selects_exactly_one_revision() -> None:
    service = build_revision_service(ROLLOUT, "bbb222", 8000)
    assert service["spec"]["selector"] == {ROLLOUT_LABEL: "chat", REVISION_LABEL: "bbb222"}
    assert service["spec"]["ports"][0]["port"] == 8000


def test_a_name_with_no_room_for_the_revision_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"metadata\.name"):
        revision_object_name("x" * 60, "abcdef0123")


@pytest.mark.parametrize(
    ("replicas", "weight", "expected"),
    [(4, 5, 1), (4, 25, 1), (4, 50, 2), (10, 33, 4), (4, 100, 4)],
)
def test_canary_replicas_round_up_and_never_drop_below_one(
    replicas: int, weight: int, expected: int
) -> None:
    assert canary_replicas(replicas, weight) == expected


def test_route_adds_the_canary_only_when_it_is_ready() -> None:
    not_ready = build_httproute(BACKENDS, 25, canary_ready=False)
    assert [ref["weight"] for ref in not_ready["spec"]["rules"][0]["backendRefs"]] == [100]
    ready = build_httproute(BACKENDS, 25, canary_ready=True)
    refs = ready["spec"]["rules"][0]["backendRefs"]
    assert [(ref["name"], ref["weight"]) for ref in refs] == [
        ("chat-aaa111", 75),
        ("chat-bbb222", 25),
    ]
    assert ready["spec"]["parentRefs"] == [{"name": "inference-gw"}]
    assert route_weights(ready, BACKENDS) == (75, 25)
    assert route_weights(not_ready, BACKENDS) == (100, 0)


def test_unknown_router_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"spec\.traffic\.router"):
        router_for("istio", None)  # type: ignore[arg-type]


def test_traffic_routed_condition_follows_what_the_router_reports() -> None:
    accepted = AchievedWeights(
        75, 25, (("Accepted", "True", ""), ("ResolvedRefs", "True", "all refs resolved"))
    )
    assert routed_condition(accepted) == ("True", "Routed", "Accepted is True; all refs resolved")
    refused = AchievedWeights(100, 0, (("ResolvedRefs", "False", "service chat-x not found"),))
    assert routed_condition(refused) == ("False", "NotResolvedRefs", "service chat-x not found")
    assert routed_condition(AchievedWeights(100, 0))[0] == "Unknown"


def test_a_shadow_adds_a_request_mirror_to_the_canary_and_keeps_its_weight_at_zero() -> None:
    route = build_httproute(replace(BACKENDS, mirror_percent=30), 0, canary_ready=True)
    (rule,) = route["spec"]["rules"]
    assert rule["filters"] == [
        {
            "type": "RequestMirror",
            "requestMirror": {"backendRef": {"name": "chat-bbb222", "port": 8000}, "percent": 30},
        }
    ]
    assert route_weights(route, BACKENDS) == (100, 0)
    assert "filters" not in build_httproute(BACKENDS, 0, canary_ready=True)["spec"]["rules"][0]


def test_blue_green_previews_the_new_color_to_requests_with_the_preview_header() -> None:
    route = build_preview_httproute(replace(BACKENDS, blue_green=True))
    assert route["metadata"]["name"] == "chat-preview"
    assert route["spec"]["parentRefs"] == [{"name": "inference-gw"}]
    assert route["spec"]["rules"] == [
        {
            "matches": [{"headers": [{"name": "x-modelrollout-preview", "value": "true"}]}],
            "backendRefs": [{"name": "chat-bbb222", "port": 8000, "weight": 100}],
        }
    ]
