"""Alertmanager's webhook: payload parsing, matching, authentication, and what a push does to a
rollout tick by tick (the Reconciler on the in-memory API server, the receiver over real HTTP).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from modelrollout.alert_receiver import PATH, AlertReceiver, RolloutView, route_alerts
from modelrollout.analysis.pushed import (
    PayloadError,
    PushedAlerts,
    alert_matches,
    matching_alerts,
    parse_payload,
)
from modelrollout.analysis.runner import evaluate
from modelrollout.engine.reconciler import Reconciler
from modelrollout.models import parse_spec
from tests.unit.operator.builders import (
    ANALYSIS_CONTEXT,
    CANARY_AT_5,
    HEALTHY_ANSWERS,
    T0,
    FakeProvider,
    example_spec,
)
from tests.unit.operator.test_reconciler_ticks import (
    NAME,
    NAMESPACE,
    V1,
    V2,
    Cluster,
    canary_spec,
    child,
    revision,
    targets,
)

pytestmark = pytest.mark.unit

SPEC = parse_spec(example_spec())
TOKEN = "s3cret-token"
ALERTNAME = "ModelHighErrorRate"


def webhook_alert(
    labels: Mapping[str, str],
    status: str = "firing",
    fingerprint: str = "f00d",
    starts_at: str = "2026-12-06T02:00:00Z",
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": dict(labels),
        "annotations": {"summary": "errors"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    """What Alertmanager's webhook_config POSTs (version 4)."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="ModelHighErrorRate"}',
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": "modelrollout",
        "groupLabels": {"alertname": ALERTNAME},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def labels_for(revision_label: str) -> dict[str, str]:
    return {"alertname": ALERTNAME, "namespace": NAMESPACE, "revision": revision_label}


# -- payload and matching ------------------------------------------------------


def test_a_version_4_payload_parses_with_fields_the_operator_does_not_read() -> None:
    parsed = parse_payload(json.dumps(payload(webhook_alert(labels_for("bbbb")))).encode())
    (alert,) = parsed.alerts
    assert (alert.status, alert.labels["revision"]) == ("firing", "bbbb")
    assert alert.replay_key == ("f00d", "2026-12-06T02:00:00Z")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "body"),
        (b"[]", "body"),
        (json.dumps({**payload(), "version": "3"}).encode(), "version"),
        (json.dumps({"version": "4", "status": "firing"}).encode(), "alerts"),
        (
            json.dumps(payload({**webhook_alert(labels_for("b")), "fingerprint": ""})).encode(),
            "alerts.0.fingerprint",
        ),
        (
            json.dumps(payload({**webhook_alert(labels_for("b")), "labels": {"a": 1}})).encode(),
            "alerts.0.labels.a",
        ),
    ],
)
def test_a_malformed_payload_is_refused_naming_where(body: bytes, says: str) -> None:
    with pytest.raises(PayloadError, match=says):
        parse_payload(body)


def test_an_alert_matches_its_entry_with_the_labels_rendered_for_the_canary() -> None:
    entry = SPEC.analysis.alerts[0]
    assert alert_matches(entry, labels_for("bbbb"), ANALYSIS_CONTEXT)
    assert alert_matches(entry, {**labels_for("bbbb"), "severity": "critical"}, ANALYSIS_CONTEXT)
    assert not alert_matches(entry, labels_for("aaaa"), ANALYSIS_CONTEXT)  # the stable's
    assert not alert_matches(entry, {"alertname": ALERTNAME, "namespace": "ml"}, ANALYSIS_CONTEXT)
    assert not alert_matches(entry, {**labels_for("bbbb"), "alertname": "Other"}, ANALYSIS_CONTEXT)


def test_a_label_value_is_compared_unescaped() -> None:
    spec = example_spec()
    spec["analysis"]["alerts"][0]["matchLabels"] = {"path": 'C:\\models "{{model}}"'}
    (entry,) = parse_spec(spec).analysis.alerts
    labels = {"alertname": ALERTNAME, "path": 'C:\\models "chat"'}
    assert matching_alerts(parse_spec(spec), [labels], ANALYSIS_CONTEXT) == [entry]


# -- evaluation ----------------------------------------------------------------


def test_a_pushed_alert_is_a_rollback_breach_between_polls_without_asking_for_alerts() -> None:
    provider = FakeProvider(dict(HEALTHY_ANSWERS))
    checks, _ = evaluate(SPEC, CANARY_AT_5, provider, ANALYSIS_CONTEXT, T0)
    evaluated = CANARY_AT_5.with_checks(checks)
    provider.queries.clear()
    later = T0 + timedelta(seconds=1)
    checks, verdict = evaluate(
        SPEC, evaluated, provider, ANALYSIS_CONTEXT, later, [labels_for("bbbb")]
    )
    assert (verdict.kind, verdict.check, verdict.action) == (
        "breach",
        f"alert:{ALERTNAME}",
        "rollback",
    )
    assert not any("ALERTS" in query for query in provider.queries)
    assert [c.state for c in checks] == ["Passing", "Passing", "Breached"]


def test_a_pushed_alert_for_another_revision_waits_for_the_poll() -> None:
    provider = FakeProvider(dict(HEALTHY_ANSWERS))
    checks, _ = evaluate(SPEC, CANARY_AT_5, provider, ANALYSIS_CONTEXT, T0)
    evaluated = CANARY_AT_5.with_checks(checks)
    provider.queries.clear()
    again, verdict = evaluate(
        SPEC, evaluated, provider, ANALYSIS_CONTEXT, T0 + timedelta(seconds=1), [labels_for("aaaa")]
    )
    assert provider.queries == [] and again == checks and verdict.kind == "healthy"


# -- the Reconciler tick by tick -----------------------------------------------


@dataclass
class Pushed:
    """A cluster at the analysis step, its Reconciler sharing the receiver's store."""

    cluster: Cluster = field(default_factory=Cluster)
    store: PushedAlerts = field(default_factory=PushedAlerts)
    woken: list[tuple[str, str]] = field(default_factory=list)
    alert_action: str = "rollback"

    def __post_init__(self) -> None:
        self.cluster.reconciler = Reconciler(
            self.cluster.api,
            clock=lambda: self.cluster.now,
            provider_factory=lambda spec: self.cluster.provider,
            pushed_alerts=self.store,
        )
        self.spec = canary_spec()
        self.spec["analysis"]["alerts"][0]["action"] = self.alert_action
        self.cluster.started(self.spec)
        self.cluster.run_until_checked_at_step(3)
        self.canary = revision(V2, self.spec)

    def views(self) -> list[RolloutView]:
        return [RolloutView(self.cluster.body(), self.cluster.status)]

    def wake(self, namespace: str, name: str) -> None:
        self.woken.append((namespace, name))

    def push(self, *alerts: dict[str, Any]) -> dict[str, Any]:
        parsed = parse_payload(json.dumps(payload(*alerts)).encode())
        outcome = route_alerts(parsed.alerts, self.views(), self.store, self.wake)
        return {
            "matched": outcome.matched,
            "replayed": outcome.replayed,
            "ignored": outcome.ignored,
        }

    def unchanged_by_a_tick(self) -> None:
        """A tick one second on (the poll is not due for 15 s) writes nothing."""
        before = self.cluster.status
        writes = self.cluster.tick(1)
        assert targets(writes) == [] and self.cluster.status == before
        assert self.cluster.status.phase == "Progressing"


@pytest.fixture
def pushed() -> Pushed:
    return Pushed()


def test_a_pushed_firing_alert_wakes_the_rollout_and_its_tick_writes_weight_zero_first(
    pushed: Pushed,
) -> None:
    cluster = pushed.cluster
    old, new = child(V1, pushed.spec), child(V2, pushed.spec)
    assert cluster.route_weights() == {old: 50, new: 50}

    answer = pushed.push(webhook_alert(labels_for(pushed.canary)))
    assert answer == {"matched": [f"{NAMESPACE}/{NAME}"], "replayed": 0, "ignored": 0}
    assert pushed.woken == [(NAMESPACE, NAME)]

    # Prometheus says nothing fires: the push alone breaches, before the poll is due.
    cluster.provider.queries.clear()
    writes = cluster.tick(1)
    assert targets(writes)[:2] == [
        f"patch httproutes/{NAME}",
        f"patch modelrollouts/{NAME}/status",
    ]
    assert cluster.route_weights() == {old: 100, new: 0}
    assert cluster.status.phase == "RollingBack"
    assert not any("ALERTS" in query for query in cluster.provider.queries)
    cluster.run_until_phase("RolledBack")
    assert ALERTNAME in cluster.status.history[0].reason


@pytest.mark.parametrize(
    "alert",
    [
        pytest.param(webhook_alert(labels_for("0000000000")), id="other-revision"),
        pytest.param(
            {**webhook_alert(labels_for("x")), "labels": {"alertname": "Unknown"}}, id="unknown"
        ),
        pytest.param(webhook_alert(labels_for("{canary}"), status="resolved"), id="resolved"),
    ],
)
def test_resolved_unknown_and_other_revision_alerts_change_nothing(
    pushed: Pushed, alert: dict[str, Any]
) -> None:
    if alert["labels"].get("revision") == "{canary}":
        alert["labels"]["revision"] = pushed.canary
    answer = pushed.push(alert)
    assert answer == {"matched": [], "replayed": 0, "ignored": 1}
    assert pushed.woken == []
    pushed.unchanged_by_a_tick()


def test_a_pushed_alert_is_used_by_one_evaluation_then_the_poll_decides() -> None:
    pushed = Pushed(alert_action="pause")
    pushed.push(webhook_alert(labels_for(pushed.canary)))
    pushed.cluster.tick(1)
    status = pushed.cluster.status
    assert (status.phase, status.pause_reason) == ("Paused", "CheckBreached")
    assert status.message == f"alert {ALERTNAME} is firing"
    assert pushed.store.take(pushed.cluster.body()["metadata"]["uid"]) == ()
    # The next poll (Prometheus fires nothing) reads the alert as not firing.
    pushed.cluster.tick(15)
    alert_check = next(c for c in pushed.cluster.status.checks if c.name == f"alert:{ALERTNAME}")
    assert alert_check.state == "Passing"


# -- the receiver over HTTP ----------------------------------------------------


@dataclass
class Receiver:
    pushed: Pushed
    token_file: Path
    leading: bool = True
    max_bytes: int = 4096
    # The headers of the last answer.
    headers: dict[str, str] = field(default_factory=dict)

    def post(
        self, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        receiver = AlertReceiver(
            self.token_file,
            lambda: self.leading,
            self.pushed.views,
            self.pushed.store,
            self.pushed.wake,
            max_bytes=self.max_bytes,
        )

        async def request() -> tuple[int, dict[str, Any]]:
            async with TestClient(TestServer(receiver.application())) as http:
                response = await http.post(
                    PATH,
                    data=body,
                    headers={"Content-Type": "application/json", **(headers or {})},
                )
                self.headers = dict(response.headers)
                return response.status, await response.json()

        return asyncio.run(request())

    def push(self, *alerts: dict[str, Any], token: str = TOKEN) -> tuple[int, dict[str, Any]]:
        return self.post(
            json.dumps(payload(*alerts)).encode(), {"Authorization": f"Bearer {token}"}
        )


@pytest.fixture
def receiver(pushed: Pushed, tmp_path: Path) -> Iterator[Receiver]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")  # a Secret's file often ends in a newline
    yield Receiver(pushed, token_file)


def test_an_authenticated_push_acts_and_its_replay_is_acknowledged_without_acting(
    receiver: Receiver,
) -> None:
    alert = webhook_alert(labels_for(receiver.pushed.canary))
    assert receiver.push(alert) == (
        200,
        {"matched": [f"{NAMESPACE}/{NAME}"], "replayed": 0, "ignored": 0},
    )
    receiver.pushed.woken.clear()
    # Alertmanager sends the group again (repeat_interval): a 2xx, and nothing recorded.
    assert receiver.push(alert) == (200, {"matched": [], "replayed": 1, "ignored": 0})
    assert receiver.pushed.woken == []
    uid = receiver.pushed.cluster.body()["metadata"]["uid"]
    assert len(receiver.pushed.store.take(uid)) == 1


def test_a_replay_after_the_rollout_acted_changes_nothing(receiver: Receiver) -> None:
    alert = webhook_alert(labels_for(receiver.pushed.canary))
    receiver.push(alert)
    receiver.pushed.store.take(receiver.pushed.cluster.body()["metadata"]["uid"])
    status, answer = receiver.push(alert)
    assert (status, answer["replayed"]) == (200, 1)
    receiver.pushed.unchanged_by_a_tick()


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer ", f"Bearer {TOKEN}x"],
)
def test_a_missing_or_wrong_token_is_401_and_changes_nothing(
    receiver: Receiver, authorization: str | None
) -> None:
    body = json.dumps(payload(webhook_alert(labels_for(receiver.pushed.canary)))).encode()
    headers = {} if authorization is None else {"Authorization": authorization}
    status, answer = receiver.post(body, headers)
    assert status == 401 and "bearer token" in answer["error"]
    assert receiver.pushed.woken == []
    receiver.pushed.unchanged_by_a_tick()


def test_an_unreadable_token_file_refuses_everyone(receiver: Receiver) -> None:
    receiver.token_file.unlink()
    status, _ = receiver.push(webhook_alert(labels_for(receiver.pushed.canary)))
    assert status == 401
    receiver.pushed.unchanged_by_a_tick()


def test_an_oversized_payload_is_413_and_changes_nothing(receiver: Receiver) -> None:
    alert = webhook_alert(labels_for(receiver.pushed.canary))
    alert["annotations"]["description"] = "x" * receiver.max_bytes
    status, answer = receiver.push(alert)
    assert status == 413 and "larger than 4096 bytes" in answer["error"]
    assert receiver.pushed.woken == []
    receiver.pushed.unchanged_by_a_tick()


@pytest.mark.parametrize("body", [b"{not json", json.dumps({"version": "4"}).encode()])
def test_a_malformed_payload_is_400_and_changes_nothing(receiver: Receiver, body: bytes) -> None:
    status, answer = receiver.post(body, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 400 and "version 4" in answer["error"]
    assert receiver.pushed.woken == []
    receiver.pushed.unchanged_by_a_tick()


def test_a_standby_answers_503_and_changes_nothing(receiver: Receiver) -> None:
    receiver.leading = False
    status, answer = receiver.push(webhook_alert(labels_for(receiver.pushed.canary)))
    assert status == 503 and "standby" in answer["error"]
    # Alertmanager's retry opens a new connection, which the Service may send to the leader.
    assert receiver.headers["Connection"] == "close"
    assert receiver.pushed.woken == []
    receiver.pushed.unchanged_by_a_tick()
    # Not remembered as acted on: the leader, when the retry reaches it, acts.
    receiver.leading = True
    assert receiver.push(webhook_alert(labels_for(receiver.pushed.canary)))[1]["replayed"] == 0
