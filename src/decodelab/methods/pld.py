"""PLD: prompt lookup decoding (Apoorv Saxena, "Prompt Lookup Decoding", 2023; in
transformers as `generate(prompt_lookup_num_tokens=...)`). A baseline, not from a paper.

Draft = the tokens that followed the most recent earlier occurrence of the context's last n-gram
(n from max_ngram down to min_ngram; the first n with a match wins), up to num_tokens tokens,
as a chain; no match gives an empty draft (a plain greedy step). The speculative loop verifies
the chain in one target forward. num_tokens = "auto" (the default) sets the draft length before
each step from the target's measured forward cost curve (core/costs.py: a lookup draft costs
nothing to make) and the acceptance so far of drafts copied after a match of that n-gram length,
at the context's length, down to no draft when drafting cannot pay (and no lookups either while
even always-accepted drafts would not pay: AutoLength.rest). The lookup runs on an index of the
context's n-grams kept up to date as tokens are committed (NgramIndex; `lookup` is the same search
written directly, over the whole context).

Deviations from transformers' PromptLookupCandidateGenerator: (1) the most recent match, not the
earliest (the card's reading; `prefer="first"` gives transformers' choice); (2) a match whose
continuation runs into the end of the context keeps copying from its own copy (an overlapping,
LZ77-style copy), so a repetition of period p still yields a full num_tokens draft instead of p
tokens; (3) default max_ngram 10 (transformers: max_matching_ngram_size=2; the original's 3): the
longest earlier match is the most specific one, and its acceptance is kept apart. Interleaved
A/B runs against max_ngram 3 (8 prompts, 128 tokens, fastest of 3, 1 thread): HumanEval 1.07-1.09x
on zoo:code-target-l (llama.cpp; the grown model of 2026-11) and 1.08x on zoo:code-target
(torch); held-out code 1.00x and 1.02x (the from-scratch code-target-l, in one bench run: 1.08x on
HumanEval, 0.99x on held-out code); where drafting cannot pay (zoo:code-target on llama.cpp) both
rest, within 1%.
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
    max_ngram: int = option(10, "longest n-gram matched against the context", lo=1, hi=32)
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


class NgramIndex:
    """Where each n-gram (min_ngram <= n <= max_ngram) of a growing context occurred last (or
    first): `lookup` kept up to date token by token, so a step costs O(max_ngram), not O(context).
    The context only grows within a generation (the speculative loop's contract); a shorter one
    starts the index over."""

    def __init__(self, config: PLDConfig):
        self.min_n, self.max_n, self.recent = config.min_ngram, config.max_ngram, config.prefer == "recent"
        self.ids: list[int] = []
        self.where: dict[int, dict[tuple, int]] = {n: {} for n in range(self.min_n, self.max_n + 1)}

    def extend(self, ctx: torch.Tensor) -> None:
        """Index the n-grams of ctx that end before its last token (the suffix is never its own match)."""
        if len(ctx) < len(self.ids):
            self.ids, self.where = [], {n: {} for n in self.where}
        start = len(self.ids)
        self.ids += ctx[start:].tolist()
        ids = self.ids
        for end in range(max(start - 1, 0), len(ids) - 1):
            for n, seen in self.where.items():
                if end - n + 1 >= 0:
                    key = tuple(ids[end - n + 1:end + 1])
                    if self.recent or key not in seen:
                        seen[key] = end + 1  # where the copy starts: just after the n-gram

    def find(self) -> tuple[int, int] | None:
        """(n, copy start) for the context's longest recurring suffix n-gram; None without one."""
        ids, T = self.ids, len(self.ids)
        for n in range(min(self.max_n, T - 1), self.min_n - 1, -1):
            src = self.where[n].get(tuple(ids[T - n:]))
            if src is not None:
                return n, src
        return None

    def copy(self, src: int, k: int) -> list[int]:
        """k tokens copied from src on (a copy that runs into the end of the context copies itself)."""
        seq, period = self.ids[src:src + k], len(self.ids) - src
        while len(seq) < k:
            seq.append(seq[len(seq) - period])
        return seq


class LookupDrafter:
    """Fixed num_tokens, or auto: the length from AutoLength with one acceptance rate per matched
    n-gram length (a 3-gram match is copied right more often than a 1-gram one)."""

    def __init__(self, config: PLDConfig, auto: AutoLength | None = None):
        self.config, self.auto, self.index, self.key = config, auto, NgramIndex(config), None

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        return self.draft(self.match(ctx, max_depth), max_depth)

    def match(self, ctx: torch.Tensor, max_depth: int) -> tuple[int, int] | None:
        """(n, copy start) for ctx's longest recurring suffix n-gram; None without one or without room."""
        self.index.extend(ctx)
        return self.index.find() if max_depth else None

    def draft(self, match: tuple[int, int] | None, max_depth: int) -> Draft:
        """The draft copied after `match` (this step's `match`)."""
        self.key = match[0] if match else None
        if self.auto is not None:  # called at every step it drafts (all of pld's; samd pauses it over the others)
            k = self.auto.length(max_depth if match else 0, key=self.key, context=len(self.index.ids))
        else:
            k = min(self.config.num_tokens, max_depth) if match else 0
        guess = self.index.copy(match[1], k) if k else []
        return Draft(TokenTree.chain([self.index.ids[-1]] + guess))

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        if self.auto is not None:  # a step that drafted nothing changes nothing
            self.auto.update(len(draft.tree) - 1, len(path) - 1, key=self.key)

    def rest(self) -> int:  # the index catches up on the skipped tokens at the next propose
        return self.auto.rest() if self.auto is not None else 0


@register("pld", family="speculative", config=PLDConfig, lossless="sampling", budget="num_tokens",
          peer="hf:prompt-lookup")
def run(req, config: PLDConfig):
    auto = None
    if config.num_tokens is None:
        auto = AutoLength(lambda n: costs.curve(req.target, context=n), switch=costs.switch(req.target),
                          seen=costs.clock(req.target, "pld"))
    return speculative.decode(req, LookupDrafter(config, auto))
