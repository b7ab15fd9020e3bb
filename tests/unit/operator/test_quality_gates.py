"""Quality-gate evaluation steps: the pure decision, the Job and how its result is read."""

from __future__ import annotations

import copy
import json
from typing import Any, Literal

import pytest

from modelrollout.engine.evaluation import (
    build_evaluation_job,
    current_evaluation,
    evaluation_job_name,
    result_of_job,
)
from modelrollout.engine.strategies.bluegreen import steps_strategy
from modelrollout.engine.strategies.types import EvaluationResult
from modelrollout.kube.api import PODS
from modelrollout.kube.cache import Informer
from modelrollout.kube.labels import EVALUATION_LABEL, ROLLOUT_LABEL, STEP_STARTED_ANNOTATION
from modelrollout.kube.workloads import RolloutRef
from modelrollout.models import InvalidSpecError, parse_spec
from modelrollout.models.spec import Toleration
from modelrollout.models.status import GateStatus
from tests.unit.operator.builders import Rollout, example_spec, with_model_uri

pytestmark = pytest.mark.unit

V2 = "pvc://models/llama-3.2-3b/v1.4"
EVALUATION = {"suite": {"configMapName": "chat-gates"}, "timeout": "5m"}
AGREEMENT_PASSED = GateStatus(name="agreement", passed=True, value=1.0, threshold=">= 0.9")
PERPLEXITY_FAILED = GateStatus(
    name="perplexity", passed=False, value=41.2, threshold="<= +3% vs stable", message="+41.2%"
)


def gated_spec() -> dict[str, Any]:
    spec = example_spec()
    spec["strategy"]["canary"]["steps"] = [
        {"setWeight": 0},
        {"evaluation": copy.deepcopy(EVALUATION)},
        {"setWeight": 50},
    ]
    return spec


def at_evaluation() -> Rollout:
    """A canary of V2 running its evaluation step (index 1)."""
    rollout = Rollout.of(gated_spec())
    rollout.tick()
    rollout.apply(with_model_uri(gated_spec(), V2))
    rollout.tick(1)
    rollout.tick(1)
    assert rollout.status.current_step == 1
    rollout.tick(1)
    assert rollout.status.phase == "Progressing"
    assert rollout.status.message.endswith("running")
    return rollout


def result(
    rollout: Rollout,
    outcome: Literal["passed", "failed", "error"],
    gates: tuple[GateStatus, ...] = (),
    step: int = 1,
) -> EvaluationResult:
    revision = rollout.status.canary_revision or ""
    return EvaluationResult(revision, step, outcome, gates, f"{outcome} message")


def test_a_passing_evaluation_completes_the_step_and_records_the_gates() -> None:
    rollout = at_evaluation()
    canary = rollout.status.canary_revision
    rollout.world.evaluation = result(rollout, "passed", (AGREEMENT_PASSED,))
    decision = rollout.tick(5)
    assert rollout.status.current_step == 2
    assert rollout.status.gates == (AGREEMENT_PASSED,)
    assert (rollout.status.gates_revision, rollout.status.gates_step) == (canary, 1)
    assert ("Normal", "GatesPassed") in [(t, r) for t, r, _ in decision.events]
    rollout.world.evaluation = None
    assert rollout.run_until("Succeeded") > 0


def test_a_failed_gate_rolls_back_naming_the_gate() -> None:
    rollout = at_evaluation()
    rollout.world.evaluation = result(rollout, "failed", (AGREEMENT_PASSED, PERPLEXITY_FAILED))
    decision = rollout.tick(5)
    assert decision.rollback_now
    assert rollout.status.phase == "RollingBack"
    assert rollout.status.weights.canary == 0
    progressing = rollout.status.condition("Progressing")
    assert progressing is not None and progressing.reason == "GateFailed"
    assert progressing.message == "quality gates failed: perplexity"
    assert rollout.status.history[0].outcome == "RolledBack"
    assert [g.passed for g in rollout.status.gates] == [True, False]
    rollout.tick(1)
    assert rollout.status.phase == "RolledBack"
    assert rollout.status.gates[1] == PERPLEXITY_FAILED


def test_an_evaluation_error_pauses_and_never_promotes() -> None:
    rollout = at_evaluation()
    rollout.world.evaluation = result(rollout, "error")
    decision = rollout.tick(5)
    assert not decision.rollback_now
    assert rollout.status.phase == "Paused"
    assert rollout.status.pause_reason == "EvaluationError"
    assert "error message" in rollout.status.message
    for _ in range(20):
        rollout.tick(60)
    assert rollout.status.phase == "Paused"
    assert rollout.status.current_step == 1
    # Resuming runs the step again (the reconciler replaces the Job: stepStartedAt moved).
    started = rollout.status.step_started_at
    rollout.world.evaluation = None
    rollout.command(resume=True)
    assert rollout.status.phase == "Progressing"
    assert rollout.status.step_started_at != started
    rollout.tick(1)
    assert rollout.status.message.endswith("running")


def test_a_result_of_another_revision_or_step_is_ignored() -> None:
    rollout = at_evaluation()
    stale = EvaluationResult("0123456789", 1, "passed", (AGREEMENT_PASSED,))
    rollout.world.evaluation = stale
    rollout.tick(5)
    rollout.world.evaluation = result(rollout, "passed", (AGREEMENT_PASSED,), step=0)
    rollout.tick(5)
    assert rollout.status.current_step == 1
    assert rollout.status.phase == "Progressing"
    assert rollout.status.gates == ()


def test_the_evaluation_waits_for_a_ready_canary() -> None:
    rollout = at_evaluation()
    rollout.world.canary_ready = 0
    rollout.world.evaluation = result(rollout, "passed", (AGREEMENT_PASSED,))
    rollout.tick(5)
    assert rollout.status.current_step == 1
    assert "waiting for canary pods" in rollout.status.message


def test_blue_green_evaluates_the_preview_right_before_the_switch() -> None:
    spec = example_spec()
    spec["strategy"] = {
        "blueGreen": {"autoPromotionAfter": "30s", "prePromotionEvaluation": dict(EVALUATION)}
    }
    kinds = [step.kind for step in steps_strategy(parse_spec(spec)).steps]
    assert kinds == ["pause", "evaluation", "setWeight"]


def test_spec_rules_for_evaluation_steps() -> None:
    spec = gated_spec()
    step = parse_spec(spec).canary.steps[1].evaluation
    assert step is not None
    assert (step.suite.key, step.timeout, step.image) == ("suite.yaml", "5m", None)
    spec["strategy"]["canary"]["steps"][1]["setWeight"] = 5
    with pytest.raises(InvalidSpecError, match="exactly one of setWeight, pause, analysis, eval"):
        parse_spec(spec)
    spec = gated_spec()
    spec["strategy"]["canary"]["steps"][1]["evaluation"]["timeout"] = "0s"
    with pytest.raises(InvalidSpecError) as error:
        parse_spec(spec)
    assert error.value.field_path == "spec.strategy.canary.steps[1].evaluation.timeout"
    spec = gated_spec()
    for key in ("../etc/passwd", ".."):
        spec["strategy"]["canary"]["steps"][1]["evaluation"]["suite"]["key"] = key
        with pytest.raises(InvalidSpecError, match="key"):
            parse_spec(spec)
    spec = gated_spec()
    spec["strategy"]["canary"]["steps"][1]["evaluation"]["tolerations"] = [{"effect": "NoSchedule"}]
    with pytest.raises(InvalidSpecError, match="operator Exists") as error:
        parse_spec(spec)
    assert error.value.field_path == "spec.strategy.canary.steps[1].evaluation.tolerations[0]"
    spec = gated_spec()
    spec["strategy"]["canary"]["steps"][1]["evaluation"]["nodeSelector"] = {"-pool": "cpu"}
    with pytest.raises(InvalidSpecError, match="not a label key") as error:
        parse_spec(spec)
    assert error.value.field_path == "spec.strategy.canary.steps[1].evaluation.nodeSelector"


def test_the_job_runs_modelserve_eval_against_both_revisions_without_the_rollout_label() -> None:
    rollout = at_evaluation()
    current = current_evaluation(rollout.spec, rollout.status)
    assert current is not None
    ref = RolloutRef("ml", "chat", "uid-1")
    job = build_evaluation_job(ref, rollout.spec, rollout.status, *current)
    canary, stable = rollout.status.canary_revision, rollout.status.stable_revision
    assert job["metadata"]["name"] == f"chat-eval-{canary}-1"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert job["metadata"]["annotations"][STEP_STARTED_ANNOTATION]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 300
    pod = job["spec"]["template"]
    # The rollout's Service selects every pod with the rollout label: not this one.
    assert ROLLOUT_LABEL not in pod["metadata"]["labels"]
    assert pod["metadata"]["labels"][EVALUATION_LABEL] == "chat"
    container = pod["spec"]["containers"][0]
    assert container["image"] == "vllm/vllm-openai:v0.11.0"
    assert [*container["command"], *container["args"]] == [
        "modelserve", "eval", "--suite", "/suite/suite.yaml",
        "--candidate", f"http://chat-{canary}:8000", "--stable", f"http://chat-{stable}:8000",
        "--model", "chat",
    ]  # fmt: skip
    assert container["terminationMessagePolicy"] == "File"
    assert pod["spec"]["volumes"][0]["configMap"]["name"] == "chat-gates"
    # Unplaced: the serving pods' GPU nodeSelector and tolerations are not the Job's.
    assert "nodeSelector" not in pod["spec"] and "tolerations" not in pod["spec"]


def test_the_job_runs_where_the_evaluation_step_places_it() -> None:
    rollout = at_evaluation()
    current = current_evaluation(rollout.spec, rollout.status)
    assert current is not None
    placed = current[1].model_copy(
        update={
            "node_selector": {"pool": "cpu"},
            "tolerations": [Toleration(key="dedicated", value="eval", effect="NoSchedule")],
        }
    )
    job = build_evaluation_job(
        RolloutRef("ml", "chat", "uid-1"), rollout.spec, rollout.status, current[0], placed
    )
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"pool": "cpu"}
    assert pod_spec["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "eval", "effect": "NoSchedule"}
    ]


def test_the_job_image_is_the_operators_evaluation_image_for_vllm_the_serving_image_for_torch() -> (
    None
):
    rollout = at_evaluation()
    current = current_evaluation(rollout.spec, rollout.status)
    assert current is not None
    ref = RolloutRef("ml", "chat", "uid-1")
    serving = "ghcr.io/modelrollout/serving:0.2.0"

    def image(spec: Any, step: Any) -> str:
        job = build_evaluation_job(ref, spec, rollout.status, current[0], step, serving)
        return str(job["spec"]["template"]["spec"]["containers"][0]["image"])

    # vLLM's image has no modelserve.
    assert image(rollout.spec, current[1]) == serving
    torch = rollout.spec.model_copy(
        update={"runtime": rollout.spec.runtime.model_copy(update={"engine": "torch"})}
    )
    assert image(torch, current[1]) == "vllm/vllm-openai:v0.11.0"
    named = current[1].model_copy(update={"image": "example.com/eval:1"})
    assert image(rollout.spec, named) == "example.com/eval:1"


def test_job_names_stay_dns_labels() -> None:
    name = evaluation_job_name("r" * 52, "0123456789", 31)
    assert len(name) <= 63 and name.endswith("-eval-0123456789-31")


def job(conditions: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "chat-eval-x-1"},
        "spec": {"activeDeadlineSeconds": 300},
        "status": {"conditions": conditions or []},
    }


def pod(exit_code: int, message: str | None) -> dict[str, Any]:
    terminated: dict[str, Any] = {"exitCode": exit_code, "reason": "Error"}
    if message is not None:
        terminated["message"] = message
    return {"status": {"containerStatuses": [{"state": {"terminated": terminated}}]}}


def suite_result(passed: bool, *gates: GateStatus, error: str | None = None) -> str:
    return json.dumps(
        {"passed": passed, "error": error, "omitted": 0, "gates": [g.model_dump() for g in gates]}
    )


@pytest.mark.parametrize(
    ("pods", "conditions", "outcome", "message"),
    [
        ([], None, None, None),
        ([{"status": {"containerStatuses": [{"state": {"running": {}}}]}}], None, None, None),
        ([pod(0, suite_result(True, AGREEMENT_PASSED))], None, "passed", "1 quality gates"),
        (
            [pod(1, suite_result(False, AGREEMENT_PASSED, PERPLEXITY_FAILED))],
            None,
            "failed",
            "perplexity: +41.2%",
        ),
        ([pod(2, suite_result(False, error="stable unreachable"))], None, "error", "unreachable"),
        ([pod(137, None)], None, "error", "no readable result"),
        ([pod(1, "Traceback ...")], None, "error", "no readable result"),
        ([pod(0, suite_result(False, PERPLEXITY_FAILED))], None, "error", "inconsistent"),
        ([], [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}], "error", "300s"),
        ([], [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}], "error", "Job"),
    ],
)
def test_results_are_read_from_the_termination_message(
    pods: list[dict[str, Any]],
    conditions: list[dict[str, str]] | None,
    outcome: str | None,
    message: str | None,
) -> None:
    read = result_of_job(job(conditions), pods, "abc", 1)
    if outcome is None:
        assert read is None
        return
    assert read is not None
    assert (read.revision, read.step, read.outcome) == ("abc", 1, outcome)
    assert message is not None and message in read.message


def test_a_result_survives_the_pod_cache() -> None:
    """The operator reads pods from its watch cache, which keeps only part of each pod."""
    cache = Informer(None, PODS, "ns", lambda namespace, name: None)  # type: ignore[arg-type]
    finished = pod(1, suite_result(False, AGREEMENT_PASSED, PERPLEXITY_FAILED))
    finished["kind"] = "Pod"
    finished["metadata"] = {"name": "chat-eval-x-1-abcde", "namespace": "ns"}
    finished["spec"] = {"containers": [{"name": "eval", "image": "modelserve"}]}
    finished["status"]["containerStatuses"][0]["name"] = "eval"
    cache.apply("MODIFIED", finished)
    read = result_of_job(job(), [cache.get("chat-eval-x-1-abcde")], "abc", 1)
    assert read is not None and read.outcome == "failed"
    assert "perplexity: +41.2%" in read.message
