"""Continuous batching on one model: every running request advances one token per forward pass.

The running requests share one KV cache, left-padded so that every row's
tokens end at the last column. A step first prefills the requests that
arrived since the last step (together, left-padded), merges their cache into
the running batch (padding the shorter side on the left), then decodes one
token for every row. Finished or cancelled rows are cut out of the cache and
all-padding columns are trimmed. Each row has its own position ids, so the
padding changes nothing in what a row computes: a request gives the same
tokens alone or in a batch.

The model runs on a dedicated thread (torch releases the GIL inside its
kernels, so the HTTP event loop stays responsive); events go back through each
request's sink.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from modelserve.engine.detokenizer import IncrementalDetokenizer
from modelserve.engine.sampling import choose_tokens, make_generator, token_logprobs
from modelserve.engine.structured import GrammarState, mask_disallowed
from modelserve.engine.types import (
    EngineStoppedError,
    Finished,
    FinishReason,
    GenerationRequest,
    PromptScored,
    QueueFullError,
    TokenLogprob,
    TokensGenerated,
)

logger = logging.getLogger(__name__)


@dataclass(eq=False)  # identity: rows are looked up in lists every step
class _Running:
    """A request being decoded: its row in the batch tensors has the same index."""

    request: GenerationRequest
    detokenizer: IncrementalDetokenizer
    generator: torch.Generator | None
    # The request's place in its grammar (structured output), None when unconstrained.
    grammar: GrammarState | None = None
    generated: list[int] = field(default_factory=list)


@dataclass
class _Batch:
    rows: list[_Running]
    cache: DynamicCache
    attention_mask: torch.Tensor  # [rows, columns], 0 on left padding
    next_positions: torch.Tensor  # [rows], position id of the next input token
    next_tokens: torch.Tensor  # [rows], the last sampled token (next input)


def _cache_layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(cache[i][0], cache[i][1]) for i in range(len(cache))]


def _cache_from_layers(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


def _pad_left(tensor: torch.Tensor, columns: int, dim: int) -> torch.Tensor:
    missing = columns - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class ContinuousBatcher:
    """Runs generation requests on a causal LM, many at once."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int,
        max_queue_size: int,
        eos_token_ids: set[int],
        pad_token_id: int,
        token_delay_s: float = 0.0,
    ) -> None:
        self._model = model
        self._device: torch.device = next(model.parameters()).device
        self._tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self._eos_token_ids = eos_token_ids
        self._pad_token_id = pad_token_id
        self._token_delay_s = token_delay_s
        self._waiting: collections.deque[GenerationRequest] = collections.deque()
        self._wakeup = threading.Condition()
        self._batch: _Batch | None = None
        # Admitted but not yet in the batch (during their prefill).
        self._prefilling: list[GenerationRequest] = []
        self._num_running = 0
        self._stopping = False
        self._step_fault: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name="modelserve-engine", daemon=True)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return self._num_running

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Abort what is left and stop the engine thread."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        self._thread.join(timeout_s)

    def submit(self, request: GenerationRequest) -> None:
        """Queue a request; raise QueueFullError at once when the waiting queue is full."""
        with self._wakeup:
            if self._stopping:
                raise EngineStoppedError("the engine is stopping")
            # Free batch slots take requests on top of the queue's own places.
            free_slots = max(0, self.max_batch_size - self._num_running)
            if len(self._waiting) >= self.max_queue_size + free_slots:
                raise QueueFullError(
                    f"the server's queue is full ({self.max_queue_size} requests waiting)"
                )
            self._waiting.append(request)
            self._wakeup.notify()

    def inject_step_faults(self, check_step: Callable[[], None]) -> None:
        """Call `check_step` before every prefill; what it raises fails that step (testing)."""
        self._step_fault = check_step

    # --- engine thread -------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                admitted = self._next_admissions()
                if admitted is None:
                    break
                try:
                    if admitted:
                        self._prefilling = admitted
                        self._prefill(admitted)
                        self._prefilling = []
                    self._drop_cancelled()
                    if self._batch is not None:
                        self._decode_step()
                except Exception as error:  # the server must outlive a failed step
                    logger.exception("generation step failed; failing the running requests")
                    self._fail_all(f"generation failed: {error}")
        self._abort_everything()

    def _next_admissions(self) -> list[GenerationRequest] | None:
        """Requests to start now (may be empty); None when the engine is stopping."""
        with self._wakeup:
            while not self._stopping and self._batch is None and not self._waiting:
                self._wakeup.wait()
            if self._stopping:
                return None
            # Requests whose client left while queued give their place back at once.
            for request in [r for r in self._waiting if r.cancelled]:
                self._waiting.remove(request)
                self._finish_unstarted(request, FinishReason.ABORT)
            admitted: list[GenerationRequest] = []
            running = len(self._batch.rows) if self._batch else 0
            while self._waiting and running + len(admitted) < self.max_batch_size:
                admitted.append(self._waiting.popleft())
            self._num_running = running + len(admitted)
            return admitted

    def _finish_unstarted(self, request: GenerationRequest, reason: FinishReason) -> None:
        request.sink(Finished(reason, len(request.prompt_token_ids), 0))

    def _forward(self, **inputs: Any) -> Any:
        if self._token_delay_s > 0:
            time.sleep(self._token_delay_s)
        return self._model(**inputs, use_cache=True, return_dict=True)

    def _prefill(self, requests: list[GenerationRequest]) -> None:
        if self._step_fault is not None:
            self._step_fault()
        lengths = [len(r.prompt_token_ids) for r in requests]
        columns = max(lengths)
        input_ids = torch.full((len(requests), columns), self._pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(requests), columns), dtype=torch.long)
        for row, request in enumerate(requests):
            input_ids[row, columns - lengths[row] :] = torch.tensor(request.prompt_token_ids)
            attention_mask[row, columns - lengths[row] :] = 1
        input_ids, attention_mask = input_ids.to(self._device), attention_mask.to(self._device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        wants_prompt_logprobs = any(r.params.prompt_logprobs is not None for r in requests)
        output = self._forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=DynamicCache(),
            # Logits for every position only when some request scores its prompt.
            logits_to_keep=0 if wants_prompt_logprobs else 1,
        )
        logits = output.logits.float()
        if wants_prompt_logprobs:
            self._send_prompt_logprobs(requests, input_ids, logits, lengths)
        rows = [
            _Running(
                request=r,
                detokenizer=IncrementalDetokenizer(self._tokenizer, r.params.stop),
                generator=make_generator(r.params),
                grammar=r.params.grammar.start() if r.params.grammar is not None else None,
            )
            for r in requests
        ]
        new_batch = _Batch(
            rows=rows,
            cache=output.past_key_values,
            attention_mask=attention_mask,
            next_positions=torch.tensor(lengths, dtype=torch.long, device=self._device),
            next_tokens=torch.zeros(len(requests), dtype=torch.long, device=self._device),
        )
        # A request may ask for no generated token at all (echo for scoring).
        scoring_only = [row for row in rows if row.request.params.max_tokens == 0]
        self._merge(new_batch)
        for scored_row in scoring_only:
            self._remove(scored_row, FinishReason.LENGTH)
        self._advance([row for row in rows if row not in scoring_only], logits[:, -1, :], rows)

    def _send_prompt_logprobs(
        self,
        requests: list[GenerationRequest],
        input_ids: torch.Tensor,
        logits: torch.Tensor,
        lengths: list[int],
    ) -> None:
        columns = input_ids.shape[1]
        for row, request in enumerate(requests):
            num_top = request.params.prompt_logprobs
            if num_top is None:
                continue
            start = columns - lengths[row]
            logprobs = torch.log_softmax(logits[row, start:-1, :], dim=-1)
            scored: list[TokenLogprob | None] = [None]
            for offset, token_id in enumerate(request.prompt_token_ids[1:]):
                scored.append(token_logprobs(logprobs[offset], token_id, num_top))
            request.sink(PromptScored(tuple(scored)))

    def _decode_step(self) -> None:
        batch = self._batch
        assert batch is not None
        batch.attention_mask = torch.cat(
            [batch.attention_mask, batch.attention_mask.new_ones((len(batch.rows), 1))], dim=1
        )
        output = self._forward(
            input_ids=batch.next_tokens[:, None],
            attention_mask=batch.attention_mask,
            position_ids=batch.next_positions[:, None],
            past_key_values=batch.cache,
        )
        batch.cache = output.past_key_values
        batch.next_positions += 1
        self._advance(list(batch.rows), output.logits[:, -1, :].float(), list(batch.rows))

    def _advance(
        self, rows: list[_Running], logits: torch.Tensor, logits_rows: list[_Running]
    ) -> None:
        """Sample a token for each of `rows` (their logits are at their index in `logits_rows`)."""
        if not rows:
            return
        logits_index = {id(row): i for i, row in enumerate(logits_rows)}
        index = torch.tensor([logits_index[id(row)] for row in rows], device=self._device)
        logits = logits.index_select(0, index)
        want_logprobs = [row.request.params.logprobs for row in rows]
        # The model's own logprobs, before the grammar's mask (vLLM's default, raw_logprobs).
        logprobs = (
            torch.log_softmax(logits, dim=-1) if any(n is not None for n in want_logprobs) else None
        )
        mask_disallowed(logits, [row.grammar for row in rows])
        chosen = choose_tokens(
            logits, [row.request.params for row in rows], [row.generator for row in rows]
        )
        batch = self._batch
        assert batch is not None
        finished: list[tuple[_Running, FinishReason, str | None]] = []
        batch_index = {id(row): i for i, row in enumerate(batch.rows)}
        # One write for all rows (element-wise writes would each sync a GPU).
        batch.next_tokens[
            torch.tensor([batch_index[id(row)] for row in rows], device=self._device)
        ] = torch.tensor(chosen, dtype=torch.long, device=self._device)
        for position, (row, token_id) in enumerate(zip(rows, chosen, strict=True)):
            params = row.request.params
            row.generated.append(token_id)
            is_eos = token_id in self._eos_token_ids and not params.ignore_eos
            text = "" if is_eos else row.detokenizer.add_token(token_id)
            token_logprob = None
            if logprobs is not None and params.logprobs is not None:
                token_logprob = (token_logprobs(logprobs[position], token_id, params.logprobs),)
            row.request.sink(TokensGenerated((token_id,), text, token_logprob))
            accepted = row.grammar is None or row.grammar.accept(token_id)
            grammar_complete = row.grammar is not None and row.grammar.complete
            if not accepted:
                # The mask allows only what the grammar accepts: this is an engine fault.
                rejected = f"token {token_id} is outside the response format's grammar"
                finished.append((row, FinishReason.ERROR, rejected))
            elif is_eos or row.detokenizer.stopped or grammar_complete:
                finished.append((row, FinishReason.STOP, None))
            elif len(row.generated) >= params.max_tokens:
                finished.append((row, FinishReason.LENGTH, None))
        # Rows leave only once every row's next input is written: removal rebuilds the batch.
        for row, reason, error in finished:
            self._remove(row, reason, error)

    def _merge(self, incoming: _Batch) -> None:
        current = self._batch
        if current is None:
            self._batch = incoming
            return
        columns = max(current.attention_mask.shape[1], incoming.attention_mask.shape[1])
        layers = [
            (
                torch.cat([_pad_left(k1, columns, 2), _pad_left(k2, columns, 2)], dim=0),
                torch.cat([_pad_left(v1, columns, 2), _pad_left(v2, columns, 2)], dim=0),
            )
            for (k1, v1), (k2, v2) in zip(
                _cache_layers(current.cache), _cache_layers(incoming.cache), strict=True
            )
        ]
        self._batch = _Batch(
            rows=current.rows + incoming.rows,
            cache=_cache_from_layers(layers),
            attention_mask=torch.cat(
                [
                    _pad_left(current.attention_mask, columns, 1),
                    _pad_left(incoming.attention_mask, columns, 1),
                ],
                dim=0,
            ),
            next_positions=torch.cat([current.next_positions, incoming.next_positions]),
            next_tokens=torch.cat([current.next_tokens, incoming.next_tokens]),
        )

    def _remove(self, row: _Running, reason: FinishReason, error: str | None = None) -> None:
        """Finish a request and cut its row out of the batch."""
        batch = self._batch
        assert batch is not None
        row.request.sink(
            Finished(
                reason,
                len(row.request.prompt_token_ids),
                len(row.generated),
                text=row.detokenizer.flush(),
                error=error,
                grammar_complete=row.grammar.complete if row.grammar is not None else None,
            )
        )
        keep_rows = [r for r in batch.rows if r is not row]
        with self._wakeup:
            self._num_running -= 1
        if not keep_rows:
            self._batch = None
            return
        keep = torch.tensor([batch.rows.index(r) for r in keep_rows], device=self._device)
        attention_mask = batch.attention_mask.index_select(0, keep)
        # Columns that are padding in every remaining row are dead weight.
        first_column = int(attention_mask.any(dim=0).nonzero()[0].item())
        self._batch = _Batch(
            rows=keep_rows,
            cache=_cache_from_layers(
                [
                    (
                        k.index_select(0, keep)[:, :, first_column:],
                        v.index_select(0, keep)[:, :, first_column:],
                    )
                    for k, v in _cache_layers(batch.cache)
                ]
            ),
            attention_mask=attention_mask[:, first_column:],
            next_positions=batch.next_positions.index_select(0, keep),
            next_tokens=batch.next_tokens.index_select(0, keep),
        )

    def _drop_cancelled(self) -> None:
        if self._batch is None:
            return
        for row in [r for r in self._batch.rows if r.request.cancelled]:
            self._remove(row, FinishReason.ABORT)

    def _fail_all(self, message: str) -> None:
        in_batch = {id(row.request) for row in self._batch.rows} if self._batch else set()
        for request in self._prefilling:
            if id(request) not in in_batch:
                request.sink(
                    Finished(FinishReason.ERROR, len(request.prompt_token_ids), 0, error=message)
                )
                with self._wakeup:
                    self._num_running -= 1
        self._prefilling = []
        while self._batch is not None:
            self._remove(self._batch.rows[0], FinishReason.ERROR, error=message)

    def _abort_everything(self) -> None:
        while self._batch is not None:
            self._remove(self._batch.rows[0], FinishReason.ABORT)
        with self._wakeup:
            while self._waiting:
                self._finish_unstarted(self._waiting.popleft(), FinishReason.ABORT)
