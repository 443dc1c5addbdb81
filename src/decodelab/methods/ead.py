"""EAD: Entropy Adaptive Decoding, a small and a large model taking turns by rolling entropy (lossy).

Paper: Simonds 2025, "Entropy Adaptive Decoding: Dynamic Model Switching for Efficient Inference"
(arXiv 2502.06833). Reported on MATH: 96.7% of LLaMA 3.2 11B's score (50.4% vs 52.1%) with the
11B producing 43% of the tokens; 92.9% of Qwen 2.5 14B's with it on 25%.

Notation: M_S = the small model (the request's `draft`), M_L = the large one (its `target`).
H_t = the entropy in bits of the raw softmax (temperature 1, no filters: before any sampling
processor, as the paper takes it) of the model that produced token t; H̄_t = the mean of the last w
of them (`window`); c = tokens the active model has produced since it took over; tau =
`threshold` (bits), d_min = `dwell`. After each token the next model is

    M_L if H̄_t > tau and c >= d_min;  M_S if H̄_t <= tau and c >= d_min;  else the current one.

So tau = +inf is M_S's own decoding and tau = -inf M_L's (both exact, tested). Each step the active
model forwards what its cache lacks: the last token, or after a switch every token the other model
produced since, in one forward (`models.base.sync`). It picks from its own logits: greedy, or a draw
from its processed distribution (the request's sampling chain). Log-probabilities are the producing
model's. `stats.target_emitted` counts M_L's tokens (the bench's target share); draft and target
forwards are counted as always. Nothing is trained for EAD: it runs on any pair that shares a
tokenizer (zoo:code-draft / zoo:code-target).

Deviations:
- The paper does not say which model starts (H̄ needs a first entropy). Here the rule decides it
  on the small model's entropy after the prompt (c counted as d_min): its forward is needed anyway
  (M_S's logits for the first token, or its cache of the prompt) and it keeps tau = ±inf exact.
- The window holds fewer than w entropies for the first w - 1 tokens; H̄ is their mean.
- d_min: no value is stated in what we could read of the paper; the default is w = 5, so that after
  a switch the next decision reads a window of the new model's own entropies only.
- tau: the paper sweeps it and publishes no default; 5 bits is ours, where the zoo pair's large model
  makes 49-61% of the tokens (near the paper's 43%; benchmarks/ead.toml). It depends on the pair's
  entropy scale (a small model is less certain than a large one), so sweep it per pair.
- Draft and target may pad their vocabularies differently: M_S picks among the ids both share; a
  token of M_L past M_S's vocabulary is refused (M_S could not follow it).
Lossless: no (by design); the bench reports quality against the target's greedy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.sampling import argmax_ids, check_finite, sample
from ..errors import DecodeLabError
from ..loops.common import emit, processor, start
from ..models.base import sync
from ..options import Options, option
from ..registry import register

SMALL, LARGE = 0, 1  # indices into (draft, target)


@dataclass(frozen=True, kw_only=True)
class EADConfig(Options):
    threshold: float = option(5.0, "tau (bits): the large model decodes while the rolling mean entropy is above it "
                                   "(inf: the small model alone, -inf: the large one alone)", infinite=True)
    window: int = option(5, "w: tokens in the rolling mean of entropies", lo=1, hi=4096)
    dwell: int = option(5, "d_min: tokens a model produces before the next switch", lo=1, hi=4096)


def entropy_bits(logits: torch.Tensor) -> float:
    """H = -sum p log2 p of softmax(logits). logits: [V]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return float(-(logp.exp() * logp).nan_to_num().sum()) / math.log(2)


def next_model(current: int, entropies: list[float], produced: int, config: EADConfig) -> int:
    """The paper's rule: the model for the next token, given the entropies so far (one per token,
    each from the model that produced it) and the tokens the current model produced since it took over."""
    if produced < config.dwell or not entropies:
        return current
    recent = entropies[-config.window:]
    return LARGE if sum(recent) / len(recent) > config.threshold else SMALL


class Switch:
    """The active model, the entropies and the dwell counter c."""

    def __init__(self, config: EADConfig, first: int):
        self.config, self.model, self.produced, self.entropies = config, first, 0, []

    def record(self, h: float) -> None:
        """The active model produced a token of entropy h: decide the next model."""
        self.entropies.append(h)
        self.produced += 1
        nxt = next_model(self.model, self.entropies, self.produced, self.config)
        if nxt != self.model:
            self.model, self.produced = nxt, 0


def check_pair(req) -> None:
    n = len(req.prompt) + req.max_new_tokens
    if req.draft.max_length is not None and n > req.draft.max_length:
        raise DecodeLabError(f"ead: prompt ({len(req.prompt)} tokens) + max_new_tokens ({req.max_new_tokens}) "
                             f"exceeds the small (draft) model's context of {req.draft.max_length} tokens")


def decode(req, config: EADConfig):
    check_pair(req)
    models = (req.draft, req.target)
    for m in models:
        start(m, req.prompt)  # each cache holds prompt[:-1]; sync forwards the rest when it is needed
    shared = min(req.draft.vocab_size, req.target.vocab_size)
    probs = processor(req)
    ctx, new = req.prompt.clone(), 0
    probe = sync(req.draft, ctx)  # [V_draft]: M_S after the prompt, which decides the first model
    switch = Switch(config, next_model(SMALL, [entropy_bits(probe)], config.dwell, config))
    logits = probe if switch.model == SMALL else None
    req.stats.target_emitted = 0
    while True:
        if logits is None:
            logits = catch_up(models[switch.model], ctx, shared)  # [V] of the active model
        check_finite(logits)
        row = logits if switch.model == LARGE else logits[:shared]
        token = argmax_ids(row) if req.greedy else int(sample(probs(row), req.rng))
        out, done = emit(req, [token], new, logits[None])
        if switch.model == LARGE:
            req.stats.target_emitted += len(out)
        switch.record(entropy_bits(logits))
        ctx = torch.cat([ctx, torch.tensor(out, dtype=ctx.dtype)])
        new += len(out)
        yield out
        if done:
            return
        logits = None


def catch_up(model, ctx: torch.Tensor, shared: int) -> torch.Tensor:
    """The model's logits after ctx [T], forwarding in one call every token its cache lacks. -> [V]"""
    if int(ctx.max()) >= model.vocab_size:
        raise DecodeLabError(f"ead: the large model produced token id {int(ctx.max())}, past the small model's "
                             f"vocabulary of {shared} ids (a padding id of the large model); the small model "
                             "cannot follow it")
    return sync(model, ctx)


@register("ead", family="autoregressive", config=EADConfig, lossless=None, draft=True)
def run(req, config: EADConfig):
    return decode(req, config)
