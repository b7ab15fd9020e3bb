"""Loading a causal LM and its tokenizer from a model URI."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from modelrollout.models.uri import (
    DEFAULT_PVC_MOUNT_ROOT,
    HubModel,
    ModelURIError,
    parse_model_uri,
    resolve_local_directory,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    max_model_len: int
    eos_token_ids: set[int]
    pad_token_id: int
    # The local directory it was read from; None for a hub model.
    directory: Path | None = None


def _eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (model.generation_config.eos_token_id, model.config.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list):
            ids.update(source)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def load_model(
    uri: str,
    *,
    pvc_mount_root: str | Path = DEFAULT_PVC_MOUNT_ROOT,
    dtype: str = "float32",
    device: str = "auto",
    max_model_len: int | None = None,
) -> LoadedModel:
    """Load the model named by `uri`; raise ModelURIError when it cannot be found."""
    source = parse_model_uri(uri)
    revision: str | None = None
    directory = resolve_local_directory(source, pvc_mount_root)
    if directory is not None:
        if not (directory / "config.json").is_file():
            raise ModelURIError(f"no model at {directory} (from {uri!r}): config.json is missing")
        location = str(directory)
    else:
        assert isinstance(source, HubModel)
        location, revision = source.repo_id, source.revision
    logger.info("loading model from %s (revision %s)", location, revision or "default")
    tokenizer = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
        location, revision=revision
    )
    model = AutoModelForCausalLM.from_pretrained(
        location, revision=revision, dtype=getattr(torch, dtype), attn_implementation="sdpa"
    ).eval()  # type: ignore[no-untyped-call]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    context = int(getattr(model.config, "max_position_embeddings", 0) or tokenizer.model_max_length)
    if max_model_len is not None:
        context = min(context, max_model_len)
    pad_token_id = tokenizer.pad_token_id
    if pad_token_id is None:
        pad_token_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        max_model_len=context,
        eos_token_ids=_eos_token_ids(model, tokenizer),
        pad_token_id=int(pad_token_id),
        directory=directory,
    )
