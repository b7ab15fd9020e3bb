"""Structured output's pure parts: schema checks, the grammar mask on the tiny tokenizer,
the request fields. No server: random logits stand in for a model."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pydantic
import pytest
import torch

from modelserve.api.app import STRUCTURED_COMPLETE_FIELD, structured_output_fields
from modelserve.api.protocol import ChatCompletionRequest
from modelserve.engine.structured import (
    MAX_PATTERN_LENGTH_BOUND,
    ConstrainedDecoding,
    GrammarError,
    OutputGrammar,
    allowed_bits,
    bounded_strings_as_patterns,
    mask_disallowed,
    unenforced_keyword,
)
from modelserve.engine.types import Finished, FinishReason, SamplingParams
from modelserve.tiny_model import train_tokenizer

pytestmark = pytest.mark.unit

VOCAB = 512
BOUNDED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 8},
        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string", "maxLength": 4}},
        "size": {"enum": ["S", "M", "L"]},
    },
    "required": ["name", "tags", "size"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def decoding() -> tuple[Any, ConstrainedDecoding]:
    tokenizer = train_tokenizer(VOCAB)
    return tokenizer, ConstrainedDecoding(tokenizer, VOCAB, {tokenizer.eos_token_id})


def sample_under(
    grammar: OutputGrammar, tokenizer: Any, seed: int, max_tokens: int = 120
) -> tuple[list[int], bool]:
    """Tokens sampled from random logits under the grammar; whether the grammar completed."""
    generator = torch.Generator().manual_seed(seed)
    state = grammar.start()
    tokens: list[int] = []
    for _ in range(max_tokens):
        logits = torch.randn(1, VOCAB, generator=generator) * 4
        mask_disallowed(logits, [state])
        token = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
        assert state.accept(token)
        tokens.append(token)
        if state.complete:
            return tokens, True
    return tokens, False


def test_random_logits_under_a_schema_give_valid_json(
    decoding: tuple[Any, ConstrainedDecoding],
) -> None:
    """Length-bounded strings included (xgrammar #800 let raw control characters in).

    xgrammar takes overlong UTF-8 sequences (E0 80..9F ..) for characters: the text
    decodes them to U+FFFD each, so the JSON still parses, but a string can come out
    longer than its maxLength. Random logits pick such bytes now and then; a trained
    model does not write them. Those answers are checked for parsing only.
    """
    tokenizer, grammars = decoding
    grammar = grammars.json_schema(BOUNDED)
    special = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    overlong = 0
    for seed in range(40):
        tokens, complete = sample_under(grammar, tokenizer, seed)
        assert complete, tokenizer.decode(tokens)
        assert tokens[-1] == tokenizer.eos_token_id
        assert not special & set(tokens[:-1])
        answer = json.loads(tokenizer.decode(tokens[:-1]))
        raw = tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens(tokens[:-1]))
        if "\ufffd" in raw:
            overlong += 1
            continue
        jsonschema.validate(answer, BOUNDED)
    assert overlong <= 4


def test_json_object_is_an_object(decoding: tuple[Any, ConstrainedDecoding]) -> None:
    tokenizer, grammars = decoding
    completed = 0
    for seed in range(20):
        tokens, complete = sample_under(grammars.json_object(), tokenizer, seed, max_tokens=200)
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        assert text.startswith("{")
        if complete:
            completed += 1
            assert isinstance(json.loads(text), dict)
    assert completed > 0


def test_the_mask_touches_only_constrained_rows(
    decoding: tuple[Any, ConstrainedDecoding],
) -> None:
    _, grammars = decoding
    logits = torch.randn(3, VOCAB)
    before = logits.clone()
    mask_disallowed(logits, [None, grammars.json_object().start(), None])
    assert torch.equal(logits[0], before[0]) and torch.equal(logits[2], before[2])
    allowed = torch.isfinite(logits[1]).nonzero().flatten().tolist()
    # A JSON object's first token opens it: "{" and tokens that start with it.
    assert allowed and len(allowed) < VOCAB / 4


def test_allowed_bits_clear_exactly_the_forbidden_tokens() -> None:
    keep = allowed_bits({0, 31, 32, 63, 70}, 80)
    assert keep.shape == (3,) and keep.dtype == torch.int32
    bits = [(int(keep[t // 32]) >> (t % 32)) & 1 for t in range(80)]
    assert [t for t, bit in enumerate(bits) if not bit] == [0, 31, 32, 63, 70]


def test_unenforced_keywords_are_found_where_they_are() -> None:
    assert unenforced_keyword(BOUNDED) is None
    nested = {"type": "object", "properties": {"age": {"type": "integer", "multipleOf": 2}}}
    assert unenforced_keyword(nested) == "properties.age.multipleOf"
    # A property named like a keyword is a name, not a keyword.
    assert unenforced_keyword({"type": "object", "properties": {"not": {"type": "string"}}}) is None
    in_list = {"anyOf": [{"type": "null"}, {"type": "array", "uniqueItems": True}]}
    assert unenforced_keyword(in_list) == "anyOf[1].uniqueItems"
    assert unenforced_keyword({"type": "string", "format": "color"}) == "format ('color')"
    assert unenforced_keyword({"type": "string", "format": "date"}) is None
    both = {"items": {"type": "string", "pattern": "^a+$", "maxLength": 3}}
    assert unenforced_keyword(both) == "items.pattern with minLength/maxLength"
    assert unenforced_keyword({"allOf": [{}, {}]}) == "allOf with more than one schema"
    defs = {"$defs": {"x": {"if": {}}}, "$ref": "#/$defs/x"}
    assert unenforced_keyword(defs) == "$defs.x.if"


def test_bounded_strings_become_anchored_patterns() -> None:
    rewritten = bounded_strings_as_patterns(BOUNDED)
    assert rewritten["properties"]["name"] == {"type": "string", "pattern": "^.{2,8}$"}
    assert rewritten["properties"]["tags"]["items"] == {"type": "string", "pattern": "^.{0,4}$"}
    assert rewritten["properties"]["tags"]["maxItems"] == 2
    assert BOUNDED["properties"]["name"]["maxLength"] == 8  # the caller's schema is left alone
    only_min = bounded_strings_as_patterns({"type": "string", "minLength": 3})
    assert only_min == {"type": "string", "pattern": "^.{3,}$"}
    # Past what xgrammar's pattern path compiles, the bounds stay as they are.
    large = {"type": "string", "maxLength": MAX_PATTERN_LENGTH_BOUND + 1}
    assert bounded_strings_as_patterns(large) == large


def test_schemas_that_cannot_be_enforced_say_why(
    decoding: tuple[Any, ConstrainedDecoding],
) -> None:
    _, grammars = decoding
    with pytest.raises(GrammarError, match="multipleOf"):
        grammars.json_schema({"type": "integer", "multipleOf": 3})
    with pytest.raises(GrammarError, match=r'^Unsupported type "bogus"$'):
        grammars.json_schema({"type": "bogus"})
    with pytest.raises(GrammarError, match="nope"):
        grammars.json_schema({"$ref": "#/$defs/nope"})
    grammars.json_schema({"type": "string", "maxLength": 1000})


def test_response_format_fields() -> None:
    base = {"messages": [{"role": "user", "content": "x"}]}
    schema_format = {"type": "json_schema", "json_schema": {"name": "a", "schema": BOUNDED}}
    body = ChatCompletionRequest.model_validate({**base, "response_format": schema_format})
    assert body.response_format is not None and body.response_format.json_schema is not None
    assert body.response_format.json_schema.json_schema == BOUNDED
    for wrong in (
        {"type": "json_schema"},
        {"type": "yaml"},
        {"type": "json_schema", "json_schema": {"name": "has space", "schema": {}}},
        {"type": "json_schema", "json_schema": {"name": "a"}},
    ):
        with pytest.raises(pydantic.ValidationError):
            ChatCompletionRequest.model_validate({**base, "response_format": wrong})


def test_structured_fields_only_on_structured_requests(
    decoding: tuple[Any, ConstrainedDecoding],
) -> None:
    _, grammars = decoding
    done = Finished(FinishReason.STOP, 3, 4, grammar_complete=True)
    cut = Finished(FinishReason.LENGTH, 3, 4, grammar_complete=False)
    assert structured_output_fields(SamplingParams(max_tokens=4), done) == {}
    constrained = SamplingParams(max_tokens=4, grammar=grammars.json_object())
    assert structured_output_fields(constrained, done) == {STRUCTURED_COMPLETE_FIELD: True}
    assert structured_output_fields(constrained, cut) == {STRUCTURED_COMPLETE_FIELD: False}
    assert structured_output_fields(constrained, None) == {STRUCTURED_COMPLETE_FIELD: False}
