"""The model record's parts, without a server: URI redaction, card license, quantization,
the weights digest, the size bound."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from modelserve.record import (
    RECORD_LIMIT,
    build_record,
    license_from_card,
    quantization_of,
    redact_uri,
    weights_digest,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("pvc://models/llama-3.2-3b/v1.3-int4-g64", "pvc://models/llama-3.2-3b/v1.3-int4-g64"),
        ("hf://meta-llama/Llama-3.2-3B@0cb88a4f", "hf://meta-llama/Llama-3.2-3B@0cb88a4f"),
        ("file:///models/chat", "file:///models/chat"),
        ("s3://AKIA:s3cr3t@bucket/chat/v2", "s3://bucket/chat/v2"),
        (
            "https://store.example/chat.tar?X-Amz-Signature=abc&X-Amz-Credential=k#frag",
            "https://store.example/chat.tar",
        ),
        ("https://user:token@hub.example:8443/m", "https://hub.example:8443/m"),
    ],
)
def test_uris_lose_their_credentials(uri: str, expected: str) -> None:
    assert redact_uri(uri) == expected


def test_license_comes_from_the_card_front_matter() -> None:
    card = "---\nlicense: apache-2.0\ntags: [chat]\n---\n# Chat\nlicense: not this one\n"
    assert license_from_card(card) == "apache-2.0"
    assert license_from_card("# No front matter\nlicense: mit\n") is None
    assert license_from_card("---\nlicense: [unclosed\n---\n") is None
    assert license_from_card("---\ntags: [a]\n") is None
    assert license_from_card("---\nlicense: " + "x" * 200 + "\n---\n") == "x" * 63 + "…"


def test_quantization_from_config() -> None:
    gptq = {"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 64}}
    assert quantization_of(gptq) == {"method": "gptq", "bits": 4, "groupSize": 64}
    bnb = {"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}
    assert quantization_of(bnb) == {"method": "bitsandbytes", "bits": 4, "groupSize": None}
    assert quantization_of({"model_type": "llama"}) is None


def test_weights_digest_changes_with_any_weight_and_nothing_else(tmp_path: Path) -> None:
    assert weights_digest(tmp_path) is None
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"a" * 10)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"b" * 5)
    (tmp_path / "config.json").write_text("{}")
    first = weights_digest(tmp_path)
    assert first is not None and first["files"] == 2 and first["bytes"] == 15
    listing = "".join(
        f"{name}\0{hashlib.sha256(data).hexdigest()}\n"
        for name, data in (
            ("model-00001-of-00002.safetensors", b"a" * 10),
            ("model-00002-of-00002.safetensors", b"b" * 5),
        )
    )
    assert first["digest"] == "sha256:" + hashlib.sha256(listing.encode()).hexdigest()
    (tmp_path / "config.json").write_text('{"changed": true}')
    assert weights_digest(tmp_path) == first
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"c" * 5)
    changed = weights_digest(tmp_path)
    assert changed is not None and changed["digest"] != first["digest"]


def test_record_of_a_local_quantized_model(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "README.md").write_text("---\nlicense: llama3.2\n---\n")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "torch_dtype": "bfloat16",
        "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128},
        "license": "ignored: the card says it",
    }
    record = build_record(
        uri="s3://key:secret@models/chat?token=t",
        served_model_name="chat",
        config=config,
        parameters=3_212_749_824,
        context_length=8192,
        serving_dtype="float16",
        directory=tmp_path,
    )
    assert record == {
        "uri": "s3://models/chat",
        "servedModelName": "chat",
        "architecture": "LlamaForCausalLM",
        "modelType": "llama",
        "parameters": 3_212_749_824,
        "contextLength": 8192,
        "dtype": "bfloat16",
        "servingDtype": "float16",
        "quantization": {"method": "awq", "bits": 4, "groupSize": 128},
        "license": "llama3.2",
        "weights": {
            "digest": record["weights"]["digest"],
            "files": 1,
            "bytes": 7,
        },
    }
    assert "secret" not in json.dumps(record) and "token" not in json.dumps(record)


def test_a_hub_model_has_no_digest_and_the_config_license() -> None:
    record = build_record(
        uri="hf://org/chat@main",
        served_model_name="chat",
        config={"license": "mit"},
        parameters=1,
        context_length=2048,
        serving_dtype="float32",
        directory=None,
    )
    assert record["weights"] is None and record["license"] == "mit"
    assert record["architecture"] is None and record["quantization"] is None


def test_the_record_is_bounded() -> None:
    long = "x" * 5000
    record = build_record(
        uri="pvc://" + long,
        served_model_name=long,
        config={
            "architectures": [long],
            "model_type": long,
            "torch_dtype": long,
            "license": long,
            "quantization_config": {"quant_method": long, "bits": 4, "group_size": 64},
        },
        parameters=10**12,
        context_length=10**7,
        serving_dtype=long,
        directory=None,
    )
    assert len(json.dumps(record).encode()) < RECORD_LIMIT
