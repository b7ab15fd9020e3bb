"""Model records in status.history, folded tick by tick (engine/model_record.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from modelrollout.engine.model_record import MAX_GATES, fold_records, wants_report
from modelrollout.engine.record_fetcher import pod_address
from modelrollout.engine.revision import revision_of
from modelrollout.kubectl import render
from modelrollout.models import InvalidSpecError, ModelRolloutStatus, parse_spec
from modelrollout.models.status import GateStatus
from modelrollout.models.uri import parse_zoo_name
from tests.unit.operator.builders import Rollout, example_spec, with_model_uri
from tests.unit.operator.test_quality_gates import at_evaluation, result

pytestmark = pytest.mark.unit

V2 = "pvc://models/llama-3.2-3b/v1.4"


def reported(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "uri": "/models/tiny",
        "servedModelName": "chat",
        "architecture": "LlamaForCausalLM",
        "modelType": "llama",
        "parameters": 1_234_567,
        "contextLength": 2048,
        "dtype": "bfloat16",
        "servingDtype": "float32",
        "quantization": {"method": "gptq", "bits": 4, "groupSize": 64},
        "license": "apache-2.0",
        "weights": {"digest": "sha256:" + "a" * 64, "files": 2, "bytes": 1000},
    }
    record.update(changes)
    return record


def test_first_revision_has_its_spec_record_then_the_servers() -> None:
    spec = example_spec()
    spec["model"]["uri"] = "hf://org/llama@main"
    rollout = Rollout.of(spec)
    rollout.tick()
    first = rollout.status.history[0].record
    assert first is not None
    assert (first.uri, first.name, first.engine, first.image) == (
        "hf://org/llama@main",
        "chat",
        "vllm",
        "vllm/vllm-openai:v0.11.0",
    )
    assert not first.reported
    revision = revision_of(rollout.spec)
    assert wants_report(rollout.status, revision)

    rollout.world.model_records = {revision: reported()}
    rollout.tick(1)
    record = rollout.status.history[0].record
    assert record is not None and record.reported
    assert (record.architecture, record.parameters, record.context_length) == (
        "LlamaForCausalLM",
        1_234_567,
        2048,
    )
    assert record.quantization is not None and record.quantization.bits == 4
    assert record.weights is not None and record.weights.files == 2
    assert record.uri == "hf://org/llama@main"  # the spec's, not the server's path
    assert not wants_report(rollout.status, revision)

    # Folded once: a later report (another pod, a restarted server) changes nothing.
    before = rollout.status
    rollout.world.model_records = {revision: reported(parameters=1)}
    rollout.tick(1)
    assert rollout.status == before


def test_both_revisions_keep_their_records_after_a_promotion() -> None:
    rollout = Rollout.of(example_spec())
    rollout.tick()
    old = revision_of(rollout.spec)
    rollout.world.model_records = {old: reported(parameters=1)}
    rollout.tick(1)
    rollout.apply(with_model_uri(example_spec(), V2))
    new = revision_of(rollout.spec)
    rollout.tick(1)
    assert rollout.status.canary_revision == new
    # The canary's server answered before its history entry exists: kept by the reconciler
    # and folded when the promotion writes the entry.
    rollout.world.model_records = {old: reported(parameters=1), new: reported(parameters=2)}
    rollout.run_until("Succeeded")
    by_revision = {e.revision: e.record for e in rollout.status.history}
    newer, older = by_revision[new], by_revision[old]
    assert newer is not None and older is not None
    assert (newer.parameters, older.parameters) == (2, 1)
    assert newer.uri == V2


def test_gates_measured_on_a_revision_are_attached_to_its_entry() -> None:
    rollout = at_evaluation()
    gate = GateStatus(name="agreement", passed=True, value=0.95, threshold=">= 0.9")
    rollout.world.evaluation = result(rollout, "passed", (gate,))
    canary = rollout.status.canary_revision
    rollout.run_until("Succeeded")
    entry = next(e for e in rollout.status.history if e.revision == canary)
    assert entry.record is not None
    assert [g.name for g in entry.record.gates] == ["agreement"]
    stable_entries = [e for e in rollout.status.history if e.revision != canary]
    assert all(e.record is not None and not e.record.gates for e in stable_entries)


def test_malformed_and_huge_reports_are_bounded() -> None:
    rollout = Rollout.of(example_spec())
    rollout.tick()
    revision = revision_of(rollout.spec)
    huge = reported(
        architecture="A" * 10_000,
        license="L" * 10_000,
        parameters="many",
        contextLength=-1,
        quantization="int4",
        weights={"digest": 5},
        extra={"anything": "x" * 10_000},
    )
    rollout.world.model_records = {revision: huge}
    rollout.tick(1)
    record = rollout.status.history[0].record
    assert record is not None and record.reported
    assert record.architecture is not None and len(record.architecture) == 128
    assert record.license is not None and len(record.license) == 64
    assert (record.parameters, record.context_length) == (None, None)
    assert (record.quantization, record.weights) == (None, None)
    assert len(record.model_dump_json()) < 2048


def test_gates_are_capped_and_clipped() -> None:
    gates = tuple(
        GateStatus(name=f"contains:{i}", passed=False, message="m" * 5000) for i in range(40)
    )
    rollout = Rollout.of(example_spec())
    rollout.tick()
    status = rollout.status.model_copy(
        update={"gates": gates, "gates_revision": rollout.status.stable_revision}
    )
    folded = fold_records(status, {})
    record = folded.history[0].record
    assert record is not None
    assert len(record.gates) == MAX_GATES
    assert all(len(g.message) <= 256 for g in record.gates)
    assert fold_records(folded, {}) is folded


def test_a_status_without_history_is_left_alone() -> None:
    status = ModelRolloutStatus()
    assert fold_records(status, {"x": reported()}) is status


def pod(ready: bool = True, ip: str | None = "10.244.0.7", port: int = 8000) -> dict[str, Any]:
    return {
        "spec": {
            "containers": [{"name": "server", "ports": [{"name": "http", "containerPort": port}]}]
        },
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_the_record_is_fetched_from_a_ready_pods_own_http_port() -> None:
    assert pod_address(pod()) == "10.244.0.7:8000"
    assert pod_address(pod(ip="fd00::7", port=9000)) == "[fd00::7]:9000"
    assert pod_address(pod(ready=False)) is None
    assert pod_address(pod(ip=None)) is None


@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        ("pvc://models/meta/llama-3.2-3b/v1.4-awq", ("meta", "llama-3.2-3b", "1.4", "awq")),
        ("file:///models/acme/chat/2.0", ("acme", "chat", "2.0", None)),
        ("hf://acme/chat-small@v3.1.0-int8", ("acme", "chat-small", "3.1.0", "int8")),
    ],
)
def test_zoo_names_are_parsed_from_each_uri_form(
    uri: str, parts: tuple[str, str, str, str | None]
) -> None:
    name = parse_zoo_name(uri)
    assert (name.org, name.name, name.version, name.quantization) == parts


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("pvc://models/llama-3.2-3b/v1.4", "does not end in ORG/NAME/VERSION"),
        ("pvc://models/Meta/llama/v1", "ORG 'Meta'"),
        ("pvc://models/meta/llama--3b/v1", "NAME 'llama--3b'"),
        ("pvc://models/meta/llama/latest", "'latest' is not VERSION[-QUANT]"),
        ("hf://meta/llama", "needs hf://ORG/NAME@VERSION"),
    ],
)
def test_with_naming_zoo_a_uri_off_the_form_is_refused_naming_the_field(
    uri: str, says: str
) -> None:
    spec = example_spec()
    spec["model"].update(uri=uri, naming="zoo")
    with pytest.raises(InvalidSpecError, match=re.escape(says)) as error:
        parse_spec(spec)
    assert error.value.field_path == "spec.model.uri"
    # Without the opt-in, the same URI is fine.
    del spec["model"]["naming"]
    parse_spec(spec)


def test_the_record_keeps_the_zoo_parts_and_the_declared_card() -> None:
    spec = example_spec()
    spec["model"].update(
        uri="pvc://models/meta/llama-3.2-3b/v1.4-awq",
        naming="zoo",
        card={
            "license": "llama3.2",
            "parameters": 3_210_000_000,
            "contextLength": 131072,
            "quantization": "awq",
            "weightsDigest": "sha256:" + "b" * 64,
        },
    )
    rollout = Rollout.of(spec)
    rollout.tick()
    record = rollout.status.history[0].record
    assert record is not None and record.zoo is not None and record.declared is not None
    assert (record.zoo.org, record.zoo.name, record.zoo.version, record.zoo.quantization) == (
        "meta",
        "llama-3.2-3b",
        "1.4",
        "awq",
    )
    assert record.declared.license == "llama3.2"
    assert record.declared.weights_digest == "sha256:" + "b" * 64
    details = render.render_history_details(
        render.Rollout({"metadata": {"name": "chat"}}, None, rollout.status)
    )
    assert "Zoo name:       meta/llama-3.2-3b version 1.4, awq" in details
    assert "license llama3.2, parameters 3,210,000,000, context 131072" in details
    spec["model"]["card"]["weightsDigest"] = "md5:abc"
    with pytest.raises(InvalidSpecError) as error:
        parse_spec(spec)
    assert error.value.field_path == "spec.model.card.weightsDigest"
