"""Literal env values kept out of status.history: a hash stands in for each.

status.history[].spec copies a revision's runtime for undo, and whoever can
read a rollout's status could read a token written in runtime.env. So the
copy keeps references (valueFrom, envFrom: they hold no secret) as written,
and for a literal value only `valueHash` (sha256 of the value): enough for
undo to tell whether the value it finds in the current spec is the one that
revision ran with, never enough to read it back. Pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

HASH_PREFIX = "sha256:"


def value_hash(value: str) -> str:
    return HASH_PREFIX + hashlib.sha256(value.encode()).hexdigest()


def _redacted_var(var: Any) -> Any:
    if not isinstance(var, Mapping) or "value" not in var:
        return var
    redacted = {key: item for key, item in var.items() if key != "value"}
    redacted["valueHash"] = value_hash(str(var["value"]))
    return redacted


def redacted_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """`spec` ({model, runtime} as stored in history) with literal env values as hashes."""
    runtime = spec.get("runtime")
    if not isinstance(runtime, Mapping) or not isinstance(runtime.get("env"), list):
        return dict(spec)
    return {
        **spec,
        "runtime": {**runtime, "env": [_redacted_var(var) for var in runtime["env"]]},
    }


def holds_env_values(spec: Mapping[str, Any]) -> bool:
    return redacted_spec(spec) != spec


class UnknownEnvValue(ValueError):
    """A redacted variable whose value the current spec does not hold any more."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def restored_runtime(stored: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The stored runtime with each hashed env value put back from `current`'s env.

    A value is known only when the current runtime has a literal variable of
    that name whose value hashes the same; otherwise UnknownEnvValue names it.
    """
    env = stored.get("env")
    if not isinstance(env, list):
        return dict(stored)
    current_values = {
        var.get("name"): var.get("value", "")
        for var in current.get("env") or []
        if isinstance(var, Mapping) and "valueFrom" not in var
    }
    restored = []
    for var in env:
        if isinstance(var, Mapping) and "valueHash" in var:
            name = str(var.get("name"))
            value = current_values.get(name)
            if value is None or value_hash(str(value)) != var["valueHash"]:
                raise UnknownEnvValue(name)
            var = {**{k: v for k, v in var.items() if k != "valueHash"}, "value": value}
        restored.append(var)
    return {**stored, "env": restored}
