"""Ancestral sampling from the target through the sampler chain (SamplingConfig: temperature,
top-k/p, min-p, typical-p, top-n-sigma, XTC, penalties, DRY); the reference distribution every
sampling-lossless method must match."""
from __future__ import annotations

from dataclasses import dataclass

from ..loops import autoregressive
from ..options import Options
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class SampleConfig(Options):
    pass


@register("sample", family="autoregressive", config=SampleConfig, lossless="sampling", modes=("sample",),
          history=True)
def run(req, config: SampleConfig):
    return autoregressive.plain(req)  # modes ("sample",): do_sample is on, so plain() draws from the chain
