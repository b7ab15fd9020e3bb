"""An experiment's segment as header-match rules: which requests go to the candidate.

An experiment step (strategy.canary.steps[].experiment) sends the requests of
a segment to the canary whatever the weight, the rest by the weighted rule:
A/B by request attributes. Every condition of the segment is one header match
of a single HTTPRoute match, so a request must meet them all (Gateway API ANDs
the headers of one match):

- a header, Exact or RegularExpression, as written;
- a cookie: a RegularExpression on the `Cookie` header finding `name=value`
  between the header's start or a `;` and its end or a `;`, anchored and led
  by `.*` so gateways that match the whole value (Envoy) and those that search
  it (Traefik) agree;
- a hash range: the bucket of a hashed header (its last hex digit or two, as
  session affinity's buckets) from `from` to `to`.

The rule comes before the session-affinity rules, so a segment request goes to
the candidate even where its session bucket is stable's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from modelrollout.traffic.session_affinity import suffix_regex

COOKIE_HEADER = "Cookie"

MatchType = Literal["Exact", "RegularExpression"]


@dataclass(frozen=True)
class SegmentSettings:
    """The header matches (name, type, value) a request of the segment meets, all of them."""

    matches: tuple[tuple[str, MatchType, str], ...]


def cookie_regex(name: str, value: str) -> str:
    """A RegularExpression on the Cookie header finding the cookie `name` with `value`."""
    return rf"^(?:.*;\s*)?{re.escape(name)}={re.escape(value)}(?:\s*;.*)?$"


def hash_range_regex(buckets: int, first: int, last: int) -> str:
    """A RegularExpression matching header values whose bucket is in first..last."""
    return suffix_regex(buckets, frozenset(range(first, last + 1)))


def segment_settings(
    headers: list[tuple[str, MatchType, str]],
    cookie: tuple[str, str] | None,
    hash_range: tuple[str, int, int, int] | None,
) -> SegmentSettings:
    """From the spec's segment: headers (name, type, value), cookie (name, value), hash range
    (header, buckets, from, to)."""
    matches = list(headers)
    if cookie is not None:
        matches.append((COOKIE_HEADER, "RegularExpression", cookie_regex(*cookie)))
    if hash_range is not None:
        header, buckets, first, last = hash_range
        matches.append((header, "RegularExpression", hash_range_regex(buckets, first, last)))
    return SegmentSettings(tuple(matches))


def segment_rules(
    settings: SegmentSettings, canary: str, backend_ref: Callable[[str], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The rule sending the segment's requests to the canary; `backend_ref(revision)` is the
    router's backendRef to a revision."""
    headers = [
        {"name": name, "type": kind, "value": value} for name, kind, value in settings.matches
    ]
    return [
        {
            "matches": [{"headers": headers}],
            "backendRefs": [{**backend_ref(canary), "weight": 1}],
        }
    ]
