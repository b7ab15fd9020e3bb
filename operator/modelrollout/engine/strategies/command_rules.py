"""Which user commands decide() acts on, as the rollout is now: pure.

decide() (canary.py) records every command as handled, whether it acted on
it or not; `kubectl modelrollout` asks `refusal` first, so a command the
operator would swallow is refused with the reason instead. Commands act
only while a canary runs (Progressing or Paused), retry only after a
rollback: test_command_rules.py checks this against decide() itself.
"""

from __future__ import annotations

from modelrollout.engine.commands import COMMANDS
from modelrollout.models.status import ACTIVE_CANARY_PHASES, ModelRolloutStatus


def refusal(command: str, status: ModelRolloutStatus, spec_revision: str | None) -> str | None:
    """Why decide() would not act on `command` now; None when it will.

    `spec_revision`: the revision of the current spec (None if it does not parse).
    """
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}")
    phase = status.phase
    canary = status.canary_revision
    running = canary is not None and phase in ACTIVE_CANARY_PHASES
    if command in ("promote", "promote-full"):
        if phase == "Promoting":
            return f"canary {canary} is already being promoted"
        if not running:
            return f"nothing to promote: no canary is progressing (phase {phase})"
    elif command == "abort":
        if phase == "Promoting":
            return (
                f"too late to abort: canary {canary} already takes all traffic and is being "
                "promoted; once it is stable, `undo` rolls the previous revision out again"
            )
        if phase in ("RollingBack", "RolledBack"):
            return f"canary {canary} is already rolled back (phase {phase})"
        if not running:
            return f"nothing to abort: no canary is progressing (phase {phase})"
    elif command == "pause":
        if phase == "Paused":
            return f"already paused ({status.pause_reason or 'no reason given'})"
        if not running:
            return f"nothing to pause: no canary is progressing (phase {phase})"
    elif command == "resume":
        if phase != "Paused" or not running:
            return f"not paused (phase {phase})"
    else:
        return _retry_refusal(status, spec_revision)
    return None


def _retry_refusal(status: ModelRolloutStatus, spec_revision: str | None) -> str | None:
    if status.phase == "RollingBack":
        return "still rolling back: retry once the phase is RolledBack"
    if status.phase != "RolledBack" or status.canary_revision is None:
        return f"nothing to retry: retry restarts a rolled-back canary (phase {status.phase})"
    if spec_revision == status.stable_revision:
        return f"the spec is back on stable revision {spec_revision}: there is no canary to retry"
    if spec_revision != status.canary_revision:
        return (
            f"the spec has moved on to revision {spec_revision}: the operator rolls that out "
            f"without a retry (rolled-back canary: {status.canary_revision})"
        )
    return None
