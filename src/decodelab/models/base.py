"""The adapter protocols the decoding loops talk to (CausalLM; MaskedDiffusionLM for the
diffusion loop), and helpers built only on them.

Capabilities an adapter may declare (the registry refuses a method whose needs are missing):
  "tree_mask"      forward() takes a [N, N] attention mask among the new tokens
  "hidden_states"  forward(hidden=True) returns the last hidden states
  "batch"          forward() takes [B, N] ids; select(rows) keeps/reorders/repeats cache rows
                   (diffusion: logits() takes [B, N] canvases)
  "rewind"         truncate() and commit() may drop cached tokens (every speculative method needs it)
  "layer_skip"     forward(skip=S) bypasses decoder layers S (their caches gain nothing) and
                   forward(layers=True) returns Step.layers, every decoder layer's input (FiRST)
  "kv_cache"       diffusion: logits(keep=...) keeps keys and values and logits_cached() reuses
                   them (Fast-dLLM's prefix and dual caches)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class Step:
    logits: torch.Tensor  # [N, V] (or [B, N, V] when batched)
    hidden: torch.Tensor | None = None  # [N, H]
    layers: torch.Tensor | None = None  # [L, N, H] each decoder layer's input (forward(layers=True))


@dataclass
class Counter:
    """What a model did, for the bench: forward calls and tokens scored (prefill separate)."""

    forwards: int = 0
    tokens: int = 0
    prefill_forwards: int = 0
    prefill_tokens: int = 0

    def count(self, tokens: int) -> None:
        self.forwards += 1
        self.tokens += tokens

    def as_prefill(self, tokens: int) -> None:
        """Re-book the last forward (of `tokens` tokens) as prefill."""
        self.forwards -= 1
        self.tokens -= tokens
        self.prefill_forwards += 1
        self.prefill_tokens += tokens


class CachedIds:
    """The token-id bookkeeping adapters share: ``self._ids`` [B, L] holds the ids whose
    keys and values are in the cache."""

    _ids: torch.Tensor

    @property
    def cache_len(self) -> int:
        return self._ids.shape[1]

    @property
    def cached_ids(self) -> torch.Tensor:
        return self._ids[0]


@runtime_checkable
class CausalLM(Protocol):
    capabilities: frozenset[str]
    tokenizer: object | None
    vocab_size: int
    max_length: int | None  # context length in tokens, None if unbounded
    counter: Counter

    @property
    def cache_len(self) -> int: ...  # tokens held in the KV cache

    @property
    def cached_ids(self) -> torch.Tensor: ...  # [cache_len] the tokens the cache holds (row 0)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, tree_mask: torch.Tensor | None = None,
                hidden: bool = False) -> Step: ...  # ids / positions may be rewritten by the caller after
    # the call (the autoregressive loop reuses one of each): an adapter copies what it keeps

    def truncate(self, n: int) -> None: ...  # keep the first n cached tokens

    def commit(self, keep: list[int] | torch.Tensor) -> None: ...  # keep these of the last forward's tokens

    def reset(self) -> None: ...  # empty the cache

    def fresh(self, needs: frozenset[str] | None = None) -> "CausalLM": ...  # same weights, own cache and counter;
    # needs: the capabilities the generation will use (an adapter may size its cache by them)

    @property
    def eos_token_ids(self) -> list[int]: ...


def forward_last(model: CausalLM, ids: torch.Tensor, positions: torch.Tensor) -> Step:
    """A chain forward whose caller reads only the last row's logits: the adapter's own
    `forward_last` when it has one (the llama.cpp adapter then computes that row only), else
    forward()."""
    fn = getattr(model, "forward_last", None)
    return fn(ids, positions) if fn is not None else model.forward(ids, positions)


def forward_one(model: CausalLM, token: int, position: int):
    """The logits [1, V] after `token` at `position`, a one-token chain forward (the autoregressive
    step): the adapter's own `forward_one(token, position)` when it has one, which takes ints and
    returns a fresh numpy array (llama.cpp: no tensor is built per token, about 5% of a greedy step
    on zoo:code-target), else forward()'s logits tensor. torch.as_tensor gives a tensor of either
    without a copy."""
    fn = getattr(model, "forward_one", None)
    if fn is not None:
        return fn(token, position)
    return model.forward(torch.tensor([token]), torch.tensor([position])).logits


def prefill(model: CausalLM, ids: torch.Tensor) -> Step | None:
    """Forward ids [T] at the next positions, booked as prefill. Nothing to do for T = 0. The
    step's logits may hold the last row only (forward_last)."""
    if len(ids) == 0:
        return None
    start = model.cache_len
    step = forward_last(model, ids, torch.arange(start, start + len(ids)))
    model.counter.as_prefill(len(ids))
    return step


def sync(model: CausalLM, ctx: torch.Tensor) -> torch.Tensor:
    """Bring the cache to hold exactly ctx and return the logits after ctx[-1]. ctx: [T] -> [V].

    Keeps the longest cached prefix that agrees with ctx and forwards only the rest, so a drafter
    whose guesses were partly rejected re-uses its cache without bookkeeping of its own.
    """
    cached = model.cached_ids
    n = min(len(cached), len(ctx) - 1)  # always re-score at least ctx[-1] to get its logits
    if n > 0:
        diff = (cached[:n] != ctx[:n]).nonzero()
        if len(diff):
            n = int(diff[0])
    model.truncate(n)
    new = ctx[n:]
    return forward_last(model, new, torch.arange(n, len(ctx))).logits[-1]


@runtime_checkable
class MaskedDiffusionLM(Protocol):
    """A masked diffusion LM: one bidirectional forward scores a whole canvas (prompt + partly
    masked answer). `mask_id` marks undecided positions. Logits are returned only at the rows
    asked for (the output head is a small model's largest cost), always as float32."""

    capabilities: frozenset[str]
    tokenizer: object | None
    vocab_size: int
    max_length: int | None  # context length in tokens, None if unbounded
    counter: Counter  # forwards and forwarded tokens
    mask_id: int

    @property
    def eos_token_ids(self) -> list[int]: ...

    def fresh(self, needs: frozenset[str] | None = None) -> "MaskedDiffusionLM": ...  # same weights, own counter and KV cache

    def logits(self, canvas: torch.Tensor, rows: torch.Tensor | None = None,
               keep: torch.Tensor | None = None) -> torch.Tensor:
        """canvas [N] (or [B, N]) -> logits [R, V] (or [B, R, V]) at `rows` [R] (all when None).
        keep [C] (needs "kv_cache", batch 1): positions whose keys and values this forward leaves
        in the cache, replacing what it held."""

    def logits_cached(self, ids: torch.Tensor, positions: torch.Tensor,
                      rows: torch.Tensor | None = None) -> torch.Tensor:
        """Forward only ids [M] at `positions` [M], attending to the cached keys and values and to
        each other, bidirectionally; -> [R, V] at `rows` (indices into ids). The cache is left as
        it was. Needs "kv_cache"."""
