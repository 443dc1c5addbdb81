"""Greedy decoding: the argmax of the target's logits at every step; the reference every
greedy-lossless method must equal token for token."""
from __future__ import annotations

from dataclasses import dataclass

from ..loops import autoregressive
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class GreedyConfig:
    pass


@register("greedy", family="autoregressive", config=GreedyConfig, lossless="greedy", modes=("greedy",))
def run(target, prompt, max_new_tokens, *, config, sampling, draft, rng, stops, stats):
    return autoregressive.decode(target, prompt, max_new_tokens, lambda logits, ctx: int(logits.argmax()),
                                 stops, stats)
