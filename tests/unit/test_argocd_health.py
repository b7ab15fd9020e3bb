"""The Argo CD health check, run by a real Lua interpreter against status fixtures."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

HEALTH_LUA = Path(__file__).resolve().parents[2] / "gitops" / "argocd" / "health.lua"
LUA = shutil.which("lua5.4") or shutil.which("lua")


def lua_literal(value: Any) -> str:
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nil"
    return json.dumps(value)


def health(obj: dict[str, Any], tmp_path: Path) -> tuple[str, str]:
    assert LUA is not None, "a Lua interpreter is needed (scripts/bootstrap.sh installs lua5.4)"
    script = tmp_path / "check.lua"
    script.write_text(
        f"obj = {lua_literal(obj)}\n"
        f"local hs = (function()\n{HEALTH_LUA.read_text()}\nend)()\n"
        'io.write(hs.status .. "|" .. hs.message)\n'
    )
    output = subprocess.run([LUA, str(script)], capture_output=True, text=True, check=True).stdout
    status, message = output.split("|", 1)
    return status, message


def rollout(generation: int = 2, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "chat", "generation": generation}, "status": status}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (rollout(phase="Succeeded", observedGeneration=2), "Healthy"),
        (rollout(phase="Progressing", observedGeneration=2), "Progressing"),
        (rollout(phase="Promoting", observedGeneration=2), "Progressing"),
        (rollout(phase="Paused", observedGeneration=2), "Suspended"),
        (rollout(phase="RollingBack", observedGeneration=2), "Degraded"),
        (rollout(phase="RolledBack", observedGeneration=2), "Degraded"),
        # A spec the operator has not seen yet is never reported on the old status.
        (rollout(phase="Succeeded", observedGeneration=1), "Progressing"),
        ({"metadata": {"name": "chat", "generation": 1}}, "Progressing"),
    ],
)
def test_phase_maps_to_argocd_health(obj: dict[str, Any], expected: str, tmp_path: Path) -> None:
    assert health(obj, tmp_path)[0] == expected


def test_invalid_spec_is_degraded_with_the_field_named(tmp_path: Path) -> None:
    obj = rollout(
        phase="Succeeded",
        observedGeneration=2,
        conditions=[
            {"type": "InvalidSpec", "status": "True", "message": "spec.analysis.interval: bad"}
        ],
    )
    assert health(obj, tmp_path) == ("Degraded", "Invalid spec: spec.analysis.interval: bad")


def test_succeeded_without_available_stable_is_degraded(tmp_path: Path) -> None:
    obj = rollout(
        phase="Succeeded",
        observedGeneration=2,
        conditions=[{"type": "Available", "status": "False", "message": "0/2 stable pods ready"}],
    )
    status, message = health(obj, tmp_path)
    assert status == "Degraded"
    assert "0/2 stable pods ready" in message
