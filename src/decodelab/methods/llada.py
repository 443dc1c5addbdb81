"""LLaDA: masked diffusion decoding with low-confidence (or random) remasking, in semi-autoregressive
blocks; the baseline of the diffusion family.

Paper: Nie et al. 2025, "Large Language Diffusion Models", arXiv 2502.09992; the algorithm is
its published `generate()` (github.com/ML-GSAI/LLaDA, generate.py). The canvas is the prompt plus
G = max_new_tokens masks, split into blocks of `block_length`; `steps` are split evenly over the
blocks and each block's masks evenly over its steps (the first steps take one more when they do
not divide). Each step: one forward over the whole canvas; x0 = argmax of the logits (Gumbel-max
in float64 at temperature > 0); confidence = softmax(logits)[x0] (`remasking="low_confidence"`)
or uniform noise (`"random"`); the scheduled number of masked positions of the current block
with the highest confidence are unmasked to x0. steps = G (the default) unmasks one position per
step: the "one-token-per-step" reference every lossless diffusion method must equal.

Deviations, each keeping the algorithm's outputs where the published code is well defined:
- The mask token is never proposed: LLaDA's argmax may pick it, "unmasking" a position to the
  mask (it stays masked, and the block can end with masks left). Here x0 is the best other token.
  No zoo model puts the mask at the argmax (p(mask) < 1e-7 measured on tasks-mdlm).
- Confidence is computed in float64 (LLaDA: the model dtype), and ties go to the leftmost
  position: in float32 every confident position rounds to exactly 1.0 and torch.topk then
  orders those ties by tensor layout (core/unmask.py). tests/methods/test_llada.py runs the
  published generate() with only this line changed and gets the same canvas after every step.
- Only the current block is scored (the output head on b rows instead of the whole canvas);
  the published code computes and discards the other rows. Sampling draws the Gumbel and random
  noise for those b rows only (the rows that can be unmasked), so seeded runs differ from the
  published code's random stream, not in distribution.
- With end-of-text as a stop (generate's default), decoding ends once every position before
  the first end-of-text is unmasked: the positions after it are cut from the output anyway and
  no later step can change an earlier one, so the output is the same with fewer forwards.
- `steps` may not exceed G: a step that unmasks nothing would only waste a forward.
- Classifier-free guidance (cfg_scale) is not implemented. Not lossless: a fast path of itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..loops import diffusion
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class LLaDAConfig(Options):
    steps: int | None = option(None, "diffusion steps in all (None: max_new_tokens, one position per step); "
                                     "a multiple of the number of blocks", lo=1, hi=8192)
    block_length: int | None = option(None, "semi-autoregressive block length (None: one block); must divide "
                                            "max_new_tokens", lo=1, hi=8192)
    remasking: str = option("low_confidence", "which masked positions a step unmasks: the most confident, or "
                                              "random ones", choices=("low_confidence", "random"))


@register("llada", family="diffusion", config=LLaDAConfig, lossless=None)
def run(req, config: LLaDAConfig):
    schedule = diffusion.even_schedule(req.max_new_tokens, config.block_length, config.steps)
    if config.remasking == "low_confidence":
        policy = diffusion.Ranked()
    else:  # random confidences; a generator even when greedy (seeded by `seed` when given)
        rng = req.rng if req.rng is not None else req.sampling.generator()
        policy = diffusion.Ranked(lambda v: torch.rand(v.conf.shape, generator=rng, dtype=torch.float64))
    return diffusion.decode(req, policy, block_length=config.block_length, schedule=schedule)
