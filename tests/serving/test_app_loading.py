"""The app in-process: nothing is served until the model is loaded and warm."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from modelserve.api.app import create_app, load_engine
from modelserve.config.settings import ServeSettings

pytestmark = pytest.mark.serving


def test_health_and_api_answer_503_until_the_model_is_loaded(tiny_model_dir: Path) -> None:
    async def scenario() -> None:
        app = create_app(ServeSettings(model_uri=str(tiny_model_dir), served_model_name="tiny"))
        state = app.state.serving
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            health = await client.get("/health")
            assert (health.status_code, health.json()) == (503, {"status": "loading"})
            refused = await client.post("/v1/completions", json={"prompt": "Hi"})
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "unavailable"

            await asyncio.to_thread(load_engine, state, asyncio.get_running_loop())
            for _ in range(100):
                if (await client.get("/health")).status_code == 200:
                    break
                await asyncio.sleep(0.01)
            answer = await client.post(
                "/v1/completions", json={"model": "tiny", "prompt": "Hi", "max_tokens": 3}
            )
            assert answer.status_code == 200
            assert answer.json()["usage"]["completion_tokens"] <= 3
            assert state.generator is not None
            state.generator.batcher.stop()

    asyncio.run(scenario())


def test_a_failed_load_keeps_health_at_503_with_the_reason(tmp_path: Path) -> None:
    async def scenario() -> None:
        app = create_app(ServeSettings(model_uri=str(tmp_path), served_model_name="tiny"))
        await asyncio.to_thread(load_engine, app.state.serving, asyncio.get_running_loop())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            health = await client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "failed"
        assert "config.json" in health.json()["error"]

    asyncio.run(scenario())


def test_make_tiny_model_is_reproducible_from_its_seed(tmp_path: Path) -> None:
    from modelserve.cli import main

    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert main(["make-tiny-model", str(tmp_path / name), "--seed", seed]) == 0
    weights = {name: (tmp_path / name / "model.safetensors").read_bytes() for name in "abc"}
    assert weights["a"] == weights["b"] != weights["c"]
    for required in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / required).is_file()
