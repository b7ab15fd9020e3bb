"""Notifications, pure parts: derived from ticks, filtered, templated, shaped per sink.

The tick-level tests drive the Reconciler on the in-memory API server
(test_reconciler_ticks.py's Cluster) with a recording `notify` and compare
what it was handed with the Events the same ticks posted.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import yaml

from modelrollout.analysis.provider import QueryResult
from modelrollout.engine.notifications import Notification
from modelrollout.engine.reconciler import Reconciler
from modelrollout.kube.api import SECRETS, KubeApiError, Resource
from modelrollout.kube.events import EVENTS
from modelrollout.kube.workloads import RolloutRef
from modelrollout.models import InvalidSpecError, parse_spec
from modelrollout.models.notifications import NOTIFICATION_EVENTS, SinkType
from modelrollout.models.spec import Notifications
from modelrollout.notify.config import (
    NAMESPACE_DEFAULT_KEY,
    NAMESPACE_DEFAULT_SECRET,
    SinkResolver,
    resolve,
)
from modelrollout.notify.policy import RetryPolicy, outcome
from modelrollout.notify.sinks import SINKS
from modelrollout.notify.sinks.base import SinkCapability, render
from modelrollout.notify.templates import DEFAULT_TEMPLATE, TEMPLATE_VARIABLES, template_problem
from tests.support.fake_kube import FakeKubeApi
from tests.unit.operator.builders import T0
from tests.unit.operator.test_reconciler_ticks import (
    FIRING,
    NAME,
    NAMESPACE,
    V2,
    Cluster,
    canary_spec,
    revision,
)

pytestmark = pytest.mark.unit


@dataclass
class NotifiedCluster(Cluster):
    """The Cluster of test_reconciler_ticks.py, its Reconciler handing notifications here."""

    told: list[Notification] = field(default_factory=list)

    def replica(self) -> Reconciler:
        return Reconciler(
            self.api,
            clock=lambda: self.now,
            provider_factory=lambda spec: self.provider,
            notify=lambda rollout, configured, found: self.told.extend(found),
        )

    def kinds(self) -> list[str]:
        return [n.kind for n in self.told]


def tick_events(cluster: Cluster) -> list[str]:
    return [w.body["message"] for w in cluster.api.writes if w.resource == EVENTS]


def test_a_promoted_canary_notifies_start_each_step_and_promotion_in_order() -> None:
    cluster = NotifiedCluster()
    spec = canary_spec()
    cluster.apply(spec)
    cluster.tick()
    cluster.settle()
    cluster.tick()
    # The first revision's start says nothing: no canary was rolled out.
    assert cluster.told == []
    cluster.apply({**spec, "model": {**spec["model"], "uri": V2}})
    messages: list[str] = []
    for _ in range(100):
        cluster.tick(15)
        messages += tick_events(cluster)
        cluster.settle()
        if cluster.status.phase == "Succeeded":
            break
    canary = revision(V2, spec)
    assert cluster.kinds() == [
        "Started",
        "StepAdvanced",
        "StepAdvanced",
        "StepAdvanced",
        "Promoted",
    ]
    # Each notification's message is in the Event its tick posted.
    for notification in cluster.told:
        assert any(notification.message in message for message in messages), notification
    started, *_, promoted = cluster.told
    assert started.canary_revision == canary and started.step == 1 and started.steps == 4
    assert [n.step for n in cluster.told[1:4]] == [2, 3, 4]
    assert promoted.stable_revision == canary and promoted.phase == "Succeeded"
    assert {n.uid for n in cluster.told} == {cluster.body()["metadata"]["uid"]}


def test_a_breach_notifies_the_breach_then_the_rollback_with_the_check_and_value() -> None:
    cluster = NotifiedCluster()
    spec = canary_spec()
    cluster.started(spec)
    cluster.run_until_step(3)
    cluster.told.clear()
    cluster.provider.answers["ALERTS"] = FIRING
    cluster.tick(15)
    breach, rolled_back = cluster.told
    assert breach.kind == "Breach" and breach.check is not None
    assert (breach.check.name, breach.check.value) == ("alert:ModelHighErrorRate", 1.0)
    assert rolled_back.kind == "RolledBack" and rolled_back.severity == "critical"
    assert rolled_back.reason == "CheckBreached"
    assert rolled_back.check == breach.check
    assert rolled_back.phase == "RollingBack" and rolled_back.canary_weight == 0
    # The router reaching 0 is an Event (RolledBack), not a second notification.
    cluster.run_until_phase("RolledBack")
    assert cluster.kinds() == ["Breach", "RolledBack"]


def test_a_pause_notifies_why() -> None:
    cluster = NotifiedCluster()
    spec = canary_spec()
    spec["strategy"]["canary"]["steps"][1] = {"pause": {}}
    cluster.started(spec)
    cluster.run_until_phase("Paused")
    assert [(n.kind, n.reason) for n in cluster.told] == [
        ("Started", None),
        ("StepAdvanced", None),
        ("Paused", "PauseStep"),
    ]

    cluster = NotifiedCluster()
    spec = canary_spec()
    spec["analysis"]["checks"][1]["for"] = "0s"  # p99-latency, action pause
    cluster.started(spec)
    cluster.run_until_checked_at_step(3)
    cluster.told.clear()
    cluster.provider.answers["vllm:e2e_request_latency_seconds"] = QueryResult(5.0)
    cluster.tick(15)
    breach, paused = cluster.told
    assert (breach.kind, paused.kind, paused.reason) == ("Breach", "Paused", "CheckBreached")
    assert paused.check is not None
    assert (paused.check.name, paused.check.value) == ("p99-latency", 5.0)
    assert "value 5" in paused.message


def test_an_analysis_without_data_is_told_once_past_its_threshold() -> None:
    cluster = NotifiedCluster()
    spec = canary_spec()
    spec["notifications"] = {"sinks": [], "analysisUnavailableAfter": "30s"}
    spec["analysis"]["whenMetricsUnavailable"] = {"action": "pause", "after": "90s"}
    cluster.started(spec)
    cluster.run_until_checked_at_step(3)
    cluster.told.clear()
    del cluster.provider.answers["vllm:request_success_total"]
    kinds_by_tick = []
    for _ in range(8):
        cluster.tick(15)
        cluster.settle()
        kinds_by_tick.append(cluster.kinds())
    # No data at +15s (since then), 30s without at +45s: told once; paused at 90s.
    assert cluster.kinds() == ["AnalysisUnavailable", "Paused"]
    unavailable, paused = cluster.told
    assert unavailable.check is not None and unavailable.check.name == "error-rate"
    assert "30s" in unavailable.message
    assert paused.reason == "MetricsUnavailable"
    assert paused.check is not None and paused.check.state == "Unavailable"
    assert kinds_by_tick.index(["AnalysisUnavailable"]) == 2


def test_no_notify_configured_changes_nothing_a_tick_writes() -> None:
    plain, notified = Cluster(), NotifiedCluster()
    spec = canary_spec()
    for cluster in (plain, notified):
        cluster.started(spec)
        cluster.run_until_step(3)
    assert plain.status == notified.status


def test_a_hand_over_that_fails_changes_nothing_a_tick_does() -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("sender gone")

    plain, failing = Cluster(), Cluster()
    failing.reconciler = Reconciler(
        failing.api,
        clock=lambda: failing.now,
        provider_factory=lambda spec: failing.provider,
        notify=broken,
    )
    spec = canary_spec()
    for cluster in (plain, failing):
        cluster.started(spec)
        cluster.run_until_step(3)
        cluster.provider.answers["ALERTS"] = FIRING
        cluster.run_until_phase("RolledBack")
    assert plain.status == failing.status
    assert plain.deployments() == failing.deployments()


# -- spec -----------------------------------------------------------------


def spec_with(sinks: list[dict[str, Any]]) -> dict[str, Any]:
    spec = canary_spec()
    spec["notifications"] = {"sinks": sinks}
    return spec


SLACK: dict[str, Any] = {
    "name": "team-chat",
    "type": "slack",
    "urlSecretRef": {"name": "rollout-notifications", "key": "slack"},
}


@pytest.mark.parametrize(
    ("sink", "field", "words"),
    [
        ({**SLACK, "type": "pagerduty"}, "spec.notifications.sinks[0].type", "webhook"),
        ({**SLACK, "template": "$rollout $url"}, "spec.notifications.sinks[0].template", "$url"),
        ({**SLACK, "template": "cost: $5"}, "spec.notifications.sinks[0].template", "$$"),
        ({**SLACK, "events": ["Deployed"]}, "spec.notifications.sinks[0].events[0]", "Started"),
        ({**SLACK, "url": "https://x"}, "spec.notifications.sinks[0].url", "unknown field"),
        ({k: v for k, v in SLACK.items() if k != "urlSecretRef"},
         "spec.notifications.sinks[0].urlSecretRef", "required"),
    ],
)  # fmt: skip
def test_a_bad_sink_is_an_invalid_spec_naming_its_field(
    sink: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidSpecError) as raised:
        parse_spec(spec_with([sink]))
    assert raised.value.field_path == field
    assert words in raised.value.message


def test_notifications_make_no_new_revision() -> None:
    assert revision(V2, spec_with([SLACK])) == revision(V2, canary_spec())


# -- templates ------------------------------------------------------------


def notification(**changes: Any) -> Notification:
    fields: dict[str, Any] = {
        "kind": "RolledBack",
        "severity": "critical",
        "namespace": "ml",
        "rollout": "chat",
        "uid": "u-1",
        "time": T0,
        "phase": "RollingBack",
        "message": "canary bbbb: check error-rate breached: value 0.2, breachWhen '> 0.01'",
        "reason": "CheckBreached",
        "stable_revision": "aaaa",
        "canary_revision": "bbbb",
        "stable_model": "pvc://models/m/v1",
        "canary_model": "pvc://models/m/v2",
        "step": 3,
        "steps": 5,
        "canary_weight": 0,
        "check": None,
    }
    fields.update(changes)
    return Notification(**fields)


def test_the_default_template_names_the_rollout_the_event_and_what_happened() -> None:
    text = render(notification(), None).text
    assert text == (
        "[ml/chat] RolledBack: canary bbbb: check error-rate breached: value 0.2, "
        "breachWhen '> 0.01'"
    )
    assert template_problem(DEFAULT_TEMPLATE) is None


def test_every_template_variable_has_a_value() -> None:
    template = " ".join(f"{name}=${{{name}}}" for name in TEMPLATE_VARIABLES)
    assert template_problem(template) is None
    text = render(notification(), template).text
    assert "canary=bbbb" in text and "step=3" in text and "time=2026-01-01T12:00:00Z" in text


def test_a_template_is_substitution_only() -> None:
    # Nothing is evaluated: braces, attribute access and format specs are not variables.
    assert template_problem("${rollout.__class__}") is not None
    text = render(notification(), "{rollout} $$5 {{kind}} ${kind}").text
    assert text == "{rollout} $5 {{kind}} RolledBack"


# -- filters and sinks ----------------------------------------------------


def test_the_sinks_registered_are_the_types_the_spec_accepts() -> None:
    from typing import get_args

    assert set(SINKS) == set(get_args(SinkType))


ALERTMANAGER = "http://alertmanager.monitoring:9093"


def test_the_webhook_payload_is_the_documented_v1_schema() -> None:
    from modelrollout.engine.notifications import CheckReading

    check = CheckReading("error-rate", "Breached", 0.2, "> 0.01", "")
    request = SINKS["webhook"].request("https://hooks/x", [render(notification(check=check), None)])
    assert request.url == "https://hooks/x"
    assert request.headers["Content-Type"] == "application/json"
    body = request.body
    assert set(body) == {
        "schemaVersion", "id", "kind", "severity", "time", "rollout", "phase", "reason",
        "message", "text", "revisions", "models", "step", "check",
    }  # fmt: skip
    assert body["schemaVersion"] == "modelrollout.dev/v1"
    assert body["rollout"] == {"namespace": "ml", "name": "chat", "uid": "u-1"}
    assert body["revisions"] == {"stable": "aaaa", "canary": "bbbb"}
    assert body["step"] == {"index": 3, "count": 5, "canaryWeight": 0}
    assert body["check"] == {
        "name": "error-rate", "state": "Breached", "value": 0.2, "threshold": "> 0.01",
        "message": "",
    }  # fmt: skip
    assert body["time"] == "2026-01-01T12:00:00Z"
    # The id is the same for the same event (a retry), different for another.
    again = SINKS["webhook"].request("https://hooks/x", [render(notification(check=check), None)])
    assert again.body["id"] == body["id"]
    other = SINKS["webhook"].request("https://hooks/x", [render(notification(kind="Paused"), None)])
    assert other.body["id"] != body["id"]


def test_slack_gets_the_text_and_a_severity_colour() -> None:
    request = SINKS["slack"].request("https://hooks.slack.com/services/T/B/x", [
        render(notification(), "$kind of $rollout")
    ])  # fmt: skip
    assert request.body["text"] == "RolledBack of chat"
    assert request.body["attachments"][0]["color"] == "#a30200"


def test_teams_gets_an_adaptive_card() -> None:
    request = SINKS["teams"].request("https://teams/x", [render(notification(), "$message")])
    (attachment,) = request.body["attachments"]
    assert request.body["type"] == "message"
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["body"][1]["text"] == notification().message
    assert {"title": "Revision", "value": "bbbb"} in card["body"][2]["facts"]


def test_alertmanager_gets_alerts_on_its_v2_api_in_one_request() -> None:
    assert SinkCapability.BATCH in SINKS["alertmanager"].capabilities
    request = SINKS["alertmanager"].request(ALERTMANAGER + "/", [
        render(notification(kind="Breach", severity="warning"), None),
        render(notification(), "$rollout rolled back"),
    ])  # fmt: skip
    assert request.url == ALERTMANAGER + "/api/v2/alerts"
    breach, rolled_back = request.body
    assert rolled_back["labels"] == {
        "alertname": "ModelRolloutEvent",
        "event": "RolledBack",
        "namespace": "ml",
        "rollout": "chat",
        "severity": "critical",
        "revision": "bbbb",
    }
    assert rolled_back["annotations"]["summary"] == "chat rolled back"
    assert rolled_back["startsAt"] == "2026-01-01T12:00:00Z"
    assert breach["labels"]["event"] == "Breach"
    assert SINKS["alertmanager"].request(ALERTMANAGER + "/api/v2/alerts", []).url == (
        ALERTMANAGER + "/api/v2/alerts"
    )


def test_only_alertmanager_batches() -> None:
    assert [name for name, sink in SINKS.items() if SinkCapability.BATCH in sink.capabilities] == [
        "alertmanager"
    ]


# -- policy ---------------------------------------------------------------


def test_backoff_doubles_up_to_its_maximum() -> None:
    policy = RetryPolicy(initial_backoff_seconds=1, max_backoff_seconds=10, budget_seconds=600)
    assert [policy.backoff(attempt) for attempt in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_no_attempt_starts_past_the_retry_budget() -> None:
    policy = RetryPolicy(initial_backoff_seconds=1, max_backoff_seconds=60, budget_seconds=10)
    assert policy.next_attempt_in(1, 0) == 1
    assert policy.next_attempt_in(3, 6) == 4
    assert policy.next_attempt_in(3, 6.5) is None
    assert RetryPolicy(budget_seconds=0).next_attempt_in(1, 0) is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, "delivered"), (204, "delivered"), (None, "retry"), (500, "retry"), (503, "retry"),
     (429, "retry"), (408, "retry"), (400, "rejected"), (403, "rejected"), (404, "rejected")],
)  # fmt: skip
def test_what_an_answer_means(status: int | None, expected: str) -> None:
    assert outcome(status) == expected


# -- configuration --------------------------------------------------------


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


def configured(*sinks: dict[str, Any]) -> Notifications:
    return Notifications.model_validate({"sinks": list(sinks)})


def test_a_sinks_url_comes_from_its_secret_and_its_filter_applies() -> None:
    api = FakeKubeApi()
    api.create(SECRETS, "ml", secret("rollout-notifications", {"slack": "https://hooks/s\n"}))
    targets, problems = resolve(api, "ml", configured({**SLACK, "events": ["RolledBack"]}))
    assert problems == []
    (target,) = targets
    assert (target.name, target.sink_type, target.url) == ("team-chat", "slack", "https://hooks/s")
    assert target.accepts("RolledBack") and not target.accepts("Started")
    (everything,) = resolve(api, "ml", configured(SLACK))[0]
    assert all(everything.accepts(kind) for kind in NOTIFICATION_EVENTS)


@pytest.mark.parametrize(
    ("secrets", "words"),
    [
        ([], "Secret ml/rollout-notifications not found"),
        ([secret("rollout-notifications", {"other": "https://x"})], "has no key 'slack'"),
        ([secret("rollout-notifications", {"slack": "hooks.slack.com/x"})], "not an http(s) URL"),
    ],
)
def test_a_sink_whose_url_cannot_be_read_is_a_problem_naming_its_field(
    secrets: list[dict[str, Any]], words: str
) -> None:
    api = FakeKubeApi()
    for one in secrets:
        api.create(SECRETS, "ml", one)
    webhook = {**SLACK, "name": "audit", "type": "webhook",
               "urlSecretRef": {"name": "audit", "key": "url"}}  # fmt: skip
    api.create(SECRETS, "ml", secret("audit", {"url": "https://audit/x"}))
    targets, problems = resolve(api, "ml", configured(SLACK, webhook))
    # The other sink is used all the same.
    assert [t.name for t in targets] == ["audit"]
    (problem,) = problems
    assert problem.field_path == "spec.notifications.sinks[0].urlSecretRef"
    assert words in problem.message
    assert "hooks" not in str(problem)


def namespace_default(document: Any) -> dict[str, Any]:
    text = document if isinstance(document, str) else yaml.safe_dump(document)
    return secret(NAMESPACE_DEFAULT_SECRET, {NAMESPACE_DEFAULT_KEY: text, "slack": "https://s"})


def test_a_rollout_without_notifications_uses_its_namespaces_default() -> None:
    api = FakeKubeApi()
    default = {**SLACK, "urlSecretRef": {"name": NAMESPACE_DEFAULT_SECRET, "key": "slack"}}
    api.create(SECRETS, "ml", namespace_default({"sinks": [default]}))
    targets, problems = resolve(api, "ml", None)
    assert problems == [] and [(t.name, t.url) for t in targets] == [("team-chat", "https://s")]
    assert targets[0].field_path == (
        f"Secret ml/{NAMESPACE_DEFAULT_SECRET} key {NAMESPACE_DEFAULT_KEY}.sinks[0]"
    )
    # Its own (even empty) notifications replace the default.
    assert resolve(api, "ml", configured()) == ([], [])
    # A namespace without a default: nothing, and nothing wrong.
    assert resolve(api, "other", None) == ([], [])


class CountedSecretReads(FakeKubeApi):
    def __init__(self) -> None:
        super().__init__()
        self.secret_reads = 0

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        self.secret_reads += resource == SECRETS
        return super().get(resource, namespace, name)


def test_the_sender_reads_a_namespaces_default_once_per_lookup_period() -> None:
    """Most namespaces have no default: one GET per 15 s for them, not one per notification;
    a default created meanwhile is used once the period is over."""
    api = CountedSecretReads()
    now = [0.0]
    resolver = SinkResolver(api, remember=15.0, clock=lambda: now[0])
    for _ in range(50):
        assert resolver("ml", None) == ([], [])
    assert api.secret_reads == 1
    default = {**SLACK, "urlSecretRef": {"name": NAMESPACE_DEFAULT_SECRET, "key": "slack"}}
    api.create(SECRETS, "ml", namespace_default({"sinks": [default]}))
    now[0] = 14.9
    assert resolver("ml", None) == ([], [])
    now[0] = 15.0
    targets, problems = resolver("ml", None)
    assert problems == [] and [t.name for t in targets] == ["team-chat"]
    # Another namespace is its own lookup; a rollout's own notifications need none.
    reads = api.secret_reads
    assert resolver("other", None) == ([], [])
    assert api.secret_reads == reads + 1
    resolver("ml", configured(SLACK))
    assert api.secret_reads == reads + 2  # its sink's URL Secret only


class ForbiddenSecrets(FakeKubeApi):
    """RBAC without get on Secrets."""

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        if resource == SECRETS:
            raise KubeApiError(403, "Forbidden", "secrets is forbidden")
        return super().get(resource, namespace, name)


def test_a_namespace_default_the_operator_may_not_read_is_none() -> None:
    api = ForbiddenSecrets()
    assert resolve(api, "ml", None) == ([], [])
    # A Secret the spec names is another matter: its field is named.
    _, (problem,) = resolve(api, "ml", configured(SLACK))
    assert problem.field_path == "spec.notifications.sinks[0].urlSecretRef"
    assert "403" in problem.message


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"sinks": [{**SLACK, "type": "pager"}]}, "sinks.0.type"),
        ({"sinks": [{**SLACK, "template": "$nope"}]}, "sinks.0.template"),
        ("sinks: [", "is not YAML text"),
    ],
)
def test_a_bad_namespace_default_is_a_problem_naming_where(document: Any, words: str) -> None:
    api = FakeKubeApi()
    api.create(SECRETS, "ml", namespace_default(document))
    targets, (problem,) = resolve(api, "ml", None)
    assert targets == []
    assert f"Secret ml/{NAMESPACE_DEFAULT_SECRET}" in str(problem) and words in str(problem)


def test_a_rollout_ref_is_what_a_notice_names() -> None:
    # The reconciler hands the rollout, its notifications and what it found.
    cluster = Cluster()
    handed: list[tuple[RolloutRef, Notifications | None, int]] = []
    cluster.reconciler = Reconciler(
        cluster.api,
        clock=lambda: cluster.now,
        provider_factory=lambda spec: cluster.provider,
        notify=lambda rollout, conf, found: handed.append((rollout, conf, len(found))),
    )
    spec = spec_with([SLACK])
    cluster.started(spec)
    cluster.tick(15)
    ((rollout, conf, count),) = handed
    assert (rollout.namespace, rollout.name) == (NAMESPACE, NAME)
    assert conf is not None and conf.sinks[0].name == "team-chat" and count == 1
    assert cluster.now - T0 < timedelta(minutes=1)
