"""Diverse Beam Search: B beams in G groups, each group penalised for the tokens earlier groups chose.

Vijayakumar et al. 2016, "Diverse Beam Search: Decoding Diverse Solutions from Neural Sequence
Models" (arXiv 1610.02424). Notation: B = num_beams, G = num_beam_groups (B / G beams per group),
lambda = diversity_penalty (the paper finds 0.2-0.8 works). At every step the groups choose in
order; group g runs a beam-search step whose candidates are ranked by
sum log p - lambda * (the number of earlier groups' beams that took the same token at this step),
the paper's Hamming diversity, the one it recommends. All beams of all groups advance in ONE
batched target forward per step (loops/beam.py, shared with `beam`), so G = 1 is exactly `beam`.
Names are transformers' (num_beam_groups, diversity_penalty, length_penalty).

generate() returns the best hypothesis by length-normalised log p as `tokens` and all B returned
beams (each group's B / G best), best first, as `sequences`.

Deviations: (1) the beams' scores stay sum log p, the diversity term only shapes each step's
choice (the paper's objective; transformers' group beam search instead adds the penalty to the
running scores); (2) each group follows transformers' beam search rules for stop tokens, length
penalty and when to stop (see methods/beam.py). Not lossless.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DecodeLabError
from ..loops import beam as beams
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class DiverseBeamConfig(Options):
    num_beams: int = option(6, "B: beams in all (all in one batched forward)", lo=1, hi=64)
    num_beam_groups: int = option(3, "G: groups; B must be a multiple of G (G = 1 is beam search)", lo=1, hi=64)
    diversity_penalty: float = option(0.5, "lambda: a candidate loses this per earlier-group beam that took its "
                                      "token at this step", lo=0, hi=100)
    length_penalty: float = option(1.0, "a finished score is sum log p / generated_len ** length_penalty")

    def validate(self):
        if self.num_beams % self.num_beam_groups:
            raise DecodeLabError(f"num_beams ({self.num_beams}) must be a multiple of num_beam_groups "
                                 f"({self.num_beam_groups})")


@register("diverse_beam", family="autoregressive", config=DiverseBeamConfig, lossless=None, needs=("batch",),
          modes=("greedy",))
def run(req, config: DiverseBeamConfig):
    width = config.num_beams // config.num_beam_groups
    groups = beams.search(req, config.num_beams, config.length_penalty, config.num_beam_groups,
                          config.diversity_penalty)
    returned = sorted((h for g in groups for h in g[:width]), key=lambda h: -h.score)
    yield beams.emit(req, returned)
