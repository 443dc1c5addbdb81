"""SAM-Decoding: retrieval drafts where the context repeats itself, a draft model's drafts
elsewhere (Hu et al. 2024, "SAM Decoding: Speculative Decoding via Suffix Automaton", arXiv
2411.10666).

Each step finds the longest suffix of the context that occurred earlier in it. When that match is
at least len_threshold tokens long, the draft is what followed the earlier occurrence (pld's
copy); otherwise the step is handed to the auxiliary drafter, here a draft model's chain (sps).
The speculative loop verifies either draft in one target forward. Both lengths default to "auto"
(core/costs.py): the copied draft's from its acceptance per matched length (pld's rule), the
model's from both models' cost curves (sps's rule), each AutoLength pausing its clock over the
other one's steps (AutoLength.pause).

Why: on a target whose output repeats its prompt only in places, prompt lookup's short matches are
poor guesses (zoo:code-target-l, HumanEval: a copy after a 1-token match has its first token
right 31% of the time, after a 3-token match 72%, and a code-draft chain 40-47% at either), and
the draft model's chain is the better draft exactly where lookup's are poor.

Deviations from the paper and its reference code (hyx1999/SAM-Decoding): (1) the longest match is
found by pld's n-gram index (methods/pld.py, NgramIndex) up to max_ngram tokens, not by a suffix
automaton: the same longest match up to max_ngram, in O(max_ngram) a step; (2) there is no static
text base (the reference's second automaton over a corpus), only the prompt and the generation (one
over the zoo corpus was built and timed, and did not pay: docs/llamacpp.md);
(3) the auxiliary drafter is a draft model's chain, where the reference uses EAGLE or Token
Recycling; (4) len_threshold defaults to 2, not 4, and the copied draft's length is auto, not
n_predicts = 10 (both measured on zoo:code-target-l on the llama.cpp backend, docs/llamacpp.md).
Lossless: greedy; sampling (the copied draft is a deterministic guess, q = None, the model's
chain carries its q; rejection sampling verifies either exactly).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.costs import AutoLength
from ..core.tree import Draft
from ..errors import DecodeLabError
from ..loops import speculative
from ..loops.drafting import ChainDrafter
from ..models import costs
from ..options import Options, option
from ..registry import register
from .pld import LookupDrafter, PLDConfig
from .sps import AutoChainDrafter


@dataclass(frozen=True, kw_only=True)
class SamdConfig(Options):
    len_threshold: int = option(2, "shortest suffix match whose continuation is drafted; shorter ones (and no "
                                   "match) hand the step to the draft model", lo=1, hi=32)
    num_tokens: int | None = option(None, "copied draft length (the reference's n_predicts, 10 there); auto: "
                                          "chosen per step as pld's", lo=1, hi=128, auto=True)
    gamma: int | None = option(None, "draft-model tokens per step where no match is long enough; auto: chosen "
                                     "per step as sps's", lo=1, hi=128, auto=True)
    max_ngram: int = option(10, "longest suffix matched against the context", lo=1, hi=32)

    def validate(self):
        if self.len_threshold > self.max_ngram:
            raise DecodeLabError(f"need len_threshold <= max_ngram, got {self.len_threshold} and {self.max_ngram}")


class SamDrafter:
    """A copied draft after a long enough suffix match, else the draft model's chain; each step is
    observed by the drafter that proposed it, and each auto length's clock sees only its own steps."""

    def __init__(self, lookup: LookupDrafter, model: ChainDrafter):
        self.lookup, self.model, self.copied = lookup, model, False
        self._autos = (lookup.auto, getattr(model, "auto", None))

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        match = self.lookup.match(ctx, max_depth)  # only matches of len_threshold tokens or more
        self.copied = match is not None
        idle = self._autos[1] if self.copied else self._autos[0]
        if idle is not None:
            idle.pause()
        return self.lookup.draft(match, max_depth) if self.copied else self.model.propose(ctx, max_depth)

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        (self.lookup if self.copied else self.model).observe(draft, path, logits)

    def rest(self) -> int:
        """Plain steps only while neither drafter's drafts could pay even if always accepted (the
        fewer steps of the two; not sps's idle rests: the next step may be the other drafter's)."""
        return min(a.rest() if a is not None else 0 for a in self._autos)


@register("samd", family="speculative", config=SamdConfig, lossless="sampling", draft=True,
          budget=lambda b, given: {"num_tokens": b - 1, "gamma": b - 1})
def run(req, config: SamdConfig):
    pld = PLDConfig(num_tokens=config.num_tokens, max_ngram=config.max_ngram, min_ngram=config.len_threshold)
    auto = None
    if config.num_tokens is None:
        auto = AutoLength(lambda n: costs.curve(req.target, context=n), switch=costs.switch(req.target),
                          seen=costs.clock(req.target, "samd"))
    model = AutoChainDrafter(req, "samd", carry=False) if config.gamma is None else ChainDrafter(req, config.gamma)
    return speculative.decode(req, SamDrafter(LookupDrafter(pld, auto), model))
