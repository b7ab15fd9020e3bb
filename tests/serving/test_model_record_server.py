"""GET /v1/model-record against a real `modelserve serve` process on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import pytest
from safetensors import safe_open

from modelserve.record import weights_digest
from tests.serving.conftest import TINY_MODEL_NAME, ServerProcess, metric, scrape

pytestmark = pytest.mark.serving


def test_the_record_says_what_was_loaded(server: ServerProcess, tiny_model_dir: Path) -> None:
    response = httpx.get(server.base_url + "/v1/model-record", timeout=5)
    assert response.status_code == 200
    record = response.json()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as weights:
        names: list[str] = weights.keys()
        parameters = sum(math.prod(weights.get_slice(n).get_shape()) for n in names)
    models = httpx.get(server.base_url + "/v1/models", timeout=5).json()["data"][0]
    assert record == {
        "uri": str(tiny_model_dir),
        "servedModelName": TINY_MODEL_NAME,
        "architecture": config["architectures"][0],
        "modelType": config["model_type"],
        "parameters": parameters,
        "contextLength": models["max_model_len"],
        "dtype": config.get("torch_dtype") or config.get("dtype"),
        "servingDtype": "float32",
        "quantization": None,
        "license": None,
        "weights": weights_digest(tiny_model_dir),
    }
    assert record["weights"]["files"] == 1
    counted = metric(scrape(server.base_url), "http_requests_total", handler="/v1/model-record")
    assert counted >= 1
