"""The model record of each revision in status.history (pure).

A record starts from what the spec says (URI without credentials, name,
engine, image) when the history entry is written, and takes in what the
revision's own server reported (GET /v1/model-record, an observation the
reconciler fetched off the tick) and the quality gates the rollout measured
on it, whenever they become known. Everything is clipped: a server's answer
is untrusted input and status must stay small.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelrollout.models.status import (
    GateStatus,
    HistoryEntry,
    ModelRecord,
    ModelRolloutStatus,
    RecordCard,
    RecordQuantization,
    RecordWeights,
    RecordZooName,
)
from modelrollout.models.uri import ModelURIError, clip, parse_zoo_name, redact_uri

STRING_LIMIT = 128
MAX_GATES = 16
GATE_MESSAGE_LIMIT = 256


def spec_record(revision_spec: Mapping[str, Any] | None, uri: str) -> ModelRecord:
    """The record of what a revision's spec says (`revision_spec`: its model and runtime)."""
    model = (revision_spec or {}).get("model") or {}
    runtime = (revision_spec or {}).get("runtime") or {}
    card = model.get("card")
    return ModelRecord(
        uri=redact_uri(str(model.get("uri") or uri)),
        name=_text(model.get("name")) or "",
        engine=_text(runtime.get("engine")) or "",
        image=_text(runtime.get("image"), 256) or "",
        zoo=_zoo(str(model.get("uri") or uri)) if model.get("naming") == "zoo" else None,
        declared=RecordCard(
            license=_text(card.get("license"), 64),
            parameters=_count(card.get("parameters")),
            context_length=_count(card.get("contextLength")),
            quantization=_text(card.get("quantization"), 32),
            weights_digest=_text(card.get("weightsDigest"), 80),
        )
        if isinstance(card, Mapping)
        else None,
    )


def _zoo(uri: str) -> RecordZooName | None:
    try:
        name = parse_zoo_name(uri)
    except ModelURIError:
        return None
    return RecordZooName(
        org=clip(name.org, STRING_LIMIT),
        name=clip(name.name, STRING_LIMIT),
        version=clip(name.version, 32),
        quantization=_text(name.quantization, 32),
    )


def with_reported(record: ModelRecord, reported: Mapping[str, Any]) -> ModelRecord:
    """`record` with what the server reported; anything malformed is left out."""
    quantization = reported.get("quantization")
    weights = reported.get("weights")
    return record.model_copy(
        update={
            "reported": True,
            "architecture": _text(reported.get("architecture")),
            "model_type": _text(reported.get("modelType")),
            "parameters": _count(reported.get("parameters")),
            "context_length": _count(reported.get("contextLength")),
            "dtype": _text(reported.get("dtype"), 32),
            "serving_dtype": _text(reported.get("servingDtype"), 32),
            "quantization": RecordQuantization(
                method=_text(quantization.get("method"), 32) or "unknown",
                bits=_count(quantization.get("bits")),
                group_size=_count(quantization.get("groupSize")),
            )
            if isinstance(quantization, Mapping)
            else None,
            "license": _text(reported.get("license"), 64),
            "weights": RecordWeights(
                digest=_text(weights.get("digest"), 80) or "",
                files=_count(weights.get("files")) or 0,
                bytes=_count(weights.get("bytes")) or 0,
            )
            if isinstance(weights, Mapping) and isinstance(weights.get("digest"), str)
            else None,
        }
    )


def with_gates(record: ModelRecord, gates: tuple[GateStatus, ...]) -> ModelRecord:
    bounded = tuple(
        gate.model_copy(
            update={
                "name": clip(gate.name, STRING_LIMIT),
                "threshold": clip(gate.threshold, STRING_LIMIT),
                "message": clip(gate.message, GATE_MESSAGE_LIMIT),
            }
        )
        for gate in gates[:MAX_GATES]
    )
    return record if bounded == record.gates else record.model_copy(update={"gates": bounded})


def fold_records(
    status: ModelRolloutStatus, reported: Mapping[str, Mapping[str, Any]]
) -> ModelRolloutStatus:
    """History entries with the server records (by revision) and gates now known.

    A record already reported is kept (one per revision); the gates of the
    revision they judged replace the entry's. Returns `status` itself when
    nothing changes.
    """
    entries: list[HistoryEntry] = []
    for entry in status.history:
        record = entry.record or spec_record(entry.spec, entry.model)
        server = reported.get(entry.revision)
        if server is not None and not record.reported:
            record = with_reported(record, server)
        if status.gates and status.gates_revision == entry.revision:
            record = with_gates(record, status.gates)
        entries.append(
            entry if record == entry.record else entry.model_copy(update={"record": record})
        )
    history = tuple(entries)
    return status if history == status.history else status.model_copy(update={"history": history})


def wants_report(status: ModelRolloutStatus, revision: str) -> bool:
    """Whether a server record for `revision` is still missing from status."""
    entry = next((e for e in status.history if e.revision == revision), None)
    return entry is None or entry.record is None or not entry.record.reported


def _text(value: object, limit: int = STRING_LIMIT) -> str | None:
    return clip(value, limit) if isinstance(value, str) and value else None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
