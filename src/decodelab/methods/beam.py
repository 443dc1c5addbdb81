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
from ..errors import DecodeLabError
from ..loops.common import start
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class BeamConfig:
    num_beams: int = 4
    length_penalty: float = 1.0

    def __post_init__(self):
        if self.num_beams < 1:
            raise DecodeLabError(f"num_beams must be >= 1, got {self.num_beams}")


@register("beam", family="autoregressive", config=BeamConfig, lossless=None, needs=("batch",), modes=("greedy",))
def run(target, prompt, max_new_tokens, *, config, sampling, draft, rng, stops, stats):
    yield beam_search(target, prompt, max_new_tokens, config, stops, stats)


def beam_search(target, prompt, max_new_tokens, cfg: BeamConfig, stops, stats) -> list[int]:
    start(target, prompt)
    beams: list[list[int]] = [[]]  # generated tokens per live beam
    scores: list[float] = [0.0]  # summed log p per live beam
    finished: list[tuple[float, list[int]]] = []  # (normalised score, tokens)
    for step in range(max_new_tokens):
        last = torch.tensor([[b[-1] if b else int(prompt[-1])] for b in beams])  # [B, 1]
        logits = target.forward(last, torch.full_like(last, len(prompt) - 1 + step)).logits[:, -1]  # [B, V]
        check_finite(logits)
        stats.committed.append(1)
        cand = torch.tensor(scores, dtype=torch.float64)[:, None] + torch.log_softmax(logits.double(), -1)
        top = torch.topk(cand.flatten(), min(2 * cfg.num_beams, cand.numel()))  # [2B]
        rows, beams_next, scores_next = [], [], []
        for rank, (score, flat) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            row, tok = divmod(flat, logits.shape[-1])
            seq = beams[row] + [tok]
            if tok in stops:
                if rank < cfg.num_beams:  # as transformers: only a top-ranked stop finishes a beam
                    finished.append((score / len(seq) ** cfg.length_penalty, seq))
            elif len(beams_next) < cfg.num_beams:
                rows.append(row)
                beams_next.append(seq)
                scores_next.append(score)
        beams, scores = beams_next, scores_next
        if not beams or _done(finished, scores, step + 1, cfg):
            break
        target.select(torch.tensor(rows))
    live = [(s / len(b) ** cfg.length_penalty, b) for s, b in zip(scores, beams)]
    return max(finished + live, key=lambda t: t[0])[1]


def _done(finished, live_scores, length, cfg) -> bool:
    if len(finished) < cfg.num_beams:
        return False
    worst = sorted(f[0] for f in finished)[-cfg.num_beams]
    return max(live_scores) / length ** cfg.length_penalty <= worst
