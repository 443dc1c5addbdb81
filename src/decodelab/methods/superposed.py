"""Superposed Decoding: k drafts from one forward per step, told apart by n-gram models.

Shen et al. 2024, "Superposed Decoding: Multiple Generations from a Single Autoregressive
Inference Pass" (arXiv 2405.18400). Notation: k = num_drafts, each draft with its tokens and a
score s_j (summed interpolated log-probabilities). Every step:
1. one target forward of ONE position whose input embedding is the superposition
   sum_j w_j E[last token of draft j], w = softmax(s) over the drafts (the first step forwards the
   prompt's last token as usual); the KV cache holds this one superposed sequence;
2. p_LM = softmax(logits / lm_temperature) restricted to its `top_tokens` likeliest tokens,
   renormalised (the reference's n_token_sample);
3. for each draft j and candidate x: log p_j(x) = (1 - alpha) log p_LM(x) + alpha log sum_n
   w_n P_n(x | the draft's last n - 1 tokens, prompt included), P_n the maximum-likelihood n-gram
   models (n = 2..6, weights ngram_weights) of the zoo's training corpus tokenized with the
   target's tokenizer (zoo/ngrams.py: built on first use and cached); a draft none of whose
   candidates any n-gram knows takes (1 - alpha) log p_LM - penalty instead;
4. the 2k best (s_j + log p_j(x)) continuations, from draft 1 only on the first step (the drafts
   start equal), make the k new drafts; one ending in a stop token is set aside as finished.
Defaults are the paper's (k = 3, alpha = 0.54, weights .01/.04/.15/.18/.12 for 2..6-grams) and its
reference code's (n_token_sample = 9, penalty = 200, LM temperature 0.06: at 1.0 the zoo model's
flat distribution lets the n-grams drag every draft into corpus boilerplate).

generate() returns the k completions (live and finished drafts ranked by mean interpolated
log-probability per token) best first as `sequences`, and the best as `tokens`. Cost: one target
forward per step for all k drafts (stats.target_forwards == steps).

Deviations: (1) the n-gram models are the zoo corpus's, not the reference's RedPajama ones; (2)
completions are ranked by mean per-token score rather than returned as separate live and finished
sets, and a candidate scored -inf (no n-gram allows it while another candidate is allowed) never
becomes a draft, so fewer than k come back when fewer are possible; (3) with
logprobs=True each token's log p under the target comes from one extra teacher-forced forward of
the best completion (the superposed forwards never see a draft alone). alpha = 0 needs no n-grams
(and no tokenizer): with k = 1 it is greedy decoding exactly. Not lossless.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..core.sampling import check_finite
from ..errors import DecodeLabError
from ..loops.common import start, token_logprobs
from ..options import Options, option
from ..registry import register
from ..types import StepTrace

ORDERS = (2, 3, 4, 5, 6)


@dataclass(frozen=True, kw_only=True)
class SuperposedConfig(Options):
    num_drafts: int = option(3, "k: drafts decoded together, one target forward per step for all", lo=1, hi=32)
    alpha: float = option(0.54, "weight of the n-gram log-probability (0: none, no tokenizer needed)", lo=0, below=1)
    ngram_weights: str = option("0.01,0.04,0.15,0.18,0.12", "interpolation weights of the 2- to 6-gram models")
    top_tokens: int = option(9, "the LM's likeliest tokens considered per step (the reference's n_token_sample)",
                             lo=1, hi=1024)
    lm_temperature: float = option(0.06, "temperature of the LM distribution that is interpolated (the reference's)",
                                   above=0, hi=100)
    penalty: float = option(200.0, "subtracted from a draft's step when no n-gram knows any candidate", lo=0)

    def weights(self) -> dict[int, float]:
        try:
            w = [float(x) for x in self.ngram_weights.split(",")]
        except ValueError:
            w = []
        if len(w) != len(ORDERS) or any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
            raise DecodeLabError(f"ngram_weights must be {len(ORDERS)} non-negative numbers (2- to 6-grams) with a "
                                 f"positive sum, comma-separated; got {self.ngram_weights!r}")
        return dict(zip(ORDERS, w))

    def validate(self):
        self.weights()


def step_logp(p_lm: torch.Tensor, ngram: np.ndarray | None, alpha: float, penalty: float) -> torch.Tensor:
    """Interpolated log-probabilities [D, C] of C candidates for D drafts. p_lm: [C] (renormalised
    over the candidates); ngram: [D, C] interpolated n-gram probabilities, or None when alpha = 0."""
    lm = torch.log(p_lm.double())[None]  # [1, C]
    if ngram is None or alpha == 0.0:
        return lm.expand(1 if ngram is None else len(ngram), -1).clone()
    with np.errstate(divide="ignore"):
        ng = torch.from_numpy(np.log(ngram))  # [D, C], -inf where no n-gram knows the candidate
    out = (1 - alpha) * lm + alpha * ng
    blind = torch.isinf(out).all(dim=-1, keepdim=True)  # no interpolation possible for this draft
    return torch.where(blind, (1 - alpha) * lm - penalty, out)


@register("superposed", family="autoregressive", config=SuperposedConfig, lossless=None, needs=("embeds",),
          modes=("greedy",))
def run(req, config: SuperposedConfig):
    grams = None
    if config.alpha > 0:
        tok = getattr(req.target, "tokenizer", None)
        if tok is None:
            raise DecodeLabError("superposed interpolates n-gram models of the zoo corpus tokenized with the model's "
                                 "tokenizer, and this model has none; pass alpha=0 to decode without n-grams")
        from ..zoo.ngrams import for_tokenizer

        grams = for_tokenizer(tok, req.target.vocab_size)
    return _decode(req, config, grams)


def _decode(req, cfg: SuperposedConfig, grams):
    target, prompt, k = req.target, req.prompt, cfg.num_drafts
    weights, base = cfg.weights(), req.prompt.tolist()
    start(target, prompt)
    drafts, scores = [[]], torch.zeros(1, dtype=torch.float64)  # live drafts: tokens, summed log p
    finished: list[tuple[float, list[int]]] = []
    for step in range(req.max_new_tokens):
        pos = torch.tensor([len(prompt) - 1 + step])
        if step == 0:
            logits = target.forward(prompt[-1:], pos).logits[-1]  # [V]
        else:
            last = torch.tensor([d[-1] for d in drafts])  # [D]
            mix = (torch.softmax(scores, 0)[:, None] * target.embed(last).double()).sum(0)  # [H]
            logits = target.forward(last[:1], pos, embeds=mix[None].float()).logits[-1]  # [V]
        check_finite(logits)
        req.stats.committed.append(0)
        p = torch.softmax(logits.double() / cfg.lm_temperature, -1)
        p_top, cand = torch.topk(p, min(cfg.top_tokens, len(p)))  # [C]
        ngram = None
        if grams is not None:
            ngram = grams.mix([base + d for d in drafts], np.tile(cand.numpy(), (len(drafts), 1)), weights)
        total = scores[:, None] + step_logp(p_top / p_top.sum(), ngram, cfg.alpha, cfg.penalty)  # [D, C]
        top = torch.topk(total.flatten(), min(2 * k, total.numel()))
        live, live_scores = [], []
        for score, flat in zip(top.values.tolist(), top.indices.tolist()):
            if score == -math.inf:  # a candidate no n-gram allows (while another is allowed) is no draft
                break
            d, c = divmod(flat, len(cand))
            seq = drafts[d] + [int(cand[c])]
            if seq[-1] in req.stops:
                finished.append((score, seq))
            elif len(live) < k:
                live.append(seq)
                live_scores.append(score)
        finished = sorted(finished, key=lambda f: -f[0])[:k]
        if not live:
            break
        drafts, scores = live, torch.tensor(live_scores, dtype=torch.float64)
    ranked = sorted(finished + list(zip(scores.tolist(), drafts)), key=lambda f: -f[0] / max(1, len(f[1])))[:k]
    best = ranked[0][1]
    req.stats.committed[-1] += len(best)
    if req.logprobs is not None:  # the target's own log p of the best completion: one teacher-forced forward
        target.reset()
        ids = torch.tensor(base + best)
        req.logprobs.extend(token_logprobs(target.forward(ids, torch.arange(len(ids))).logits[len(base) - 1:-1], best))
    if req.trace is not None:
        req.trace.append(StepTrace(tokens=list(best)))
    if req.sequences is not None:
        req.sequences.extend(list(s) for _, s in ranked)
    yield list(best)
