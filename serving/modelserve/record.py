"""The model record: what a server loaded, for the revision's history (GET /v1/model-record).

Bounded (every string clipped: under RECORD_LIMIT bytes of JSON) and free of
secrets: the URI loses any user, password, query and fragment (signed URLs
carry their credentials there), and nothing comes from the environment.

    {"uri": str, "servedModelName": str, "architecture": str | null,
     "modelType": str | null, "parameters": int, "contextLength": int,
     "dtype": str | null,              # what the checkpoint declares (config.json)
     "servingDtype": str,              # what the server computes in
     "quantization": {"method": str, "bits": int | null, "groupSize": int | null} | null,
     "license": str | null,            # the model card's front matter, else config.json
     "weights": {"digest": "sha256:...", "files": int, "bytes": int} | null}

`weights.digest` is the SHA-256 of the list of the weight files' names and
SHA-256 digests (sorted by name), so it changes with any weight and with
nothing else; null for a model read from a hub (no local directory).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from modelrollout.models.uri import clip as clip_to
from modelrollout.models.uri import redact_uri

RECORD_LIMIT = 2048
STRING_LIMIT = 128
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_CHUNK = 1 << 20


def clip(text: str, limit: int = STRING_LIMIT) -> str:
    return clip_to(text, limit)


def license_from_card(card: str) -> str | None:
    """The `license` of a Hugging Face model card's YAML front matter, if it has one."""
    lines = card.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    try:
        end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
        metadata = yaml.safe_load("\n".join(lines[1:end]))
    except (StopIteration, yaml.YAMLError):
        return None
    value = metadata.get("license") if isinstance(metadata, dict) else None
    return clip(str(value), 64) if isinstance(value, str | int) else None


def quantization_of(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """Method, bits and group size from config.json's quantization_config (GPTQ, AWQ, ...)."""
    quant = config.get("quantization_config")
    if not isinstance(quant, Mapping):
        return None
    method = quant.get("quant_method") or quant.get("quant_type") or "unknown"
    bits = quant.get("bits") if isinstance(quant.get("bits"), int) else None
    if bits is None and (quant.get("load_in_4bit") or quant.get("load_in_8bit")):
        bits = 4 if quant.get("load_in_4bit") else 8
    group = quant.get("group_size")
    return {
        "method": clip(str(method), 32),
        "bits": bits,
        "groupSize": group if isinstance(group, int) else None,
    }


def weights_digest(directory: Path) -> dict[str, Any] | None:
    """The digest over the weight files in `directory` (top level); None when there are none."""
    files = sorted(
        p for p in directory.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
    )
    if not files:
        return None
    listing = hashlib.sha256()
    total = 0
    for path in files:
        with path.open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
        listing.update(f"{path.name}\0{digest}\n".encode())
        total += path.stat().st_size
    return {"digest": f"sha256:{listing.hexdigest()}", "files": len(files), "bytes": total}


def build_record(
    *,
    uri: str,
    served_model_name: str,
    config: Mapping[str, Any],
    parameters: int,
    context_length: int,
    serving_dtype: str,
    directory: Path | None,
) -> dict[str, Any]:
    """The record of a loaded model (`config`: its config.json as a dict)."""
    architectures = config.get("architectures")
    architecture = architectures[0] if isinstance(architectures, list) and architectures else None
    license_: str | None = None
    weights: dict[str, Any] | None = None
    if directory is not None:
        card = directory / "README.md"
        if card.is_file():
            license_ = license_from_card(card.read_text(errors="replace"))
        weights = weights_digest(directory)
    if license_ is None and isinstance(config.get("license"), str):
        license_ = clip(config["license"], 64)
    declared = config.get("torch_dtype") or config.get("dtype")
    record = {
        "uri": redact_uri(uri),
        "servedModelName": clip(served_model_name),
        "architecture": clip(str(architecture)) if architecture else None,
        "modelType": clip(str(config["model_type"])) if config.get("model_type") else None,
        "parameters": parameters,
        "contextLength": context_length,
        "dtype": clip(str(declared), 32) if declared else None,
        "servingDtype": clip(serving_dtype, 32),
        "quantization": quantization_of(config),
        "license": license_,
        "weights": weights,
    }
    return record
