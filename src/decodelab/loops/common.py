"""Pieces every loop shares: starting a sequence and clipping what a step commits."""
from __future__ import annotations

import torch

from ..models.base import CausalLM, prefill


def start(model: CausalLM, prompt: torch.Tensor) -> None:
    """Empty the cache and prefill all but the last prompt token; the last one is the root of the
    first step, so every step forwards [last committed token, guesses...]."""
    model.reset()
    prefill(model, prompt[:-1])


def clip(tokens: list[int], room: int, stops: set[int]) -> tuple[list[int], bool]:
    """Cut a step's tokens at the budget and just after the first stop token.
    Returns (tokens to emit, whether decoding ends)."""
    for i, t in enumerate(tokens[:room]):
        if t in stops:
            return tokens[: i + 1], True
    out = tokens[:room]
    return out, len(out) >= room
