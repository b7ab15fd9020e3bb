"""The plugin's refusals are decide()'s own rule: refused exactly where decide() ignores a command.

Every command is tried in every state a rollout can be in, on the real
strategy: decide() with the command and without it; a command acts when the
two decisions differ. `refusal` must say None exactly then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from modelrollout.analysis.assessment import AnalysisVerdict
from modelrollout.engine.commands import COMMANDS
from modelrollout.engine.revision import revision_of
from modelrollout.engine.strategies.canary import decide
from modelrollout.engine.strategies.command_rules import refusal
from modelrollout.engine.strategies.types import Commands
from tests.unit.operator.builders import Rollout, example_spec, with_model_uri

pytestmark = pytest.mark.unit

V2 = "pvc://models/llama-3.2-3b/v1.4"
V3 = "pvc://models/llama-3.2-3b/v1.5"


def canary_spec() -> dict[str, Any]:
    spec = example_spec()
    spec["strategy"]["canary"]["steps"] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}]
    return spec


def blue_green_spec() -> dict[str, Any]:
    spec = example_spec()
    spec["strategy"] = {"blueGreen": {}}  # the preview waits for promote
    return spec


def shadow_spec() -> dict[str, Any]:
    spec = example_spec()
    spec["traffic"]["router"] = "gatewayAPI"
    spec["strategy"] = {"shadow": {"mirrorPercent": 30, "duration": "60s", "then": "promote"}}
    return spec


def started(spec: dict[str, Any]) -> Rollout:
    rollout = Rollout.of(spec)
    rollout.tick()
    rollout.apply(with_model_uri(spec, V2))
    rollout.tick(1)
    return rollout


def stable(spec: dict[str, Any]) -> Rollout:
    rollout = Rollout.of(spec)
    rollout.tick()
    return rollout


def paused_at_step(spec: dict[str, Any]) -> Rollout:
    rollout = started(spec)
    rollout.run_until("Paused", every=1)
    return rollout


def paused_by_user(spec: dict[str, Any]) -> Rollout:
    rollout = started(spec)
    rollout.command(pause=True)
    return rollout


def paused_by_breach(spec: dict[str, Any]) -> Rollout:
    rollout = started(spec)
    rollout.tick(1)
    rollout.world.analysis = AnalysisVerdict.breach("error-rate", "pause", 0.2, "breached")
    rollout.tick(1)
    return rollout


def promoting(spec: dict[str, Any]) -> Rollout:
    rollout = started(spec)
    rollout.world.achieved_canary = 50  # the router lags: promotion waits for it
    # One of the canary's two pods: promotion scales it up first, it does not end at once.
    rollout.world.canary_desired = rollout.world.canary_ready = 1
    rollout.command(promote_full=True)
    return rollout


def rolling_back(spec: dict[str, Any]) -> Rollout:
    rollout = started(spec)
    rollout.tick(1)
    rollout.world.achieved_canary = 20
    rollout.command(abort=True)
    return rollout


def rolled_back(spec: dict[str, Any]) -> Rollout:
    rollout = started(spec)
    rollout.command(abort=True)
    rollout.tick(1)
    return rollout


def rolled_back_then_moved_on(spec: dict[str, Any]) -> Rollout:
    rollout = rolled_back(spec)
    rollout.apply(with_model_uri(spec, V3))
    return rollout


def promoted(spec: dict[str, Any]) -> Rollout:
    """Promoted: a canary keeps its previous stable warm (rollbackWindow), blue-green its
    previous color (scaleDownDelay); a shadow keeps nothing."""
    if "canary" in spec["strategy"]:
        spec["strategy"]["canary"]["rollbackWindow"] = {"duration": "10m"}
    rollout = started(spec)
    rollout.command(promote_full=True)
    rollout.run_until("Succeeded", every=1)
    return rollout


def window_ended(spec: dict[str, Any]) -> Rollout:
    """Promoted, and the moment the kept revision's time is up (not yet ticked)."""
    rollout = promoted(spec)
    if rollout.status.previous_scale_down_at is not None:
        rollout.now = rollout.status.previous_scale_down_at
    return rollout


STATES: dict[str, tuple[Callable[[dict[str, Any]], Rollout], str]] = {
    "stable": (stable, "Succeeded"),
    "progressing": (started, "Progressing"),
    "paused at a step": (paused_at_step, "Paused"),
    "paused by the user": (paused_by_user, "Paused"),
    "paused by a breach": (paused_by_breach, "Paused"),
    "promoting": (promoting, "Promoting"),
    "rolling back": (rolling_back, "RollingBack"),
    "rolled back": (rolled_back, "RolledBack"),
    "rolled back, spec moved on": (rolled_back_then_moved_on, "RolledBack"),
    "promoted, previous revision kept warm": (promoted, "Succeeded"),
    "promoted, the kept revision's time up": (window_ended, "Succeeded"),
}
FLAGS = {command: command.replace("-", "_") for command in COMMANDS}


@pytest.mark.parametrize(
    ("strategy", "state"),
    [
        (strategy, state)
        for strategy in (canary_spec, blue_green_spec, shadow_spec)
        for state in STATES
        # A shadow has no pause step.
        if not (strategy is shadow_spec and state == "paused at a step")
    ],
)
def test_a_command_is_refused_exactly_where_decide_ignores_it(
    strategy: Callable[[], dict[str, Any]], state: str
) -> None:
    build, phase = STATES[state]
    rollout = build(strategy())
    assert rollout.status.phase == phase
    plain = rollout.observations()
    without = decide(rollout.spec, rollout.status, plain)
    for command in COMMANDS:
        obs = replace(plain, commands=replace(Commands(), **{FLAGS[command]: True}))
        acts = decide(rollout.spec, rollout.status, obs) != without
        reason = refusal(command, rollout.status, revision_of(rollout.spec), rollout.now)
        assert (reason is None) == acts, (state, command, reason)
