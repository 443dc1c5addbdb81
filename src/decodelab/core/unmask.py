"""Masked diffusion decoding rules as pure tensor functions: proposals, step schedules, and which
positions a step unmasks.

Glossary (loops/diffusion.py uses the same words):
  region   the G generated positions after the prompt; block: the slice of it being decoded
  x0       the token proposed at a position: argmax of its logits, or Gumbel-max when sampling
  conf     p(x0) under softmax(logits): how sure the model is of x0 (LLaDA's "confidence")
  k        how many positions a step unmasks

Numerics. Gumbel-max runs in float64, as LLaDA's generate() does: arXiv 2409.02908 found that
low-precision Gumbel noise raises perplexity yet lowers generation quality for masked diffusion
models. `conf` is computed in float64 (as Fast-dLLM's code does; LLaDA uses the model dtype): a
float32 softmax rounds every p(x0) above 1 - 6e-8 to exactly 1.0, and a confident model has many
such positions, whose order torch.topk then breaks by the tensor's length and layout
(topk([.5, 1, 1, .2, 1], 2) gives [2, 4] on CPU), not by anything in the model. In float64
those ties vanish; the few left go to the leftmost position (`top_k` sorts stably).
"""
from __future__ import annotations

import math

import torch

from ..errors import DecodeLabError
from .sampling import SamplingConfig, probs_from_logits


def propose(logits: torch.Tensor, sampling: SamplingConfig, rng: torch.Generator | None,
            mask_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0 [R], conf [R] float64) from logits [R, V]. Greedy: x0 = argmax. Sampling: x0 =
    argmax(l / T + g) with g = -log(-log u), u ~ U(0, 1) in float64 (one [R, V] draw from `rng`),
    which picks the same token as LLaDA's argmax(exp(l) / (-log u) ** T) but cannot overflow;
    top-k / top-p / min-p, when set, drop tokens first. conf = softmax(l)[x0] on the raw logits,
    as LLaDA (the temperature shapes the draw, not the confidence). The mask token is never
    proposed (LLaDA could "commit" a mask, leaving the position masked; see methods/llada.py)."""
    x = logits.double()  # [R, V]
    pick = x.clone()
    if mask_id is not None:
        pick[:, mask_id] = -math.inf
    if sampling.do_sample:
        pick = pick / sampling.temperature
        if sampling.top_k or sampling.top_p < 1.0 or sampling.min_p > 0.0:
            pick = pick.masked_fill(probs_from_logits(logits, sampling) <= 0, -math.inf)
        u = torch.rand(pick.shape, generator=rng, dtype=torch.float64, device=pick.device)
        pick = pick - torch.log(-torch.log(u.clamp_min(1e-300)))
    x0 = pick.argmax(dim=-1)  # [R]
    conf = torch.softmax(x, dim=-1).gather(-1, x0[:, None])[:, 0]  # [R]
    return x0, conf


def even_split(n: int, steps: int) -> list[int]:
    """LLaDA's get_num_transfer_tokens: n masks over `steps` steps, n // steps each, the first
    n % steps steps one more."""
    base, rem = divmod(n, steps)
    return [base + (i < rem) for i in range(steps)]


def ascending_split(n: int, steps: int) -> list[int]:
    """The Ascending Step-Size schedule (EOSER + ASS): step i unmasks 2^i positions, the last
    step all that are left (for n = 2^S and S steps: 1, 2, ..., 2^(S-2), 2^(S-1) + 1)."""
    if steps < 1 or 2 ** (steps - 1) > n:
        raise DecodeLabError(f"the ascending schedule fits at most floor(log2({n})) + 1 = "
                             f"{int(math.log2(n)) + 1} steps in {n} positions, got {steps}")
    out = [2 ** i for i in range(steps - 1)]
    return out + [n - sum(out)]


def top_k(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores, highest first; ties go to the lower index. score: [R]
    (-inf where a position may not be picked)."""
    order = torch.sort(score, descending=True, stable=True).indices
    return order[:k]


def above_threshold(conf: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fast-dLLM's threshold rule: the most confident position, plus every other one whose
    confidence is >= threshold; in confidence order. conf: [R], -inf where not masked."""
    order = top_k(conf, int(torch.isfinite(conf).sum()))
    keep = conf[order] >= threshold
    keep[:1] = True
    return order[keep]


def factor_count(sorted_conf: torch.Tensor, factor: float) -> int:
    """Fast-dLLM's factor rule: the largest n with (n + 1)(1 - c_(n)) < factor, c_(n) the n-th
    highest confidence, at least 1. sorted_conf: [R] descending. The condition only gets harder
    as n grows (c_(n) falls while 1 - f / (n + 1) rises), so the n that pass form a prefix."""
    n = torch.arange(1, len(sorted_conf) + 1, dtype=torch.float64)
    ok = (n + 1) * (1 - sorted_conf) < factor  # [R]
    return max(1, int(torch.cumprod(ok.long(), 0).sum()))
