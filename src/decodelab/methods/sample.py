"""Ancestral sampling from the target with temperature, top-k, top-p and min-p (SamplingConfig);
the reference distribution every sampling-lossless method must match."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.sampling import choose
from ..loops import autoregressive
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class SampleConfig:
    pass


@register("sample", family="autoregressive", config=SampleConfig, lossless="sampling", modes=("sample",))
def run(target, prompt, max_new_tokens, *, config, sampling, draft, rng, stops, stats):
    return autoregressive.decode(target, prompt, max_new_tokens,
                                 lambda logits, ctx: int(choose(logits, sampling, rng)), stops, stats)
