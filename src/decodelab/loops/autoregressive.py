"""The autoregressive loop: one target forward per token; a method supplies `pick`.

`pick(logits [V], ctx list[int]) -> int` is where greedy, sampling and logits-processor methods
plug in. Each step forwards only the last committed token at its explicit position.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from ..core.sampling import check_finite
from .common import emit, start


def decode(req, pick: Callable[[torch.Tensor, list[int]], int]) -> Iterator[list[int]]:
    target = req.target
    start(target, req.prompt)
    ctx = req.prompt.tolist()
    new = 0
    while True:
        logits = target.forward(torch.tensor([ctx[-1]]), torch.tensor([len(ctx) - 1])).logits  # [1, V]
        check_finite(logits)
        out, done = emit(req, [pick(logits[-1], ctx)], new, logits)
        ctx += out
        new += len(out)
        yield out
        if done:
            return
