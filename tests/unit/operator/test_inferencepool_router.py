"""Router inferencePool: its pure builders, and its writes on the in-memory API server."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from modelrollout.kube.api import HTTPROUTES, INFERENCE_POOLS, MODELROLLOUTS, PODS, SERVICES
from modelrollout.kube.labels import (
    GROUP,
    KIND,
    MANAGED_BY_LABEL,
    REVISION_LABEL,
    ROLLOUT_LABEL,
    VERSION,
)
from modelrollout.kube.workloads import RolloutRef
from modelrollout.models import InvalidSpecError, parse_spec
from modelrollout.traffic import capabilities_of, router_for
from modelrollout.traffic.base import AchievedWeights, Backends, Capability, routed_condition
from modelrollout.traffic.inferencepool import (
    build_inference_pool,
    build_pool_httproute,
    pool_conditions,
    pool_settings,
    pool_weights,
)
from tests.support.fake_kube import FakeKubeApi
from tests.unit.operator.builders import example_spec

pytestmark = pytest.mark.unit

NAMESPACE = "ml"
ROLLOUT = RolloutRef(NAMESPACE, "chat", "uid-1")
PICKER = {"name": "chat-epp", "port": {"number": 9002}, "failureMode": "FailOpen"}
SETTINGS = {"parentRefs": [{"name": "inference-gw"}], "endpointPickerRef": PICKER}
CANARY = Backends(ROLLOUT, "aaa111", "bbb222", 8000, 2, SETTINGS, canary_weight=25)
POOL_REF = {"group": "inference.networking.k8s.io", "kind": "InferencePool"}


def refs(route: dict[str, Any]) -> list[dict[str, Any]]:
    backend_refs: list[dict[str, Any]] = route["spec"]["rules"][0]["backendRefs"]
    return backend_refs


def test_a_revisions_pool_selects_its_pods_on_the_serving_port_with_the_users_picker() -> None:
    pool = build_inference_pool(CANARY, "bbb222")
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["kind"] == "InferencePool"
    assert pool["metadata"]["name"] == "chat-bbb222"
    assert pool["metadata"]["labels"] == {
        ROLLOUT_LABEL: "chat",
        REVISION_LABEL: "bbb222",
        MANAGED_BY_LABEL: "modelrollout",
    }
    (owner,) = pool["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ModelRollout",
        "chat",
        "uid-1",
        True,
    )
    assert pool["spec"] == {
        "selector": {"matchLabels": {ROLLOUT_LABEL: "chat", REVISION_LABEL: "bbb222"}},
        "targetPorts": [{"number": 8000}],
        "endpointPickerRef": PICKER,
    }


def test_without_a_picker_in_the_spec_the_pool_names_none() -> None:
    backends = replace(CANARY, settings={"parentRefs": [{"name": "inference-gw"}]})
    assert "endpointPickerRef" not in build_inference_pool(backends, "aaa111")["spec"]


def test_the_route_weights_the_stable_and_the_canary_pool() -> None:
    route = build_pool_httproute(CANARY, 25, canary_ready=True)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["name"] == "chat"
    assert route["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert route["spec"]["parentRefs"] == [{"name": "inference-gw"}]
    assert refs(route) == [
        {**POOL_REF, "name": "chat-aaa111", "weight": 75},
        {**POOL_REF, "name": "chat-bbb222", "weight": 25},
    ]
    assert pool_weights(route, CANARY) == (75, 25)


def test_a_canary_without_a_ready_pod_gets_no_backend() -> None:
    route = build_pool_httproute(CANARY, 25, canary_ready=False)
    assert refs(route) == [{**POOL_REF, "name": "chat-aaa111", "weight": 100}]
    assert pool_weights(route, CANARY) == (100, 0)


def test_weights_on_services_of_the_same_names_are_not_weights_on_pools() -> None:
    route = {
        "spec": {
            "rules": [
                {
                    "backendRefs": [
                        {"name": "chat-aaa111", "port": 8000, "weight": 75},
                        {"name": "chat-bbb222", "port": 8000, "weight": 25},
                    ]
                }
            ]
        }
    }
    assert pool_weights(route, CANARY) == (0, 0)


def test_a_stored_pool_with_the_servers_defaults_equals_the_one_written() -> None:
    picker = {"name": "e", "port": {"number": 1}}
    written = build_inference_pool(
        replace(CANARY, settings={"endpointPickerRef": picker}), "aaa111"
    )["spec"]
    stored = {
        **written,
        "appProtocol": "http",
        "endpointPickerRef": {
            **written["endpointPickerRef"],
            "group": "",
            "kind": "Service",
            "failureMode": "FailClose",
        },
    }
    assert pool_settings(stored) == pool_settings(written)
    assert pool_settings({**stored, "targetPorts": [{"number": 9000}]}) != pool_settings(written)


def test_a_gateways_report_on_a_pool_names_the_pool() -> None:
    pool = build_inference_pool(CANARY, "bbb222")
    pool["status"] = {
        "parents": [
            {
                "parentRef": {"name": "inference-gw"},
                "conditions": [
                    {
                        "type": "Accepted",
                        "status": "False",
                        "reason": "EndpointPickerRefMissing",
                        "message": "",
                    },
                    {"type": "Other", "status": "False", "reason": "X", "message": "x"},
                ],
            }
        ]
    }
    conditions = pool_conditions(pool)
    assert conditions == (
        ("Accepted", "False", "InferencePool chat-bbb222: EndpointPickerRefMissing"),
    )
    assert routed_condition_of(conditions) == (
        "False",
        "NotAccepted",
        "InferencePool chat-bbb222: EndpointPickerRefMissing",
    )


def routed_condition_of(conditions: tuple[tuple[str, str, str], ...]) -> tuple[str, str, str]:
    return routed_condition(AchievedWeights(100, 0, conditions))


def test_it_declares_exact_weights_and_nothing_it_cannot_do() -> None:
    # Mirroring, a preview route and per-revision Services are the gatewayAPI router's.
    assert capabilities_of("inferencePool") == frozenset({Capability.EXACT_WEIGHTS})


# -- on the in-memory API server ------------------------------------------------


def ready_pod(api: FakeKubeApi, revision: str) -> None:
    api.create(
        PODS,
        NAMESPACE,
        {
            "metadata": {
                "name": f"chat-{revision}-0",
                "labels": {ROLLOUT_LABEL: "chat", REVISION_LABEL: revision},
            },
        },
    )
    api.merge_patch(
        PODS,
        NAMESPACE,
        f"chat-{revision}-0",
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        subresource="status",
    )


def route_pools(api: FakeKubeApi) -> list[tuple[str, int]]:
    route = api.get(HTTPROUTES, NAMESPACE, "chat")
    assert route is not None
    return [(ref["name"], ref["weight"]) for ref in refs(route)]


def pool_names(api: FakeKubeApi) -> set[str]:
    return {pool["metadata"]["name"] for pool in api.list(INFERENCE_POOLS, NAMESPACE)}


def on_fake_server() -> tuple[FakeKubeApi, Backends]:
    """The API server and CANARY, owned by a ModelRollout there (the garbage collector
    deletes what a missing owner owns)."""
    api = FakeKubeApi()
    owner = api.create(
        MODELROLLOUTS,
        NAMESPACE,
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": "chat"}},
    )
    rollout = RolloutRef(NAMESPACE, "chat", owner["metadata"]["uid"])
    return api, replace(CANARY, rollout=rollout)


def converge(api: FakeKubeApi, backends: Backends, weight: int) -> None:
    router = router_for("inferencePool", api)
    router.reconcile(backends)
    router.set_weights(backends, weight)


def test_a_canary_walks_its_weights_and_a_converged_route_is_not_written_again() -> None:
    api, canary = on_fake_server()
    ready_pod(api, "aaa111")
    converge(api, canary, 0)
    assert pool_names(api) == {"chat-aaa111", "chat-bbb222"}
    assert route_pools(api) == [("chat-aaa111", 100), ("chat-bbb222", 0)]

    converge(api, canary, 25)  # no Ready canary pod yet: all on stable
    assert route_pools(api) == [("chat-aaa111", 100)]
    ready_pod(api, "bbb222")
    converge(api, canary, 25)
    assert route_pools(api) == [("chat-aaa111", 75), ("chat-bbb222", 25)]
    achieved = router_for("inferencePool", api).get_weights(canary)
    assert (achieved.stable, achieved.canary, achieved.settled) == (75, 25, True)

    api.writes.clear()
    converge(api, canary, 25)
    assert api.writes == []
    assert api.list(SERVICES, NAMESPACE) == [], "pools are routed to, not Services"


def test_the_old_pool_goes_once_the_route_no_longer_names_it() -> None:
    api, canary = on_fake_server()
    ready_pod(api, "aaa111")
    ready_pod(api, "bbb222")
    converge(api, canary, 100)
    promoted = replace(canary, stable="bbb222", canary=None, canary_weight=0)
    router = router_for("inferencePool", api)
    router.reconcile(promoted)  # the route still names aaa111: its pool stays
    assert pool_names(api) == {"chat-aaa111", "chat-bbb222"}
    router.set_weights(promoted, 0)
    assert route_pools(api) == [("chat-bbb222", 100)]
    router.reconcile(promoted)
    assert pool_names(api) == {"chat-bbb222"}


def test_a_changed_picker_replaces_the_pools_spec() -> None:
    api, canary = on_fake_server()
    converge(api, canary, 0)
    changed = replace(
        canary, settings={**SETTINGS, "endpointPickerRef": {"name": "other", "port": {"number": 1}}}
    )
    converge(api, changed, 0)
    pool = api.get(INFERENCE_POOLS, NAMESPACE, "chat-aaa111")
    assert pool is not None
    assert pool["spec"]["endpointPickerRef"] == {"name": "other", "port": {"number": 1}}


def test_without_a_route_the_weights_are_reported_unrouted() -> None:
    achieved = router_for("inferencePool", FakeKubeApi()).get_weights(CANARY)
    assert routed_condition(achieved)[:2] == ("False", "NotRouted")


# -- the spec --------------------------------------------------------------------


def inference_pool_spec(section: dict[str, Any] | None) -> dict[str, Any]:
    spec = example_spec()
    spec["traffic"] = {"router": "inferencePool"}
    if section is not None:
        spec["traffic"]["inferencePool"] = section
    return spec


def test_the_router_gets_its_section_as_written() -> None:
    parsed = parse_spec(inference_pool_spec(SETTINGS))
    assert parsed.traffic.router_settings() == {**SETTINGS, "hostnames": []}


@pytest.mark.parametrize(
    ("section", "field", "message"),
    [
        (None, "spec.traffic.inferencePool.parentRefs", "needs at least one parentRef"),
        (
            {"parentRefs": [{"name": "gw"}], "endpointPickerRef": {"name": "epp"}},
            "spec.traffic.inferencePool.endpointPickerRef.port",
            "is required when kind is Service",
        ),
        (
            {"parentRefs": [{"name": "gw"}, {"name": "gw"}]},
            "spec.traffic.inferencePool.parentRefs[1]",
            "referenced twice",
        ),
        (
            {
                "parentRefs": [{"name": "gw"}],
                "endpointPickerRef": {"name": "e", "port": {"number": 0}},
            },
            "spec.traffic.inferencePool.endpointPickerRef.port.number",
            "",
        ),
        (
            {
                "parentRefs": [{"name": "gw"}],
                "endpointPickerRef": {"name": "e", "port": {"number": 1}, "failureMode": "Open"},
            },
            "spec.traffic.inferencePool.endpointPickerRef.failureMode",
            "",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    section: dict[str, Any] | None, field: str, message: str
) -> None:
    with pytest.raises(InvalidSpecError) as raised:
        parse_spec(inference_pool_spec(section))
    assert raised.value.field_path == field
    assert message in raised.value.message


def test_a_picker_of_another_kind_needs_no_port() -> None:
    section = {
        "parentRefs": [{"name": "gw"}],
        "endpointPickerRef": {"kind": "Backend", "name": "e"},
    }
    parse_spec(inference_pool_spec(section))


def test_blue_green_is_refused_naming_the_capability_it_lacks() -> None:
    spec = inference_pool_spec(SETTINGS)
    spec["strategy"] = {"blueGreen": {}}
    with pytest.raises(InvalidSpecError) as raised:
        parse_spec(spec)
    assert raised.value.field_path == "spec.strategy.blueGreen"
    assert "needs a router with a preview route" in raised.value.message
