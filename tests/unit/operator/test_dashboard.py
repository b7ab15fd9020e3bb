"""The dashboard's pure parts: views, the hub's fan-out, range queries and their cache.

Statuses come from the real canary strategy driven tick by tick (the unit
tests' simulator), as in test_kubectl_render.py.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import httpx
import pytest
from kubernetes.client import ApiClient, Configuration

from modelrollout.analysis.provider import NoReferences
from modelrollout.engine.revision import revision_of
from modelrollout.kubectl.cli import PluginApi, Target
from modelrollout.kubectl.dashboard.hub import ROLLOUT_EVENTS, ROLLOUTS, Hub, Message
from modelrollout.kubectl.dashboard.series import (
    SeriesCache,
    SeriesRequest,
    SeriesUnavailable,
    plot_data,
    series_request,
    settings_for,
)
from modelrollout.kubectl.dashboard.server import COMMAND_HEADER, READ_ONLY, create_app
from modelrollout.kubectl.dashboard.views import detail, list_row
from modelrollout.kubectl.render import timestamp
from modelrollout.models import parse_spec
from modelrollout.models.spec import ConfigMapKeyRef, SecretKeyRef
from tests.unit.operator.builders import T0, example_spec, with_model_uri
from tests.unit.operator.test_kubectl_render import V2, body_of, canary_v2, stable_v1

pytestmark = pytest.mark.unit


def event(reason: str, seconds: int, name: str = "e1", kind: str = "Warning") -> dict[str, Any]:
    at = timestamp(T0 + timedelta(seconds=seconds))
    return {
        "metadata": {"name": name, "namespace": "ml", "resourceVersion": str(seconds)},
        "involvedObject": {"kind": "ModelRollout", "name": "chat", "namespace": "ml"},
        "type": kind,
        "reason": reason,
        "message": f"{reason} happened",
        "lastTimestamp": at,
        "firstTimestamp": at,
        "count": 1,
    }


def test_a_list_row_shows_phase_step_weight_revisions_and_the_last_event() -> None:
    sim, spec = canary_v2(ticks=2)
    body = body_of(sim, spec)
    row = list_row(body, [event("StepStarted", 30, "b", "Normal"), event("Old", 10, "a")])
    assert row["key"] == "ml/chat"
    assert row["phase"] == sim.status.phase == "Progressing"
    assert row["step"] == f"{sim.status.current_step + 1}/5"
    assert row["weights"]["canary"] == sim.status.weights.canary > 0
    assert (row["stable"], row["canary"]) == (
        sim.status.stable_revision,
        sim.status.canary_revision,
    )
    assert row["lastEvent"]["reason"] == "StepStarted"


def test_the_detail_marks_steps_times_the_pause_and_says_which_commands_are_refused() -> None:
    sim, spec = canary_v2(ticks=2)
    while sim.status.current_step != 1:
        sim.tick(15)
    view = detail(body_of(sim, spec), [], [], sim.now)
    current = sim.status.current_step
    assert [s["state"] for s in view["steps"]][: current + 1] == ["done"] * current + ["current"]
    step = view["steps"][current]
    assert step["text"] == "pause 5m" and step["durationSeconds"] == 300
    assert step["startedAt"] is not None
    assert view["commands"]["promote"] is None and view["commands"]["pause"] is None
    assert "not paused" in view["commands"]["resume"] or "Paused" in view["commands"]["resume"]
    assert view["commands"]["retry"] is not None
    assert [c["name"] for c in view["checks"]][:2] == ["error-rate", "p99-latency"]
    assert view["checks"][0]["threshold"] == "> 0.01" and view["checks"][0]["plottable"]


def test_the_history_says_which_revisions_undo_can_go_back_to() -> None:
    sim, spec = canary_v2(ticks=2)
    view = detail(body_of(sim, spec), [], [], sim.now)
    assert [h["revision"] for h in view["history"]] == [sim.status.stable_revision]
    assert view["history"][0]["undoable"] is True


def drain(queue: asyncio.Queue[Message | None]) -> list[Message]:
    """The messages waiting, less the watches' error reports (none here: no watch runs)."""
    messages = []
    while not queue.empty():
        message = queue.get_nowait()
        assert message is not None
        if message != Message("errors", {}):
            messages.append(message)
    return messages


def test_the_hub_makes_each_change_once_and_hands_it_to_the_pages_showing_it() -> None:
    async def scenario() -> None:
        sim, spec = canary_v2(ticks=2)
        body = body_of(sim, spec)
        other = {**body, "metadata": {**body["metadata"], "namespace": "other", "uid": "u2"}}
        hub = Hub(api=None, namespace="")  # type: ignore[arg-type]  # the watches never start
        hub._reset(ROLLOUTS, [body, other])
        lists = [hub.subscribe(None) for _ in range(3)]
        ml_list = hub.subscribe(None, "ml")
        page = hub.subscribe("ml/chat")
        other_page = hub.subscribe("other/chat")
        assert [m.event for m in drain(page.queue)] == ["detail"]
        assert [len(m.data["rows"]) for m in drain(ml_list.queue)] == [1]
        for subscription in [*lists, other_page]:
            drain(subscription.queue)

        hub._apply(ROLLOUT_EVENTS, "ADDED", event("CheckBreached", 40))
        rows = [drain(s.queue) for s in lists]
        assert all(
            r[0].event == "row" and r[0].data["lastEvent"]["reason"] == "CheckBreached"
            for r in rows
        )
        # One row made for every list page: the very same object.
        assert rows[0][0] is rows[1][0] is rows[2][0]
        assert drain(page.queue)[0].data["events"][0]["reason"] == "CheckBreached"
        assert drain(other_page.queue) == []
        assert len(drain(ml_list.queue)) == 1

        hub._apply(ROLLOUTS, "DELETED", body)
        assert drain(lists[0].queue) == [Message("removed", {"key": "ml/chat"})]
        assert drain(page.queue)[0].event == "missing"

    asyncio.run(scenario())


def test_the_hub_records_the_weights_each_time_they_or_the_step_change() -> None:
    async def scenario() -> None:
        sim, spec = canary_v2(ticks=1)
        hub = Hub(api=None, namespace="", now=lambda: T0)  # type: ignore[arg-type]
        hub._reset(ROLLOUTS, [body_of(sim, spec)])
        hub._apply(ROLLOUTS, "MODIFIED", body_of(sim, spec))
        assert len(hub.weights["ml/chat"]) == 1
        sim.run_until("Succeeded")
        hub._apply(ROLLOUTS, "MODIFIED", body_of(sim, spec))
        points = hub.weights["ml/chat"]
        assert len(points) == 2 and points[-1].stable == 100

    asyncio.run(scenario())


def test_a_range_query_renders_the_checks_own_promql_for_the_canary() -> None:
    sim, spec = canary_v2(ticks=2)
    request = series_request(body_of(sim, spec), "p99-latency", T0)
    assert f'revision="{sim.status.canary_revision}"' in request.query
    assert 'namespace="ml"' in request.query
    assert request.address == "http://prometheus.monitoring:9090"
    assert request.key == (
        "ml/chat",
        sim.status.canary_revision,
        "p99-latency",
        sim.status.current_step,
    )
    assert request.fresh_seconds == 15 and request.timeout_seconds == 5
    assert request.end - request.start == 3600


def test_a_builtin_compared_to_stable_plots_the_ratio() -> None:
    sim, spec = canary_v2(ticks=2)
    spec["analysis"]["checks"][0]["compareTo"] = "stable"
    request = series_request(body_of(sim, spec), "error-rate", T0)
    assert request.query.count("vllm:request_success_total") == 4
    assert f'revision="{sim.status.stable_revision}"' in request.query


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda s: s["analysis"].pop("prometheus"), "spec.analysis.prometheus"),
        (lambda s: None, "no check named 'nope'"),
    ],
)
def test_no_series_without_an_address_or_a_check(change: Any, says: str) -> None:
    sim, spec = canary_v2(ticks=2)
    changed = {**spec, "analysis": dict(spec["analysis"])}
    change(changed)
    with pytest.raises(SeriesUnavailable, match=says):
        series_request(body_of(sim, changed), "nope" if "nope" in says else "error-rate", T0)


def request(step: int = 0, fresh: float = 15) -> SeriesRequest:
    return SeriesRequest(
        ("ml/chat", "abc", "p99", step), "http://p", "up", 0, 60, 15, 5, "> 0.1", fresh
    )


def test_plot_data_marks_the_samples_that_breach_the_threshold() -> None:
    answer = {
        "status": "success",
        "data": {"result": [{"values": [[1, "0.05"], [2, "0.2"], [3, "NaN"], [4, "0.1"]]}]},
    }
    data = plot_data(request(), answer)
    assert data["times"] == [1, 2, 3, 4]
    assert data["values"] == [0.05, 0.2, None, 0.1]
    assert data["breaches"] == [None, 0.2, None, None]
    assert data["threshold"] == {"op": ">", "bound": 0.1, "text": "> 0.1"}
    with pytest.raises(SeriesUnavailable, match="bad_data"):
        plot_data(request(), {"status": "error", "error": "bad_data"})


def test_the_cache_queries_once_per_check_and_step_per_interval() -> None:
    clock = [0.0]
    asked: list[SeriesRequest] = []

    def fetch(r: SeriesRequest) -> dict[str, Any]:
        asked.append(r)
        return {"n": len(asked)}

    cache = SeriesCache(fetch, clock=lambda: clock[0])
    assert [cache.get(request()) for _ in range(5)] == [{"n": 1}] * 5
    clock[0] = 14.9
    assert cache.get(request()) == {"n": 1}
    assert cache.get(request(step=1)) == {"n": 2}
    clock[0] = 15.1
    assert cache.get(request()) == {"n": 3}
    assert cache.fetches == len(asked) == 3


def test_pages_asking_for_one_plot_at_once_share_one_query_and_hold_up_no_other() -> None:
    release = threading.Event()
    asked: list[SeriesRequest] = []

    def fetch(r: SeriesRequest) -> dict[str, Any]:
        asked.append(r)
        if r.key[3] == 0:  # step 0's Prometheus is slow
            release.wait(10)
        return {"step": r.key[3]}

    cache = SeriesCache(fetch, clock=lambda: 0.0)
    answers: list[dict[str, Any]] = []
    pages = [
        threading.Thread(target=lambda: answers.append(cache.get(request()))) for _ in range(4)
    ]
    for page in pages:
        page.start()
    assert cache.get(request(step=2)) == {"step": 2}
    release.set()
    for page in pages:
        page.join(10)
    assert answers == [{"step": 0}] * 4
    assert sorted(r.key[3] for r in asked) == [0, 2]


def test_the_history_shows_each_revisions_model_record_and_the_spec_its_card() -> None:
    sim = stable_v1()
    spec = with_model_uri(example_spec(), V2)
    spec["model"]["card"] = {"license": "llama3.2", "parameters": 3_000_000_000}
    sim.apply(spec)
    new = revision_of(parse_spec(spec))
    sim.world.model_records = {
        new: {
            "architecture": "LlamaForCausalLM",
            "parameters": 1234567,
            "quantization": {"method": "gptq", "bits": 4, "groupSize": 64},
            "weights": {"digest": "sha256:abc", "files": 2, "bytes": 1000},
        }
    }
    sim.run_until("Succeeded")
    view = detail(body_of(sim, spec), [], [], sim.now)
    assert view["card"] == "license llama3.2, parameters 3,000,000,000"
    newer, older = view["history"]
    record = dict(newer["record"])
    # The same fields and words as `kubectl modelrollout history --details`.
    assert record["URI"] == V2 and record["Parameters"] == "1,234,567"
    assert record["Quantization"] == "gptq 4-bit group 64"
    assert record["Weights"] == "sha256:abc (2 files, 1,000 bytes)"
    assert record["Card (declared)"] == "license llama3.2, parameters 3,000,000,000"
    assert newer["noRecord"] is None
    assert dict(older["record"])["Server record"] == "none (engine vllm)"


def test_rollback_is_offered_in_the_window_after_a_promotion_and_refused_after_it() -> None:
    sim = stable_v1()
    spec = with_model_uri(example_spec(), V2)
    spec["strategy"]["canary"]["rollbackWindow"] = {"duration": "10m"}
    sim.apply(spec)
    sim.run_until("Succeeded")
    view = detail(body_of(sim, spec), [], [], sim.now)
    window = view["rollbackWindow"]
    assert window is not None and window["revision"] == sim.status.previous_revision
    assert window["model"] == example_spec()["model"]["uri"]
    assert view["commands"]["rollback"] is None
    later = sim.status.previous_scale_down_at
    assert later is not None
    after = detail(body_of(sim, spec), [], [], later + timedelta(seconds=1))
    assert after["commands"]["rollback"] is not None


def test_the_range_query_carries_the_providers_credentials_read_from_its_secrets() -> None:
    sim, spec = canary_v2(ticks=2)
    analysis = {**spec["analysis"]}
    del analysis["prometheus"]
    analysis["provider"] = {
        "type": "prometheus",
        "address": "https://prometheus.monitoring:9090",
        "auth": {"bearerToken": {"secretKeyRef": {"name": "prom", "key": "token"}}},
        "headers": [{"name": "X-Scope-OrgID", "value": "tenant-a"}],
    }
    request = series_request(body_of(sim, {**spec, "analysis": analysis}), "error-rate", T0)
    assert request.address == "https://prometheus.monitoring:9090"
    assert request.provider_path == "spec.analysis.provider"

    class Read:
        def secret(self, ref: SecretKeyRef, field_path: str) -> str:
            assert (ref.name, ref.key) == ("prom", "token")
            return "t0ken\n"

        def config_map(self, ref: ConfigMapKeyRef, field_path: str) -> str:
            raise AssertionError(field_path)

    settings = settings_for(request, Read())
    assert settings.headers == {"X-Scope-OrgID": "tenant-a", "Authorization": "Bearer t0ken"}
    with pytest.raises(
        SeriesUnavailable, match=r"spec\.analysis\.provider\.auth\.bearerToken\.secretKeyRef"
    ):
        settings_for(request, NoReferences())


def test_a_read_only_dashboard_refuses_commands_before_asking_the_api_server() -> None:
    # An API client for an address nothing listens on: a command that reached it would fail
    # with a connection error, not the read-only refusal.
    api = PluginApi(ApiClient(Configuration(host="http://127.0.0.1:9")))
    app = create_app(Target(api, "ml"), "ml", SeriesCache(lambda r: {}), actions=False)

    async def scenario() -> None:
        # ASGITransport runs no lifespan: no watch starts.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as pages:
            assert (await pages.get("/api/config")).json()["actions"] is False
            for command in ("promote", "rollback", "undo"):
                answer = await pages.post(
                    f"/api/rollouts/ml/chat/commands/{command}",
                    headers={COMMAND_HEADER: "1"},
                    json={},
                )
                assert answer.status_code == 403 and answer.json()["detail"] == READ_ONLY

    asyncio.run(scenario())
