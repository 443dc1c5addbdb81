"""PLD: prompt lookup decoding (Apoorv Saxena, "Prompt Lookup Decoding", 2023; in
transformers as `generate(prompt_lookup_num_tokens=...)`). A baseline, not from a paper.

Draft = the tokens that followed the most recent earlier occurrence of the context's last n-gram
(n from max_ngram down to min_ngram; the first n with a match wins), up to num_tokens tokens,
as a chain; no match gives an empty draft (a plain greedy step). The speculative loop verifies
the chain in one target forward. num_tokens = "auto" (the default) sets the draft length before
each step from the target's measured forward cost curve and the acceptance so far (core/costs.py:
a lookup draft costs nothing to make), down to no lookup when drafting cannot pay.

Deviations from transformers' PromptLookupCandidateGenerator: (1) the most recent match, not the
earliest (the card's reading; `prefer="first"` gives transformers' choice); (2) a match whose
continuation runs into the end of the context keeps copying from its own copy (an overlapping,
LZ77-style copy), so a repetition of period p still yields a full num_tokens draft instead of p
tokens; (3) default max_ngram 3 (transformers: max_matching_ngram_size=2).
Lossless: greedy; in sampling mode the draft is a deterministic guess (q = None), which
rejection sampling verifies exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.costs import AutoLength
from ..core.tree import Draft, TokenTree
from ..errors import DecodeLabError
from ..loops import speculative
from ..models import costs
from ..options import Options, option
from ..registry import register


@dataclass(frozen=True, kw_only=True)
class PLDConfig(Options):
    num_tokens: int | None = option(None, "draft length (transformers' prompt_lookup_num_tokens, 10 there); auto: "
                                          "chosen per step from the target's measured forward costs and the "
                                          "acceptance so far", lo=1, hi=128, auto=True)
    max_ngram: int = option(3, "longest n-gram matched against the context", lo=1, hi=32)
    min_ngram: int = option(1, "shortest n-gram matched against the context", lo=1, hi=32)
    prefer: str = option("recent", "which earlier occurrence to copy from", choices=("recent", "first"))

    def validate(self):
        if self.min_ngram > self.max_ngram:
            raise DecodeLabError(f"need min_ngram <= max_ngram, got {self.min_ngram} and {self.max_ngram}")


def lookup(ctx: torch.Tensor, num_tokens: int, max_ngram: int, min_ngram: int, prefer: str = "recent") -> list[int]:
    """Draft tokens copied after an earlier occurrence of ctx's last n-gram, longest n first.

    ctx: [T] token ids. Returns up to num_tokens ids ([] when no n-gram recurs).
    """
    T = len(ctx)
    for n in range(min(max_ngram, T - 1), min_ngram - 1, -1):
        windows = ctx.unfold(0, n, 1)[: T - n]  # [T - n, n]: every n-gram but the suffix itself
        starts = (windows == ctx[T - n:]).all(dim=1).nonzero().flatten()
        if len(starts):
            src = int(starts[-1] if prefer == "recent" else starts[0]) + n
            seq = ctx[src:].tolist()[:num_tokens]
            while len(seq) < num_tokens:  # the copy ran into the end of ctx: copy the copy
                seq.append(seq[len(seq) - (T - src)])
            return seq
    return []


class LookupDrafter:
    def __init__(self, config: PLDConfig, auto: AutoLength | None = None):
        self.config, self.auto = config, auto

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        c = self.config
        n = self.auto.length(max_depth) if self.auto is not None else min(c.num_tokens, max_depth)
        guess = lookup(ctx, n, c.max_ngram, c.min_ngram, c.prefer) if n else []
        return Draft(TokenTree.chain([int(ctx[-1])] + guess))

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        if self.auto is not None:  # a step that drafted nothing changes nothing
            self.auto.update(len(draft.tree) - 1, len(path) - 1)


@register("pld", family="speculative", config=PLDConfig, lossless="sampling", budget="num_tokens",
          peer="hf:prompt-lookup")
def run(req, config: PLDConfig):
    auto = AutoLength(costs.curve(req.target)) if config.num_tokens is None else None
    return speculative.decode(req, LookupDrafter(config, auto))
