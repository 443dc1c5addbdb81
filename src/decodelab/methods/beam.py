"""Beam search with length penalty over the target, all beams in one batched forward.

Beam search for neural sequence models as in Sutskever et al. 2014 ("Sequence to Sequence
Learning with Neural Networks", arXiv 1409.3215); the length penalty is Wu et al. 2016's GNMT
idea (arXiv 1609.08144) in transformers' simpler form. Follows transformers' beam search: keep the best `num_beams` live hypotheses by summed log
probability; a hypothesis ending in a stop token is finished with score
sum_logp / generated_len ** length_penalty. Deviations: generated_len counts new tokens only (not
the prompt), and decoding stops once `num_beams` hypotheses are finished and no live beam can
still beat the worst of them at its current length (transformers' early_stopping=False rule).
Not lossless: it searches for a high-likelihood sequence, it does not reproduce greedy. The search
itself is loops/beam.py (one group); generate() returns the best hypothesis and, as `sequences`,
the num_beams best (transformers' num_return_sequences = num_beams).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..loops import beam as beams
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class BeamConfig(Options):
    num_beams: int = option(4, "hypotheses kept per step (all in one batched forward)", lo=1, hi=64)
    length_penalty: float = option(1.0, "a finished score is sum log p / generated_len ** length_penalty")


@register("beam", family="autoregressive", config=BeamConfig, lossless=None, needs=("batch",), modes=("greedy",))
def run(req, config: BeamConfig):
    (ranked,) = beams.search(req, config.num_beams, config.length_penalty)
    yield beams.emit(req, ranked[:config.num_beams])  # sequences: the num_beams best hypotheses
