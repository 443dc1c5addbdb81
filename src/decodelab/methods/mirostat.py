"""Mirostat v1 / v2: sampling that holds the surprise of the text at a target, by feedback.

Basu et al. 2021, "Mirostat: A Neural Text Decoding Algorithm that Directly Controls Perplexity"
(ICLR 2021, arXiv 2007.14966). Notation: tau = target surprise (bits), S = -log2 p(x) the
surprise of the chosen token, mu = the truncation parameter (starts at 2 tau), eta = its learning
rate. Every step: truncate p, sample x from the renormalised rest, then mu <- mu - eta (S - tau).

- v1 (the paper's Algorithm 1): estimate the Zipf exponent s from the top m ranks by least
  squares, s = sum t_i b_i / sum t_i^2 with t_i = log((i + 2) / (i + 1)), b_i = log(p_i / p_(i+1))
  over the m - 1 ratios of the m most likely tokens; then k = ((eps 2^mu) / (1 - V^-eps))^(1/s),
  eps = s - 1, and sample from the top max(int(k), 1) tokens (llama.cpp rounds down; the paper's
  code rounds and adds 1).
- v2 (from llama.cpp, the version most people run): keep the tokens whose surprise -log2 p is at
  most mu (at least the top one).

Names and defaults are llama.cpp's: tau = 5, eta = 0.1, m = 100 (llama.cpp fixes m); the aliases
mirostat_tau, mirostat_eta (and mirostat for version) are accepted. As in llama.cpp, only the
temperature is applied before Mirostat (llama.cpp's chain is then temperature -> mirostat); the
other sampler-chain options are refused rather than silently ignored.

Deviation from llama.cpp, following the paper: S is measured under the full distribution Mirostat
truncates (p at the temperature, before truncation), not under the truncated, renormalised one
(which understates it: llama.cpp's text then runs above tau). At temperature 1 that is the target's
own distribution, so the mean of -log2 p over a generation (logprobs=True) converges to tau when
tau is reachable. Not lossless (it samples from a truncated distribution). Autoregressive: one
target forward per token through the autoregressive loop; mu lives in the run, so it is not a
sampler-chain processor and does not combine with speculative sampling.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..core.sampling import SamplingConfig
from ..errors import DecodeLabError
from ..loops import autoregressive
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class MirostatConfig(Options):
    aliases: ClassVar[dict[str, str]] = {"mirostat": "version", "mirostat_tau": "tau", "mirostat_eta": "eta"}

    version: int = option(2, "1: Zipf-estimated top-k (the paper's Algorithm 1); 2: keep surprise <= mu",
                          choices=(1, 2))
    tau: float = option(5.0, "target surprise in bits per token (llama.cpp's mirostat_tau)", above=0, hi=64)
    eta: float = option(0.1, "learning rate of mu (llama.cpp's mirostat_eta)", above=0, hi=10)
    m: int = option(100, "v1: the ranks the Zipf exponent is estimated from", lo=2, hi=100_000)


def zipf_exponent(sorted_p: torch.Tensor, m: int) -> float:
    """Least-squares Zipf exponent from the top m probabilities (sorted descending, float64)."""
    n = min(m, len(sorted_p)) - 1  # ratios
    if n < 1:
        return 1.0
    i = torch.arange(n, dtype=torch.float64)
    t = torch.log((i + 2) / (i + 1))
    b = torch.log(sorted_p[:n] / sorted_p[1:n + 1].clamp_min(1e-300))
    return float((t * b).sum() / (t * t).sum())


def zipf_k(s: float, mu: float, vocab: int) -> int:
    """k = ((eps 2^mu) / (1 - V^-eps))^(1/s), eps = s - 1, in logs (2^mu overflows for large mu);
    the eps -> 0 limit is (2^mu / ln V)^(1/s). Clamped to [1, V]."""
    if s <= 1e-9:
        return vocab  # flat top ranks: no truncation
    eps = s - 1.0
    if abs(eps) < 1e-9:
        log_ratio = mu * math.log(2) - math.log(math.log(vocab))
    else:
        log_ratio = math.log(abs(eps)) + mu * math.log(2) - math.log(abs(1.0 - vocab ** -eps))
    log_k = log_ratio / s
    return vocab if log_k > math.log(vocab) else max(1, min(vocab, int(math.exp(log_k))))


class Mirostat:
    """The controller: `step(logits [V]) -> token`, updating mu from the chosen token's surprise."""

    def __init__(self, config: MirostatConfig, temperature: float, rng: torch.Generator):
        self.cfg, self.temperature, self.rng = config, temperature, rng
        self.mu = 2.0 * config.tau
        self.surprises: list[float] = []  # S of every chosen token, in bits

    def keep(self, logp: torch.Tensor) -> torch.Tensor:
        """[V] bool: the tokens this step may draw from. logp: [V] float64, natural log."""
        if self.cfg.version == 2:
            keep = -logp / math.log(2) <= self.mu
            keep[logp.argmax()] = True
            return keep
        sorted_logp, order = torch.sort(logp, descending=True)
        k = zipf_k(zipf_exponent(sorted_logp.exp(), self.cfg.m), self.mu, len(logp))
        return torch.zeros_like(logp, dtype=torch.bool).scatter(0, order[:k], True)

    def step(self, logits: torch.Tensor) -> int:
        logp = torch.log_softmax(logits.double() / self.temperature, dim=-1)  # [V]
        p = torch.where(self.keep(logp), logp.exp(), torch.zeros_like(logp))
        x = int(torch.multinomial((p / p.sum()).float(), 1, generator=self.rng))
        surprise = -float(logp[x]) / math.log(2)  # under the distribution before truncation (the paper)
        self.surprises.append(surprise)
        self.mu -= self.cfg.eta * (surprise - self.cfg.tau)
        return x


def check_sampling(sampling: SamplingConfig) -> None:
    """Only the temperature (and the seed) apply before Mirostat, as in llama.cpp."""
    base = SamplingConfig(do_sample=True)
    other = [f.name for f in dataclasses.fields(SamplingConfig) if f.name not in ("temperature", "seed", "do_sample")
             and getattr(sampling, f.name) != getattr(base, f.name)]
    if other:
        raise DecodeLabError(f"mirostat replaces the sampler chain (only the temperature applies before it, as in "
                             f"llama.cpp); unset {', '.join(other)}")


@register("mirostat", family="autoregressive", config=MirostatConfig, lossless=None, modes=("sample",))
def run(req, config: MirostatConfig):
    check_sampling(req.sampling)  # raises when stream() calls run, before any forward
    ctl = Mirostat(config, req.sampling.temperature, req.rng)
    return autoregressive.decode(req, lambda logits, ctx: ctl.step(logits))
