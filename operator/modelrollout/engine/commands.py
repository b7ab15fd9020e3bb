"""User commands (promote, abort, ...) arrive as annotations carrying a nonce.

`kubectl modelrollout promote chat` sets `modelrollout.dev/promote: <nonce>`.
The operator acts on a command when its nonce differs from the one recorded
in `status.handledCommands`, then records it; it never deletes the
annotation, so a restart neither loses nor repeats a command, and the spec is
never written.
"""

from __future__ import annotations

from typing import Any

from modelrollout.kube.labels import ANNOTATION_PREFIX

COMMANDS = ("promote", "promote-full", "abort", "pause", "resume", "retry", "rollback")


def annotation_for(command: str) -> str:
    return f"{ANNOTATION_PREFIX}/{command}"


def pending_commands(annotations: dict[str, str], handled: dict[str, str]) -> dict[str, str]:
    """Commands whose nonce has not been handled yet, with that nonce."""
    pending: dict[str, str] = {}
    for command in COMMANDS:
        nonce = annotations.get(annotation_for(command))
        if nonce and handled.get(command) != nonce:
            pending[command] = nonce
    return pending


def pending_in_body(body: dict[str, Any]) -> dict[str, str]:
    annotations = body.get("metadata", {}).get("annotations") or {}
    handled = (body.get("status") or {}).get("handledCommands") or {}
    return pending_commands(annotations, handled)
