"""Parsing model URIs."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelrollout.models.uri import (
    HubModel,
    LocalModel,
    ModelURIError,
    PVCModel,
    parse_model_uri,
    resolve_local_directory,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/models/chat", LocalModel(Path("/models/chat"))),
        ("./tiny", LocalModel(Path("tiny"))),
        ("file:///models/chat%20v1", LocalModel(Path("/models/chat v1"))),
        ("file://localhost/models/chat", LocalModel(Path("/models/chat"))),
        (
            "pvc://models/llama-3.2-3b/v1.3-int4-g64",
            PVCModel("models", "llama-3.2-3b/v1.3-int4-g64"),
        ),
        ("pvc://models", PVCModel("models", "")),
        ("pvc://models/a/", PVCModel("models", "a")),
        ("hf://meta-llama/Llama-3.2-3B@main", HubModel("meta-llama/Llama-3.2-3B", "main")),
        ("hf://gpt2", HubModel("gpt2", None)),
    ],
)
def test_accepted_uris(uri: str, expected: object) -> None:
    assert parse_model_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "s3://bucket/model",
        "file://host/models",
        "file://relative",
        "pvc://Bad_Claim/x",
        "pvc://models/../etc",
        "hf://org/name/extra",
        "hf://org/name@",
        "gs:bucket",
    ],
)
def test_refused_uris_say_why(uri: str) -> None:
    with pytest.raises(ModelURIError, match=r"\S"):
        parse_model_uri(uri)


def test_pvc_resolves_under_the_mount_root() -> None:
    source = parse_model_uri("pvc://models/llama/v1")
    assert resolve_local_directory(source) == Path("/models/models/llama/v1")
    assert resolve_local_directory(source, "/mnt") == Path("/mnt/models/llama/v1")
    assert resolve_local_directory(parse_model_uri("hf://a/b")) is None
