"""Logits -> probabilities and draws, shared by every loop so that p and q are processed alike.

Argument names follow transformers' `generate` (`do_sample`, `temperature`, `top_k`, `top_p`)
plus llama.cpp's `min_p`. Draws take an explicit `torch.Generator`: seeded runs never depend on
global RNG state.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ..errors import DecodeLabError
from ..options import Options, option


@dataclass(frozen=True, kw_only=True)
class SamplingConfig(Options):
    """How a next token is chosen from p. `do_sample=False` is greedy (argmax of the raw logits)."""

    do_sample: bool = option(False, "sample from the processed distribution (False: greedy)")
    temperature: float = option(1.0, "divide the logits by this before sampling", above=0)
    top_k: int = option(0, "keep the k likeliest tokens (0: off)", lo=0)
    top_p: float = option(1.0, "keep the smallest set of tokens with this much mass (1: off)", above=0, hi=1)
    min_p: float = option(0.0, "drop tokens below min_p times the top probability (0: off; llama.cpp)",
                          lo=0, below=1)
    seed: int | None = option(None, "seed of the sampling generator (None: random)", lo=0, hi=2**63 - 1)

    def ignored(self) -> list[str]:
        """The sampling options set away from their defaults that greedy decoding ignores."""
        if self.do_sample:
            return []
        return [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                if f.name in ("temperature", "top_k", "top_p", "min_p") and getattr(self, f.name) != f.default]

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(self.seed if self.seed is not None else torch.seed())
        return g


def check_finite(logits: torch.Tensor) -> None:
    """Refuse NaN/inf logits with a clear message instead of sampling garbage.

    Fast path: one reduction (the sum of finite logits is finite unless it overflows, which the
    exact elementwise check then clears); ``isfinite(x).all()`` costs about 10x more on CPU."""
    if not bool(torch.isfinite(logits.sum())) and not bool(torch.isfinite(logits).all()):
        raise DecodeLabError("the model produced NaN or inf logits; check the checkpoint and dtype")


def probs_from_logits(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Processed distribution over the last dim: temperature, then top-k, top-p and min-p filters.

    logits: [..., V] -> probs [..., V] in float32, rows sum to 1. Greedy configs give the plain
    softmax (the verifiers take the argmax of the logits themselves). Does not modify its input.
    """
    x = logits.float() / cfg.temperature  # [..., V]
    if not cfg.do_sample:
        return torch.softmax(x, dim=-1)
    if cfg.top_k > 0 and cfg.top_k < x.shape[-1]:
        kth = torch.topk(x, cfg.top_k, dim=-1).values[..., -1:]  # [..., 1]
        x = x.masked_fill(x < kth, -math.inf)
    if cfg.top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        cum = torch.softmax(sorted_x, dim=-1).cumsum(dim=-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        drop_sorted = (cum - torch.softmax(sorted_x, dim=-1)) >= cfg.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        x = x.masked_fill(drop, -math.inf)
    p = torch.softmax(x, dim=-1)
    if cfg.min_p > 0.0:
        keep = p >= cfg.min_p * p.max(dim=-1, keepdim=True).values
        p = p * keep
        p = p / p.sum(dim=-1, keepdim=True)
    return p


def sample(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row. probs: [..., V] -> ids [...]."""
    flat = probs.reshape(-1, probs.shape[-1])
    ids = torch.multinomial(flat, 1, generator=generator).squeeze(-1)
    return ids.reshape(probs.shape[:-1])


def choose(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Next token(s) from logits [..., V]: argmax when greedy, else a draw from the processed p."""
    if not cfg.do_sample:
        return logits.argmax(dim=-1)
    return sample(probs_from_logits(logits, cfg), generator)


def gumbel_top_k(logp: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k distinct ids drawn WITHOUT replacement from softmax(logp), in draw order.

    Gumbel-top-k (Kool et al. 2019): perturb log-probabilities with i.i.d. Gumbel noise and take
    the top k. Noise is drawn in float64 so ties and underflow do not bias rare tokens.
    logp: [V] -> ids [k]; k is capped at the number of tokens with non-zero probability.
    """
    support = int(torch.isfinite(logp).sum())
    k = min(k, support)
    u = torch.rand(logp.shape, generator=generator, dtype=torch.float64, device=logp.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
    return torch.topk(logp.double() + gumbel, k).indices
