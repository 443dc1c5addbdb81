"""Beam search with length penalty over the target, all beams in one batched forward.

Beam search for neural sequence models as in Sutskever et al. 2014 ("Sequence to Sequence
Learning with Neural Networks", arXiv 1409.3215); the length penalty is Wu et al. 2016's GNMT
idea (arXiv 1609.08144) in transformers' simpler form. Follows transformers' beam search: keep the best `num_beams` live hypotheses by summed log
probability; a hypothesis ending in a stop token is finished with score
sum_logp / generated_len ** length_penalty. Deviations: generated_len counts new tokens only (not
the prompt), and decoding stops once `num_beams` hypotheses are finished and no live beam can
still beat the worst of them at its current length (transformers' early_stopping=False rule).
Not lossless: it searches for a high-likelihood sequence, it does not reproduce greedy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.sampling import check_finite
from ..loops.common import start
from ..options import Options, option
from ..registry import register
from ..types import StepTrace


@dataclass(frozen=True, kw_only=True)
class BeamConfig(Options):
    num_beams: int = option(4, "hypotheses kept per step (all in one batched forward)", lo=1, hi=64)
    length_penalty: float = option(1.0, "a finished score is sum log p / generated_len ** length_penalty")


@register("beam", family="autoregressive", config=BeamConfig, lossless=None, needs=("batch",), modes=("greedy",))
def run(req, config: BeamConfig):
    tokens, logps = beam_search(req, config)
    if req.logprobs is not None:
        req.logprobs.extend(logps)
    if req.trace is not None:
        req.trace.append(StepTrace(tokens=tokens))  # the search's result, in one piece
    yield tokens


def beam_search(req, cfg: BeamConfig) -> tuple[list[int], list[float]]:
    """(the best hypothesis, each of its tokens' log p under the target)."""
    target, prompt = req.target, req.prompt
    start(target, prompt)
    beams: list[list[int]] = [[]]  # generated tokens per live beam
    logps: list[list[float]] = [[]]  # log p of each token, per live beam
    finished: list[tuple[float, list[int], list[float]]] = []  # (normalised score, tokens, log ps)
    for step in range(req.max_new_tokens):
        last = torch.tensor([[b[-1] if b else int(prompt[-1])] for b in beams])  # [B, 1]
        logits = target.forward(last, torch.full_like(last, len(prompt) - 1 + step)).logits[:, -1]  # [B, V]
        check_finite(logits)
        req.stats.committed.append(1)
        logp = torch.log_softmax(logits.double(), -1)  # [B, V]
        scores = torch.tensor([sum(lp) for lp in logps], dtype=torch.float64)
        top = torch.topk((scores[:, None] + logp).flatten(), min(2 * cfg.num_beams, logp.numel()))  # [2B]
        rows, beams_next, logps_next = [], [], []
        for rank, (score, flat) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            row, tok = divmod(flat, logits.shape[-1])
            seq, lps = beams[row] + [tok], logps[row] + [float(logp[row, tok])]
            if tok in req.stops:
                if rank < cfg.num_beams:  # as transformers: only a top-ranked stop finishes a beam
                    finished.append((score / len(seq) ** cfg.length_penalty, seq, lps))
            elif len(beams_next) < cfg.num_beams:
                rows.append(row)
                beams_next.append(seq)
                logps_next.append(lps)
        beams, logps = beams_next, logps_next
        if not beams or _done(finished, [sum(lp) for lp in logps], step + 1, cfg):
            break
        target.select(torch.tensor(rows))
    live = [(sum(lp) / len(b) ** cfg.length_penalty, b, lp) for b, lp in zip(beams, logps)]
    _, best, best_logps = max(finished + live, key=lambda t: t[0])
    return best, best_logps


def _done(finished, live_scores, length, cfg) -> bool:
    if len(finished) < cfg.num_beams:
        return False
    worst = sorted(f[0] for f in finished)[-cfg.num_beams]
    return max(live_scores) / length ** cfg.length_penalty <= worst
