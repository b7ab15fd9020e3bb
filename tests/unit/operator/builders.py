"""Shared builders for the operator's unit tests: a valid spec and a rollout simulator."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from modelrollout.analysis.assessment import AnalysisVerdict
from modelrollout.analysis.experiment import ExperimentFigures
from modelrollout.analysis.prometheus import PromQL
from modelrollout.analysis.provider import QueryResult
from modelrollout.engine.revision import revision_of
from modelrollout.engine.strategies.canary import decide
from modelrollout.engine.strategies.types import (
    Commands,
    Decision,
    EvaluationResult,
    Observations,
    RevisionObservation,
)
from modelrollout.models import ModelRolloutSpec, ModelRolloutStatus, Weights, parse_spec
from modelrollout.traffic import capabilities_of
from modelrollout.traffic.base import RouterCapabilities

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def example_spec() -> dict[str, Any]:
    """The resource from DESIGN.md, as a user would apply it."""
    return copy.deepcopy(
        {
            "model": {"name": "chat", "uri": "pvc://models/llama-3.2-3b/v1.3-int4-g64"},
            "runtime": {
                "engine": "vllm",
                "image": "vllm/vllm-openai:v0.11.0",
                "args": ["--max-model-len=8192"],
                "replicas": 2,
                "resources": {"limits": {"nvidia.com/gpu": 1}},
                "nodeSelector": {},
                "tolerations": [],
                "startupTimeout": "15m",
            },
            "traffic": {
                "router": "service",
                "gatewayAPI": {"parentRefs": [{"name": "inference-gw"}], "hostnames": []},
            },
            "strategy": {
                "canary": {
                    "steps": [
                        {"setWeight": 5},
                        {"pause": {"duration": "5m"}},
                        {"setWeight": 25},
                        {"analysis": {"duration": "10m"}},
                        {"setWeight": 50},
                    ]
                }
            },
            "analysis": {
                "prometheus": {"address": "http://prometheus.monitoring:9090", "timeout": "5s"},
                "interval": "15s",
                "checks": [
                    {
                        "name": "error-rate",
                        "builtin": "errorRate",
                        "breachWhen": "> 0.01",
                        "for": "3m",
                        "action": "rollback",
                    },
                    {
                        "name": "p99-latency",
                        "query": "histogram_quantile(0.99, sum by (le) (rate("
                        'vllm:e2e_request_latency_seconds_bucket{namespace="{{namespace}}",'
                        'revision="{{canary.revision}}"}[1m])))',
                        "breachWhen": "> 0.1",
                        "for": "5m",
                        "action": "pause",
                    },
                ],
                "alerts": [
                    {
                        "alertname": "ModelHighErrorRate",
                        "matchLabels": {
                            "namespace": "{{namespace}}",
                            "revision": "{{canary.revision}}",
                        },
                        "action": "rollback",
                    }
                ],
                "whenMetricsUnavailable": {"action": "pause", "after": "60s"},
            },
            "progressDeadline": "20m",
            "revisionHistoryLimit": 5,
        }
    )


def with_model_uri(spec: dict[str, Any], uri: str) -> dict[str, Any]:
    changed = copy.deepcopy(spec)
    changed["model"]["uri"] = uri
    return changed


HEALTHY = AnalysisVerdict.healthy()


@dataclass
class FakeProvider(PromQL):
    """Answers PromQL by the first substring of the query it knows; records every query."""

    answers: dict[str, QueryResult] = field(default_factory=dict)
    online: bool = True
    queries: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        PromQL.__init__(self)

    def query(self, promql: str) -> QueryResult:
        self.queries.append(promql)
        for needle, result in self.answers.items():
            if needle in promql:
                return result
        return QueryResult(None, empty=True)

    def is_online(self) -> bool:
        return self.online

    def offline_reason(self) -> str:
        return "metric provider is unreachable"


# What the checks of a canary "bbbb" at 5% beside stable "aaaa" are rendered with.
ANALYSIS_CONTEXT = {
    "namespace": "ml",
    "rollout": "chat",
    "canary.revision": "bbbb",
    "stable.revision": "aaaa",
    "model": "chat",
}
CANARY_AT_5 = ModelRolloutStatus(
    phase="Progressing",
    stable_revision="aaaa",
    canary_revision="bbbb",
    current_step=0,
    weights=Weights(stable=95, canary=5),
)

HEALTHY_ANSWERS = {
    "ALERTS": QueryResult(None, empty=True),
    "vllm:request_success_total": QueryResult(0.001),
    "vllm:e2e_request_latency_seconds": QueryResult(0.05),
}


@dataclass
class World:
    """What the cluster and router report; tests change it between ticks."""

    stable_ready: int = 2
    canary_ready: int = 2
    canary_desired: int = 2
    unschedulable: str | None = None
    # None: the router achieves whatever status asks for, at once.
    achieved_canary: int | None = None
    analysis: AnalysisVerdict = HEALTHY
    capacity_shortfall: str | None = None
    evaluation: EvaluationResult | None = None
    # Ready pods of the revision a promotion keeps warm (status.previousRevision).
    previous_ready: int = 2
    # What each revision's server reported at /v1/model-record, by revision.
    model_records: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The running experiment's groups as the reconciler measured them this tick.
    experiment: ExperimentFigures | None = None


@dataclass
class Rollout:
    """Drives canary.decide tick by tick the way the reconciler does.

    Every tick's status goes through the JSON merge patch and back before the
    next tick, as it would through the API server: all progress must survive.
    """

    spec: ModelRolloutSpec
    status: ModelRolloutStatus = field(default_factory=ModelRolloutStatus)
    now: datetime = T0
    world: World = field(default_factory=World)
    # What the router can do; None: what the spec's router declares, as the reconciler asks.
    router_capabilities: RouterCapabilities | None = None
    # (spec, status before, observations, decision) per tick.
    trace: list[tuple[ModelRolloutSpec, ModelRolloutStatus, Observations, Decision]] = field(
        default_factory=list
    )

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Rollout:
        return cls(parse_spec(spec))

    def apply(self, spec: dict[str, Any]) -> None:
        self.spec = parse_spec(spec)

    def observations(self, commands: Commands | None = None) -> Observations:
        world = self.world
        canary = None
        if self.status.canary_revision is not None:
            canary = RevisionObservation(
                self.status.canary_revision,
                world.canary_desired,
                world.canary_ready,
                world.unschedulable,
            )
        stable = None
        if self.status.stable_revision is not None:
            stable = RevisionObservation(self.status.stable_revision, 2, world.stable_ready)
        previous = None
        if self.status.previous_revision is not None:
            previous = RevisionObservation(self.status.previous_revision, 2, world.previous_ready)
        achieved = (
            world.achieved_canary
            if world.achieved_canary is not None
            else self.status.weights.canary
        )
        return Observations(
            now=self.now,
            spec_revision=revision_of(self.spec),
            generation=1,
            canary=canary,
            stable=stable,
            achieved_weights=(100 - achieved, achieved),
            analysis=world.analysis,
            commands=commands or Commands(),
            capacity_shortfall=world.capacity_shortfall,
            evaluation=world.evaluation,
            router_capabilities=capabilities_of(self.spec.traffic.router)
            if self.router_capabilities is None
            else self.router_capabilities,
            previous=previous,
            model_records=dict(world.model_records),
            experiment=world.experiment,
        )

    def tick(self, after: float = 0, commands: Commands | None = None) -> Decision:
        self.now += timedelta(seconds=after)
        obs = self.observations(commands)
        decision = decide(self.spec, self.status, obs)
        self.trace.append((self.spec, self.status, obs, decision))
        self.status = ModelRolloutStatus.model_validate(decision.status.to_patch())
        return decision

    def command(self, **flags: bool) -> Decision:
        return self.tick(commands=replace(Commands(), **flags))

    def run_until(self, phase: str, every: float = 15, limit: int = 500) -> int:
        """Tick every `every` seconds until `phase`; the number of ticks it took."""
        for count in range(1, limit + 1):
            self.tick(every)
            if self.status.phase == phase:
                return count
        raise AssertionError(f"never reached {phase}; stuck in {self.status.phase}: {self.status}")
