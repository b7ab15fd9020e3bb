"""Which Deployments a rollout should have, and how many replicas each: pure."""

from __future__ import annotations

from dataclasses import dataclass

from modelrollout.engine.capacity import shift_stable_replicas
from modelrollout.kube.labels import ROLE_CANARY, ROLE_PREVIOUS, ROLE_STABLE
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
    shift_min_stable: int | None = None,
    blue_green: bool = False,
    previous: str | None = None,
    previous_replicas: int | None = None,
) -> list[DesiredRevision]:
    """Stable keeps all its replicas (surge) while it has traffic; the canary is sized by weight.

    Stable goes to zero only when promotion has moved all traffic off it:
    with the service router that is what makes the canary's share reach 100.

    `canary_serving` is false once the canary was rolled back or aborted; its
    pods stay (at weight 0) while `keep_aborted_canary` holds, so a retry or
    an inspection finds them, then they go. Any revision not listed here is
    deleted by the caller: that is how an old stable goes after promotion.

    With `shift_min_stable` set (`capacity: shift`), stable gives the serving
    canary its GPUs: it loses a replica for each canary replica, down to that floor.

    Blue-green runs both colors at full size while the new one is serving, so
    a switch either way is one routing write; `previous` (the revision the last
    promotion moved traffic away from) stays, with `previous_replicas` (default:
    full size), until status lets it go: blue-green's previous color, or a
    canary's previous stable during its rollback window.
    """
    plan: list[DesiredRevision] = []
    if blue_green and stable is not None and canary is not None and canary != stable:
        plan.append(DesiredRevision(stable, ROLE_STABLE, replicas))
        if canary_serving or keep_aborted_canary:
            plan.append(DesiredRevision(canary, ROLE_CANARY, replicas if canary_serving else 0))
        return plan
    if previous is not None and previous not in (stable, canary):
        kept = replicas if previous_replicas is None else previous_replicas
        plan.append(DesiredRevision(previous, ROLE_PREVIOUS, kept))
    if stable is not None:
        stable_replicas = replicas if stable_weight > 0 else 0
        if stable_replicas and shift_min_stable is not None and canary_serving and canary:
            stable_replicas = shift_stable_replicas(
                replicas, canary_replicas(replicas, canary_weight), shift_min_stable
            )
        plan.append(DesiredRevision(stable, ROLE_STABLE, stable_replicas))
    if canary is not None and canary != stable:
        if canary_serving:
            plan.append(
                DesiredRevision(canary, ROLE_CANARY, canary_replicas(replicas, canary_weight))
            )
        elif keep_aborted_canary:
            plan.append(DesiredRevision(canary, ROLE_CANARY, canary_replicas(replicas, 0)))
    return plan


def disruption_budget(item: DesiredRevision, plan: list[DesiredRevision]) -> int:
    """How many of a revision's pods a node drain may evict at once: its `maxUnavailable`.

    One at a time, so a drain never takes a revision of two or more replicas
    to zero. A revision of one replica keeps it, eviction refused, while a
    stable and a canary both have pods (mid-rollout): losing it would leave
    the canary without traffic or the stable without capacity until a model
    loads again. Otherwise its one pod may go, as any single-replica workload's
    does: a budget of zero then would hold every drain for as long as the
    rollout stays as it is. The operator's own scaling and deletions are not
    evictions and never wait on a budget.
    """
    if item.replicas != 1:
        return 1
    roles_with_pods = {other.role for other in plan if other.replicas > 0}
    mid_rollout = {ROLE_STABLE, ROLE_CANARY} <= roles_with_pods
    return 0 if mid_rollout and item.role in (ROLE_STABLE, ROLE_CANARY) else 1
