"""Ancestral sampling from the target with temperature, top-k, top-p and min-p (SamplingConfig);
the reference distribution every sampling-lossless method must match."""
from __future__ import annotations

from dataclasses import dataclass

from ..core.sampling import choose
from ..loops import autoregressive
from ..options import Options
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class SampleConfig(Options):
    pass


@register("sample", family="autoregressive", config=SampleConfig, lossless="sampling", modes=("sample",))
def run(req, config: SampleConfig):
    return autoregressive.decode(req, lambda logits, ctx: int(choose(logits, req.sampling, req.rng)))
