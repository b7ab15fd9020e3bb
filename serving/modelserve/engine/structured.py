"""Constrained decoding for structured output, on xgrammar (one of vLLM's grammar backends).

A response format (a JSON schema, or "any JSON object") is compiled once per request
into a grammar over the model's vocabulary; each request then gets its own matcher,
which the engine asks before every token for the tokens the grammar allows next (a
bitmask applied to the logits, xgrammar's own CPU or GPU kernel) and tells which token
was chosen. Once the grammar is complete only the model's stop tokens stay allowed, so
a constrained generation ends on its own at the end of the JSON (or at max_tokens).

JSON is generated compact (one space after `:` and `,`, no other whitespace), as vLLM
does with `disable_any_whitespace`: free whitespace lets a weak model pad forever.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import xgrammar as xgr

# String formats xgrammar's JSON schema converter turns into grammar (vLLM's list).
_SUPPORTED_FORMATS = frozenset(
    {
        "email", "date", "time", "date-time", "duration", "ipv4", "ipv6", "hostname",
        "uuid", "uri", "uri-reference", "uri-template", "json-pointer",
        "relative-json-pointer",
    }
)  # fmt: skip
# Keywords the converter accepts but does not enforce: a schema using them would be
# answered with JSON that may not validate, so it is refused instead.
_UNENFORCED_KEYWORDS = (
    "multipleOf", "uniqueItems", "contains", "minContains", "maxContains", "not", "if",
    "then", "else", "dependentRequired", "dependentSchemas", "dependencies",
    "unevaluatedItems", "unevaluatedProperties",
)  # fmt: skip
# Keywords whose value is one subschema, a list of them, or a map of names to them.
_SUBSCHEMA = ("items", "additionalProperties", "propertyNames", "additionalItems")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")

# xgrammar's regex path takes repetition counts up to about this (200 fails); larger
# bounds stay with its own length path and its gap (bounded_strings_as_patterns).
MAX_PATTERN_LENGTH_BOUND = 128
# How xgrammar's errors begin: "[04:21:23] /project/cpp/json_schema_converter.cc:4944: ".
_ERROR_LOCATION = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*")

# Compiled grammars kept for repeated schemas (xgrammar's own cache).
_COMPILE_CACHE_BYTES = 64 * 1024 * 1024


class GrammarError(ValueError):
    """A response format that cannot be enforced; the message says why."""


def _subschemas(schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for key in _SUBSCHEMA:
        if isinstance(schema.get(key), dict):
            yield key, schema[key]
    for key in _SUBSCHEMA_LISTS:
        for index, item in enumerate(schema.get(key) or ()):
            yield f"{key}[{index}]", item
    for key in _SUBSCHEMA_MAPS:
        value = schema.get(key)
        if isinstance(value, dict):
            for name, item in value.items():
                yield f"{key}.{name}", item


def bounded_strings_as_patterns(schema: Any) -> Any:
    """`schema` with each string's minLength/maxLength written as the pattern `^.{min,max}$`.

    xgrammar 0.2.8 compiles a length-bounded string to a character class that lets raw
    control characters through, which no JSON parser takes (xgrammar issue #800); its
    pattern path is JSON-string aware. `.` takes no line break, so the pattern is, if
    anything, stricter than the bounds. Bounds above MAX_PATTERN_LENGTH_BOUND, which the
    regex path cannot compile, are left to the length path.
    """
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SUBSCHEMA:
        if isinstance(out.get(key), dict):
            out[key] = bounded_strings_as_patterns(out[key])
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [bounded_strings_as_patterns(item) for item in out[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: bounded_strings_as_patterns(item) for name, item in out[key].items()}
    bounds = [out.get("minLength", 0), out.get("maxLength", "")]
    if (
        ("minLength" in out or "maxLength" in out)
        and "pattern" not in out
        and "format" not in out
        and all(
            (isinstance(b, int) and 0 <= b <= MAX_PATTERN_LENGTH_BOUND) or b == "" for b in bounds
        )
    ):
        out.pop("minLength", None)
        out.pop("maxLength", None)
        out["pattern"] = f"^.{{{bounds[0]},{bounds[1]}}}$"
    return out


def unenforced_keyword(schema: Any, path: str = "") -> str | None:
    """The first place where `schema` asks for what the grammar cannot enforce, else None.

    Returns e.g. `properties.age.multipleOf`; walks subschemas by keyword, so a property
    that happens to be named like a keyword is not mistaken for one.
    """
    if not isinstance(schema, dict):
        return None
    prefix = f"{path}." if path else ""
    for keyword in _UNENFORCED_KEYWORDS:
        if keyword in schema:
            return prefix + keyword
    form = schema.get("format")
    if isinstance(form, str) and form not in _SUPPORTED_FORMATS:
        return f"{prefix}format ({form!r})"
    # xgrammar drops length bounds from a pattern's or a format's grammar.
    if ("pattern" in schema or "format" in schema) and (
        "minLength" in schema or "maxLength" in schema
    ):
        return f"{prefix}{'pattern' if 'pattern' in schema else 'format'} with minLength/maxLength"
    if len(schema.get("allOf") or ()) > 1:
        return f"{prefix}allOf with more than one schema"
    for key, subschema in _subschemas(schema):
        found = unenforced_keyword(subschema, prefix + key)
        if found is not None:
            return found
    return None


class ConstrainedDecoding:
    """Grammars of response formats over one model's vocabulary, and their matchers."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: set[int]) -> None:
        """`vocab_size`: the width of the model's logits (may exceed the tokenizer's)."""
        self.vocab_size = vocab_size
        self._stop_token_ids = sorted(stop_token_ids)
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=self._stop_token_ids
        )
        # xgrammar takes a special token whose text is not empty (`<|user|>`) for that text;
        # the answer's text leaves special tokens out, so inside JSON they are never allowed.
        special = {
            int(token_id)
            for token_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items()
            if added.special and token_id not in stop_token_ids and token_id < vocab_size
        }
        self._keep = allowed_bits(special, vocab_size)
        self._compiler = xgr.GrammarCompiler(
            info, max_threads=1, cache_enabled=True, cache_limit_bytes=_COMPILE_CACHE_BYTES
        )

    def json_object(self) -> OutputGrammar:
        """Any JSON object (OpenAI's `json_object`), as vLLM compiles it."""
        return OutputGrammar(
            self._compiler.compile_json_schema('{"type": "object"}', any_whitespace=False),
            self._stop_token_ids,
            self._keep,
        )

    def json_schema(self, schema: dict[str, Any]) -> OutputGrammar:
        """JSON valid against `schema`; GrammarError for what cannot be enforced."""
        where = unenforced_keyword(schema)
        if where is not None:
            raise GrammarError(
                f"the schema uses {where}, which constrained decoding cannot enforce"
            )
        try:
            compiled = self._compiler.compile_json_schema(
                json.dumps(bounded_strings_as_patterns(schema)), any_whitespace=False
            )
        except RuntimeError as error:
            # xgrammar's message carries its source location first: keep what it says.
            raise GrammarError(_ERROR_LOCATION.sub("", str(error).strip())) from None
        return OutputGrammar(compiled, self._stop_token_ids, self._keep)


class OutputGrammar:
    """A compiled grammar, shared by the requests that ask for it; each starts its own matcher."""

    def __init__(
        self, compiled: xgr.CompiledGrammar, stop_token_ids: Sequence[int], keep: torch.Tensor
    ) -> None:
        self._compiled = compiled
        self._stop_token_ids = list(stop_token_ids)
        self._keep = keep

    def start(self) -> GrammarState:
        matcher = xgr.GrammarMatcher(self._compiled, override_stop_tokens=self._stop_token_ids)
        return GrammarState(matcher, self._keep)


class GrammarState:
    """Where one generation is in its grammar."""

    def __init__(self, matcher: xgr.GrammarMatcher, keep: torch.Tensor) -> None:
        self._matcher = matcher
        self._keep = keep

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        """Row `row` of `bitmask` (xgrammar's layout): bit set = token allowed next."""
        self._matcher.fill_next_token_bitmask(bitmask, row)
        bitmask[row] &= self._keep

    def accept(self, token_id: int) -> bool:
        """Advance by the chosen token; False if the grammar does not allow it."""
        return bool(self._matcher.accept_token(token_id))

    @property
    def complete(self) -> bool:
        """The output is whole: the grammar reached its end and a stop token was taken."""
        return bool(self._matcher.is_terminated())


def allowed_bits(forbidden: set[int], vocab_size: int) -> torch.Tensor:
    """A bitmask row (xgrammar's layout: 32 tokens per int32) allowing all but `forbidden`."""
    keep = torch.full(((vocab_size + 31) // 32,), -1, dtype=torch.int32)
    for token_id in forbidden:
        bit = torch.tensor(1, dtype=torch.int32) << (token_id % 32)
        keep[token_id // 32] &= ~bit
    return keep


def mask_disallowed(logits: torch.Tensor, states: Sequence[GrammarState | None]) -> None:
    """Set to -inf, in place, the logits of tokens each row's grammar does not allow next.

    `logits` is [rows, vocab]; rows whose state is None are left as they are.
    """
    constrained = [row for row, state in enumerate(states) if state is not None]
    if not constrained:
        return
    bitmask = xgr.allocate_token_bitmask(len(states), logits.shape[-1])
    for row in constrained:
        state = states[row]
        assert state is not None
        state.fill_bitmask(bitmask, row)
    # xgrammar's CPU kernel on CPU; elsewhere its plain-torch one: the default on CUDA is a
    # Triton kernel, compiled on first use with a C compiler the serving image does not have.
    xgr.apply_token_bitmask_inplace(
        logits,
        bitmask.to(logits.device, non_blocking=True),
        vocab_size=logits.shape[-1],
        indices=constrained,
        backend="cpu" if logits.device.type == "cpu" else "torch_native",
    )
