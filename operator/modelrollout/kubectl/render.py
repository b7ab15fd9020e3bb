"""What `kubectl modelrollout` shows and decides: pure functions of the objects it read.

Everything here takes the plain dicts the API server returned (a ModelRollout,
its Deployments, its Events) and the current time, and returns text or a
verdict; cli.py does all the reading and writing. Refusals are the
operator's own rule (engine/strategies/command_rules.py): a command it
would record as handled without acting on it is refused here, with the
reason, instead of being silently swallowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from modelrollout.analysis.assessment import pending_checks
from modelrollout.engine.redaction import UnknownEnvValue, restored_runtime
from modelrollout.engine.revision import SCALE_FIELDS, serving_revision
from modelrollout.engine.strategies.bluegreen import steps_strategy, timed_step_started
from modelrollout.engine.strategies.canary import describe_step
from modelrollout.engine.strategies.command_rules import refusal as command_refusal
from modelrollout.kube.labels import REVISION_LABEL, ROLE_LABEL
from modelrollout.models.durations import parse_duration
from modelrollout.models.spec import CanaryStep, ModelCard, ModelRolloutSpec
from modelrollout.models.status import (
    HistoryEntry,
    ModelRecord,
    ModelRolloutStatus,
    RecordCard,
)

STEP_DONE = "✔"
STEP_CURRENT = "▶"
STEP_STOPPED = "✘"
MAX_EVENTS = 8
# Conditions that say all is well when True: shown only when they are not.
_QUIET_WHEN_TRUE = frozenset({"Available", "TrafficRouted"})
_ROLE_ORDER = {"stable": 0, "canary": 1}


class Refused(Exception):
    """A command that makes no sense for the rollout as it is; the message says why."""


@dataclass(frozen=True)
class Rollout:
    """One ModelRollout body, parsed once for everything below."""

    body: dict[str, Any]
    # None when the spec does not parse; the operator reports why (InvalidSpec).
    spec: ModelRolloutSpec | None
    status: ModelRolloutStatus

    @classmethod
    def of(cls, body: dict[str, Any]) -> Rollout:
        try:
            spec: ModelRolloutSpec | None = ModelRolloutSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            spec = None
        return cls(body, spec, ModelRolloutStatus.model_validate(body.get("status") or {}))

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"].get("namespace", ""))

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation") or 0)

    @property
    def seen_by_operator(self) -> bool:
        return self.status.observed_generation == self.generation

    @property
    def spec_revision(self) -> str | None:
        if self.spec is None:
            return None
        # Deployments unread: a revision an older operator named is known by its status only.
        known = (self.status.stable_revision, self.status.canary_revision)
        return serving_revision(self.spec, {}, known)

    @property
    def strategy(self) -> str:
        if self.spec is None:
            return "-"
        strategy = self.spec.strategy
        for name, value in (
            ("canary", strategy.canary),
            ("blueGreen", strategy.blue_green),
            ("shadow", strategy.shadow),
        ):
            if value is not None:
                return name
        return "-"

    @property
    def steps(self) -> list[CanaryStep]:
        """The steps the operator walks: blue-green's and shadow's are generated ones."""
        if self.spec is None:
            return []
        return list(steps_strategy(self.spec).steps)


# -- time ---------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration: 45s, 3m20s, 25m, 5h10m, 3d4h, 2y10d."""
    total = max(int(seconds), 0)
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        return f"{minutes}m{total % 60}s" if total % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    if days < 365 * 8:
        return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"
    return f"{days // 365}y"


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(since: datetime | None, now: datetime) -> str:
    return human_duration((now - since).total_seconds()) if since is not None else "-"


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- tables -------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], indent: str = "") -> list[str]:
    """Columns as kubectl lays them out: left-aligned, three spaces apart."""
    cells = [list(headers), *([" ".join(cell.split()) or "-" for cell in row] for row in rows)]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return [
        indent
        + "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


# -- get ----------------------------------------------------------------------


def render_get(
    rollout: Rollout,
    deployments: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
    now: datetime,
) -> str:
    """The live view of one rollout; sections have no blank lines, so frames split on one."""
    status = rollout.status
    phase: str = status.phase
    if phase == "Paused" and status.pause_reason:
        phase = f"Paused ({status.pause_reason})"
    lines = [
        f"Name:        {rollout.name}",
        f"Namespace:   {rollout.namespace}",
        f"Phase:       {phase}",
        f"Message:     {status.message or '-'}",
        f"Strategy:    {rollout.strategy}",
    ]
    if not rollout.seen_by_operator:
        lines.append(
            f"Spec:        generation {rollout.generation} not yet seen by the operator "
            f"(it has seen {status.observed_generation or 'none'})"
        )
    lines += _revisions(rollout, deployments)
    lines += _steps(rollout, now)
    weights = status.weights
    lines.append(
        f"Weights:     stable {weights.stable}%   canary {weights.canary}%   "
        f"mirror {weights.mirror}%"
    )
    lines += _rollback_window(status, now)
    lines += _checks(rollout, now)
    lines += _gates(status)
    lines += _conditions(status, now)
    lines += _events(events, now)
    return "\n".join(lines)


def _rollback_window(status: ModelRolloutStatus, now: datetime) -> list[str]:
    until = status.previous_scale_down_at
    if status.previous_revision is None or until is None:
        return []
    left = f"in {human_duration((until - now).total_seconds())}" if until > now else "ending"
    return [
        f"Rollback:    revision {status.previous_revision} kept warm until {timestamp(until)} "
        f"({left}): `kubectl modelrollout rollback` moves all traffic back to it"
    ]


def _model_name(rollout: Rollout, revision: str) -> str:
    if rollout.spec is not None and revision == rollout.spec_revision:
        return rollout.spec.model.name
    for entry in rollout.status.history:
        if entry.revision == revision and entry.spec:
            name = (entry.spec.get("model") or {}).get("name")
            if name:
                return str(name)
    return "-"


def _revisions(rollout: Rollout, deployments: Sequence[dict[str, Any]]) -> list[str]:
    status = rollout.status
    by_revision = {
        d["metadata"]["labels"][REVISION_LABEL]: d
        for d in deployments
        if REVISION_LABEL in (d["metadata"].get("labels") or {})
    }
    uris = {entry.revision: entry.model for entry in reversed(status.history)}
    roles: dict[str, tuple[str, str]] = {}
    if status.stable_revision:
        roles[status.stable_revision] = ("stable", status.stable_model or "")
    if status.canary_revision:
        roles[status.canary_revision] = ("canary", status.canary_model or "")
    for revision, deployment in by_revision.items():
        if revision not in roles:
            # A revision on its way out, e.g. an aborted canary waiting to scale down.
            role = (deployment["metadata"].get("labels") or {}).get(ROLE_LABEL, "-")
            roles[revision] = (str(role), uris.get(revision, ""))
    if not roles:
        return ["Revisions:   none yet"]
    rows = []
    for revision, (role, uri) in sorted(
        roles.items(), key=lambda item: (_ROLE_ORDER.get(item[1][0], 2), item[0])
    ):
        ready = "-"
        if revision in by_revision:
            deployment = by_revision[revision]
            desired = int((deployment.get("spec") or {}).get("replicas") or 0)
            available = int((deployment.get("status") or {}).get("readyReplicas") or 0)
            ready = f"{available}/{desired}"
        rows.append([role, revision, _model_name(rollout, revision), uri, ready])
    return ["Revisions:", *table(["ROLE", "REVISION", "MODEL", "URI", "READY"], rows, "  ")]


def _steps(rollout: Rollout, now: datetime) -> list[str]:
    steps = rollout.steps
    if not steps:
        return []
    status = rollout.status
    current = status.current_step
    active = status.canary_revision is not None and current is not None
    lines = ["Steps:" if active else "Steps:       (no canary in progress)"]
    width = len(str(len(steps)))
    started = (
        status.step_started_at if rollout.spec is None else timed_step_started(rollout.spec, status)
    )
    for index, step in enumerate(steps):
        mark, note = " ", ""
        if active and current is not None:
            if index < current:
                mark = STEP_DONE
            elif index == current:
                if status.phase in ("RollingBack", "RolledBack"):
                    mark, note = STEP_STOPPED, "   (rolled back here)"
                else:
                    mark, note = STEP_CURRENT, _current_step_note(step, status, started, now)
        lines.append(f"  {mark} {index + 1:>{width}}  {describe_step(step)}{note}")
    return lines


def _current_step_note(
    step: CanaryStep, status: ModelRolloutStatus, started: datetime | None, now: datetime
) -> str:
    if status.phase == "Paused":
        return f"   (paused: {status.pause_reason})" if status.pause_reason else "   (paused)"
    duration = step.pause.duration if step.pause is not None else None
    if step.analysis is not None:
        duration = step.analysis.duration
    if duration is None or started is None:
        return ""
    elapsed = min((now - started).total_seconds(), parse_duration(duration))
    return f"   ({human_duration(elapsed)} of {duration})"


def _checks(rollout: Rollout, now: datetime) -> list[str]:
    status = rollout.status
    expected = pending_checks(rollout.spec.analysis) if rollout.spec is not None else ()
    holds = {c.name: c.for_ for c in rollout.spec.analysis.checks} if rollout.spec else {}
    by_name = {check.name: check for check in status.checks}
    # Spec order first (not yet evaluated ones too), then any the spec no longer has.
    declared = {c.name for c in expected}
    checks = [by_name.get(c.name, c) for c in expected]
    checks += [c for c in status.checks if c.name not in declared]
    if not checks:
        return []
    rows: list[list[str]] = []
    for check in checks:
        threshold = check.threshold or "-"
        hold = holds.get(check.name)
        if hold and parse_duration(hold) > 0:
            threshold += f" for {hold}"
        detail = check.message
        if check.state in ("Breaching", "Breached") and check.breaching_since is not None:
            detail = f"breaching for {age(check.breaching_since, now)}"
        elif check.state == "Unavailable" and check.unavailable_since is not None:
            detail = f"no data for {age(check.unavailable_since, now)}: {check.message}"
        rows.append([check.name, _number(check.value), threshold, check.state, detail])
    return ["Checks:", *table(["NAME", "VALUE", "BREACH WHEN", "STATE", "DETAIL"], rows, "  ")]


def _gates(status: ModelRolloutStatus) -> list[str]:
    if not status.gates:
        return []
    rows = [
        [
            gate.name,
            "Passed" if gate.passed else "Failed",
            _number(gate.value),
            gate.threshold or "-",
            gate.message,
        ]
        for gate in status.gates
    ]
    step = "" if status.gates_step is None else f", step {status.gates_step + 1}"
    return [
        "Gates:",
        f"  of revision {status.gates_revision or '-'}{step}",
        *table(["NAME", "RESULT", "VALUE", "THRESHOLD", "MESSAGE"], rows, "  "),
    ]


def _conditions(status: ModelRolloutStatus, now: datetime) -> list[str]:
    notable = [c for c in status.conditions if (c.status == "True") != (c.type in _QUIET_WHEN_TRUE)]
    if not notable:
        return []
    rows = [
        [c.type, c.status, c.reason, age(c.last_transition_time, now), c.message] for c in notable
    ]
    return [
        "Conditions:",
        *table(["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], rows, "  "),
    ]


def event_time(event: dict[str, Any]) -> datetime | None:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        moment = parse_time(event.get(key))
        if moment is not None:
            return moment
    return parse_time((event.get("metadata") or {}).get("creationTimestamp"))


def recent_events(
    events: Iterable[dict[str, Any]], limit: int = MAX_EVENTS
) -> list[dict[str, Any]]:
    """The newest `limit` events, oldest first."""

    def order(event: dict[str, Any]) -> tuple[datetime, int]:
        # Timestamps have whole seconds; the resourceVersion orders events within one.
        version = str((event.get("metadata") or {}).get("resourceVersion", ""))
        moment = event_time(event) or datetime.min.replace(tzinfo=UTC)
        return moment, int(version) if version.isdigit() else 0

    return sorted(events, key=order)[-limit:] if limit > 0 else []


def _event_age(event: dict[str, Any], now: datetime) -> str:
    """As `kubectl describe` shows an Event that occurred more than once: `2m (x3 over 10m)`."""
    last = age(event_time(event), now)
    count = event.get("count")
    first = parse_time(event.get("firstTimestamp"))
    if not isinstance(count, int) or count < 2 or first is None:
        return last
    return f"{last} (x{count} over {age(first, now)})"


def _events(events: Sequence[dict[str, Any]], now: datetime) -> list[str]:
    recent = recent_events(events)
    if not recent:
        return []
    rows = [
        [
            _event_age(event, now),
            str(event.get("type", "")),
            str(event.get("reason", "")),
            str(event.get("message", "")),
        ]
        for event in recent
    ]
    return ["Events:", *table(["AGE", "TYPE", "REASON", "MESSAGE"], rows, "  ")]


# -- list and history -----------------------------------------------------------


def step_progress(rollout: Rollout) -> str:
    """`3/7` while a canary walks its steps (or stopped at one); `-` otherwise."""
    steps = rollout.steps
    current = rollout.status.current_step
    if not steps or current is None or rollout.status.canary_revision is None:
        return "-"
    return f"{min(current + 1, len(steps))}/{len(steps)}"


def render_list(rollouts: Sequence[Rollout], now: datetime, all_namespaces: bool) -> str:
    headers = ["NAME", "PHASE", "STRATEGY", "STEP", "WEIGHT", "STABLE", "CANARY", "AGE"]
    rows = []
    for rollout in sorted(rollouts, key=lambda r: (r.namespace, r.name)):
        status = rollout.status
        created = parse_time(rollout.body["metadata"].get("creationTimestamp"))
        row = [
            rollout.name,
            status.phase,
            rollout.strategy,
            step_progress(rollout),
            f"{status.weights.canary}%",
            status.stable_revision or "-",
            status.canary_revision or "-",
            age(created, now),
        ]
        rows.append([rollout.namespace, *row] if all_namespaces else row)
    return "\n".join(table(["NAMESPACE", *headers] if all_namespaces else headers, rows))


def render_history(rollout: Rollout) -> str:
    """status.history, newest first (sorting keeps the operator's order within one instant)."""
    entries = sorted(rollout.status.history, key=lambda entry: entry.at, reverse=True)
    rows = [
        [entry.revision, entry.model, entry.outcome, timestamp(entry.at), entry.reason]
        for entry in entries
    ]
    return "\n".join(table(["REVISION", "MODEL", "OUTCOME", "AT", "REASON"], rows))


def render_history_details(rollout: Rollout) -> str:
    """Each revision of status.history with its model record, newest first."""
    entries = sorted(rollout.status.history, key=lambda entry: entry.at, reverse=True)
    return "\n\n".join(_entry_details(entry) for entry in entries)


def _entry_details(entry: HistoryEntry) -> str:
    lines = [
        f"Revision {entry.revision}: {entry.outcome} at {timestamp(entry.at)}"
        + (f" ({entry.reason})" if entry.reason else "")
    ]
    record = entry.record
    if record is None:
        lines.append(f"  ({NO_RECORD})")
        return "\n".join(lines)
    lines += [f"  {label + ':':<16}{value}" for label, value in record_fields(record)]
    if record.gates:
        lines.append("  Quality gates:")
        lines += [f"    {gate}" for gate in record_gates(record)]
    return "\n".join(lines)


NO_RECORD = "no model record: written by an operator that did not keep one"


def record_fields(record: ModelRecord) -> list[tuple[str, str]]:
    """A revision's model record as (label, text) pairs: `history --details` and the dashboard."""
    fields: list[tuple[str, object]] = [
        ("URI", record.uri),
        ("Name", record.name),
        ("Engine", record.engine),
        ("Image", record.image),
    ]
    if record.reported:
        quant = record.quantization
        weights = record.weights
        fields += [
            ("Architecture", record.architecture),
            ("Model type", record.model_type),
            ("Parameters", f"{record.parameters:,}" if record.parameters is not None else None),
            ("Context length", record.context_length),
            ("Dtype", record.dtype),
            ("Serving dtype", record.serving_dtype),
            (
                "Quantization",
                " ".join(
                    part
                    for part in (
                        quant.method,
                        f"{quant.bits}-bit" if quant.bits else "",
                        f"group {quant.group_size}" if quant.group_size else "",
                    )
                    if part
                )
                if quant
                else "none",
            ),
            ("License", record.license),
            (
                "Weights",
                f"{weights.digest} ({weights.files} files, {weights.bytes:,} bytes)"
                if weights
                else None,
            ),
        ]
    else:
        server = "the server's record not fetched yet" if record.engine == "torch" else None
        fields.append(("Server record", server or f"none (engine {record.engine or '?'})"))
    if record.zoo is not None:
        zoo = record.zoo
        fields.append(
            (
                "Zoo name",
                f"{zoo.org}/{zoo.name} version {zoo.version}"
                + (f", {zoo.quantization}" if zoo.quantization else ""),
            )
        )
    if record.declared is not None:
        fields.append(("Card (declared)", card_text(record.declared)))
    return [(label, "-" if value in (None, "") else str(value)) for label, value in fields]


def card_text(card: RecordCard | ModelCard) -> str:
    """A declared model card (spec.model.card, or its copy in a record) in one line."""
    declared = {
        "license": card.license,
        "parameters": f"{card.parameters:,}" if card.parameters is not None else None,
        "context": card.context_length,
        "quantization": card.quantization,
        "weights": card.weights_digest,
    }
    return ", ".join(f"{key} {value}" for key, value in declared.items() if value is not None)


def record_gates(record: ModelRecord) -> list[str]:
    """The quality gates a record keeps, one line each."""
    lines = []
    for gate in record.gates:
        value = f" {gate.value:g}" if gate.value is not None else ""
        verdict = "passed" if gate.passed else "FAILED"
        threshold = f" (wants {gate.threshold})" if gate.threshold else ""
        lines.append(f"{gate.name}: {verdict}{value}{threshold}")
    return lines


# -- commands -------------------------------------------------------------------


def refusal(rollout: Rollout, command: str, now: datetime | None = None) -> str | None:
    """Why `command` would do nothing now, or None when the operator will act on it."""
    reason = command_refusal(command, rollout.status, rollout.spec_revision, now)
    if reason is not None and not rollout.seen_by_operator:
        reason += (
            f" (the operator has not yet seen generation {rollout.generation}; "
            "try again in a moment)"
        )
    return reason


@dataclass(frozen=True)
class UndoTarget:
    revision: str
    model: dict[str, Any]
    runtime: dict[str, Any]

    @property
    def uri(self) -> str:
        return str(self.model.get("uri", ""))


def _known(history: Sequence[HistoryEntry]) -> str:
    if not history:
        return "the history is empty"
    listed = ", ".join(
        f"{e.revision} ({e.outcome}{'' if e.spec else ', no stored spec'})" for e in history
    )
    return f"revisions in history: {listed}"


def undo_target(rollout: Rollout, to_revision: str | None) -> UndoTarget:
    """The revision `undo` goes back to: `to_revision`, else the last promoted one before stable.

    Raises Refused naming the revisions there are when that revision is
    unknown, has no stored spec, or is what the spec says already.
    """
    status = rollout.status
    history = status.history
    if to_revision is not None:
        candidates = [e for e in history if e.revision == to_revision]
        if not candidates:
            raise Refused(f"unknown revision {to_revision}; {_known(history)}")
    else:
        candidates = [
            e for e in history if e.outcome == "Promoted" and e.revision != status.stable_revision
        ]
        if not candidates:
            raise Refused(
                f"no promoted revision before stable {status.stable_revision} to go back to; "
                f"{_known(history)}"
            )
        candidates = [e for e in candidates if e.revision == candidates[0].revision]
    entry = next((e for e in candidates if e.spec), None)
    if entry is None or entry.spec is None:
        raise Refused(
            f"revision {candidates[0].revision} has no stored spec (recorded by an operator "
            f"without undo support, or superseded before it was recorded); {_known(history)}"
        )
    model, runtime = entry.spec.get("model"), entry.spec.get("runtime")
    if not isinstance(model, dict) or not isinstance(runtime, dict):
        raise Refused(f"the stored spec of revision {entry.revision} lacks model or runtime")
    if entry.revision == rollout.spec_revision:
        raise Refused(f"the spec is already at revision {entry.revision}")
    current = (rollout.body.get("spec") or {}).get("runtime") or {}
    # How many pods serve is not part of a revision (an HPA may own it): undo keeps it.
    runtime = {key: value for key, value in runtime.items() if key not in SCALE_FIELDS}
    runtime.update((key, current[key]) for key in SCALE_FIELDS if key in current)
    try:
        runtime = restored_runtime(runtime, current)
    except UnknownEnvValue as unknown:
        # History keeps only a hash of a literal value: writing that back would change the value.
        raise Refused(
            f"revision {entry.revision} ran with a value of runtime.env {unknown.name} that status "
            f"keeps only as a hash, and the current spec has another value (or none): set "
            f"{unknown.name} in spec.runtime.env to that value, or read it from a Secret with "
            f"valueFrom, then run undo again"
        ) from None
    return UndoTarget(entry.revision, model, runtime)


def undo_patch(body: dict[str, Any], target: UndoTarget) -> list[dict[str, Any]]:
    """A JSON patch putting `target`'s model and runtime back, whole.

    A merge patch would keep fields added since that revision (and so make a
    different revision). The `test` operations make the patch fail, rather
    than overwrite, when someone changed the spec since it was read.
    """
    spec = body.get("spec") or {}
    return [
        {"op": "test", "path": "/spec/model", "value": spec.get("model")},
        {"op": "test", "path": "/spec/runtime", "value": spec.get("runtime")},
        {"op": "replace", "path": "/spec/model", "value": target.model},
        {"op": "replace", "path": "/spec/runtime", "value": target.runtime},
    ]
