"""The sampler chain: llama.cpp's samplers as composable processors over logits [..., V].

Every processor takes logits [..., V] (float32, -inf where an earlier processor dropped a token)
and returns new logits; none modifies its input. `process` runs them in the order
`cfg.samplers` names (llama.cpp's `--samplers` names, ';'-separated, or a preset), then softmax.
Two presets:

    transformers (the default)  penalties; dry; temperature; top_n_sigma; top_k; top_p; min_p; typ_p; xtc
    llama.cpp                   penalties; dry; top_n_sigma; top_k; typ_p; top_p; min_p; xtc; temperature

"transformers" is the order of transformers' `generate` (its warpers: temperature, top-k, top-p,
min-p, typical; vLLM's too), so the same arguments give the same distribution as `generate`;
top_n_sigma and xtc, which it lacks, sit next to the truncation samplers. "llama.cpp" is
llama.cpp's documented default (common/common.h, `common_params_sampling::samplers`), temperature
LAST, so the truncation samplers judge the model's own probabilities. The order changes the
distribution only when temperature != 1 meets top_p, min_p, typical_p or xtc (top-k and
top-n-sigma keep the same tokens either way), or when typical_p meets top_p or min_p.

Processors and their parameters (llama.cpp's names and defaults; transformers' where it has one):

  penalties    repetition_penalty (1.0: off), presence_penalty, frequency_penalty (0.0), over the
               last repeat_last_n tokens of the context (64; -1 the whole context, 0 off). A seen
               token's logit l becomes l * r if l <= 0 else l / r, minus count * frequency +
               presence (llama.cpp's llama_sampler_penalties; transformers' repetition_penalty
               counts the whole context: repeat_last_n=-1).
  dry          DRY, "Don't Repeat Yourself" (p-e-w; llama.cpp's llama_sampler_dry, ported from
               koboldcpp): a token that would extend a sequence already seen in the last
               dry_penalty_last_n tokens (-1: the whole context) by a repeat of length n >=
               dry_allowed_length (2) loses dry_multiplier * dry_base ** (n - allowed) (1.75);
               repeats do not cross a sequence-breaker token (default "\\n", ":", "\\"", "*").
  top_n_sigma  keep tokens with logit >= max - n * std over the finite logits (n <= 0: off).
  top_k        keep the k most likely (0: off).
  typ_p        locally typical sampling (Meister et al. 2022, arXiv 2202.00666): sort by
               |-log p - H|, keep the prefix whose mass first exceeds typical_p (1.0: off).
  top_p        keep the smallest prefix by probability whose mass reaches top_p (1.0: off).
  min_p        keep p >= min_p * p_max (0.0: off).
  xtc          Exclude Top Choices: with probability xtc_probability (0.0: off), when two or more
               tokens have p >= xtc_threshold (0.1; > 0.5: off), drop all of them but the least
               likely.
  temperature  divide by the temperature.

History-dependent processors (penalties, dry) read the tokens before each row of logits: `ctx` is
one list of ids for logits [V] or one list per row for [N, V]. They are a function of (logits,
context), so speculative sampling stays exact when the verifier gives every draft node its own
context (the prompt, the committed tokens and the node's ancestors), as loops/speculative.py
does: p at each node is then exactly the distribution plain sampling would draw from there.

XTC is random (llama.cpp draws a coin per step). Here it is its marginal: with P =
xtc_probability, the distribution is (1 - P) * chain(x) + P * chain(xtc(x)), the rest of the chain
applied to both branches. Drawing from this mixture is distributed exactly as llama.cpp's
coin-then-draw, and it is a pure function of the logits, so p and q stay comparable and
speculative sampling stays exact.

Deviations from llama.cpp, all documented with the options: DRY's sequence breakers are tokens
whose text CONTAINS a breaker string (exactly llama.cpp's rule for one-character breakers, the
defaults; llama.cpp also matches longer breakers spanning tokens); typical_p ties in |-log p - H|
keep the lower token id first; XTC keeps the lowest-probability top choice (ties: the lowest id).
"""
from __future__ import annotations

import math

import torch

# llama.cpp's default order (common_params_sampling::samplers) and its canonical names
LLAMA_CPP_SAMPLERS = ("penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature")
# transformers' generate: penalties, then TemperatureLogitsWarper, TopK, TopP, MinP, Typical
TRANSFORMERS_SAMPLERS = ("penalties", "dry", "temperature", "top_n_sigma", "top_k", "top_p", "min_p", "typ_p", "xtc")
PRESETS = {"transformers": TRANSFORMERS_SAMPLERS, "llama.cpp": LLAMA_CPP_SAMPLERS}
DEFAULT_BREAKERS = ("\n", ":", "\"", "*")  # llama.cpp's dry_sequence_breakers
_FLOAT_MAX_LOG = 88.7228391  # llama.cpp caps DRY's exponent at log(FLT_MAX) / log(base)


def parse_samplers(text: str) -> tuple[str, ...]:
    """'penalties;top_k;temperature' -> ('penalties', 'top_k', 'temperature'); a preset name
    ('transformers', 'llama.cpp') -> its order. Unknown or repeated names raise ValueError."""
    if text.strip() in PRESETS:
        return PRESETS[text.strip()]
    names = tuple(s.strip() for s in text.split(";") if s.strip())
    bad = [n for n in names if n not in LLAMA_CPP_SAMPLERS]
    if bad:
        raise ValueError(f"unknown sampler(s) {', '.join(bad)}; known: {';'.join(LLAMA_CPP_SAMPLERS)}, or a preset: "
                         f"{', '.join(PRESETS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"samplers names one twice: {text!r}")
    return names


# -- pure processors: logits [..., V] -> logits [..., V] ----------------------------------------
def temperature(x: torch.Tensor, t: float) -> torch.Tensor:
    return x if t == 1.0 else x / t


def top_k(x: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0 or k >= x.shape[-1]:
        return x
    kth = torch.topk(x, k, dim=-1).values[..., -1:]  # [..., 1]
    return x.masked_fill(x < kth, -math.inf)


def top_p(x: torch.Tensor, p: float) -> torch.Tensor:
    """Drop a token when the mass before it (by descending probability) already reaches p."""
    if p >= 1.0:
        return x
    sorted_x, order = torch.sort(x, dim=-1, descending=True)
    probs = torch.softmax(sorted_x, dim=-1)
    drop_sorted = (probs.cumsum(dim=-1) - probs) >= p
    return x.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted), -math.inf)


def min_p(x: torch.Tensor, p: float) -> torch.Tensor:
    if p <= 0.0:
        return x
    probs = torch.softmax(x, dim=-1)
    return x.masked_fill(probs < p * probs.max(dim=-1, keepdim=True).values, -math.inf)


def typical(x: torch.Tensor, mass: float) -> torch.Tensor:
    """Keep tokens in order of |-log p - H| while the mass before them is <= `mass` (llama.cpp:
    stop after the token whose running sum first exceeds it)."""
    if mass >= 1.0:
        return x
    logp = torch.log_softmax(x.double(), dim=-1)
    p = logp.exp()
    entropy = -(p * logp).nan_to_num().sum(dim=-1, keepdim=True)  # 0 log 0 = 0
    shifted = (-logp - entropy).abs()  # inf for dropped tokens: they sort last
    _, order = torch.sort(shifted, dim=-1, stable=True)
    sorted_p = p.gather(-1, order)
    drop_sorted = (sorted_p.cumsum(dim=-1) - sorted_p) > mass
    return x.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted), -math.inf)


def top_n_sigma(x: torch.Tensor, n: float) -> torch.Tensor:
    """Top-nσ (Tang et al. 2024, arXiv 2411.07641): keep logit >= max - n * std, the mean and
    (population) standard deviation taken over the finite logits."""
    if n <= 0.0:
        return x
    finite = torch.isfinite(x)
    count = finite.sum(dim=-1, keepdim=True).clamp_min(1)
    vals = torch.where(finite, x, torch.zeros_like(x))
    mean = vals.sum(dim=-1, keepdim=True) / count
    std = (torch.where(finite, x - mean, torch.zeros_like(x)) ** 2).sum(dim=-1, keepdim=True).div(count).sqrt()
    top = x.max(dim=-1, keepdim=True).values
    return x.masked_fill(x < top - n * std, -math.inf)


def xtc(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """The XTC branch: where two or more tokens have p >= threshold, drop all of them but the least
    likely one (rows with fewer are unchanged)."""
    p = torch.softmax(x, dim=-1)
    top = p >= threshold  # [..., V]
    keep = torch.where(top, p, torch.full_like(p, math.inf)).argmin(dim=-1, keepdim=True)  # [..., 1]
    drop = top & ~torch.zeros_like(top).scatter(-1, keep, True)
    drop &= top.sum(dim=-1, keepdim=True) >= 2
    return x.masked_fill(drop, -math.inf)


# -- history-dependent processors: one context per row -----------------------------------------
def penalties(x: torch.Tensor, ctxs: list[list[int]], last_n: int, repeat: float, frequency: float,
              presence: float) -> torch.Tensor:
    """x [R, V]; ctxs: R token lists. llama.cpp's repetition, frequency and presence penalties over
    each row's last `last_n` tokens (-1: all)."""
    counts = torch.zeros_like(x)
    for r, ctx in enumerate(ctxs):
        window = ctx if last_n < 0 else ctx[len(ctx) - last_n:] if last_n < len(ctx) else ctx
        if window:
            counts[r] = torch.bincount(torch.tensor(window), minlength=x.shape[-1])[: x.shape[-1]].to(x.dtype)
    seen = counts > 0
    y = torch.where(x <= 0, x * repeat, x / repeat)
    y = y - counts * frequency - seen.to(x.dtype) * presence
    return torch.where(seen, y, x)


def dry(x: torch.Tensor, ctxs: list[list[int]], multiplier: float, base: float, allowed: int, last_n: int,
        breakers: torch.Tensor | None) -> torch.Tensor:
    """x [R, V]; ctxs: R token lists; breakers: [V] bool or None. Subtract DRY's penalty per row."""
    pen = torch.zeros_like(x)
    for r, ctx in enumerate(ctxs):
        for tok, n in dry_repeats(ctx, allowed, last_n, breakers).items():
            if tok < x.shape[-1]:
                pen[r, tok] = multiplier * base ** dry_exponent(n - allowed, base)
    return x - pen


def dry_exponent(e: int, base: float) -> int:
    """llama.cpp caps the exponent so that base ** e stays finite in float32."""
    if base > 1.000001:
        return min(e, int(_FLOAT_MAX_LOG / math.log(base)))
    return e


def dry_repeats(ctx: list[int], allowed: int, last_n: int, breakers: torch.Tensor | None) -> dict[int, int]:
    """token -> the longest repeat (n >= allowed) that emitting it would extend, over the last
    `last_n` tokens of ctx (-1: all). A repeat is a suffix of the window that also ends at an
    earlier position, followed there by the token; it is capped at the distance from the end to
    the most recent breaker. Single-token breakers are never penalised."""
    window = ctx if last_n < 0 or last_n >= len(ctx) else ctx[len(ctx) - last_n:]
    n = len(window)
    if n <= allowed:
        return {}
    is_breaker = (lambda t: bool(breakers[t]) if t < len(breakers) else False) if breakers is not None \
        else (lambda t: False)
    limit = next((i for i in range(n) if is_breaker(window[n - 1 - i])), n)  # tokens since the last breaker
    if limit < allowed:
        return {}
    z = _z_function(window[::-1])  # z[k]: the suffix of the window that also ends k tokens earlier
    best: dict[int, int] = {}
    for k in range(1, n):
        length = min(z[k], limit)
        if length >= allowed:
            tok = window[n - k]  # the token that followed that earlier occurrence
            if not is_breaker(tok) and best.get(tok, -1) < length:
                best[tok] = length
    return best


def _z_function(s: list[int]) -> list[int]:
    """z[k] = the length of the longest common prefix of s and s[k:] (z[0] = len(s)); O(len(s))."""
    n = len(s)
    z = [0] * n
    if n:
        z[0] = n
    lo = hi = 0
    for k in range(1, n):
        if k < hi:
            z[k] = min(hi - k, z[k - lo])
        while k + z[k] < n and s[z[k]] == s[k + z[k]]:
            z[k] += 1
        if k + z[k] > hi:
            lo, hi = k, k + z[k]
    return z


# -- the chain ----------------------------------------------------------------------------------
def process(logits: torch.Tensor, cfg, ctx=None, breakers: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [..., V] -> probabilities [..., V] (float32) through cfg's chain. ctx: the context of
    each row (see the module docstring), needed when cfg uses penalties or DRY."""
    x = logits.float()
    rows = None
    if cfg.history:
        if ctx is None:
            raise ValueError("penalties / DRY read the context: pass ctx (the token ids before each row)")
        rows = [list(ctx)] if x.ndim == 1 else [list(c) for c in ctx]
        assert len(rows) == x.reshape(-1, x.shape[-1]).shape[0], "one context per row of logits"
    return _run(x, cfg.chain, cfg, rows, breakers)


def _run(x: torch.Tensor, stages: tuple[str, ...], cfg, rows, breakers) -> torch.Tensor:
    for i, name in enumerate(stages):
        if name == "xtc":
            cut = xtc(x, cfg.xtc_threshold)
            rest = stages[i + 1:]
            keep, drop = _run(x, rest, cfg, rows, breakers), _run(cut, rest, cfg, rows, breakers)
            return (1.0 - cfg.xtc_probability) * keep + cfg.xtc_probability * drop
        x = _stage(name, x, cfg, rows, breakers)
    return torch.softmax(x, dim=-1)


def _stage(name: str, x: torch.Tensor, cfg, rows, breakers) -> torch.Tensor:
    if name == "temperature":
        return temperature(x, cfg.temperature)
    if name == "top_k":
        return top_k(x, cfg.top_k)
    if name == "top_p":
        return top_p(x, cfg.top_p)
    if name == "min_p":
        return min_p(x, cfg.min_p)
    if name == "typ_p":
        return typical(x, cfg.typical_p)
    if name == "top_n_sigma":
        return top_n_sigma(x, cfg.top_n_sigma)
    flat = x.reshape(-1, x.shape[-1])  # [R, V]
    if name == "penalties":
        flat = penalties(flat, rows, cfg.repeat_last_n, cfg.repetition_penalty, cfg.frequency_penalty,
                         cfg.presence_penalty)
    else:  # dry
        flat = dry(flat, rows, cfg.dry_multiplier, cfg.dry_base, cfg.dry_allowed_length, cfg.dry_penalty_last_n,
                   breakers)
    return flat.reshape(x.shape)
