"""The autoregressive loop: one target forward per token; a method supplies `pick`.

`pick(logits [V], ctx list[int]) -> int` is where sampling and logits-processor methods plug in;
without one the loop takes the argmax (greedy), checked for NaN/inf in the same pass. Each step
forwards only the last committed token at its explicit position.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from ..core.sampling import check_finite, greedy_ids
from .common import emit, start


def decode(req, pick: Callable[[torch.Tensor, list[int]], int] | None = None) -> Iterator[list[int]]:
    target = req.target
    start(target, req.prompt)
    ctx = req.prompt.tolist()
    new = 0
    one = getattr(target, "forward_one", None)  # an adapter's step without tensors (llama.cpp)
    # else one id and one position, rewritten in place each step through numpy (a torch.tensor()
    # per step costs more Python than a whole llama.cpp forward can spare); adapters copy what they keep
    tok, pos = np.zeros(1, np.int64), np.zeros(1, np.int64)
    tok_t, pos_t = torch.from_numpy(tok), torch.from_numpy(pos)
    while True:
        if one is not None:
            x = one(ctx[-1], len(ctx) - 1)  # numpy [1, V]
            logits = None if pick is None and req.logprobs is None else torch.from_numpy(x)
        else:
            tok[0], pos[0] = ctx[-1], len(ctx) - 1
            x = logits = target.forward(tok_t, pos_t).logits  # [1, V]
        if pick is None:
            token = greedy_ids(x)[0]
        else:
            check_finite(logits)
            token = pick(logits[-1], ctx)
        out, done = emit(req, [token], new, logits)
        ctx += out
        new += len(out)
        yield out
        if done:
            return
