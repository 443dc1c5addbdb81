"""The beam loop: B hypotheses in G groups, every live beam of every group in one batched target
forward per step (the adapter's `select(rows)` keeps, reorders and repeats cache rows).

G = 1 is beam search (methods/beam.py); G > 1 is Diverse Beam Search (methods/diverse_beam.py).
Each group of width b = B / G runs transformers' beam search: from its live beams, the top 2b
candidates by sum log p; a candidate ending in a stop token finishes (only when ranked among the
top b) with score sum_logp / generated_len ** length_penalty; the first b others stay live. The
group is done once it has b finished hypotheses and none of its live beams can still beat the
worst of them at its current length (transformers' early_stopping=False rule), or it has no live
beam. Groups pick in order; with diversity lambda > 0, group g ranks its candidates by
sum log p - lambda * (how many earlier groups' live beams took that token at this step), the
Hamming diversity of Vijayakumar et al. 2016. The stored scores stay sum log p: the diversity term
shapes each step's choice only.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from ..core.sampling import check_finite
from ..types import StepTrace
from .common import start


@dataclass
class Hypothesis:
    score: float  # sum log p / len ** length_penalty
    tokens: list[int]
    logps: list[float]  # log p of each token under the target


@dataclass
class _Group:
    beams: list[list[int]] = field(default_factory=lambda: [[]])  # generated tokens per live beam
    logps: list[list[float]] = field(default_factory=lambda: [[]])
    finished: list[Hypothesis] = field(default_factory=list)
    done: bool = False


def search(req, num_beams: int, length_penalty: float, groups: int = 1, diversity: float = 0.0) -> list[list[Hypothesis]]:
    """Every group's hypotheses (finished, and the live beams when it stopped), best first."""
    target, prompt = req.target, req.prompt
    start(target, prompt)
    width = num_beams // groups
    state = [_Group() for _ in range(groups)]
    if groups > 1:  # every group starts from the one prompt row
        target.select(torch.zeros(groups, dtype=torch.long))
    for step in range(req.max_new_tokens):
        live = [g for g in state if not g.done]
        last = torch.tensor([[b[-1] if b else int(prompt[-1])] for g in live for b in g.beams])  # [R, 1]
        logits = target.forward(last, torch.full_like(last, len(prompt) - 1 + step)).logits[:, -1]  # [R, V]
        check_finite(logits)
        req.stats.committed.append(1)
        logp = torch.log_softmax(logits.double(), -1)  # [R, V]
        taken: Counter = Counter()  # tokens earlier groups' live beams took at this step
        rows, offset = [], 0
        for g in live:
            n = len(g.beams)
            kept = _advance(g, logp[offset:offset + n], taken, diversity, width, length_penalty, req.stops, step)
            rows += [offset + r for r in kept]
            offset += n
        if all(g.done for g in state):
            break
        target.select(torch.tensor(rows))
    return [_ranked(g, length_penalty) for g in state]


def _advance(g: _Group, logp: torch.Tensor, taken: Counter, diversity: float, width: int, length_penalty: float,
             stops, step: int) -> list[int]:
    """One step of one group: extend, finish and keep its beams; mark it done when it is. Returns
    the rows (within the group) its new live beams continue."""
    scores = torch.tensor([sum(lp) for lp in g.logps], dtype=torch.float64)
    total = scores[:, None] + logp  # [n, V] sum log p of every candidate
    rank = total
    if diversity and taken:
        penalty = torch.zeros(logp.shape[-1], dtype=torch.float64)
        penalty[list(taken)] = torch.tensor(list(taken.values()), dtype=torch.float64)
        rank = total - diversity * penalty
    top = torch.topk(rank.flatten(), min(2 * width, rank.numel()))  # [2b]
    rows, beams, logps = [], [], []
    vocab = logp.shape[-1]
    for r, flat in enumerate(top.indices.tolist()):
        row, tok = divmod(flat, vocab)
        seq, lps = g.beams[row] + [tok], g.logps[row] + [float(logp[row, tok])]
        if tok in stops:
            if r < width:  # as transformers: only a top-ranked stop finishes a beam
                g.finished.append(Hypothesis(float(total[row, tok]) / len(seq) ** length_penalty, seq, lps))
        elif len(beams) < width:
            rows.append(row)
            beams.append(seq)
            logps.append(lps)
            taken[tok] += 1
    g.beams, g.logps = beams, logps
    if not beams or _done(g.finished, [sum(lp) for lp in logps], step + 1, width, length_penalty):
        g.done = True
        return []
    return rows


def _done(finished: list[Hypothesis], live_scores: list[float], length: int, width: int, length_penalty: float) -> bool:
    if len(finished) < width:
        return False
    worst = sorted(h.score for h in finished)[-width]
    return max(live_scores) / length ** length_penalty <= worst


def _ranked(g: _Group, length_penalty: float) -> list[Hypothesis]:
    live = [Hypothesis(sum(lp) / len(b) ** length_penalty, b, lp) for b, lp in zip(g.beams, g.logps)]
    return sorted(g.finished + live, key=lambda h: -h.score)  # stable: finished first on ties, as max() in beam


def emit(req, returned: list[Hypothesis]) -> list[int]:
    """Record the search's result: the best hypothesis is the output (its log p, one StepTrace);
    `returned` (best first) goes to req.sequences when the caller asked for every output."""
    best = returned[0]
    if req.logprobs is not None:
        req.logprobs.extend(best.logps)
    if req.trace is not None:
        req.trace.append(StepTrace(tokens=list(best.tokens)))  # the search's result, in one piece
    if req.sequences is not None:
        req.sequences.extend(list(h.tokens) for h in returned)
    return list(best.tokens)
