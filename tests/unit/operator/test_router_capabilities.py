"""The engine follows what a router declares it can do, never the router's name.

The routers here are declared in this file only (a capability set each, as a
router class declares it) and registered nowhere in the product; each test
gives the spec the product router that declares the opposite, so a decision
taken by name would fail it.
"""

from __future__ import annotations

from typing import Any, get_args

import pytest

from modelrollout.models import parse_spec
from modelrollout.models.spec import Traffic, router_capability_errors
from modelrollout.traffic import ROUTERS
from modelrollout.traffic.base import Capability, RouterCapabilities
from tests.unit.operator.builders import Rollout, example_spec, with_model_uri

pytestmark = pytest.mark.unit

V2 = "pvc://models/llama-3.2-3b/v1.4"
SHADOW = {"mirrorPercent": 10, "duration": "10m", "then": "promote"}
# A router whose weights are exact (a route table), and nothing more.
ROUTE_TABLE: RouterCapabilities = frozenset({Capability.EXACT_WEIGHTS})
# A router that approximates weights by replica ratio and does nothing more.
REPLICA_RATIO: RouterCapabilities = frozenset()


def started(router: str, capabilities: RouterCapabilities) -> Rollout:
    spec = example_spec()
    spec["traffic"]["router"] = router
    rollout = Rollout(parse_spec(spec), router_capabilities=capabilities)
    rollout.tick()
    rollout.apply(with_model_uri(spec, V2))
    return rollout


def test_with_exact_weights_a_step_completes_once_its_weight_is_written() -> None:
    rollout = started("service", ROUTE_TABLE)
    rollout.world.achieved_canary = 0  # a replica count would not show the weight yet
    rollout.tick()
    rollout.tick(15)
    assert rollout.status.weights.canary == 5
    rollout.tick(15)
    assert rollout.status.current_step == 1


def test_without_exact_weights_a_step_waits_for_the_weight_the_router_reports() -> None:
    rollout = started("gatewayAPI", REPLICA_RATIO)
    rollout.world.achieved_canary = 0
    rollout.tick()
    rollout.tick(15)
    assert rollout.status.weights.canary == 5
    for _ in range(5):
        rollout.tick(15)
    assert rollout.status.current_step == 0
    assert "waiting for the router (0% achieved)" in rollout.status.message
    rollout.world.achieved_canary = 5  # the canary's share of Ready pods has settled
    rollout.tick(15)
    assert rollout.status.current_step == 1


@pytest.mark.parametrize(
    ("router", "capabilities", "waits"),
    [("service", ROUTE_TABLE, False), ("gatewayAPI", REPLICA_RATIO, True)],
)
def test_promotion_waits_for_all_traffic_only_without_exact_weights(
    router: str, capabilities: RouterCapabilities, waits: bool
) -> None:
    rollout = started(router, capabilities)
    rollout.world.achieved_canary = 5
    # One of the canary's two pods: promotion has it scaled up before it ends.
    rollout.world.canary_desired = rollout.world.canary_ready = 1
    rollout.tick()
    rollout.command(promote_full=True)
    assert rollout.status.phase == "Promoting"
    rollout.tick(15)
    if waits:
        assert rollout.status.phase == "Promoting"
        assert "waiting for the router to send it all traffic (now 5%)" in rollout.status.message
        rollout.world.achieved_canary = 100
        rollout.tick(15)
    assert rollout.status.phase == "Succeeded"
    assert rollout.status.history[0].outcome == "Promoted"


@pytest.mark.parametrize(
    ("router", "capabilities", "at_once"),
    [("service", ROUTE_TABLE, True), ("gatewayAPI", REPLICA_RATIO, False)],
)
def test_a_full_size_ready_canary_is_promoted_at_once_only_with_exact_weights(
    router: str, capabilities: RouterCapabilities, at_once: bool
) -> None:
    """With exact weights and every canary pod already Ready, promotion has nothing to
    wait for: Succeeded in the tick that decides it, one Promoted Event said; without,
    the router has to report all traffic on the canary first."""
    rollout = started(router, capabilities)
    rollout.world.achieved_canary = 5
    rollout.tick()
    decision = rollout.command(promote_full=True)
    if at_once:
        assert rollout.status.phase == "Succeeded"
        assert rollout.status.stable_revision == rollout.status.history[0].revision
        assert rollout.status.history[0].outcome == "Promoted"
        assert [reason for _, reason, _ in decision.events] == ["Promoting", "Promoted"]
    else:
        assert rollout.status.phase == "Promoting"
        assert [reason for _, reason, _ in decision.events] == ["Promoting"]


def strategy_spec(strategy: dict[str, Any]) -> Any:
    spec = example_spec()
    spec["traffic"]["router"] = "gatewayAPI"  # a router with every capability: parses
    spec["strategy"] = strategy
    return parse_spec(spec)


@pytest.mark.parametrize(
    ("strategy", "capabilities", "errors"),
    [
        (
            {"shadow": SHADOW},
            ROUTE_TABLE,
            [("spec.strategy.shadow", "needs a router with request mirroring")],
        ),
        ({"shadow": SHADOW}, frozenset({Capability.REQUEST_MIRRORING}), []),
        (
            {"blueGreen": {}},
            ROUTE_TABLE,
            [("spec.strategy.blueGreen", "needs a router with a preview route")],
        ),
        ({"blueGreen": {}}, frozenset({Capability.PREVIEW_ROUTE}), []),
        ({"canary": {"steps": [{"setWeight": 50}]}}, REPLICA_RATIO, []),
    ],
)
def test_a_strategy_is_refused_naming_the_field_and_the_capability_the_router_lacks(
    strategy: dict[str, Any],
    capabilities: RouterCapabilities,
    errors: list[tuple[str, str]],
) -> None:
    found = list(router_capability_errors(strategy_spec(strategy), capabilities))
    assert [field for field, _ in found] == [field for field, _ in errors]
    for (_, message), (_, expected) in zip(found, errors, strict=True):
        assert message.startswith(expected)
        assert "traffic.router gatewayAPI has none" in message


def test_every_router_name_the_spec_accepts_is_registered() -> None:
    assert set(get_args(Traffic.model_fields["router"].annotation)) == set(ROUTERS)


def test_every_router_section_of_the_spec_is_named_like_its_router() -> None:
    sections = {field.alias or name for name, field in Traffic.model_fields.items()} - {"router"}
    assert sections <= set(ROUTERS)


def test_a_router_gets_its_own_section_of_the_spec_as_written() -> None:
    spec = example_spec()
    spec["traffic"]["gatewayAPI"]["hostnames"] = ["chat.example.com"]
    assert parse_spec(spec).traffic.router_settings() == {}  # router service has no section
    spec["traffic"]["router"] = "gatewayAPI"
    assert parse_spec(spec).traffic.router_settings() == {
        "parentRefs": [{"name": "inference-gw"}],
        "hostnames": ["chat.example.com"],
    }
