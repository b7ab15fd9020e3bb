"""`kubectl modelrollout`'s views and verdicts, from rollouts walked by the real canary strategy.

The statuses below come from `canary.decide` driven tick by tick (the unit
tests' simulator), so what the plugin renders and refuses is checked against
what the operator really writes.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from modelrollout.engine.revision import revision_of
from modelrollout.kubectl.cli import build_parser, main
from modelrollout.kubectl.render import (
    STEP_CURRENT,
    STEP_DONE,
    STEP_STOPPED,
    Refused,
    Rollout,
    human_duration,
    recent_events,
    refusal,
    render_get,
    render_history,
    render_history_details,
    render_list,
    timestamp,
    undo_patch,
    undo_target,
)
from modelrollout.models import ModelRolloutStatus, parse_spec
from modelrollout.models.status import CheckStatus
from tests.unit.operator.builders import T0, example_spec, with_model_uri
from tests.unit.operator.builders import Rollout as Simulated

pytestmark = pytest.mark.unit

V2 = "pvc://models/llama-3.2-3b/v1.4"
V3 = "pvc://models/llama-3.2-3b/v1.5"


def body_of(
    sim: Simulated, spec: dict[str, Any], generation: int = 1, seen: int = 1
) -> dict[str, Any]:
    """The ModelRollout as the API server would return it after the simulated ticks."""
    return {
        "apiVersion": "modelrollout.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {
            "name": "chat",
            "namespace": "ml",
            "uid": "uid-1",
            "generation": generation,
            "creationTimestamp": timestamp(T0 - timedelta(hours=1)),
        },
        "spec": spec,
        "status": sim.status.with_observed_generation(seen).to_patch(),
    }


def stable_v1() -> Simulated:
    sim = Simulated.of(example_spec())
    sim.tick()
    return sim


def canary_v2(ticks: int) -> tuple[Simulated, dict[str, Any]]:
    """v1 stable, then `ticks` ticks of a canary of V2 (15 s apart)."""
    sim = stable_v1()
    spec = with_model_uri(example_spec(), V2)
    sim.apply(spec)
    for _ in range(ticks):
        sim.tick(15)
    return sim, spec


def deployment(revision: str, role: str, ready: int, desired: int = 2) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"chat-{revision}",
            "labels": {
                "modelrollout.dev/rollout": "chat",
                "modelrollout.dev/revision": revision,
                "modelrollout.dev/role": role,
            },
        },
        "spec": {"replicas": desired},
        "status": {"readyReplicas": ready},
    }


def event(reason: str, seconds_ago: int, version: int, message: str = "") -> dict[str, Any]:
    at = timestamp(T0 - timedelta(seconds=seconds_ago))
    return {
        "metadata": {"name": f"chat.{version}", "resourceVersion": str(version)},
        "type": "Normal",
        "reason": reason,
        "message": message or reason,
        "lastTimestamp": at,
    }


def step_lines(text: str) -> list[str]:
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("Steps:"))
    return [line for line in lines[start + 1 :] if line.startswith("  ")][:5]


def section(text: str, title: str) -> list[str]:
    lines = text.split("\n")
    start = lines.index(f"{title}:")
    rest = lines[start + 1 :]
    end = next((i for i, line in enumerate(rest) if not line.startswith("  ")), len(rest))
    return rest[:end]


def test_get_marks_done_steps_and_the_current_one_with_its_time() -> None:
    sim, spec = canary_v2(4)  # step 2/5, a 5m pause, 15 s in
    rollout = Rollout.of(body_of(sim, spec))
    assert rollout.status.current_step == 1
    text = render_get(rollout, [], [], sim.now)
    assert step_lines(text) == [
        f"  {STEP_DONE} 1  setWeight 5",
        f"  {STEP_CURRENT} 2  pause 5m   (15s of 5m)",
        "    3  setWeight 25",
        "    4  analysis for 10m",
        "    5  setWeight 50",
    ]
    assert "Phase:       Progressing" in text
    assert "Weights:     stable 95%   canary 5%   mirror 0%" in text


def test_get_shows_why_a_paused_step_waits_and_a_rolled_back_one_where_it_stopped() -> None:
    sim = stable_v1()
    spec = example_spec()
    spec["strategy"]["canary"]["steps"] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}]
    spec = with_model_uri(spec, V2)
    sim.apply(spec)
    sim.run_until("Paused")
    paused = render_get(Rollout.of(body_of(sim, spec)), [], [], sim.now)
    assert "Phase:       Paused (PauseStep)" in paused
    assert (
        step_lines(paused)[1] == f"  {STEP_CURRENT} 2  pause until promoted   (paused: PauseStep)"
    )

    sim.command(abort=True)
    sim.tick(1)
    rolled_back = render_get(Rollout.of(body_of(sim, spec)), [], [], sim.now)
    assert "Phase:       RolledBack" in rolled_back
    assert step_lines(rolled_back)[:2] == [
        f"  {STEP_DONE} 1  setWeight 20",
        f"  {STEP_STOPPED} 2  pause until promoted   (rolled back here)",
    ]


def strategy_v2(strategy: dict[str, Any], router: str = "service") -> tuple[Simulated, Any]:
    """v1 stable under `strategy`, then a new revision V2 started (one tick)."""
    spec = example_spec()
    spec["traffic"]["router"] = router
    spec["strategy"] = strategy
    sim = Simulated.of(spec)
    sim.tick()
    spec = with_model_uri(spec, V2)
    sim.apply(spec)
    sim.tick(1)
    return sim, spec


def test_get_shows_the_steps_blue_green_runs_and_where_it_is() -> None:
    sim, spec = strategy_v2(
        {"blueGreen": {"autoPromotionAfter": "30s", "postPromotionAnalysis": {"duration": "5m"}}}
    )
    sim.tick()  # the preview is ready: autoPromotionAfter counts from here
    sim.tick(10)
    rollout = Rollout.of(body_of(sim, spec))
    assert step_lines(render_get(rollout, [], [], sim.now))[:3] == [
        f"  {STEP_CURRENT} 1  pause 30s   (10s of 30s)",
        "    2  setWeight 100",
        "    3  analysis for 5m",
    ]
    listed = render_list([rollout], sim.now, all_namespaces=False).split("\n")[1].split()
    assert listed[2:4] == ["blueGreen", "1/3"]
    sim.tick(21)  # autoPromotionAfter is up: the switch to the preview
    sim.tick(1)  # the router reports it: the post-promotion window starts
    sim.tick(1)
    assert step_lines(render_get(Rollout.of(body_of(sim, spec)), [], [], sim.now))[:3] == [
        f"  {STEP_DONE} 1  pause 30s",
        f"  {STEP_DONE} 2  setWeight 100",
        f"  {STEP_CURRENT} 3  analysis for 5m   (1s of 5m)",
    ]


def test_get_shows_the_steps_a_shadow_runs_and_where_it_is() -> None:
    sim, spec = strategy_v2(
        {"shadow": {"mirrorPercent": 30, "duration": "60s", "then": "canary"}}, "gatewayAPI"
    )
    sim.tick(20)
    rollout = Rollout.of(body_of(sim, spec))
    assert step_lines(render_get(rollout, [], [], sim.now))[:5] == [
        f"  {STEP_CURRENT} 1  analysis for 60s   (20s of 60s)",
        "    2  setWeight 10",
        "    3  analysis for 60s",
        "    4  setWeight 50",
        "    5  analysis for 60s",
    ]
    listed = render_list([rollout], sim.now, all_namespaces=False).split("\n")[1].split()
    assert listed[2:4] == ["shadow", "1/5"]


def test_get_without_a_canary_marks_no_step() -> None:
    sim = stable_v1()
    text = render_get(Rollout.of(body_of(sim, example_spec())), [], [], sim.now)
    assert "Steps:       (no canary in progress)" in text
    assert STEP_CURRENT not in text and STEP_DONE not in text


def test_get_shows_each_check_value_against_its_threshold_and_state() -> None:
    sim, spec = canary_v2(4)
    breaching = CheckStatus(
        name="p99-latency",
        value=0.25,
        threshold="> 0.1",
        state="Breaching",
        breaching_since=sim.now - timedelta(seconds=40),
        last_evaluated=sim.now,
    )
    passing = CheckStatus(
        name="error-rate",
        value=0.00213,
        threshold="> 0.01",
        state="Passing",
        last_evaluated=sim.now,
    )
    sim.status = sim.status.with_checks((breaching, passing))
    text = render_get(Rollout.of(body_of(sim, spec)), [], [], sim.now)
    rows = [line.split() for line in section(text, "Checks")[1:]]
    # Spec order; the alert not yet evaluated is listed as Pending, not left out.
    assert [row[0] for row in rows] == ["error-rate", "p99-latency", "alert:ModelHighErrorRate"]
    assert rows[0][1:6] == ["0.00213", ">", "0.01", "for", "3m"] and rows[0][6] == "Passing"
    assert rows[1][1:6] == ["0.25", ">", "0.1", "for", "5m"]
    assert rows[1][6:] == ["Breaching", "breaching", "for", "40s"]
    assert rows[2][1:4] == ["-", "firing", "Pending"]


def test_get_shows_revisions_with_their_deployments_and_models() -> None:
    sim, spec = canary_v2(2)
    stable = sim.status.stable_revision
    canary = sim.status.canary_revision
    assert stable and canary
    deployments = [deployment(canary, "canary", 1), deployment(stable, "stable", 2)]
    text = render_get(Rollout.of(body_of(sim, spec)), deployments, [], sim.now)
    rows = [line.split() for line in section(text, "Revisions")]
    assert rows == [
        ["ROLE", "REVISION", "MODEL", "URI", "READY"],
        ["stable", stable, "chat", example_spec()["model"]["uri"], "2/2"],
        ["canary", canary, "chat", V2, "1/2"],
    ]


def test_get_shows_notable_conditions_gates_when_present_and_the_last_eight_events() -> None:
    sim = stable_v1()
    spec = example_spec()
    spec["strategy"]["canary"]["steps"] = [{"pause": {}}]
    sim.apply(with_model_uri(spec, V2))
    sim.run_until("Paused")
    sim.world.stable_ready = 0
    sim.tick(1)
    body = body_of(sim, with_model_uri(spec, V2))
    events = [event(f"Reason{i}", 100 - i, 10 + i) for i in range(10)]
    # Same second: the resourceVersion decides which came later.
    events += [event("Later", 0, 99), event("Earlier", 0, 98)]
    text = render_get(Rollout.of(body), [], events[::-1], sim.now)

    conditions = {line.split()[0]: line.split()[1] for line in section(text, "Conditions")[1:]}
    assert conditions == {"Progressing": "True", "Paused": "True", "Available": "False"}
    assert "Gates:" not in text
    shown = [line.split()[2] for line in section(text, "Events")[1:]]
    assert shown == [f"Reason{i}" for i in range(4, 10)] + ["Earlier", "Later"]

    body["status"]["gates"] = [
        {"name": "agreement", "passed": True, "value": 1.0, "threshold": ">= 0.9", "message": ""},
        {"name": "perplexity", "passed": False, "value": 41.5, "threshold": "<= +3%"},
    ]
    body["status"]["gatesRevision"] = "abc"
    body["status"]["gatesStep"] = 0
    gated = render_get(Rollout.of(body), [], [], sim.now)
    assert [line.split()[:3] for line in section(gated, "Gates")] == [
        ["of", "revision", "abc,"],
        ["NAME", "RESULT", "VALUE"],
        ["agreement", "Passed", "1"],
        ["perplexity", "Failed", "41.5"],
    ]


def test_recent_events_keeps_the_newest_oldest_first() -> None:
    events = [event("A", 30, 1), event("C", 10, 3), event("B", 20, 2)]
    assert [e["reason"] for e in recent_events(events, 2)] == ["B", "C"]


def test_get_shows_a_repeated_event_with_its_count_as_kubectl_describe_does() -> None:
    sim = stable_v1()
    repeated = {
        **event("ScaledOutsideRollout", 20, 2),
        "count": 4,
        "firstTimestamp": timestamp(T0 - timedelta(minutes=5)),
    }
    text = render_get(
        Rollout.of(body_of(sim, example_spec())), [], [event("Once", 30, 1), repeated], T0
    )
    assert [line.split() for line in section(text, "Events")[1:]] == [
        ["30s", "Normal", "Once", "Once"],
        ["20s", "(x4", "over", "5m)", "Normal", "ScaledOutsideRollout", "ScaledOutsideRollout"],
    ]


def test_list_shows_step_weight_and_revisions_per_rollout() -> None:
    sim, spec = canary_v2(6)
    sim.status = sim.status.model_copy(update={"current_step": 2})
    canary = Rollout.of(body_of(sim, spec))
    quiet = Rollout.of(
        {
            **body_of(stable_v1(), example_spec()),
            "metadata": {
                "name": "embed",
                "namespace": "research",
                "generation": 1,
                "creationTimestamp": timestamp(T0 - timedelta(days=3)),
            },
        }
    )
    text = render_list([quiet, canary], sim.now, all_namespaces=False)
    rows = [line.split() for line in text.split("\n")]
    assert rows[0] == ["NAME", "PHASE", "STRATEGY", "STEP", "WEIGHT", "STABLE", "CANARY", "AGE"]
    assert rows[1] == [
        "chat",
        "Progressing",
        "canary",
        "3/5",
        "5%",
        sim.status.stable_revision,
        sim.status.canary_revision,
        "61m",
    ]
    assert rows[2][:5] == ["embed", "Succeeded", "canary", "-", "0%"]
    assert rows[2][6:] == ["-", "3d"]
    everywhere = render_list([quiet, canary], sim.now, all_namespaces=True).split("\n")
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert [line.split()[0] for line in everywhere[1:]] == ["ml", "research"]


def test_history_lists_newest_first() -> None:
    sim, spec = canary_v2(0)
    sim.run_until("Succeeded")
    text = render_history(Rollout.of(body_of(sim, spec)))
    rows = [line.split()[:3] for line in text.split("\n")]
    assert rows == [
        ["REVISION", "MODEL", "OUTCOME"],
        [revision_of(parse_spec(spec)), V2, "Promoted"],
        [revision_of(parse_spec(example_spec())), example_spec()["model"]["uri"], "Promoted"],
    ]


def test_history_details_show_each_revisions_record() -> None:
    sim, spec = canary_v2(0)
    new = revision_of(parse_spec(spec))
    sim.world.model_records = {
        new: {
            "architecture": "LlamaForCausalLM",
            "parameters": 1234567,
            "contextLength": 2048,
            "quantization": {"method": "gptq", "bits": 4, "groupSize": 64},
            "license": "apache-2.0",
            "weights": {"digest": "sha256:abc", "files": 2, "bytes": 1000},
        }
    }
    sim.run_until("Succeeded")
    text = render_history_details(Rollout.of(body_of(sim, spec)))
    newer, older = text.split("\n\n")
    assert newer.startswith(f"Revision {new}: Promoted at ")
    assert f"URI:            {V2}" in newer
    assert "Engine:         vllm" in newer
    assert "Parameters:     1,234,567" in newer
    assert "Quantization:   gptq 4-bit group 64" in newer
    assert "Weights:        sha256:abc (2 files, 1,000 bytes)" in newer
    assert "License:        apache-2.0" in newer
    assert older.startswith(f"Revision {revision_of(parse_spec(example_spec()))}: Promoted")
    assert "Server record:  none (engine vllm)" in older


@pytest.mark.parametrize(
    ("state", "command", "refused_because"),
    [
        ("stable", "promote", "nothing to promote: no canary is progressing (phase Succeeded)"),
        ("stable", "promote-full", "nothing to promote"),
        ("stable", "abort", "nothing to abort"),
        ("stable", "pause", "nothing to pause"),
        ("stable", "resume", "not paused (phase Succeeded)"),
        ("stable", "retry", "nothing to retry"),
        ("progressing", "promote", None),
        ("progressing", "promote-full", None),
        ("progressing", "abort", None),
        ("progressing", "pause", None),
        ("progressing", "resume", "not paused (phase Progressing)"),
        ("progressing", "retry", "nothing to retry"),
        ("paused", "promote", None),
        ("paused", "abort", None),
        ("paused", "pause", "already paused (PauseStep)"),
        ("paused", "resume", None),
        ("promoting", "promote", "is already being promoted"),
        ("promoting", "abort", "too late to abort"),
        ("rolled-back", "abort", "is already rolled back"),
        ("rolled-back", "promote", "nothing to promote"),
        ("rolled-back", "retry", None),
    ],
)
def test_commands_are_refused_where_the_operator_would_ignore_them(
    state: str, command: str, refused_because: str | None
) -> None:
    sim = stable_v1()
    spec = example_spec()
    spec["strategy"]["canary"]["steps"] = [{"setWeight": 20}, {"pause": {}}]
    spec["analysis"] = {}
    canary = with_model_uri(spec, V2)
    if state != "stable":
        sim.apply(canary)
        sim.tick(1)
    if state == "paused":
        sim.run_until("Paused")
    elif state == "promoting":
        sim.run_until("Paused")
        sim.world.achieved_canary = 50  # the router lags: promotion waits for it
        sim.command(promote=True)
        assert sim.status.phase == "Promoting"
    elif state == "rolled-back":
        sim.command(abort=True)
        sim.tick(1)
    reason = refusal(Rollout.of(body_of(sim, canary if state != "stable" else spec)), command)
    if refused_because is None:
        assert reason is None
    else:
        assert reason is not None and refused_because in reason


def test_retry_is_refused_once_the_spec_moved_on_and_stale_status_says_so() -> None:
    sim, spec = canary_v2(2)
    sim.command(abort=True)
    sim.tick(1)
    assert sim.status.phase == "RolledBack"
    moved_on = refusal(Rollout.of(body_of(sim, with_model_uri(spec, V3), generation=3)), "retry")
    assert moved_on is not None
    assert "moved on to revision" in moved_on
    assert "not yet seen generation 3" in moved_on
    reverted = refusal(Rollout.of(body_of(sim, example_spec())), "retry")
    assert reverted is not None and "back on stable revision" in reverted


def test_undo_goes_back_to_the_last_promoted_revision_before_stable() -> None:
    sim, spec = canary_v2(0)
    sim.run_until("Succeeded")
    body = body_of(sim, spec)
    target = undo_target(Rollout.of(body), None)
    v1 = revision_of(parse_spec(example_spec()))
    assert target.revision == v1
    assert target.model == example_spec()["model"]
    assert target.uri == example_spec()["model"]["uri"]
    patch = undo_patch(body, target)
    assert patch == [
        {"op": "test", "path": "/spec/model", "value": spec["model"]},
        {"op": "test", "path": "/spec/runtime", "value": spec["runtime"]},
        {"op": "replace", "path": "/spec/model", "value": target.model},
        {"op": "replace", "path": "/spec/runtime", "value": target.runtime},
    ]
    # What undo writes is exactly the old revision again.
    undone = {**spec, "model": target.model, "runtime": target.runtime}
    assert revision_of(parse_spec(undone)) == v1
    assert undo_target(Rollout.of(body), v1) == target


def test_undo_keeps_the_replicas_an_autoscaler_set() -> None:
    sim, spec = canary_v2(0)
    sim.run_until("Succeeded")
    scaled = {**spec, "runtime": {**spec["runtime"], "replicas": 12}}
    target = undo_target(Rollout.of(body_of(sim, scaled)), None)
    assert target.runtime["replicas"] == 12
    undone = {**scaled, "model": target.model, "runtime": target.runtime}
    assert revision_of(parse_spec(undone)) == revision_of(parse_spec(example_spec()))


def test_undo_refuses_unknown_revisions_and_ones_without_a_stored_spec_naming_the_known() -> None:
    sim, spec = canary_v2(0)
    sim.run_until("Succeeded")
    rollout = Rollout.of(body_of(sim, spec))
    with pytest.raises(
        Refused, match=r"unknown revision nope; revisions in history: \w+ \(Promoted\)"
    ):
        undo_target(rollout, "nope")
    with pytest.raises(Refused, match="already at revision"):
        undo_target(rollout, sim.status.stable_revision)

    first_only = Rollout.of(body_of(stable_v1(), example_spec()))
    with pytest.raises(Refused, match="no promoted revision before stable"):
        undo_target(first_only, None)

    stripped = body_of(sim, spec)
    for entry in stripped["status"]["history"]:
        entry.pop("spec")
    with pytest.raises(Refused, match=r"has no stored spec.*no stored spec"):
        undo_target(Rollout.of(stripped), None)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (119, "119s"),
        (125, "2m5s"),
        (600, "10m"),
        (3 * 3600 + 60, "3h1m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 3600, "3d1h"),
        (40 * 86400, "40d"),
    ],
)
def test_ages_read_like_kubectl(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_status_from_a_newer_operator_still_renders() -> None:
    sim, spec = canary_v2(2)
    body = body_of(sim, spec)
    body["status"]["somethingNew"] = {"x": 1}
    assert "Phase:       Progressing" in render_get(Rollout.of(body), [], [], sim.now)
    assert ModelRolloutStatus.model_validate(body["status"]).phase == "Progressing"


def test_connection_flags_go_before_or_after_the_command_and_usage_errors_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    before = parser.parse_args(["-n", "ml", "--context", "prod", "get", "chat"])
    after = parser.parse_args(["get", "chat", "-n", "ml", "--context", "prod", "--watch"])
    for args in (before, after):
        assert (args.namespace, args.context, args.name) == ("ml", "prod", "chat")
    assert parser.parse_args(["ls", "-A"]).all_namespaces
    assert parser.parse_args(["promote", "chat", "--full"]).full
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate", "chat"])
    assert exited.value.code == 1
    assert "error: argument COMMAND: invalid choice" in capsys.readouterr().err


PLANTED = "hf_planted_token_value"


def with_token(spec: dict[str, Any], value: str) -> dict[str, Any]:
    runtime = {**spec["runtime"], "env": [{"name": "HF_TOKEN", "value": value}, {"name": "X"}]}
    return {**spec, "runtime": runtime}


def promoted_v2_with_token() -> tuple[Simulated, dict[str, Any], dict[str, Any]]:
    """v1 (written with the token) promoted, then v2 (same token) promoted over it."""
    v1 = with_token(example_spec(), PLANTED)
    sim = Simulated.of(v1)
    sim.tick()
    v2 = with_model_uri(v1, V2)
    sim.apply(v2)
    sim.tick(15)
    sim.run_until("Succeeded")
    return sim, v1, v2


def test_history_keeps_a_hash_of_a_literal_env_value_and_undo_puts_the_value_back() -> None:
    sim, v1, v2 = promoted_v2_with_token()
    body = body_of(sim, v2)
    assert PLANTED not in str(body["status"])
    stored = next(e.spec for e in sim.status.history if e.revision == revision_of(parse_spec(v1)))
    assert stored is not None
    assert stored["runtime"]["env"][0]["name"] == "HF_TOKEN"
    assert stored["runtime"]["env"][0]["valueHash"].startswith("sha256:")
    target = undo_target(Rollout.of(body), None)
    # The current spec still holds the value: undo writes it, and so exactly v1 again.
    assert target.runtime["env"] == v1["runtime"]["env"]
    undone = {**v2, "model": target.model, "runtime": target.runtime}
    assert revision_of(parse_spec(undone)) == revision_of(parse_spec(v1))


def test_undo_refuses_naming_the_variable_when_the_current_spec_lost_its_value() -> None:
    sim, _, v2 = promoted_v2_with_token()
    for current in (with_token(v2, "another value"), {**v2, "runtime": example_spec()["runtime"]}):
        with pytest.raises(Refused, match=r"runtime\.env HF_TOKEN .*only as a hash"):
            undo_target(Rollout.of(body_of(sim, current)), None)


def test_in_a_pod_without_a_kubeconfig_the_plugin_uses_the_pods_service_account(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A pod's environment: the API server's address, no kubeconfig anywhere.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    # No ServiceAccount token is mounted on this machine: the in-cluster path says so.
    assert main(["list"]) == 1
    assert "cannot load the pod's ServiceAccount credentials" in capsys.readouterr().err
    # A kubeconfig given by flag is used as ever, in a pod or not.
    assert main(["--kubeconfig", str(tmp_path / "missing"), "list"]) == 1
    assert "cannot load the kubeconfig" in capsys.readouterr().err
