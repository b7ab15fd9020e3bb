"""Session affinity a gateway can carry out from headers alone: rules, no gateway state.

Gateway API's `sessionPersistence` is implemented by few gateways (not Traefik),
so the router writes header-match rules that every implementation has:

- Pins. Each revision's answers carry `x-modelrollout-revision: <revision>` (a
  ResponseHeaderModifier on its backendRef); a client that sends it back on the
  conversation's next requests is routed to that revision by an Exact match for
  as long as the revision is stable or a canary above weight 0. A pinned
  conversation never moves while weights change.
- Buckets. A session's bucket is its id's last hex digit (16 buckets) or last
  two (256): a RegularExpression match on the session header. At canary weight
  W the first round(W% of the buckets) in a fixed order go to the canary (at
  least one above 0%), the others to stable. As the weight rises buckets only
  move from stable to the canary, so a client that does not send the pin back
  switches at most once per rollout, when its bucket moves.

Requests without either header stay on the weighted rule. Weight 0 (before the
first step, and at a rollback, whose first write sets it) removes every
affinity rule: sessions pinned to the canary are back on stable, the one
switch a rollback makes. A promotion leaves one revision, so sessions still on
the old stable move to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

PIN_HEADER = "x-modelrollout-revision"

HEX_DIGITS = "0123456789abcdef"


@dataclass(frozen=True)
class SessionAffinitySettings:
    """spec.traffic.sessionAffinity, as the router needs it."""

    header: str
    buckets: Literal[16, 256]
    # Answers name their revision and a request naming it goes there (needs backendRef filters).
    pin_revision: bool = True


def canary_bucket_count(buckets: int, canary_weight: int) -> int:
    """How many buckets the canary gets at `canary_weight`: the weight rounded to buckets
    (half up), at least one above weight 0 and all of them only at 100."""
    if canary_weight <= 0:
        return 0
    if canary_weight >= 100:
        return buckets
    share = math.floor(buckets * canary_weight / 100 + 0.5)
    return min(buckets - 1, max(1, share))


def canary_buckets(buckets: int, canary_weight: int) -> frozenset[int]:
    """The canary's buckets: the first ones in bucket order, so a higher weight only adds."""
    return frozenset(range(canary_bucket_count(buckets, canary_weight)))


def _hex_class(digits: list[int]) -> str:
    """A character class of hex digits, either case (session ids are not normalised)."""
    chars = "".join(HEX_DIGITS[d] for d in digits)
    return "[" + chars + "".join(c.upper() for c in chars if c.isalpha()) + "]"


def suffix_regex(buckets: int, members: frozenset[int]) -> str:
    """A RegularExpression matching header values whose last hex digit(s) are a bucket of `members`.

    Anchored at the end and led by `.*`, so it means the same to gateways that match
    the whole value (Envoy's RE2 full match) and to those that search it (Traefik's Go regexp).
    """
    if buckets == 16:
        return ".*" + _hex_class(sorted(members)) + "$"
    # Two digits: one alternative per set of low digits, over the high digits that share it.
    lows_by_high: dict[int, tuple[int, ...]] = {}
    for bucket in sorted(members):
        lows_by_high[bucket // 16] = (*lows_by_high.get(bucket // 16, ()), bucket % 16)
    highs_by_lows: dict[tuple[int, ...], list[int]] = {}
    for high, lows in lows_by_high.items():
        highs_by_lows.setdefault(lows, []).append(high)
    alternatives = [
        _hex_class(highs) + _hex_class(list(lows)) for lows, highs in highs_by_lows.items()
    ]
    return ".*(?:" + "|".join(alternatives) + ")$"


def bucket_of(session_id: str, buckets: int) -> int | None:
    """The bucket the rules send `session_id` to; None when it does not end in hex digits."""
    digits = 1 if buckets == 16 else 2
    suffix = session_id[-digits:].lower()
    if len(suffix) < digits or any(c not in HEX_DIGITS for c in suffix):
        return None
    return int(suffix, 16)


def pin_filter(revision: str) -> dict[str, Any]:
    """Names the answering revision on the response, for the client to send back."""
    return {
        "type": "ResponseHeaderModifier",
        "responseHeaderModifier": {"set": [{"name": PIN_HEADER, "value": revision}]},
    }


def affinity_rules(
    settings: SessionAffinitySettings,
    stable: str,
    canary: str,
    canary_weight: int,
    backend_ref: Callable[[str], dict[str, Any]],
) -> list[dict[str, Any]]:
    """The rules before the weighted one: pins first (they win a tie on header count by
    order), then the canary's and the stable's buckets. None at weight 0.

    `backend_ref(revision)` is the router's backendRef to a revision.
    """
    if canary_weight <= 0:
        return []
    to_canary = canary_buckets(settings.buckets, canary_weight)
    to_stable = frozenset(range(settings.buckets)) - to_canary

    def rule(header: str, kind: str, value: str, revision: str) -> dict[str, Any]:
        match = {"headers": [{"name": header, "type": kind, "value": value}]}
        return {"matches": [match], "backendRefs": [{**backend_ref(revision), "weight": 1}]}

    pinned = (canary, stable) if settings.pin_revision else ()
    rules = [rule(PIN_HEADER, "Exact", revision, revision) for revision in pinned]
    for members, revision in ((to_canary, canary), (to_stable, stable)):
        if members:
            regex = suffix_regex(settings.buckets, members)
            rules.append(rule(settings.header, "RegularExpression", regex, revision))
    return rules
