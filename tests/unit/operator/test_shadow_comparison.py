"""Shadow output comparison: the engine's rules tick by tick, the routing while the proxy
fronts stable, the builtins' queries, spec validation, the measures, and the proxy itself
(over real HTTP on loopback, with stand-in upstreams)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from modelrollout.analysis.assessment import AnalysisVerdict
from modelrollout.analysis.builtins import queries_for
from modelrollout.analysis.templates import render
from modelrollout.engine.comparison import (
    build_proxy_deployment,
    build_proxy_service,
    comparison_wanted,
    converge_comparison,
)
from modelrollout.kube.api import DEPLOYMENTS, MODELROLLOUTS, SERVICES
from modelrollout.kube.labels import (
    GROUP,
    KIND,
    ROLLOUT_LABEL,
    SERVING_LABEL,
    SHADOW_COMPARE_LABEL,
    VERSION,
)
from modelrollout.kube.workloads import RolloutRef
from modelrollout.models import InvalidSpecError, Weights, parse_spec
from modelrollout.models.spec import Check
from modelrollout.shadowproxy.compare import answer_text, is_deterministic, measure
from modelrollout.shadowproxy.server import ProxyConfig, ShadowProxy
from modelrollout.traffic.base import Backends
from modelrollout.traffic.gatewayapi import build_httproute, route_weights
from modelrollout.traffic.service import ServiceRouter
from tests.support.fake_kube import FakeKubeApi
from tests.unit.operator.builders import ANALYSIS_CONTEXT, Rollout, example_spec, with_model_uri

pytestmark = pytest.mark.unit

V2 = "pvc://models/llama-3.2-3b/v1.4"


def comparison_spec(then: str = "stop", router: str = "service") -> dict[str, Any]:
    spec = example_spec()
    spec["traffic"] = {"router": router}
    if router == "gatewayAPI":
        spec["traffic"]["gatewayAPI"] = {"parentRefs": [{"name": "gw"}]}
    spec["strategy"] = {
        "shadow": {
            "mirrorPercent": 20,
            "duration": "60s",
            "then": then,
            "comparison": {"window": "30s"},
        }
    }
    spec["analysis"]["checks"] = [
        {"name": "agreement", "builtin": "outputAgreement", "breachWhen": "< 0.9",
         "minSamples": 50},
    ]  # fmt: skip
    return spec


def started(then: str = "stop") -> Rollout:
    rollout = Rollout.of(comparison_spec(then))
    rollout.tick()
    rollout.apply(with_model_uri(comparison_spec(then), V2))
    rollout.tick(1)
    return rollout


# -- the engine's rules, tick by tick ------------------------------------------------


def test_the_proxy_runs_while_the_shadow_mirrors_and_goes_when_it_stops() -> None:
    rollout = Rollout.of(comparison_spec())
    rollout.tick()
    assert not comparison_wanted(rollout.spec, rollout.status)  # no candidate yet
    rollout.apply(with_model_uri(comparison_spec(), V2))
    rollout.tick(1)
    assert rollout.status.weights == Weights(stable=100, canary=0, mirror=20)
    assert comparison_wanted(rollout.spec, rollout.status)
    rollout.tick(30)
    assert comparison_wanted(rollout.spec, rollout.status)
    rollout.run_until("RolledBack")  # then: stop
    assert not comparison_wanted(rollout.spec, rollout.status)


def test_a_breach_takes_the_proxy_out_in_the_rollback_tick() -> None:
    rollout = started()
    rollout.world.analysis = AnalysisVerdict.breach(
        "agreement", "rollback", 0.3, "check agreement breached: value 0.3"
    )
    decision = rollout.tick(5)
    assert decision.rollback_now
    assert not comparison_wanted(rollout.spec, rollout.status)


def test_then_canary_ends_the_comparison_at_the_first_weight() -> None:
    rollout = started("canary")
    rollout.tick(61)
    rollout.tick(1)
    assert rollout.status.weights == Weights(stable=90, canary=10, mirror=0)
    assert not comparison_wanted(rollout.spec, rollout.status)


def test_a_shadow_without_comparison_never_runs_the_proxy() -> None:
    spec = comparison_spec(router="gatewayAPI")
    del spec["strategy"]["shadow"]["comparison"]
    spec["analysis"]["checks"] = []
    rollout = Rollout.of(spec)
    rollout.tick()
    rollout.apply(with_model_uri(spec, V2))
    rollout.tick(1)
    assert rollout.status.weights.mirror == 20
    assert not comparison_wanted(rollout.spec, rollout.status)


# -- objects and routing ---------------------------------------------------------------

ROLLOUT = RolloutRef("ml", "chat", "uid-1")


def test_the_proxy_is_owned_selected_by_its_own_label_and_never_by_the_rollouts() -> None:
    rollout = started()
    deployment = build_proxy_deployment(ROLLOUT, rollout.spec, rollout.status, "op:1")
    assert deployment["metadata"]["name"] == "chat-shadow-compare"
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels[SHADOW_COMPARE_LABEL] == "chat" and ROLLOUT_LABEL not in labels
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "op:1"
    assert container["command"] == ["python", "-m", "modelrollout.shadowproxy"]
    args = container["args"]
    stable, canary = rollout.status.stable_revision, rollout.status.canary_revision
    assert args[args.index("--stable") + 1] == f"http://chat-{stable}:8000"
    assert args[args.index("--candidate") + 1] == f"http://chat-{canary}:8000"
    assert args[args.index("--sample-percent") + 1] == "20"
    assert args[args.index("--window") + 1] == "30"
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    # It answers what gateways still send it after the route left it, then drains.
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 5
    service = build_proxy_service(ROLLOUT, 8000)
    assert service["spec"]["selector"] == {SHADOW_COMPARE_LABEL: "chat"}


BACKENDS = Backends(
    ROLLOUT, "aaa111", "bbb222", 8000, 4, {"parentRefs": [{"name": "gw"}]}, mirror_percent=30
)


def test_the_route_sends_stable_to_the_proxy_only_once_ready_and_never_mirrors() -> None:
    waiting = replace(BACKENDS, comparison="chat-shadow-compare")
    (rule,) = build_httproute(waiting, 0, canary_ready=True)["spec"]["rules"]
    assert "filters" not in rule  # the proxy copies requests itself
    assert rule["backendRefs"][0]["name"] == "chat-aaa111"
    fronted = replace(waiting, comparison_ready=True)
    route = build_httproute(fronted, 0, canary_ready=True)
    (rule,) = route["spec"]["rules"]
    assert rule["backendRefs"][0] == {"name": "chat-shadow-compare", "port": 8000, "weight": 100}
    assert route_weights(route, fronted) == (100, 0)
    # The tick the shadow ends routes stable's share straight back to stable.
    back = build_httproute(replace(BACKENDS, mirror_percent=0), 0, canary_ready=True)
    assert back["spec"]["rules"][0]["backendRefs"][0]["name"] == "chat-aaa111"


# -- the builtins' queries ---------------------------------------------------------------


def test_a_comparison_builtin_has_a_value_only_past_its_sample_size() -> None:
    check = Check.model_validate(
        {"name": "a", "builtin": "outputAgreement", "breachWhen": "< 0.9", "minSamples": 50,
         "window": "2m"}
    )  # fmt: skip
    query = render(queries_for(check).canary, ANALYSIS_CONTEXT)
    assert query == (
        '(sum(increase(modelrollout_shadow_token_agreement_sum{namespace="ml",rollout="chat",'
        'candidate="bbbb"}[2m])) / sum(increase(modelrollout_shadow_token_agreement_count{'
        'namespace="ml",rollout="chat",candidate="bbbb"}[2m]))) and on() (sum(increase('
        'modelrollout_shadow_comparisons_total{namespace="ml",rollout="chat",candidate="bbbb"}'
        "[2m])) >= 50)"
    )
    assert queries_for(check).stable is None


@pytest.mark.parametrize(
    ("builtin", "counted"),
    [
        ("exactMatchRate", "modelrollout_shadow_exact_comparisons_total"),
        ("jsonValidity", "modelrollout_shadow_json_requests_total"),
        ("emptyAnswerRate", "modelrollout_shadow_comparisons_total"),
        ("lengthRatio", "modelrollout_shadow_comparisons_total"),
        ("latencyRatio", "modelrollout_shadow_comparisons_total"),
    ],
)
def test_each_comparison_builtin_counts_the_samples_it_measures(builtin: str, counted: str) -> None:
    check = Check.model_validate({"name": "a", "builtin": builtin, "breachWhen": "> 1"})
    query = render(queries_for(check).canary, ANALYSIS_CONTEXT)
    assert query.endswith(
        f'and on() (sum(increase({counted}{{namespace="ml",rollout="chat",candidate="bbbb"}}'
        "[1m])) >= 20)"
    )


# -- spec validation ---------------------------------------------------------------------


def test_comparison_lets_a_shadow_use_a_router_without_mirroring() -> None:
    parse_spec(comparison_spec(router="service"))
    without = comparison_spec(router="service")
    del without["strategy"]["shadow"]["comparison"]
    without["analysis"]["checks"] = []
    with pytest.raises(InvalidSpecError) as error:
        parse_spec(without)
    assert error.value.field_path == "spec.strategy.shadow"


def test_a_router_that_cannot_front_stable_with_the_proxy_is_refused() -> None:
    spec = comparison_spec(router="inferencePool")
    spec["traffic"]["inferencePool"] = {"parentRefs": [{"name": "gw"}]}
    with pytest.raises(InvalidSpecError) as error:
        parse_spec(spec)
    assert error.value.field_path == "spec.strategy.shadow.comparison"
    assert "a comparison proxy in front of stable" in error.value.message


def test_a_comparison_builtin_without_a_comparison_names_the_field() -> None:
    spec = comparison_spec(router="gatewayAPI")
    del spec["strategy"]["shadow"]["comparison"]
    with pytest.raises(InvalidSpecError) as error:
        parse_spec(spec)
    assert error.value.field_path == "spec.analysis.checks[0].builtin"
    assert "strategy.shadow.comparison" in error.value.message


def test_min_samples_is_for_comparison_builtins_only() -> None:
    spec = comparison_spec()
    spec["analysis"]["checks"] = [
        {"name": "e", "builtin": "errorRate", "breachWhen": "> 0.1", "minSamples": 5}
    ]
    with pytest.raises(InvalidSpecError) as error:
        parse_spec(spec)
    assert error.value.field_path == "spec.analysis.checks[0].minSamples"


# -- the measures -------------------------------------------------------------------------


def test_identical_greedy_answers_match_exactly_and_agree_fully() -> None:
    measured = measure({"temperature": 0}, "Paris is big", "Paris is big")
    assert measured.deterministic and measured.exact_match
    assert measured.token_agreement == 1.0 and measured.length_ratio == 1.0
    assert not measured.candidate_empty and not measured.json_asked


def test_different_answers_agree_by_tokens_and_compare_lengths() -> None:
    measured = measure({}, "a b c d", "a b x")
    assert not measured.deterministic  # OpenAI's default temperature is 1
    assert not measured.exact_match
    assert measured.token_agreement == pytest.approx(2 * 2 / 7)
    assert measured.length_ratio == pytest.approx(0.75)


def test_empty_refusing_and_json_answers() -> None:
    asked = {"response_format": {"type": "json_object"}, "seed": 3}
    measured = measure(asked, '{"a": 1}', "I'm sorry, I cannot help with that.")
    assert measured.deterministic and measured.json_asked
    assert measured.stable_json_valid and not measured.candidate_json_valid
    assert measured.candidate_empty and not measured.stable_empty
    assert measure({}, "", "").token_agreement == 1.0
    assert measure({}, "", "  ").candidate_empty
    assert measure({}, "", "a b").length_ratio == 2.0
    assert is_deterministic({"top_k": 1})


def test_answer_text_reads_chat_completion_and_streamed_answers() -> None:
    chat = {"choices": [{"message": {"role": "assistant", "content": "hi there"}}]}
    assert answer_text(json.dumps(chat).encode(), streamed=False) == "hi there"
    completion = {"choices": [{"text": " once"}]}
    assert answer_text(json.dumps(completion).encode(), streamed=False) == " once"
    stream = (
        "".join(
            f"data: {json.dumps({'choices': [{'delta': {'content': part}}]})}\n\n"
            for part in ("hel", "lo")
        )
        + "data: [DONE]\n\n"
    )
    assert answer_text(stream.encode(), streamed=True) == "hello"
    assert answer_text(b"not json", streamed=False) == ""


# -- the proxy, over HTTP -----------------------------------------------------------------


def upstream(answer: str, seen: list[dict[str, Any]]) -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append(body)
        if body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for word in answer.split(" "):
                chunk = {"choices": [{"text": word + " "}]}
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            return response
        return web.json_response({"choices": [{"text": answer}]}, headers={"x-served-by": "s"})

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    return app


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in {text}")


def test_the_proxy_answers_from_stable_and_compares_a_sampled_copy() -> None:
    asyncio.run(answers_from_stable_and_compares_a_sampled_copy())


async def answers_from_stable_and_compares_a_sampled_copy() -> None:
    stable_seen: list[dict[str, Any]] = []
    candidate_seen: list[dict[str, Any]] = []
    async with (
        TestServer(upstream("the stable answer", stable_seen)) as stable,
        TestServer(upstream("another answer", candidate_seen)) as candidate,
    ):
        config = ProxyConfig(
            stable=str(stable.make_url("")).rstrip("/"),
            candidate=str(candidate.make_url("")).rstrip("/"),
            sample_percent=50,
            window_seconds=5,
            max_pending=8,
            candidate_revision="bbbb",
        )
        draws = iter([0.1, 0.9, 0.2, 0.3])  # sampled, not, sampled, sampled
        proxy = ShadowProxy(config, sample=lambda: next(draws))
        async with TestClient(TestServer(proxy.app())) as http:
            for stream in (False, False, True):
                response = await http.post(
                    "/v1/completions", json={"prompt": "p", "temperature": 0, "stream": stream}
                )
                assert response.status == 200
                text = await response.text()
                assert "stable" in text and "another" not in text
            assert response.headers["Content-Type"].startswith("text/event-stream")
            plain = await http.post("/v1/completions", json={"prompt": "p", "temperature": 0})
            assert plain.headers["x-served-by"] == "s"
            for task in list(proxy._tasks):
                await task
            exported = await (await http.get("/metrics")).text()
    assert len(stable_seen) == 4 and len(candidate_seen) == 3
    assert metric(exported, "modelrollout_shadow_requests_total") == 4
    assert metric(exported, "modelrollout_shadow_comparisons_total") == 3
    assert metric(exported, "modelrollout_shadow_exact_comparisons_total") == 3
    assert metric(exported, "modelrollout_shadow_exact_matches_total") == 0
    agreement = metric(exported, "modelrollout_shadow_token_agreement_sum") / 3
    assert agreement == pytest.approx(2 * 1 / 5)  # "answer" in common, of 3 and 2 tokens
    assert 'candidate="bbbb"' in exported


def test_a_failing_candidate_never_touches_the_answer_and_is_counted() -> None:
    asyncio.run(a_failing_candidate_never_touches_the_answer())


async def a_failing_candidate_never_touches_the_answer() -> None:
    async with TestServer(upstream("ok", [])) as stable:
        config = ProxyConfig(
            stable=str(stable.make_url("")).rstrip("/"),
            candidate="http://127.0.0.1:9",  # nothing listens
            sample_percent=100,
            window_seconds=5,
            max_pending=8,
            candidate_revision="bbbb",
        )
        proxy = ShadowProxy(config)
        async with TestClient(TestServer(proxy.app())) as http:
            response = await http.post("/v1/completions", json={"prompt": "p"})
            assert response.status == 200 and "ok" in await response.text()
            for task in list(proxy._tasks):
                await task
            exported = await (await http.get("/metrics")).text()
    assert 'modelrollout_shadow_dropped_total{candidate="bbbb",reason="candidate_error"} 1.0' in (
        exported
    )
    assert metric(exported, "modelrollout_shadow_comparisons_total") == 0


def test_a_candidate_slower_than_the_window_or_beyond_max_pending_is_dropped() -> None:
    asyncio.run(slow_or_full_candidates_are_dropped())


async def slow_or_full_candidates_are_dropped() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.json_response({"choices": [{"text": "late"}]})

    late = web.Application()
    late.router.add_post("/v1/completions", slow)
    async with TestServer(upstream("ok", [])) as stable, TestServer(late) as candidate:
        config = ProxyConfig(
            stable=str(stable.make_url("")).rstrip("/"),
            candidate=str(candidate.make_url("")).rstrip("/"),
            sample_percent=100,
            window_seconds=0.5,
            max_pending=1,
            candidate_revision="bbbb",
        )
        proxy = ShadowProxy(config)
        async with TestClient(TestServer(proxy.app())) as http:
            await http.post("/v1/completions", json={"prompt": "p"})  # waits on the candidate
            await http.post("/v1/completions", json={"prompt": "p"})  # one pending already
            for task in list(proxy._tasks):
                await task
            exported = await (await http.get("/metrics")).text()
    dropped = 'modelrollout_shadow_dropped_total{candidate="bbbb",reason="%s"} 1.0'
    assert dropped % "timeout" in exported and dropped % "full" in exported, exported
    assert metric(exported, "modelrollout_shadow_comparisons_total") == 0


# -- what the reconciler applies, on the in-memory API server ------------------------------


def owned_on_fake_server() -> tuple[FakeKubeApi, RolloutRef]:
    """The API server with the ModelRollout `ml/chat` (its garbage collector deletes what a
    missing owner owns)."""
    api = FakeKubeApi()
    owner = api.create(
        MODELROLLOUTS,
        "ml",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": "chat"}},
    )
    return api, RolloutRef("ml", "chat", owner["metadata"]["uid"])


def test_the_service_router_selects_the_proxy_alone_and_then_the_serving_pods_again() -> None:
    api, ref = owned_on_fake_server()
    router = ServiceRouter(api)
    backends = Backends(ref, "aaa111", "bbb222", 8000, 2, mirror_percent=20)
    router.reconcile(backends)
    serving = {ROLLOUT_LABEL: "chat", SERVING_LABEL: "true"}
    service = api.get(SERVICES, "ml", "chat")
    assert service is not None and service["spec"]["selector"] == serving
    fronted = replace(backends, comparison="chat-shadow-compare", comparison_ready=True)
    router.reconcile(fronted)
    service = api.get(SERVICES, "ml", "chat")
    assert service is not None and service["spec"]["selector"] == {SHADOW_COMPARE_LABEL: "chat"}
    router.reconcile(backends)
    service = api.get(SERVICES, "ml", "chat")
    assert service is not None and service["spec"]["selector"] == serving


def test_the_proxy_and_the_services_it_needed_go_when_the_shadow_ends() -> None:
    api, ref = owned_on_fake_server()
    rollout = started()
    stable, canary = rollout.status.stable_revision, rollout.status.canary_revision
    services = {"chat-shadow-compare", f"chat-{stable}", f"chat-{canary}"}
    capabilities = ServiceRouter.capabilities
    converge_comparison(api, ref, rollout.spec, rollout.status, capabilities, "op:1")
    assert api.get(DEPLOYMENTS, "ml", "chat-shadow-compare") is not None
    assert {s["metadata"]["name"] for s in api.list(SERVICES, "ml")} == services
    rollout.run_until("RolledBack")
    converge_comparison(api, ref, rollout.spec, rollout.status, capabilities, "op:1")
    assert api.get(DEPLOYMENTS, "ml", "chat-shadow-compare") is None
    assert api.list(SERVICES, "ml") == []
