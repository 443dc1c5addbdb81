"""The autoregressive loop: one target forward per token; a method supplies `pick`.

`pick(logits [V], ctx list[int]) -> int` is where sampling and logits-processor methods plug in;
without one the loop takes the argmax (greedy), checked for NaN/inf in the same pass. Each step
forwards only the last committed token at its explicit position.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from ..core.sampling import check_finite, greedy_ids, sample
from ..models.base import forward_one
from .common import emit, processor, start


def decode(req, pick: Callable[[torch.Tensor, list[int]], int] | None = None) -> Iterator[list[int]]:
    target = req.target
    start(target, req.prompt)
    ctx = req.prompt.tolist()
    new = 0
    while True:
        x = forward_one(target, ctx[-1], len(ctx) - 1)  # [1, V]: a numpy array from llama.cpp
        if pick is None:
            token = greedy_ids(x)[0]
        else:
            logits = torch.as_tensor(x)
            check_finite(logits)
            token = pick(logits[-1], ctx)
        out, done = emit(req, [token], new, torch.as_tensor(x) if req.logprobs is not None else None)
        ctx += out
        new += len(out)
        yield out
        if done:
            return


def plain(req) -> Iterator[list[int]]:
    """The request's plain decoding: greedy, or draws from the processed distribution (the sampler
    chain) when the request samples. The sample method is its sampling half; methods that draft or
    change nothing for a request decode through it too."""
    if req.greedy:
        return decode(req)
    probs = processor(req)
    return decode(req, lambda logits, ctx: int(sample(probs(logits, ctx), req.rng)))
