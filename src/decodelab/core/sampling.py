"""Logits -> probabilities and draws, shared by every loop so that p and q are processed alike.

Argument names follow transformers' `generate` (`do_sample`, `temperature`, `top_k`, `top_p`,
`typical_p`, `repetition_penalty`) and llama.cpp where transformers has none (`min_p`,
`top_n_sigma`, `xtc_*`, `dry_*`, `presence_penalty`, `frequency_penalty`, `repeat_last_n`,
`samplers`). The processors and their order (transformers' by default, llama.cpp's with
`samplers="llama.cpp"`) live in core/processors.py. Draws take an explicit `torch.Generator`:
seeded runs never depend on global RNG state.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ..errors import DecodeLabError
from ..options import Options, option
from .processors import DEFAULT_BREAKERS, parse_samplers, process

# the option that switches each processor on (for messages)
_STAGE_OPTIONS = {"penalties": "repetition_penalty/presence_penalty/frequency_penalty", "dry": "dry_multiplier",
                  "top_n_sigma": "top_n_sigma", "top_k": "top_k", "typ_p": "typical_p", "top_p": "top_p",
                  "min_p": "min_p", "xtc": "xtc_probability", "temperature": "temperature"}


@dataclass(frozen=True, kw_only=True)
class SamplingConfig(Options):
    """How a next token is chosen from p. `do_sample=False` is greedy (argmax of the raw logits)."""

    do_sample: bool = option(False, "sample from the processed distribution (False: greedy)")
    temperature: float = option(1.0, "divide the logits by this (first of the truncation samplers by default, "
                                "as transformers; last with samplers='llama.cpp')", above=0)
    top_k: int = option(0, "keep the k likeliest tokens (0: off)", lo=0)
    top_p: float = option(1.0, "keep the smallest set of tokens with this much mass (1: off)", above=0, hi=1)
    min_p: float = option(0.0, "drop tokens below min_p times the top probability (0: off; llama.cpp)",
                          lo=0, below=1)
    seed: int | None = option(None, "seed of the sampling generator (None: random)", lo=0, hi=2**63 - 1)
    typical_p: float = option(1.0, "locally typical sampling: keep the tokens whose surprise is closest to the "
                              "entropy, up to this mass (1: off)", above=0, hi=1)
    top_n_sigma: float = option(-1.0, "keep tokens whose logit is within n standard deviations of the top one "
                                "(<= 0: off; llama.cpp)", lo=-1, hi=100)
    xtc_probability: float = option(0.0, "XTC: chance per token of excluding the top choices (0: off; llama.cpp)",
                                    lo=0, hi=1)
    xtc_threshold: float = option(0.1, "XTC: tokens with at least this probability are top choices; all but the "
                                  "least likely of them are excluded (> 0.5: off)", lo=0, hi=1)
    repetition_penalty: float = option(1.0, "divide a positive (multiply a negative) logit of a token seen in the "
                                       "last repeat_last_n tokens by this (1: off)", above=0, hi=100)
    presence_penalty: float = option(0.0, "subtract this from the logit of a token seen in the last repeat_last_n "
                                     "tokens (0: off; llama.cpp, OpenAI)", lo=-2, hi=2)
    frequency_penalty: float = option(0.0, "subtract this times the token's count in the last repeat_last_n tokens "
                                      "(0: off; llama.cpp, OpenAI)", lo=-2, hi=2)
    repeat_last_n: int = option(64, "context tokens the penalties count (0: off, -1: all; llama.cpp)", lo=-1,
                                hi=2**31 - 1)
    dry_multiplier: float = option(0.0, "DRY: penalty scale for a token that extends a repeat (0: off; llama.cpp)",
                                   lo=0, hi=1000)
    dry_base: float = option(1.75, "DRY: the penalty is dry_multiplier * dry_base ** (repeat length - "
                             "dry_allowed_length)", lo=1, hi=100)
    dry_allowed_length: int = option(2, "DRY: repeats shorter than this are not penalised", lo=1, hi=2**31 - 1)
    dry_penalty_last_n: int = option(-1, "DRY: context tokens scanned for repeats (0: off, -1: all)", lo=-1,
                                     hi=2**31 - 1)
    dry_sequence_breakers: str = option(json.dumps(list(DEFAULT_BREAKERS)), "DRY: a JSON list of strings; a repeat "
                                        "never crosses a token whose text contains one")
    samplers: str = option("transformers", "the order of the chain: 'transformers' (temperature first), "
                           "'llama.cpp' (temperature last) or llama.cpp's --samplers names separated by ';'")

    def validate(self) -> None:
        try:
            order = parse_samplers(self.samplers)
        except ValueError as e:
            raise DecodeLabError(f"samplers: {e}") from None
        missing = [name for name, on in self._active().items() if on and name not in order]
        if missing:
            raise DecodeLabError(f"{', '.join(_STAGE_OPTIONS[m] for m in missing)} set, but samplers={self.samplers!r} "
                                 f"leaves out {', '.join(missing)}")
        try:
            breakers = json.loads(self.dry_sequence_breakers)
        except json.JSONDecodeError:
            breakers = None
        if not isinstance(breakers, list) or not all(isinstance(b, str) and b for b in breakers):
            raise DecodeLabError("dry_sequence_breakers must be a JSON list of non-empty strings, got "
                                 f"{self.dry_sequence_breakers!r}")

    def _active(self) -> dict[str, bool]:
        """Which processors change anything with these values."""
        return {"penalties": self.repeat_last_n != 0 and (self.repetition_penalty != 1.0 or self.presence_penalty != 0.0
                                                          or self.frequency_penalty != 0.0),
                "dry": self.dry_multiplier > 0.0 and self.dry_penalty_last_n != 0,
                "top_n_sigma": self.top_n_sigma > 0.0, "top_k": self.top_k > 0, "typ_p": self.typical_p < 1.0,
                "top_p": self.top_p < 1.0, "min_p": self.min_p > 0.0,
                "xtc": self.xtc_probability > 0.0 and self.xtc_threshold <= 0.5,
                "temperature": self.temperature != 1.0}

    @cached_property
    def chain(self) -> tuple[str, ...]:
        """The processors that change anything, in the order of `samplers`."""
        active = self._active()
        return tuple(name for name in parse_samplers(self.samplers) if active[name])

    @property
    def history(self) -> bool:
        """Whether a processor reads the context (penalties, DRY): every row then needs its own."""
        return self.do_sample and ("penalties" in self.chain or "dry" in self.chain)

    @property
    def breaker_strings(self) -> tuple[str, ...]:
        return tuple(json.loads(self.dry_sequence_breakers))

    def without_history(self) -> "SamplingConfig":
        """The same chain without penalties and DRY: for a draft distribution q computed without its
        context (any q verified by rejection sampling is exact; a closer q is accepted more often)."""
        return dataclasses.replace(self, repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0,
                                   dry_multiplier=0.0)

    def ignored(self) -> list[str]:
        """The sampling options set away from their defaults that greedy decoding ignores."""
        if self.do_sample:
            return []
        return [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                if f.name not in ("do_sample", "seed") and getattr(self, f.name) != f.default]

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(self.seed if self.seed is not None else torch.seed())
        return g


def _cpu_array(t: torch.Tensor):
    """A numpy view of a CPU float32 tensor, else None. On a fast backend (llama.cpp: 0.35 ms a
    token) the per-token Python bounds the speed, and a numpy reduction over [V] costs a few
    microseconds where a torch op costs about ten on a cache the forward has just cooled."""
    if t.dtype == torch.float32 and t.device.type == "cpu" and not t.requires_grad:
        return t.numpy()
    return None


def argmax_ids(logits: torch.Tensor):
    """logits.argmax(-1) as Python ints: an int for [V], a list for [N, V]; the first index on ties,
    as torch."""
    x = _cpu_array(logits)
    return (x.argmax(-1) if x is not None else logits.argmax(-1)).tolist()


def greedy_ids(logits: torch.Tensor | np.ndarray):
    """argmax_ids (of a tensor or a numpy array) with the check greedy decoding needs, in the same
    pass: NaN and +inf win an argmax (numpy's and torch's), so the chosen logits are finite unless
    the row holds a NaN or a +inf, or is -inf throughout; a -inf elsewhere (a masked token) is
    never chosen and is let through. On llama.cpp this saves a second reduction over [V] per token
    (about 20 us of a 0.4 ms step, on a cache the forward has just cooled)."""
    x = logits if isinstance(logits, np.ndarray) else _cpu_array(logits)
    if x is None:
        best = logits.argmax(-1)
        top = logits.gather(-1, best.unsqueeze(-1))
        if not bool(torch.isfinite(top).all()):
            _not_finite()
        return best.tolist()
    if x.ndim == 1 or len(x) == 1:  # one row (the common step): one flat argmax, no index arrays
        best = int(x.argmax())
        if not math.isfinite(x.flat[best]):
            _not_finite()
        return best if x.ndim == 1 else [best]
    best = x.argmax(-1)
    if not np.isfinite(x[np.arange(len(best)), best]).all():
        _not_finite()
    return best.tolist()


def _not_finite():
    raise DecodeLabError("the model produced NaN or inf logits; check the checkpoint and dtype")


def check_finite(logits: torch.Tensor) -> None:
    """Refuse NaN/inf logits with a clear message instead of sampling garbage.

    Fast path: one reduction (the sum of finite logits is finite unless it overflows, which the
    exact elementwise check then clears); ``isfinite(x).all()`` costs about 10x more on CPU."""
    x = _cpu_array(logits)
    total = float(x.sum(dtype=np.float64)) if x is not None else float(logits.sum())  # float64: no overflow
    if not math.isfinite(total) and not bool(torch.isfinite(logits).all()):
        _not_finite()


def probs_from_logits(logits: torch.Tensor, cfg: SamplingConfig, ctx=None,
                      breakers: torch.Tensor | None = None) -> torch.Tensor:
    """Processed distribution over the last dim: cfg's sampler chain (core/processors.py).

    logits: [..., V] -> probs [..., V] in float32, rows sum to 1. ctx: the token ids before each
    row (one list for [V], one per row for [N, V]); needed when cfg uses penalties or DRY.
    breakers: [V] bool, DRY's sequence-breaker tokens (None: none). Greedy configs give the plain
    softmax at the temperature (the verifiers take the argmax of the logits themselves). Does not
    modify its input.
    """
    if not cfg.do_sample:
        return torch.softmax(logits.float() / cfg.temperature, dim=-1)
    return process(logits, cfg, ctx, breakers)


def sample(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw per row. probs: [..., V] -> ids [...]."""
    flat = probs.reshape(-1, probs.shape[-1])
    ids = torch.multinomial(flat, 1, generator=generator).squeeze(-1)
    return ids.reshape(probs.shape[:-1])


def choose(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None, ctx=None,
           breakers: torch.Tensor | None = None) -> torch.Tensor:
    """Next token(s) from logits [..., V]: argmax when greedy, else a draw from the processed p."""
    if not cfg.do_sample:
        return logits.argmax(dim=-1)
    return sample(probs_from_logits(logits, cfg, ctx, breakers), generator)


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
