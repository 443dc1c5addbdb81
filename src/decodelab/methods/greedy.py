"""Greedy decoding: the argmax of the target's logits at every step; the reference every
greedy-lossless method must equal token for token."""
from __future__ import annotations

from dataclasses import dataclass

from ..loops import autoregressive
from ..options import Options
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class GreedyConfig(Options):
    pass


@register("greedy", family="autoregressive", config=GreedyConfig, lossless="greedy", modes=("greedy",),
          peer="hf:greedy")
def run(req, config: GreedyConfig):
    return autoregressive.decode(req)
