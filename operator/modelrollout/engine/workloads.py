"""Which Deployments a rollout should have, and how many replicas each: pure."""

from __future__ import annotations

from dataclasses import dataclass

from modelrollout.kube.labels import ROLE_CANARY, ROLE_STABLE
from modelrollout.traffic.base import canary_replicas


@dataclass(frozen=True)
class DesiredRevision:
    revision: str
    role: str
    replicas: int


def plan_revisions(
    *,
    replicas: int,
    stable: str | None,
    canary: str | None,
    stable_weight: int,
    canary_weight: int,
    canary_serving: bool,
    keep_aborted_canary: bool,
) -> list[DesiredRevision]:
    """Stable keeps all its replicas (surge) while it has traffic; the canary is sized by weight.

    Stable goes to zero only when promotion has moved all traffic off it:
    with the service router that is what makes the canary's share reach 100.

    `canary_serving` is false once the canary was rolled back or aborted; its
    pods stay (at weight 0) while `keep_aborted_canary` holds, so a retry or
    an inspection finds them, then they go. Any revision not listed here is
    deleted by the caller: that is how an old stable goes after promotion.
    """
    plan: list[DesiredRevision] = []
    if stable is not None:
        plan.append(DesiredRevision(stable, ROLE_STABLE, replicas if stable_weight > 0 else 0))
    if canary is not None and canary != stable:
        if canary_serving:
            plan.append(
                DesiredRevision(canary, ROLE_CANARY, canary_replicas(replicas, canary_weight))
            )
        elif keep_aborted_canary:
            plan.append(DesiredRevision(canary, ROLE_CANARY, canary_replicas(replicas, 0)))
    return plan
