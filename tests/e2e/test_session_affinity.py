"""Conversations stay on one revision through the real gateway while the canary's weight moves.

Real chat clients hold multi-turn conversations (a session id per conversation,
its turns in sequence) through Traefik, which carries out the header rules the
gatewayAPI router writes for `traffic.sessionAffinity`, to real model servers.
Clients that send back the revision header of the answers (pinned) must never
see two revisions while the weight goes 10 -> 50 -> 90; clients that do not
(bucketed by their id alone) may switch once, stable -> canary, when their
bucket moves. An abort moves every conversation back to stable: the one switch
a rollback makes.
"""

from __future__ import annotations

import time
import uuid

import pytest

from modelrollout.engine.commands import annotation_for
from modelrollout.traffic.session_affinity import bucket_of, canary_buckets
from modelrollout_dev.load import Conversation, ConversationLoad, wait_until_served
from modelrollout_dev.operator_process import OperatorProcess
from modelrollout_dev.traefik import Traefik
from tests.support.kube import wait_until
from tests.support.rollouts import Rollouts, StatusRecorder, rollout_manifest
from tests.support.serving_placement import ServingPlacement

pytestmark = [pytest.mark.e2e, pytest.mark.localharness]

BUCKETS = 16
WEIGHTS = (10, 50, 90)
STEPS = [
    {"setWeight": 10},
    {"pause": {"duration": "25s"}},
    {"setWeight": 50},
    {"pause": {"duration": "25s"}},
    {"setWeight": 90},
    {"pause": {}},
]
# From a weight in status to Traefik serving the route written after it: the operator
# writes the route in the same tick, Traefik applies it within its throttle (2 s).
SETTLE = 5.0


def plateaus(recorder: StatusRecorder, until: float) -> dict[int, tuple[float, float]]:
    """(from, to) in time.monotonic() of each canary weight of the walk, as status said it."""
    changes = [
        (at, weight)
        for (_, _, weight), at in zip(recorder.seen, recorder.seen_at, strict=True)
        if weight > 0
    ]
    spans: dict[int, tuple[float, float]] = {}
    for index, (at, weight) in enumerate(changes):
        if weight in spans:
            continue
        later = [t for t, w in changes[index + 1 :] if w != weight]
        spans[weight] = (at, later[0] if later else until)
    return spans


def within(conversation: Conversation, start: float, end: float) -> bool:
    return start <= conversation.started and conversation.turns[-1][0] < end


def test_no_conversation_sees_two_revisions_while_the_weight_moves_and_an_abort_moves_them_back(
    rollouts: Rollouts,
    operator_process: OperatorProcess,
    routed_serving: tuple[ServingPlacement, Traefik],
) -> None:
    serving, gateway = routed_serving
    manifest = rollout_manifest(
        "chat", serving.model_uri(0), STEPS, router="gatewayAPI", placement=serving.placement()
    )
    manifest["spec"]["traffic"]["sessionAffinity"] = {"header": "x-session-id", "buckets": BUCKETS}
    rollouts.create(manifest)
    stable = rollouts.wait_phase("chat", {"Succeeded"}, 180)["stableRevision"]
    serving.wait_for_servers(stable)
    wait_until_served(gateway.url, "chat")

    pinned = ConversationLoad(gateway.url, "chat", workers=6)
    unpinned = ConversationLoad(gateway.url, "chat", workers=3, send_pin=False)
    recorder = StatusRecorder(rollouts, "chat")
    with recorder.recording(), pinned, unpinned:
        rollouts.patch_spec("chat", {"model": {"name": "chat", "uri": serving.model_uri(1)}})
        at_90 = rollouts.wait_phase("chat", {"Paused", "RolledBack"}, 300)
        assert (at_90["phase"], at_90["weights"]["canary"]) == ("Paused", 90), at_90
        canary = at_90["canaryRevision"]
        reached_90 = recorder.seen_at[-1]
        wait_until(
            lambda: sum(c.started > reached_90 + SETTLE for c in pinned.finished()) >= 10,
            120,
            "10 conversations at 90%",
        )
        aborted = time.monotonic()
        rollouts.annotate("chat", {annotation_for("abort"): uuid.uuid4().hex})
        rolled_back = rollouts.wait_phase("chat", {"RolledBack"}, 120)
        back = time.monotonic()
        wait_until(
            lambda: sum(c.started > back + SETTLE for c in pinned.finished()) >= 20,
            120,
            "20 conversations after the rollback",
        )
    assert rolled_back["stableRevision"] == stable
    conversations = pinned.finished() + unpinned.finished()
    failed = [c.turns for c in conversations if any(s != "200" for _, _, s in c.turns)]
    assert failed == [], failed[:5]

    # While the weight moved: no pinned conversation saw two revisions, though many
    # spanned a weight change; unpinned ones switched at most once, stable -> canary.
    spans = plateaus(recorder, aborted)
    assert sorted(spans) == list(WEIGHTS), recorder.seen
    walk = [c for c in pinned.finished() if c.turns[-1][0] < aborted]
    changes = [start for start, _ in spans.values()]
    spanning = [c for c in walk if any(c.started < t < c.turns[-1][0] for t in changes)]
    two_revisions = [c for c in walk if len(c.revisions) > 1]
    unpinned_walk = [c for c in unpinned.finished() if c.turns[-1][0] < aborted]
    switched = [c for c in unpinned_walk if len(c.revisions) > 1]
    print(
        f"pinned conversations 10%->90%: {len(two_revisions)} of {len(walk)} saw two revisions "
        f"({len(spanning)} spanned a weight change); unpinned: {len(switched)} of "
        f"{len(unpinned_walk)} switched once, stable -> canary"
    )
    assert two_revisions == [], [(c.session_id, c.turns) for c in two_revisions]
    assert len(spanning) >= 5, f"too few conversations spanned a weight change: {len(spanning)}"
    assert all(c.revisions == [stable, canary] for c in switched), [c.turns for c in switched]

    # A conversation's first turn goes by its bucket: the canary's share of new
    # conversations is the weight rounded to sixteenths.
    for weight, (start, end) in sorted(spans.items()):
        started = [c for c in conversations if within(c, start + SETTLE, end)]
        on_canary = [c for c in started if c.turns[0][1] == canary]
        expected = len(canary_buckets(BUCKETS, weight)) / BUCKETS
        print(
            f"at {weight}%: {len(on_canary)} of {len(started)} new conversations on the canary "
            f"(buckets: {expected:.1%})"
        )
        assert len(started) >= 8, (weight, len(started))
        misrouted = [
            c.session_id
            for c in started
            if (c.turns[0][1] == canary)
            != (bucket_of(c.session_id, BUCKETS) in canary_buckets(BUCKETS, weight))
        ]
        assert misrouted == [], (weight, misrouted)

    # The abort: conversations on the canary moved back once; new ones stay on stable.
    across = [c for c in pinned.finished() if c.started < aborted < c.turns[-1][0]]
    moved_back = [c for c in across if len(c.revisions) > 1]
    after = [c for c in conversations if c.started > back + SETTLE]
    print(
        f"abort: {len(moved_back)} of {len(across)} conversations in flight moved canary -> "
        f"stable; {len(after)} after it all on stable"
    )
    assert all(c.revisions == [canary, stable] for c in moved_back), [c.turns for c in moved_back]
    assert after and all(c.revisions == [stable] for c in after), [c.turns for c in after]
