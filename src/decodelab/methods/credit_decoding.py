"""CreditDecoding: threshold parallel decoding on logits fused with per-position "trace credits",
the history of what each masked position kept predicting, so a token that was the top-1 step
after step clears the threshold sooner.

Paper: Wang et al. 2025, "CreditDecoding: Accelerating Parallel Decoding in Diffusion Large
Language Models with Trace Credits", arXiv 2510.06133 (reported on LLaDA-8B-Instruct: 5.48x and
+0.48 accuracy); as in the authors' dInfer code (CreditThresholdParallelDecoder).

Notation as in loops/diffusion.py; per block a credit matrix C [b, V], zero at the block's start.
At each step t of the block, from the model's logits l [b, V] and p = softmax(l):
  C <- beta * C                      (from the second step on; beta = `decay`, 0.8)
  C[i, argmax p_i] += max(p_i)^gamma  for each masked position i (gamma = `boost`, 0.2)
  l' = l + alpha * log(1 + C)         (alpha = `alpha`, 0.7)
then Fast-dLLM's threshold rule on l': x0 = argmax l', conf = softmax(l')[x0]; the most
confident masked position plus every one with conf >= `threshold` (0.9) is unmasked. The fusion
runs through the loop's proposal hook (`propose_from`), so the commits are drawn from the fused
distribution; log-probabilities reported are the model's own.

Deviations: the credit of a position accumulates only while its block is decoded (the loop
scores the block's rows only), as their per-block matrix does. Credits are computed in float64
(their code: float32). `block_length` as LLaDA; `cache` as fast_dllm (their dInfer engine runs
credit decoding with its KV caches). Not lossless: with alpha > 0 a step can commit a token
that is not the model's argmax.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core import unmask
from ..loops import diffusion
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class CreditDecodingConfig(Options):
    threshold: float = option(0.9, "unmask every masked position whose fused confidence is >= this (the most "
                                   "confident one always)", lo=0, hi=1)
    alpha: float = option(0.7, "fusion strength: logits + alpha * log(1 + credit)", lo=0, hi=100)
    decay: float = option(0.8, "beta: credit decay per step", lo=0, hi=1)
    boost: float = option(0.2, "gamma: a step adds p_top1 ** gamma to the credit of its top-1 token", lo=0, hi=100)
    cache: str = option("none", "KV cache: none, prefix or dual (as fast_dllm); refreshed once per block",
                        choices=diffusion.CACHES)
    block_length: int | None = option(None, "semi-autoregressive block length (None: one block); must divide "
                                            "max_new_tokens", lo=1, hi=8192)


def fuse_credit(credit: torch.Tensor | None, logits: torch.Tensor, masked: torch.Tensor, decay: float,
                boost: float, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of trace credits: (new credit [b, V] float64, fused logits [b, V] float64).
    credit None: the block's first step. Does not modify its inputs."""
    x = logits.double()
    credit = torch.zeros_like(x) if credit is None else credit * decay
    top_p, top = torch.softmax(x, dim=-1).max(dim=-1)  # [b]
    gain = top_p.pow(boost) * masked.to(x.dtype)  # [b]
    credit = credit.scatter_add(1, top[:, None], gain[:, None])
    return credit, x + alpha * torch.log1p(credit)


class Credit:
    """Threshold rule on credit-fused logits; the credit is this policy's per-block state."""

    def __init__(self, config: CreditDecodingConfig):
        self.c, self.credit, self.block = config, None, None

    def propose_from(self, logits, masked, block, step):
        if block != self.block:
            self.credit, self.block = None, block
        self.credit, fused = fuse_credit(self.credit, logits, masked, self.c.decay, self.c.boost, self.c.alpha)
        return fused

    def select(self, view):
        return unmask.above_threshold(view.conf, self.c.threshold)


@register("credit_decoding", family="diffusion", config=CreditDecodingConfig, lossless=None)
def run(req, config: CreditDecodingConfig):
    return diffusion.decode(req, Credit(config), block_length=config.block_length, cache=config.cache)
