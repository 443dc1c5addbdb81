"""The autoregressive loop: one target forward per token; a method supplies `pick`.

`pick(logits [V], ctx list[int]) -> int` is where greedy, sampling and logits-processor methods
plug in. Each step forwards only the last committed token at its explicit position.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from ..core.sampling import check_finite
from ..models.base import CausalLM
from ..types import DecodeStats
from .common import clip, start


def decode(model: CausalLM, prompt: torch.Tensor, max_new_tokens: int,
           pick: Callable[[torch.Tensor, list[int]], int], stops: set[int],
           stats: DecodeStats) -> Iterator[list[int]]:
    start(model, prompt)
    ctx = prompt.tolist()
    new = 0
    while True:
        logits = model.forward(torch.tensor([ctx[-1]]), torch.tensor([len(ctx) - 1])).logits[-1]  # [V]
        check_finite(logits)
        out, done = clip([pick(logits, ctx)], max_new_tokens - new, stops)
        stats.committed.append(len(out))
        ctx += out
        new += len(out)
        yield out
        if done:
            return
