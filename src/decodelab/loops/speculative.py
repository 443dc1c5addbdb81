"""The speculative loop: draft, verify in one target forward, commit, observe. Methods supply a
Drafter; this loop owns verification, acceptance, the KV-cache commit and the counts.

Each step forwards the tree [root = last committed token, draft nodes...] at positions
base + depth, with a tree attention mask unless the draft is a chain. Greedy runs use greedy
verification (the output equals the target's greedy output); sampling runs use recursive
rejection sampling, which is exact for chains (standard speculative sampling) and for trees
whose siblings were drawn without replacement from q or are deterministic guesses (q = None).
"""
from __future__ import annotations

from typing import Iterator, Protocol

import torch

from ..core.sampling import check_finite, probs_from_logits
from ..core.tree import Draft
from ..core.verify import greedy_verify, rejection_verify
from .common import emit, start


class Drafter(Protocol):
    def propose(self, ctx: torch.Tensor, max_depth: int) -> Draft:
        """A tree rooted at ctx[-1] whose paths are at most max_depth tokens below the root."""

    def observe(self, draft: Draft, path: list[int], logits: torch.Tensor) -> None:
        """Learn from a verified step: accepted node path (root first) and target logits [N, V]."""


def decode(req, drafter: Drafter) -> Iterator[list[int]]:
    target = req.target
    start(target, req.prompt)
    ctx = req.prompt.clone()
    new = 0
    while True:
        room = req.max_new_tokens - new - 1  # the bonus token always comes on top of the draft
        if target.max_length is not None:
            room = min(room, target.max_length - len(ctx))
        draft = drafter.propose(ctx, max(room, 0))
        tree = draft.tree
        if int(tree.tokens[0]) != int(ctx[-1]) or int(tree.depths.max()) > max(room, 0):
            raise RuntimeError(f"{type(drafter).__name__} proposed a tree not rooted at the last token "
                               "or deeper than allowed")
        step = target.forward(tree.tokens, tree.positions(len(ctx) - 1),
                              tree_mask=None if tree.is_chain else tree.attention_mask)
        check_finite(step.logits)
        if req.greedy:
            path, bonus = greedy_verify(tree, step.logits)
        else:
            path, bonus = rejection_verify(tree, probs_from_logits(step.logits, req.sampling), draft.q, req.rng)
        target.commit(path)
        drafter.observe(draft, path, step.logits)
        out, done = emit(req, tree.tokens[path[1:]].tolist() + [bonus], new, step.logits[path], tree, path)
        ctx = torch.cat([ctx, torch.tensor(out)])
        new += len(out)
        yield out
        if done:
            return
