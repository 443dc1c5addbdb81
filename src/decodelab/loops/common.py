"""Pieces every loop shares: starting a sequence, emitting what a step commits, and the request's
sampling chain with the context it reads."""
from __future__ import annotations

import functools
from typing import Callable

import torch

from ..core.sampling import probs_from_logits
from ..models.base import CausalLM, prefill
from ..types import StepTrace


def processor(req, cfg=None) -> Callable:
    """`probs(logits [..., V], ctx)`: the request's sampling chain (or `cfg`'s), with DRY's sequence
    breakers taken from the target's tokenizer. ctx: the token ids before each row (one list for
    [V], one per row for [N, V]); read only by the context processors (penalties, DRY)."""
    cfg = cfg or req.sampling
    breakers = None
    if cfg.history and "dry" in cfg.chain and getattr(req.target, "tokenizer", None) is not None:
        breakers = breaker_mask(req.target.tokenizer, req.target.vocab_size, cfg.breaker_strings)

    def probs(logits: torch.Tensor, ctx=None) -> torch.Tensor:
        return probs_from_logits(logits, cfg, ctx if cfg.history else None, breakers)

    return probs


@functools.lru_cache(maxsize=8)
def breaker_mask(tokenizer, vocab_size: int, strings: tuple[str, ...]) -> torch.Tensor:
    """[V] bool: the tokens whose text contains one of `strings` (DRY's sequence breakers)."""
    n = min(vocab_size, len(tokenizer))
    text = tokenizer.batch_decode([[i] for i in range(n)])
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    mask[:n] = torch.tensor([any(s in t for s in strings) for t in text])
    return mask


def start(model: CausalLM, prompt: torch.Tensor) -> None:
    """Empty the cache and prefill all but the last prompt token; the last one is the root of the
    first step, so every step forwards [last committed token, guesses...]."""
    model.reset()
    prefill(model, prompt[:-1])


def clip(tokens: list[int], room: int, stops) -> tuple[list[int], bool]:
    """Cut a step's tokens at the budget and just after the first stop token.
    Returns (tokens to emit, whether decoding ends)."""
    for i, t in enumerate(tokens[:room]):
        if t in stops:
            return tokens[: i + 1], True
    out = tokens[:room]
    return out, len(out) >= room


def emit(req, tokens: list[int], done_so_far: int, logits: torch.Tensor | None, tree=None,
         path: list[int] | None = None) -> tuple[list[int], bool]:
    """Clip a step's tokens (budget, stops), count them, and record their log-probabilities and
    the step's trace when the request asks. logits: [K, V], row i the target's logits that token i
    was chosen from (read only for logprobs: None when the request asks none). tree / path: the
    verified draft and its accepted node path (root first)."""
    out, done = clip(tokens, req.max_new_tokens - done_so_far, req.stops)
    req.stats.committed.append(len(out))
    if req.logprobs is not None:
        req.logprobs.extend(token_logprobs(logits[: len(out)], out))
    if req.trace is not None:
        req.trace.append(step_trace(out, tree, path))
    return out, done


def step_trace(out: list[int], tree, path) -> StepTrace:
    if tree is None:
        return StepTrace(tokens=out)
    return StepTrace(tokens=out, accepted=min(len(path) - 1, len(out)), draft=tree.tokens[1:].tolist(),
                     parents=[p - 1 for p in tree.parent_list[1:]], path=[i - 1 for i in path[1:]])


def token_logprobs(logits, tokens: list[int]) -> list[float]:
    """log p(token) under the raw target distribution (temperature 1, no filters), as vLLM
    reports by default. logits: [K, V] (a tensor or a numpy array), tokens: K ids."""
    rows = torch.log_softmax(torch.as_tensor(logits).float(), dim=-1)  # [K, V]
    return rows[torch.arange(len(tokens)), torch.tensor(tokens, dtype=torch.long)].tolist()
