"""Draft-model plumbing for the speculative methods that draft with a second model (sps,
specdecpp, dyspec, rsd_c, rsd_s): processed q, tree scoring in one draft forward, a chain
drafter, and the draft's KV cache kept equal to the committed prefix.

Draft and target share a tokenizer but not always a matrix size: real model families pad their
embedding matrices differently. Drafting runs over the SHARED ids (the first min(V_draft,
V_target)): the draft never proposes an id the target cannot score, and q is padded with zeros
to the target's V, so rejection sampling compares p and q over one vocabulary and stays exact.
A target that emits an id past the draft's matrix (one of its own padding rows) cannot be
followed by that draft: a DecodeLabError says so.
"""
from __future__ import annotations

import torch

from ..core.costs import AutoLength
from ..core.sampling import argmax_ids, sample
from ..core.tree import Draft, TokenTree
from ..errors import DecodeLabError
from ..models import costs
from ..models.base import sync
from .common import processor


class DraftModelDrafter:
    """q(logits) is the processed draft distribution (the same SamplingConfig as p; plain softmax
    when greedy) over the target's vocabulary. Tree drafters call `score_tree` once per expansion
    round: it truncates the draft cache to the committed context and forwards every non-root node
    with the tree mask, so the cache never mixes siblings. `observe` then keeps the cache entries
    of the accepted path, so the next `sync` only forwards what the draft has not seen.
    """

    def __init__(self, req):
        self.draft, self.sampling, self.rng = req.draft, req.sampling, req.rng
        self.probs, self.pure = processor(req), processor(req, req.sampling.without_history())
        self.vocab = req.target.vocab_size  # q rows are over the target's ids
        self.shared = min(self.vocab, req.draft.vocab_size)
        self._scored = 0  # tree nodes 1.._scored are in the draft cache after the last score_tree
        self.draft.reset()

    def logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Draft logits restricted to the shared ids. [..., V_draft] -> [..., shared]"""
        return logits if logits.shape[-1] == self.shared else logits[..., : self.shared]

    def q(self, logits: torch.Tensor, ctx=None) -> torch.Tensor:
        """Processed draft probabilities over the target's ids. [..., shared] -> [..., V]. ctx: the
        context of each row, for the processors that read it (penalties, DRY); without it q leaves
        them out (still exact: rejection sampling takes any q it is told)."""
        q = self.probs(logits, ctx) if ctx is not None else self.pure(logits)
        if q.shape[-1] == self.vocab:
            return q
        return torch.nn.functional.pad(q, (0, self.vocab - q.shape[-1]))

    def root_logits(self, ctx: torch.Tensor) -> torch.Tensor:
        """Draft logits after ctx[-1], the cache holding exactly ctx. [shared]"""
        self._scored = 0
        if self.shared < self.vocab and int(ctx.max()) >= self.shared:
            raise DecodeLabError(f"the target produced token id {int(ctx.max())}, past the draft's vocabulary of "
                                 f"{self.shared} rows (a padding id of the target); this draft cannot follow it")
        auto = getattr(self, "auto", None)  # an AutoLength sizing the drafts (AutoLevels) is told of catch-ups
        if not isinstance(auto, AutoLength) or auto.clock is None or len(ctx) - self.draft.cache_len <= 2:
            return self.logits(sync(self.draft, ctx))  # in step: the last step's bonus and one more
        # catching up on plain steps (a rest's, another drafter's): what that costs beyond a drafted
        # token is no draft length's, so the step is timed without it
        t0 = auto.clock()
        logits = sync(self.draft, ctx)
        auto.discount(auto.clock() - t0 - auto.per_token)
        return self.logits(logits)

    def score_tree(self, ctx_len: int, tokens: list[int], parents: list[int]) -> torch.Tensor:
        """Draft logits after each non-root node of the tree (root = ctx[-1]). -> [N - 1, shared]"""
        tree = TokenTree.from_lists(tokens, parents)
        self.draft.truncate(ctx_len)
        step = self.draft.forward(tree.tokens[1:], tree.positions(ctx_len - 1)[1:],
                                  tree_mask=tree.attention_mask[1:, 1:])
        self._scored = len(tokens) - 1
        return self.logits(step.logits)

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        if self._scored:  # keep ctx + the accepted nodes the draft has scored (a prefix of the path)
            self.draft.commit([i - 1 for i in path[1:] if i <= self._scored])
            self._scored = 0


def stack_q(rows: dict[int, torch.Tensor], n: int, vocab: int) -> torch.Tensor:
    """[n, V] q matrix from {node: q row}; nodes without children get zeros."""
    q = torch.zeros(n, vocab)
    for i, row in rows.items():
        q[i] = row
    return q


class ChainDrafter(DraftModelDrafter):
    """Drafts a chain of up to `gamma` tokens from a draft model, recording q when sampling."""

    def __init__(self, req, gamma: int):
        super().__init__(req)
        self.gamma = gamma

    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        n = min(self.gamma, max_depth)
        tokens, qs = [int(ctx[-1])], []
        if n == 0:
            return Draft(TokenTree.chain(tokens))
        logits = self.root_logits(ctx)  # [shared]
        for i in range(n):
            tokens.append(self.next_token(logits, qs, ctx.tolist() + tokens[1:] if self.sampling.history else None))
            if i < n - 1 or self.scores_last:
                pos = torch.tensor([len(ctx) + i])
                step = self.draft.forward(torch.tensor([tokens[-1]]), pos, hidden=self.scores_last)
                logits = self.logits(step.logits[-1])
                if self.stop(step, i + 1):
                    break
        q = torch.cat([torch.stack(qs), torch.zeros(1, self.vocab)]) if qs else None  # [n+1, V]
        return Draft(TokenTree.chain(tokens), q)

    def next_token(self, logits: torch.Tensor, qs: list[torch.Tensor], ctx: list[int] | None = None) -> int:
        if not self.sampling.do_sample:
            return argmax_ids(logits)
        qs.append(self.q(logits, ctx))
        return int(sample(qs[-1], self.rng))

    # Hooks for adaptive-length chains (specdecpp): forward the newest token with hidden states and
    # stop after `drafted` tokens when the hook says so. A plain chain drafts exactly gamma tokens.
    scores_last = False

    def stop(self, step, drafted: int) -> bool:
        return False

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        pass  # chain forwards are sequential, so the cache is already right for sync


def auto_levels(req, kind: str, width: int = 1, carry: bool = True) -> AutoLength:
    """The AutoLength of a draft-model drafter whose step drafts L levels of `width` tokens each
    (sps: a chain, width 1; rsd: width 2): the target's cost of L levels is its forward of
    width * L + 1 tokens, a level's drafting one draft forward (of up to 2 tokens; the clock
    measures the rest). Step times are kept per `kind` of drafter and model pair
    (models/costs.clock); with `carry` its acceptance and probe wait outlive a generation too."""
    def levels(curve: list[float]) -> list[float]:
        return [0.0] + [curve[width * n + 1] for n in range((len(curve) - 2) // width + 1)]

    return AutoLength(lambda c: levels(costs.curve(req.target, context=c)),
                      lambda c: costs.curve(req.draft, context=c)[min(width, 2)], switch=costs.switch(req.target),
                      seen=costs.clock(req.target, kind, req.draft),
                      carry=costs.clock(req.target, f"{kind}:carry", req.draft) if carry else None)


class AutoLevels:
    """Mixin for a DraftModelDrafter whose levels per step come from `auto` (an AutoLength; None:
    the drafter's configured shape): `_auto_depth` before drafting, the accepted length after."""

    auto: AutoLength | None = None
    _levels = 0

    def _auto_depth(self, ctx: torch.Tensor, max_depth: int) -> int:
        self._levels = self.auto.length(max_depth, context=len(ctx))
        return self._levels

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        if self.auto is not None:
            self.auto.update(self._levels, len(path) - 1)  # a step that drafted nothing changes nothing
        super().observe(draft, path, logits)

    def rest(self) -> int:  # the draft model catches up on the skipped tokens at the next propose
        return self.auto.rest(idle=True) if self.auto is not None else 0  # every step offers the same kind of draft
