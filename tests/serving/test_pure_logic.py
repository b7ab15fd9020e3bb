"""Pure pieces of the serving side: detokenizer, sampling filters, faults, load generator maths."""

from __future__ import annotations

import pytest

from modelserve.engine.detokenizer import IncrementalDetokenizer
from modelserve.faults import (
    FaultConfigError,
    FaultDecider,
    build_fault_injection,
    fault_injection_switched_on,
)
from modelserve.loadgen import LoadConfig, Target, WeightedPicker, parse_target, percentile
from modelserve.metrics import ServingMetrics, status_class

pytestmark = pytest.mark.unit


class CharDecoder:
    """Token id i decodes to chr(i); 0xFFFD stands for an incomplete byte sequence."""

    def decode(
        self, token_ids: list[int], *, skip_special_tokens: bool, clean_up_tokenization_spaces: bool
    ) -> str:
        return "".join(chr(t) for t in token_ids)


def feed(detokenizer: IncrementalDetokenizer, text: str) -> list[str]:
    deltas = []
    for char in text:
        deltas.append(detokenizer.add_token(ord(char)))
        if detokenizer.stopped:
            break
    return deltas


def test_detokenizer_without_stop_sends_every_character_at_once() -> None:
    detokenizer = IncrementalDetokenizer(CharDecoder(), ())
    assert feed(detokenizer, "hello") == ["h", "e", "l", "l", "o"]
    assert detokenizer.flush() == ""


def test_detokenizer_holds_back_a_possible_stop_and_cuts_before_it() -> None:
    detokenizer = IncrementalDetokenizer(CharDecoder(), ("END",))
    deltas = feed(detokenizer, "abENxEND tail")
    assert detokenizer.stopped
    assert "".join(deltas) == "abENx"
    # Nothing of the stop string was ever sent.
    assert all("END" not in d for d in deltas)


def test_detokenizer_waits_for_an_incomplete_character_and_drops_it_at_the_end_like_vllm() -> None:
    detokenizer = IncrementalDetokenizer(CharDecoder(), ())
    assert detokenizer.add_token(ord("a")) == "a"
    assert detokenizer.add_token(0xFFFD) == ""
    assert detokenizer.flush() == ""


def test_detokenizer_sends_an_invalid_byte_once_text_follows_it() -> None:
    detokenizer = IncrementalDetokenizer(CharDecoder(), ())
    assert detokenizer.add_token(0xFFFD) == ""
    assert detokenizer.add_token(ord("b")) == "\ufffdb"
    assert detokenizer.flush() == ""


def test_fault_parameters_need_the_switch() -> None:
    with pytest.raises(FaultConfigError, match="not switched on"):
        build_fault_injection(switched_on=False, error_rate=0.1)
    with pytest.raises(FaultConfigError):
        build_fault_injection(switched_on=True, error_rate=1.5)
    assert not build_fault_injection(switched_on=False).active
    assert build_fault_injection(switched_on=True, token_delay_s=0.01).active
    assert fault_injection_switched_on(False, {"MODELSERVE_FAULT_INJECTION": "enabled"})
    assert not fault_injection_switched_on(False, {"MODELSERVE_FAULT_INJECTION": "yes"})


def test_fault_error_rate_is_a_fraction_of_requests() -> None:
    decider = FaultDecider(build_fault_injection(switched_on=True, error_rate=0.25, seed=1))
    failures = sum(decider.should_fail() for _ in range(4000))
    assert 800 < failures < 1200
    never = FaultDecider(build_fault_injection(switched_on=True, token_delay_s=0.1))
    assert not any(never.should_fail() for _ in range(100))


def test_metrics_are_exposed_with_vllm_names() -> None:
    from prometheus_client import generate_latest

    metrics = ServingMetrics("chat")
    metrics.count_http_request("POST", "/v1/completions", 503)
    text = generate_latest(metrics.registry).decode()
    for name in (
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        'vllm:request_success_total{engine="0",finished_reason="error",model_name="chat"}',
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        'http_requests_total{handler="/v1/completions",method="POST",status="5xx"} 1.0',
    ):
        assert name in text
    assert "_created" not in text
    assert "# TYPE vllm:num_requests_running gauge" in text
    assert status_class(429) == "4xx"


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 99) == pytest.approx(99.0)


def test_targets_and_weighted_split() -> None:
    assert parse_target("http://a:8000=3") == Target("http://a:8000", 3.0)
    assert parse_target("http://a:8000/") == Target("http://a:8000", 1.0)
    picker = WeightedPicker([Target("a", 3), Target("b", 1), Target("c", 0)])
    picks = [picker.pick().url for _ in range(40)]
    assert picks.count("a") == 30 and picks.count("b") == 10 and "c" not in picks
    # Interleaved, not in blocks.
    assert "b" in picks[:4]


def test_load_config_needs_one_mode_and_a_bound() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        LoadConfig(targets=[Target("a")], model="m", rate=1, concurrency=1, max_requests=1)
    with pytest.raises(ValueError, match="bound"):
        LoadConfig(targets=[Target("a")], model="m", concurrency=1)


def test_top_k_and_top_p_keep_only_the_likely_tokens() -> None:
    import torch

    from modelserve.engine.sampling import filter_top_k_top_p

    logits = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0])

    def kept(filtered: torch.Tensor) -> list[int]:
        return [int(i) for i in torch.isfinite(filtered).nonzero().flatten().tolist()]

    assert kept(filter_top_k_top_p(logits, 2, 1.0)) == [0, 1]
    assert kept(filter_top_k_top_p(logits, -1, 1.0)) == [0, 1, 2, 3, 4]
    # Probabilities ~0.64, 0.24, 0.09, ...: 0.7 needs the first two, 0.5 only the first.
    assert kept(filter_top_k_top_p(logits, -1, 0.7)) == [0, 1]
    assert kept(filter_top_k_top_p(logits, -1, 0.5)) == [0]
