"""The load generator against a real server, splitting traffic between two targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.loadgen import LoadConfig, Target, run_load
from tests.serving.conftest import TINY_MODEL_NAME, ServerProcess

pytestmark = pytest.mark.serving


def test_weighted_split_with_counts_latencies_and_errors(server: ServerProcess) -> None:
    port = server.base_url.rsplit(":", 1)[1]
    stable, canary = server.base_url, f"http://localhost:{port}"
    result = run_load(
        LoadConfig(
            targets=[Target(stable, 3), Target(canary, 1)],
            model=TINY_MODEL_NAME,
            concurrency=4,
            max_requests=12,
            max_tokens=8,
        )
    )
    assert result.requests == 12 and result.ok == 12
    assert result.per_target[stable].requests == 9
    assert result.per_target[canary].requests == 3
    assert result.tokens_per_s > 0
    assert all(o.completion_tokens == 8 for o in result.outcomes)
    ttft, e2e = result.ttft_percentile(50), result.e2e_percentile(99)
    assert ttft is not None and e2e is not None and 0 < ttft <= e2e
    assert "tokens/s" in result.summary()


def test_errors_are_counted_by_status(server: ServerProcess) -> None:
    result = run_load(
        LoadConfig(
            targets=[Target(server.base_url)],
            model="not-this-model",
            rate=50,
            max_requests=5,
            stream=False,
        )
    )
    assert result.ok == 0
    assert result.errors_by_status == {"404": 5}
    assert result.per_target[server.base_url].errors_by_status == {"404": 5}


def test_the_loadgen_command_prints_a_summary(
    server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelserve.cli import main

    code = main(
        ["loadgen", "--target", f"{server.base_url}=1", "--model", TINY_MODEL_NAME,
         "--rate", "20", "--requests", "4", "--max-tokens", "4", "--chat"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "requests: 4 ok: 4" in out
    assert "ttft p50/p90/p95/p99" in out
    assert "e2e  p50/p90/p95/p99" in out


def test_the_loadgen_command_reads_prompts_from_a_file(
    server: ServerProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from modelserve.cli import main

    def loadgen(prompts_file: Path) -> int:
        return main(
            ["loadgen", "--target", server.base_url, "--model", TINY_MODEL_NAME,
             "--rate", "20", "--requests", "3", "--max-tokens", "2",
             "--prompts-file", str(prompts_file)]
        )  # fmt: skip

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Say hello.\n\n  Name a colour.  \n")
    assert loadgen(prompts) == 0
    assert "requests: 3 ok: 3" in capsys.readouterr().out
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    assert loadgen(empty) == 2
    assert f"{empty} holds no prompt" in capsys.readouterr().err
    assert loadgen(tmp_path / "missing.txt") == 2
    assert "--prompts-file" in capsys.readouterr().err
