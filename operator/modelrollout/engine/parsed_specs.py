"""Each rollout's spec parsed once per generation, not once per tick.

Validating the spec builds a tree of pydantic models: at hundreds of rollouts
ticked every few seconds, that was a tenth of the operator's CPU for a spec
that changes a few times a day. What every tick derives from the spec alone
(its revision's hash) is kept with it.

The memo is keyed by `metadata.generation`: the API server counts every
change of a custom resource's spec there (with the status subresource,
status and metadata changes leave it alone), so a new generation is a new
spec and the same generation is the same spec. Checking that costs nothing,
where a digest of the spec's canonical JSON cost a twentieth of a tick. A
body without a generation (one built by hand, not read from an API server)
is keyed by that digest instead. The models are frozen, so one parse can be
handed to every tick. Specs that fail to parse are not remembered: the error
is raised each time.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

from modelrollout.engine.revision import revision_of
from modelrollout.models import ModelRolloutSpec, parse_spec


@dataclass(frozen=True)
class ParsedSpec:
    """A valid spec and what is derived from it alone."""

    spec: ModelRolloutSpec
    # revision_of(spec): the hash of its model and runtime.
    revision: str


def _key(generation: int | None, body_spec: Any) -> int | bytes:
    if generation:
        return generation
    canonical = json.dumps(body_spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


class ParsedSpecs:
    """The last valid spec parsed for each rollout (by uid), with the key it was parsed under."""

    def __init__(self) -> None:
        self._parsed: dict[str, tuple[int | bytes, ParsedSpec]] = {}
        self._guard = threading.Lock()
        self.parses = 0  # how many specs were parsed, not taken from memory

    def parse(self, uid: str, generation: int | None, body_spec: Any) -> ParsedSpec:
        """`parse_spec(body_spec)`, remembered until the generation changes; raises as it does."""
        key = _key(generation, body_spec)
        with self._guard:
            remembered = self._parsed.get(uid)
        if remembered is not None and remembered[0] == key:
            return remembered[1]
        spec = parse_spec(body_spec)
        parsed = ParsedSpec(spec, revision_of(spec))
        with self._guard:
            self.parses += 1
            self._parsed[uid] = (key, parsed)
        return parsed

    def forget(self, uid: str) -> None:
        with self._guard:
            self._parsed.pop(uid, None)
