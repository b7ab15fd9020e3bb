"""Commands by annotation nonce, and the plan of Deployments per phase."""

from __future__ import annotations

import pytest

from modelrollout.engine.commands import annotation_for, pending_commands
from modelrollout.engine.workloads import DesiredRevision, plan_revisions

pytestmark = pytest.mark.unit


def test_a_command_is_pending_until_its_nonce_is_recorded_as_handled() -> None:
    annotations = {annotation_for("promote"): "n1", "unrelated/annotation": "x"}
    assert pending_commands(annotations, {}) == {"promote": "n1"}
    assert pending_commands(annotations, {"promote": "n1"}) == {}
    # The same command issued again carries a new nonce and is pending again.
    annotations[annotation_for("promote")] = "n2"
    assert pending_commands(annotations, {"promote": "n1"}) == {"promote": "n2"}


def test_empty_nonces_and_unknown_commands_are_ignored() -> None:
    annotations = {annotation_for("abort"): "", annotation_for("explode"): "n1"}
    assert pending_commands(annotations, {}) == {}


def test_stable_keeps_every_replica_and_the_canary_is_sized_by_weight() -> None:
    plan = plan_revisions(
        replicas=4,
        stable="s1",
        canary="c1",
        stable_weight=50,
        canary_weight=50,
        canary_serving=True,
        keep_aborted_canary=False,
    )
    assert plan == [DesiredRevision("s1", "stable", 4), DesiredRevision("c1", "canary", 2)]


def test_an_aborted_canary_goes_unless_it_is_kept_for_its_scale_down_delay() -> None:
    def plan(keep: bool) -> list[DesiredRevision]:
        return plan_revisions(
            replicas=2,
            stable="s1",
            canary="c1",
            stable_weight=100,
            canary_weight=0,
            canary_serving=False,
            keep_aborted_canary=keep,
        )

    gone, kept = plan(keep=False), plan(keep=True)
    assert [d.revision for d in gone] == ["s1"]
    assert kept == [DesiredRevision("s1", "stable", 2), DesiredRevision("c1", "canary", 1)]


def test_after_promotion_only_the_new_stable_is_planned() -> None:
    plan = plan_revisions(
        replicas=3,
        stable="c1",
        canary=None,
        stable_weight=100,
        canary_weight=0,
        canary_serving=False,
        keep_aborted_canary=False,
    )
    assert plan == [DesiredRevision("c1", "stable", 3)]


def test_promotion_takes_stable_down_once_all_traffic_left_it() -> None:
    plan = plan_revisions(
        replicas=2,
        stable="s1",
        canary="c1",
        stable_weight=0,
        canary_weight=100,
        canary_serving=True,
        keep_aborted_canary=False,
    )
    assert plan == [DesiredRevision("s1", "stable", 0), DesiredRevision("c1", "canary", 2)]
