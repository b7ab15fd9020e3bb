"""Which user commands decide() acts on, as the rollout is now: pure.

decide() (canary.py) records every command as handled, whether it acted on
it or not; `kubectl modelrollout` asks `refusal` first, so a command the
operator would swallow is refused with the reason instead. Commands act
only while a canary runs (Progressing or Paused), retry only after a
rollback, rollback only while a promotion keeps the previous revision warm
(no canary, status.previousRevision until previousScaleDownAt):
test_command_rules.py checks this against decide() itself.
"""

from __future__ import annotations

from datetime import datetime

from modelrollout.engine.commands import COMMANDS
from modelrollout.models.status import ACTIVE_CANARY_PHASES, ModelRolloutStatus


def refusal(
    command: str,
    status: ModelRolloutStatus,
    spec_revision: str | None,
    now: datetime | None = None,
) -> str | None:
    """Why decide() would not act on `command` now; None when it will.

    `spec_revision`: the revision of the current spec (None if it does not parse);
    `now`: the time the command arrives (None: a rollback window still open in
    status counts as open).
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
    elif command == "rollback":
        return _rollback_refusal(status, now)
    else:
        return _retry_refusal(status, spec_revision)
    return None


UNDO_INSTEAD = (
    "`undo` sets the spec back to an earlier revision, which then rolls out through the "
    "strategy's steps (a model load)"
)


def _rollback_refusal(status: ModelRolloutStatus, now: datetime | None) -> str | None:
    canary = status.canary_revision
    if canary is not None and status.phase in (*ACTIVE_CANARY_PHASES, "Promoting"):
        return (
            f"canary {canary} is not promoted yet (phase {status.phase}): `abort` moves its "
            "traffic back to stable; rollback is for a promoted revision, within its rollback "
            "window"
        )
    if canary is not None or status.stable_revision is None:
        return f"nothing to roll back: no promotion keeps a revision warm (phase {status.phase})"
    previous, until = status.previous_revision, status.previous_scale_down_at
    if previous is None:
        return (
            "no warm revision: the previous stable revision was scaled down (no rollback "
            f"window open; strategy.canary.rollbackWindow keeps one after a promotion); "
            f"{UNDO_INSTEAD}"
        )
    if now is not None and until is not None and now >= until:
        return (
            f"no warm revision: the rollback window of revision {previous} ended at "
            f"{until:%Y-%m-%d %H:%M:%S}Z and it is being scaled down; {UNDO_INSTEAD}"
        )
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
