"""A tiny random-weights Llama-style model with a locally trained BPE tokenizer.

Tests and benchmarks need a real causal LM in Hugging Face format without any
download: this builds one from nothing (the tokenizer is trained on text that
ships in this module) and saves it with `save_pretrained`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import (  # type: ignore[import-untyped]
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"
PAD_TOKEN = "<|pad|>"
END_OF_TURN_TOKEN = "<|eot|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, END_OF_TURN_TOKEN, *ROLE_TOKENS)

# Each turn is wrapped in role tokens; the generation prompt opens an assistant turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|eot|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

TRAINING_TEXT = """
A model rollout moves traffic from a stable version to a canary in small steps.
At every step the operator asks Prometheus whether the new model is healthy:
error rate, time to first token, inter-token latency and end-to-end latency.
When a check breaches its threshold, all traffic goes back to the stable model.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
Language models predict the next token from the tokens before it. A tokenizer
splits text into tokens; byte pair encoding merges the most frequent pairs.
Kubernetes schedules pods onto nodes; a deployment keeps replicas running.
Continuous batching lets many requests share each forward pass of the model,
so a server answers more tokens per second while each request waits less.
What is the capital of France? Paris is the capital of France.
How many legs does a spider have? A spider has eight legs.
Tell me a story about a robot who learns to paint the sea at night.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 1000. Punctuation: , . ; : ! ? ' " ( ) [ ] { }
"""


@dataclass(frozen=True)
class TinyModelShape:
    """Sizes of the generated model; the defaults make a model of about 0.1M weights."""

    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512


def train_tokenizer(vocab_size: int, extra_text: str = "") -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the built-in text (byte level: any input encodes),
    plus `extra_text`, whose frequent words become tokens of their own."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((TRAINING_TEXT + extra_text).splitlines(), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        chat_template=CHAT_TEMPLATE,
        model_max_length=TinyModelShape.max_position_embeddings,
    )


# The tiny model in a shape vLLM's CPU build serves: its attention needs heads at least
# 32 wide (256 / 4 heads = 64; the default shape's are 16).
VLLM_SHAPE = TinyModelShape(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def make_tiny_model(
    out_dir: Path,
    seed: int = 0,
    shape: TinyModelShape | None = None,
    scripted_answer: str | None = None,
) -> Path:
    """Write a tiny LlamaForCausalLM (safetensors) and its tokenizer to `out_dir`.

    With `scripted_answer`, greedy decoding answers every chat prompt with that text
    (then end of text), whatever was asked: a model that conforms to a suite written
    for it, in any engine that loads Llama weights (see `_script_answer`).
    """
    shape = shape or TinyModelShape()
    # The answer, repeated, in the tokenizer's training text makes each of its words
    # one token, so the answer is short in tokens.
    extra_text = f"\n{scripted_answer}" * 64 if scripted_answer else ""
    tokenizer = train_tokenizer(shape.vocab_size, extra_text)
    tokenizer.model_max_length = shape.max_position_embeddings
    config = LlamaConfig(  # type: ignore[no-untyped-call]
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        # A wide initialisation spreads the logits, so greedy decoding has no
        # near-ties that float rounding (batched vs. single) could flip.
        initializer_range=0.25,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    if scripted_answer is not None:
        _script_answer(model, tokenizer, scripted_answer)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _script_answer(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, answer: str
) -> None:
    """Make greedy decoding after the assistant token spell `answer`, then end of text.

    Every layer's output projections are zeroed, so the last hidden state is the
    current token's embedding alone (a bigram model): the chain's tokens get one-hot
    embeddings on coordinates of their own (no other token's embedding has any part of
    them), and each one's successor an output row that points at it, far above the
    random rows. After any other token the logits stay the random model's (the chain's
    successors get 0), so decoding that a grammar constrains keeps its preferences.
    """
    chain = [
        tokenizer.convert_tokens_to_ids(ROLE_TOKENS[2]),
        *tokenizer.encode(answer, add_special_tokens=False),
        tokenizer.eos_token_id,
    ]
    hidden_size = model.config.hidden_size
    if len(set(chain)) != len(chain) or len(chain) > hidden_size:
        raise ValueError(
            f"scripted answer {answer!r}: its tokens must be distinct, at most "
            f"{hidden_size - 2} of them; got {tokenizer.convert_ids_to_tokens(chain[1:-1])}"
        )
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.model.embed_tokens.weight
        head = model.lm_head.weight
        embeddings[:, : len(chain) - 1] = 0.0
        for position, (token, successor) in enumerate(itertools.pairwise(chain)):
            embeddings[token] = torch.nn.functional.one_hot(
                torch.tensor(position), hidden_size
            ).float()
            head[successor] = 0.0
            head[successor, position] = 100.0
